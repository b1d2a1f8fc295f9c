/**
 * Safe deploys with Worker Deployment Versioning, on the real dev server with two workers of the
 * same task queue: a session started on build 1 keeps running on build 1 after build 2 becomes
 * the deployment's current version (the rollout step, done with the real `temporal` CLI), while
 * new sessions start on build 2. The first worker of a fresh deployment makes itself current;
 * a later one takes over only when told to (temporal.deployment.promote, as the chart runs one
 * build at a time); a session whose build is gone is moved on with `temporal workflow update-options`.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
// A CommonJS package: its namespaces hang off the default export under Node's ESM loader.
import proto from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolPath } from '../lab/temporal-dev.js';
import { claimCurrentVersion, type DeploymentVersion } from '../server/worker-deployment.js';
import { requestCommandUpdate, requestVerbUpdate } from '../workflows/messages.js';
import { startSessionEnv, uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';

const run = promisify(execFile);
const BUILD_1: DeploymentVersion = { name: 'breakglass-test', buildId: 'build-1' };
const BUILD_2: DeploymentVersion = { name: 'breakglass-test', buildId: 'build-2' };
const BUILD_3: DeploymentVersion = { name: 'breakglass-test', buildId: 'build-3', promote: true };

let env: SessionEnv;
let queue: string;

const temporalCli = (args: string[]) => run(toolPath('temporal'), [...args, '--address', env.temporal.address]).then(({ stdout }) => stdout);

/** Runs a devvm command in the session; returns the identity of the worker that ran it. */
async function commandRunBy(handle: WorkflowHandle, command: string): Promise<string> {
  await handle.executeUpdate(requestCommandUpdate, { args: [{ command, operator: 'alice' }] });
  await waitForTranscript(handle, (entries) => entries.some((entry) => entry.type === 'command-result' && entry.result.command === command));
  const history = await handle.fetchHistory();
  const scheduled = history.events?.find((event) => {
    const input = event.activityTaskScheduledEventAttributes?.input?.payloads?.[0]?.data;
    return event.activityTaskScheduledEventAttributes?.activityType?.name === 'devvmCommand' && input && Buffer.from(input).toString().includes(command);
  });
  const started = history.events?.find((event) => event.activityTaskStartedEventAttributes && String(event.activityTaskStartedEventAttributes.scheduledEventId) === String(scheduled?.eventId));
  return started?.activityTaskStartedEventAttributes?.identity ?? '(not found)';
}

/**
 * The rollout step. The server refuses it until the new build's workers are known to the
 * deployment and have polled every task queue of the current version, a moment after they start.
 */
async function setCurrentVersion(buildId: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await temporalCli(['worker', 'deployment', 'set-current-version', '--deployment-name', 'breakglass-test', '--build-id', buildId, '--yes']);
      return;
    } catch (error) {
      // Refused until the new build's workers have registered, then until they poll every queue.
      if (Date.now() > deadline || !/missing active task queues|Version not found in deployment/.test(String((error as { stderr?: string }).stderr))) throw error;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

const { VersioningBehavior } = proto.temporal.api.enums.v1;

async function pinnedBuild(handle: WorkflowHandle): Promise<{ behavior: string; buildId: string }> {
  const info = (await handle.describe()).raw.workflowExecutionInfo?.versioningInfo;
  return { behavior: VersioningBehavior[info?.behavior ?? 0] ?? String(info?.behavior), buildId: info?.deploymentVersion?.buildId ?? '' };
}

beforeAll(async () => {
  env = await startSessionEnv();
  queue = uniqueQueue('versioning');
}, 120_000);

afterAll(() => env?.teardown());

describe('worker deployment versioning', () => {
  it('when build 2 becomes current while a session runs on build 1, then that session stays on build 1 and new sessions run on build 2', async () => {
    const worker1 = await env.startWorker(queue, {}, { deployment: BUILD_1, identity: 'worker-build-1' });
    expect(await claimCurrentVersion(env.client.connection, 'default', BUILD_1)).toBe('no current version of breakglass-test: made this build (build-1) current');
    const first = await env.startSession(queue);
    expect(await commandRunBy(first, 'echo before-the-deploy')).toBe('worker-build-1');

    // Build 2 arrives: it does not take over by itself; the rollout makes it current.
    await env.startWorker(queue, {}, { deployment: BUILD_2, identity: 'worker-build-2' });
    expect(await claimCurrentVersion(env.client.connection, 'default', BUILD_2)).toMatch(/current version of breakglass-test is build-1; this build serves/);
    await setCurrentVersion('build-2');

    const second = await env.startSession(queue);
    expect(await commandRunBy(second, 'echo after-the-deploy')).toBe('worker-build-2');
    // Both workers poll the queue: only pinning keeps the open session on its build.
    expect(await commandRunBy(first, 'echo still-on-build-1')).toBe('worker-build-1');
    expect(await pinnedBuild(first)).toEqual({ behavior: 'VERSIONING_BEHAVIOR_PINNED', buildId: 'build-1' });
    expect(await pinnedBuild(second)).toEqual({ behavior: 'VERSIONING_BEHAVIOR_PINNED', buildId: 'build-2' });
    // The VM's lease is not pinned: held across a deploy on a build that goes away, it would
    // never let the VM go.
    await second.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'a lease under versioning', operator: 'alice' }] });
    await waitForTranscript(second, (entries) => entries.some((entry) => entry.type === 'verb-result'), 90_000);
    const leaseId = await (async () => {
      for await (const execution of env.client.workflow.list({ query: "WorkflowType = 'targetLease'" })) return execution.workflowId;
      return '';
    })();
    expect(leaseId).not.toBe('');
    await expect.poll(async () => (await pinnedBuild(env.client.workflow.getHandle(leaseId))).behavior, { timeout: 20_000 }).toBe('VERSIONING_BEHAVIOR_AUTO_UPGRADE');

    // What the README's rollout uses to find the sessions still pinned to the old build.
    await expect
      .poll(async () => JSON.parse((await temporalCli(['workflow', 'list', '--query', "TemporalWorkerDeploymentVersion='breakglass-test:build-1'", '--output', 'json'])) || '[]') as { execution: { workflowId: string } }[], { timeout: 20_000 })
      .toEqual([expect.objectContaining({ execution: expect.objectContaining({ workflowId: first.workflowId }) })]);
    const described = await temporalCli(['worker', 'deployment', 'describe', '--name', 'breakglass-test']);
    expect(described).toMatch(/CurrentVersionBuildID\s+build-2/);
    expect(described).toMatch(/build-1/);

    // One build at a time (the chart): build 3 promotes itself, build 1's worker goes away, and
    // the session pinned to build 1 is moved on by hand — replayed on build 3's code.
    await env.startWorker(queue, {}, { deployment: BUILD_3, identity: 'worker-build-3' });
    expect(await claimCurrentVersion(env.client.connection, 'default', BUILD_3)).toBe('made this build (build-3) current in place of build-2');
    await worker1.stop();
    await temporalCli(['workflow', 'update-options', '--workflow-id', first.workflowId, '--versioning-override-behavior', 'pinned', '--versioning-override-deployment-name', 'breakglass-test', '--versioning-override-build-id', 'build-3']);
    expect(await commandRunBy(first, 'echo moved-to-build-3')).toBe('worker-build-3');
  }, 240_000);
});
