/**
 * Workflow interceptor for the replay suite: reports every activity the workflow schedules, with
 * its input, to the `replayInputs` sink (called during replay too), so the suite can compare
 * today's inputs with the recorded ones. Temporal's own replay check compares only command types
 * and ids: a changed host request id would pass it, and then name a new request on the host.
 */
import { proxySinks, type Sinks, type WorkflowInterceptorsFactory } from '@temporalio/workflow';

export interface ReplayInputSinks extends Sinks {
  replayInputs: { scheduled(activityType: string, args: unknown[]): void };
}

const { replayInputs } = proxySinks<ReplayInputSinks>();

export const interceptors: WorkflowInterceptorsFactory = () => ({
  outbound: [
    {
      scheduleActivity(input, next) {
        replayInputs.scheduled(input.activityType, input.args);
        return next(input);
      },
    },
  ],
});
