/**
 * The replay suite's negative control for activity inputs: the same observer as
 * replay-inputs.ts, but the host request ids it reports are spelled as a changed id rule would
 * spell them (here: another separator before the suffix, as a format change would).
 * Comparing against the recordings must then fail; if it does not, the input check checks nothing.
 */
import { proxySinks, type WorkflowInterceptorsFactory } from '@temporalio/workflow';
import type { ReplayInputSinks } from './replay-inputs.js';

const { replayInputs } = proxySinks<ReplayInputSinks>();

const altered = (arg: unknown): unknown =>
  arg && typeof arg === 'object' && typeof (arg as { requestId?: unknown }).requestId === 'string'
    ? { ...arg, requestId: (arg as { requestId: string }).requestId.replace(/\.(\w)$/, '-$1') }
    : arg;

export const interceptors: WorkflowInterceptorsFactory = () => ({
  outbound: [
    {
      scheduleActivity(input, next) {
        replayInputs.scheduled(input.activityType, input.args.map(altered));
        return next(input);
      },
    },
  ],
});
