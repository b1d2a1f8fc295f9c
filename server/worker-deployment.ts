/**
 * Worker Deployment Versioning: a worker with a build id polls as version `<name>.<build id>` of
 * the Worker Deployment, and every session it starts is pinned to that version, so a session
 * open during a deploy keeps running on the code that started it while new sessions go to the
 * deployment's current version. Which version is current is the rollout's decision
 * (`temporal worker deployment set-current-version`), with two exceptions: on the very first
 * install there is no current version and sessions would wait for one, so the first worker makes
 * its own version current; and where one build runs at a time (the Helm chart's rolling update,
 * config temporal.deployment.promote), each new build makes itself current once it polls.
 */
import type { Connection } from '@temporalio/client';
import type { WorkerOptions } from '@temporalio/worker';

export interface DeploymentVersion {
  /** The Worker Deployment (config temporal.deployment.name). */
  name: string;
  /** This build (config temporal.deployment.buildId, BREAKGLASS_BUILD_ID). */
  buildId: string;
  /** Make this build current once it polls, even over another current build (temporal.deployment.promote). */
  promote?: boolean;
}

/** Sessions started by this worker are pinned to its version (no auto-upgrade onto new code). */
export function pinnedDeploymentOptions(version: DeploymentVersion): NonNullable<WorkerOptions['workerDeploymentOptions']> {
  return { version: { deploymentName: version.name, buildId: version.buildId }, useWorkerVersioning: true, defaultVersioningBehavior: 'PINNED' };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Makes `version` current when the deployment has no current version yet (or always, with
 * `promote`). Retries while the server has not registered the version (it does when the worker
 * first polls every task queue). Returns what it found or did, for the log.
 */
export async function claimCurrentVersion(connection: Pick<Connection, 'workflowService'>, namespace: string, version: DeploymentVersion, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let lastError = 'not tried';
  while (Date.now() < deadline) {
    try {
      const { workerDeploymentInfo, conflictToken } = await connection.workflowService.describeWorkerDeployment({ namespace, deploymentName: version.name });
      const current = workerDeploymentInfo?.routingConfig?.currentDeploymentVersion?.buildId;
      if (current === version.buildId) return `current version of ${version.name} is ${current} (this build)`;
      if (current && !version.promote) return `current version of ${version.name} is ${current}; this build serves the sessions pinned to it and waits to be made current`;
      const registered = (workerDeploymentInfo?.versionSummaries ?? []).some((summary) => summary.deploymentVersion?.buildId === version.buildId);
      if (registered) {
        // Refused while this build does not poll every task queue the current one does: retried.
        await connection.workflowService.setWorkerDeploymentCurrentVersion({ namespace, deploymentName: version.name, buildId: version.buildId, ...(conflictToken ? { conflictToken } : {}), identity: `breakglass worker ${version.buildId}` });
        return current ? `made this build (${version.buildId}) current in place of ${current}` : `no current version of ${version.name}: made this build (${version.buildId}) current`;
      }
      lastError = `version ${version.buildId} not registered yet`;
    } catch (error) {
      lastError = (error as Error).message;
    }
    await pause(500);
  }
  throw new Error(`worker deployment ${version.name}: could not check or set the current version within ${timeoutMs} ms (${lastError})`);
}
