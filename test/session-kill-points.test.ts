/**
 * Kill points beyond the cycle's own steps (test/session-durability.test.ts): a rolling deploy's
 * SIGTERM mid-verb, a SIGKILL during the wait for the devvm, an approval that arrives while no
 * worker runs, an agent turn in flight, and a continue-as-new boundary. Each is proven from the
 * PVE host's own log and qm's calls: the session's verb reached the host once, forensics first.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFullTranscript } from '../activities/agent/transcript.js';
import type { Script } from '../lab/messages-api/server.js';
import { readConversation } from '../lab/messages-api/scenarios.js';
import { clearFaults, setFault } from '../lab/pve/lab-vm.mjs';
import { approvalUpdate, cancelRequestSignal, endSessionSignal, operatorMessageUpdate, pauseSignal, requestVerbUpdate, resumeSignal, stateQuery } from '../workflows/messages.js';
import { hostRequestId, keyFromUpdateId as keyOfUpdate } from '../workflows/session.js';
import type { TranscriptEntry } from '../workflows/session-types.js';
import {
  FAST_TIMING,
  entriesOf,
  eventually,
  hostLog,
  invocationCount,
  mutatingVerbsRun,
  onHostLogLine,
  re,
  runTranscript,
  startFaultEnv,
  type FaultEnv,
} from './helpers/fault-tools.js';
import { uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';


/** Host log lines that say a host request really started running (once per real execution). */
const runStarts = (env: SessionEnv, verb: string, requestId: string) =>
  hostLog(env.pve).filter((line) => new RegExp(`event=run-start verb=${verb} request=${re(requestId)}(\\s|$)`).test(line));

/** What every kill point must leave: one forensics and one cycle on the host, the capture first, a confirmed cycle in the record. */
function expectOneCycle(env: SessionEnv, workflowId: string, key: string, callsBefore: number, entries: TranscriptEntry[]) {
  const forensicsId = hostRequestId(workflowId, key, '.f');
  const mutationId = hostRequestId(workflowId, key, '.m');
  expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
  expect(runStarts(env, 'forensics', forensicsId)).toHaveLength(1);
  expect(runStarts(env, 'cycle', mutationId)).toHaveLength(1);
  const log = hostLog(env.pve);
  const forensicsDone = log.findIndex((line) => line.includes(`event=forensics-done verb=forensics request=${forensicsId} `));
  const stop = log.findIndex((line) => new RegExp(`event=verb-step verb=cycle request=${re(mutationId)} step="qm stop"`).test(line));
  expect(forensicsDone).toBeGreaterThan(-1);
  expect(stop).toBeGreaterThan(forensicsDone);
  const results = entriesOf(entries, 'verb-result').filter((e) => e.key === key);
  expect(results).toHaveLength(1);
  expect(results[0]!.result.ok).toBe(true);
  expect(entriesOf(entries, 'devvm-wait').filter((e) => e.key === key)).toEqual([expect.objectContaining({ reachable: true })]);
  expect(entriesOf(entries, 'outcome-unknown')).toEqual([]);
}

async function pendingActivityStarted(env: SessionEnv, workflowId: string, type: string): Promise<void> {
  await eventually(
    async () => {
      const pending = (await env.client.workflow.getHandle(workflowId).describe()).raw.pendingActivities ?? [];
      // PendingActivityState 2 = STARTED: a worker holds the task.
      return pending.some((activity) => activity.activityType?.name === type && Number(activity.state) === 2) ? true : undefined;
    },
    30_000,
    `${type} started on the worker`,
    20,
  );
}

describe('kill points around a manual cycle', () => {
  let fault: FaultEnv;
  let env: SessionEnv;
  const workerFor = (queue: string) => fault.workerFor(queue);

  beforeAll(async () => {
    fault = await startFaultEnv();
    env = fault.env;
  }, 120_000);

  afterAll(async () => {
    await fault?.teardown();
  });

  it('when the worker gets SIGTERM (a rolling deploy) during qm stop, then it finishes the verb within its grace time and exits cleanly; the next worker carries on, and the host cycled once', async () => {
    await clearFaults(env.pve.nodeRoot);
    await setFault(env.pve.nodeRoot, 'slow_verbs');
    try {
      const queue = uniqueQueue('term');
      const worker = await workerFor(queue);
      const handle = await env.startSession(queue, { timing: FAST_TIMING });
      const updateId = `term-${Date.now()}`;
      const key = keyOfUpdate(updateId);
      const callsBefore = invocationCount(env.pve);
      const mutationId = hostRequestId(handle.workflowId, key, '.m');
      const signalled = onHostLogLine(env.pve, new RegExp(`event=verb-step verb=cycle request=${re(mutationId)} step="qm stop"`), () => worker.child.kill('SIGTERM')).matched;
      await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'rolling deploy mid-verb', operator: 'alice' }], updateId });
      await signalled;
      await worker.exited;
      // A clean exit, and only after the host finished the verb: the grace time let it complete.
      expect(worker.child.exitCode).toBe(0);
      expect(hostLog(env.pve).some((line) => line.includes(`event=verb-done verb=cycle request=${mutationId} `))).toBe(true);
      await workerFor(queue);
      const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait'), 90_000);
      expectOneCycle(env, handle.workflowId, key, callsBefore, entries);
      // Finished on the first worker, not re-attached by a retry.
      expect(entriesOf(entries, 'verb-result')[0]!.result.replayed).toBe(false);
      await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
      expect(await handle.result()).toBe('recovered');
    } finally {
      await clearFaults(env.pve.nodeRoot);
    }
  }, 150_000);

  it('when the worker is SIGKILLed while it waits for the devvm, then the next worker waits again: one verdict, no second verb on the host', async () => {
    await clearFaults(env.pve.nodeRoot);
    const queue = uniqueQueue('wait');
    const worker = await workerFor(queue);
    const handle = await env.startSession(queue, { timing: FAST_TIMING });
    const key = 'waitkill';
    const callsBefore = invocationCount(env.pve);
    const mutationId = hostRequestId(handle.workflowId, key, '.m');
    // Hold the devvm's sshd once the cycle is done on the host, so the wait is really waiting.
    const held = onHostLogLine(env.pve, new RegExp(`event=verb-done verb=cycle request=${re(mutationId)} `), () => env.devvm.freeze?.()).matched;
    try {
      await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'kill during the wait', operator: 'alice', requestKey: key }] });
      await held;
      await pendingActivityStarted(env, handle.workflowId, 'waitForDevvm');
      const logAtKill = hostLog(env.pve).length;
      worker.killNow();
      await worker.exited;
      expect(worker.child.signalCode).toBe('SIGKILL');
      env.devvm.thaw?.();
      await workerFor(queue);
      const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait'), 90_000);
      expectOneCycle(env, handle.workflowId, key, callsBefore, entries);
      // The verdict came from a second attempt of the wait, on the new worker.
      const events = (await handle.fetchHistory()).events ?? [];
      const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'waitForDevvm');
      const attempts = events.filter((e) => e.activityTaskStartedEventAttributes && Number(e.activityTaskStartedEventAttributes.scheduledEventId) === Number(scheduled?.eventId));
      expect(attempts.map((e) => e.activityTaskStartedEventAttributes?.attempt)).toEqual([2]);
      // After the kill the host saw nothing more of this session's verb.
      expect(hostLog(env.pve).slice(logAtKill).filter((line) => line.includes(mutationId))).toEqual([]);
      expect(entriesOf(entries, 'verb-result')[0]!.result.replayed).toBe(false);
    } finally {
      env.devvm.thaw?.();
    }
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    expect(await handle.result()).toBe('recovered');
  }, 150_000);

  it('when an approval arrives while no worker runs, then it is taken once a worker is back, forensics is captured after it, and the host cycled once', async () => {
    await clearFaults(env.pve.nodeRoot);
    const queue = uniqueQueue('approve');
    const worker = await workerFor(queue);
    const handle = await env.startSession(queue, { timing: FAST_TIMING, policy: { mutatingVerbs: 'two-person' } });
    const updateId = `approve-${Date.now()}`;
    const key = keyOfUpdate(updateId);
    const callsBefore = invocationCount(env.pve);
    const asked = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'needs a second pair of eyes', operator: 'alice' }], updateId });
    expect(asked).toEqual({ key, approvalId: `a-${key}` });
    worker.killNow();
    await worker.exited;
    // Bob approves while nothing polls the queue; the worker comes back a moment later.
    const logBeforeApproval = hostLog(env.pve).length;
    const approving = handle.executeUpdate(approvalUpdate, { args: [{ approvalId: asked.approvalId!, decision: 'approve', operator: 'bob' }] });
    await new Promise((r) => setTimeout(r, 2_000));
    expect(hostLog(env.pve).slice(logBeforeApproval).filter((line) => line.includes(handle.workflowId))).toEqual([]);
    await workerFor(queue);
    expect(await approving).toMatchObject({ decision: 'approve', executed: true });
    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait'), 90_000);
    expectOneCycle(env, handle.workflowId, key, callsBefore, entries);
    const approval = entries.find((e) => e.type === 'approval')!;
    const forensics = entries.find((e) => e.type === 'forensics')!;
    expect(forensics.seq).toBeGreaterThan(approval.seq);
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    expect(await handle.result()).toBe('recovered');
  }, 150_000);
});

describe('kill points in an agent turn and at a continue-as-new boundary', () => {
  let fault: FaultEnv;
  let env: SessionEnv;
  const workerFor = (queue: string) => fault.workerFor(queue);
  /** Called on each model request: the agent test kills the worker from here. */
  let onModelCall: (() => void) | null = null;
  let modelCalls = 0;

  /** Asks for one cycle, waits for its result, reports. */
  const oneCycle: Script = async (request) => {
    modelCalls++;
    const hook = onModelCall;
    onModelCall = null;
    if (hook) {
      hook();
      // The worker that asked is dead: answer late, to nobody.
      return { text: 'too late', delayMs: 1_000 };
    }
    const seen = readConversation(request);
    const call = seen.calls.find((c) => c.name === 'pve_cycle');
    if (!call) return { text: 'The devvm is wedged: cycling VM 102.', toolCalls: [{ name: 'pve_cycle', input: { reason: 'devvm wedged (agent)' } }] };
    if (!call.result || /reported in a later message/i.test(call.result.text)) return { text: 'Waiting for the cycle.' };
    return { text: 'Cycled: the devvm answers again.' };
  };

  beforeAll(async () => {
    // A low continue-as-new threshold (server-wide) for the boundary test; the agent for the other.
    fault = await startFaultEnv({ agentScript: oneCycle, dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 60 } });
    env = fault.env;
  }, 120_000);

  afterAll(async () => {
    await fault?.teardown();
  });

  it('when the worker is SIGKILLed while an agent turn waits for the model, then the turn is asked again and its cycle (keyed t-1-0) reaches the host once', async () => {
    await clearFaults(env.pve.nodeRoot);
    const queue = uniqueQueue('agent-kill');
    const worker = await workerFor(queue);
    const handle = await env.startSession(queue, { timing: FAST_TIMING });
    const callsBefore = invocationCount(env.pve);
    const callsToModel = modelCalls;
    onModelCall = () => worker.killNow();
    await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: 'devvm is wedged, please fix it', operator: 'alice' }] });
    await worker.exited;
    expect(worker.child.signalCode).toBe('SIGKILL');
    // At the kill nothing of this session had reached the host.
    expect(hostLog(env.pve).filter((line) => line.includes(handle.workflowId))).toEqual([]);
    await workerFor(queue);
    // Every run's entries: the server's low continue-as-new threshold (set for the next test) may
    // start a new run once the turn, the cycle and the report are in.
    const entries = await eventually(
      async () => {
        const all = await readFullTranscript(env.client, handle.workflowId);
        return all.some((e) => e.type === 'devvm-wait') && entriesOf(all, 'agent-message').length >= 2 ? all : undefined;
      },
      120_000,
      'the agent cycles and reports',
      500,
    );
    expectOneCycle(env, handle.workflowId, 't-1-0', callsBefore, entries);
    // The model was asked again for the same turn (the first answer went to a dead worker).
    expect(modelCalls - callsToModel).toBeGreaterThanOrEqual(3);
    expect(entriesOf(entries, 'agent-message')[0]!.toolCalls.map((call) => call.key)).toEqual(['t-1-0']);
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    expect(await handle.result()).toBe('recovered');
  }, 180_000);

  it('when the worker is SIGKILLed as the session continues as new with a cycle queued, then the next run runs that cycle once, under the same host request ids, and a cancel asked before the boundary keeps its name', async () => {
    await clearFaults(env.pve.nodeRoot);
    const queue = uniqueQueue('can-kill');
    const worker = await workerFor(queue);
    const handle = await env.startSession(queue, { timing: FAST_TIMING, agent: { enabled: false, reason: 'manual test' } });
    const latest = () => env.client.workflow.getHandle(handle.workflowId);
    const firstRunId = (await handle.describe()).runId;
    const callsBefore = invocationCount(env.pve);
    const key = 'boundary';
    // Paused, with the cycle queued: talk until the history passes the threshold and the session
    // continues as new (it does so even while paused), and kill the worker right at that boundary.
    await handle.signal(pauseSignal, { operator: 'alice', reason: 'hold the cycle' });
    await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'queued across the boundary', operator: 'alice', requestKey: key }] });
    // The console names the canceller just before it cancels; a run boundary in between keeps the name.
    await handle.signal(cancelRequestSignal, { operator: 'carol', reason: 'the incident moved elsewhere' });
    let secondRunId = firstRunId;
    for (let i = 0; secondRunId === firstRunId; i++) {
      expect(i).toBeLessThan(60);
      await latest().executeUpdate(operatorMessageUpdate, { args: [{ text: `note ${i}`, operator: 'alice' }] });
      secondRunId = (await latest().describe()).runId;
    }
    worker.killNow();
    await worker.exited;
    expect(worker.child.signalCode).toBe('SIGKILL');
    expect(hostLog(env.pve).filter((line) => line.includes(handle.workflowId))).toEqual([]);
    await workerFor(queue);
    await latest().signal(resumeSignal, { operator: 'alice' });
    const all = await eventually(
      async () => {
        const { runId } = await latest().describe();
        const entries = await runTranscript(env.client, handle.workflowId, runId);
        return entries.some((e) => e.type === 'devvm-wait') ? entries : undefined;
      },
      120_000,
      'the cycle finishes in the next run',
      500,
    );
    expectOneCycle(env, handle.workflowId, key, callsBefore, all);
    expect((await latest().query(stateQuery)).transcript.previousRunId).toBe(firstRunId);
    await latest().cancel();
    await expect(latest().result()).rejects.toThrow();
    const { runId } = await latest().describe();
    expect((await runTranscript(env.client, handle.workflowId, runId)).at(-1)).toMatchObject({ type: 'session-ended', outcome: 'cancelled', operator: 'carol', reason: 'the incident moved elsewhere' });
  }, 180_000);
});
