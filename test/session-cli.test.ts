/**
 * The session from the command line, with the REAL binaries an on-call engineer uses: the
 * `temporal` CLI and the legacy `tctl` (which cannot send Updates, hence the Signals). Cancel,
 * pause/resume, reset, list/describe, and a continue-as-new forced by a low server threshold.
 */
import { readFileSync } from 'node:fs';
import { pidsWithArg } from '../lab/processes.js';
import { WorkflowFailedError } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearFaults, setFault } from '../lab/pve/lab-vm.mjs';
import { SESSION_RUNS, Sessions } from '../server/sessions.js';
import {
  approvalUpdate,
  endSessionSignal,
  operatorMessageUpdate,
  requestCommandUpdate,
  requestVerbSignal,
  requestVerbUpdate,
  setPolicyUpdate,
  stateQuery,
} from '../workflows/messages.js';
import { OUTCOME } from '../workflows/search-attributes.js';
import { hostRequestId } from '../workflows/session.js';
import { DEFAULT_POLICY, type TranscriptEntry } from '../workflows/session-types.js';
import {
  cliOk,
  entriesOf,
  eventually,
  hostLog,
  invocationCount,
  mutatingVerbsRun,
  onHostLogLine,
  re,
  runTranscript,
  sleep,
} from './helpers/fault-tools.js';
import { startSessionEnv, stateOf, transcriptOf, uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';
import { expectInOrder, expectOrdered } from './helpers/order.js';

let env: SessionEnv;

beforeAll(async () => {
  env = await startSessionEnv();
}, 120_000);

afterAll(async () => {
  await env?.teardown();
});

type Tool = 'temporal' | 'tctl';

/** The same operation spelled for each binary (tctl: --workflow_id; temporal: --workflow-id). */
const cancelArgs = (tool: Tool, id: string) => (tool === 'temporal' ? ['workflow', 'cancel', '--workflow-id', id] : ['workflow', 'cancel', '--workflow_id', id]);
const signalArgs = (tool: Tool, id: string, name: string, input: unknown) =>
  tool === 'temporal'
    ? ['workflow', 'signal', '--workflow-id', id, '--name', name, '--input', JSON.stringify(input)]
    : ['workflow', 'signal', '--workflow_id', id, '--name', name, '--input', JSON.stringify(input)];

async function expectCancelled(handle: { result(): Promise<unknown> }) {
  const error = await handle.result().then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(WorkflowFailedError);
  expect((error as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
}

const typesOf = (entries: TranscriptEntry[]) => entries.map((e) => e.type);

describe('cancel from the CLI', () => {
  it.each<Tool>(['temporal', 'tctl'])('when `%s workflow cancel` hits a session with no verb in flight, then it closes within 10 s as Canceled with outcome "cancelled"', async (tool) => {
    const queue = uniqueQueue(`cancel-${tool}`);
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'session-started'));

    const started = Date.now();
    await cliOk(env, tool, cancelArgs(tool, handle.workflowId));
    await expectCancelled(handle);
    expect(Date.now() - started).toBeLessThan(10_000);

    const description = await handle.describe();
    expect(description.status.name).toBe('CANCELLED');
    expect(description.typedSearchAttributes.get(OUTCOME)).toBe('cancelled');
    // The closed run still answers queries: its transcript ends with the outcome.
    const entries = await transcriptOf(handle);
    expect(entries.at(-1)).toMatchObject({ type: 'session-ended', outcome: 'cancelled', operator: 'temporal' });
    // And the CLI sees the same.
    const shown = JSON.parse(await cliOk(env, 'temporal', ['workflow', 'describe', '--workflow-id', handle.workflowId, '--output', 'json'])) as {
      workflowExecutionInfo: { status: string };
    };
    expect(shown.workflowExecutionInfo.status).toBe('WORKFLOW_EXECUTION_STATUS_CANCELED');
  });

  it('when `tctl workflow cancel` arrives during a slow cycle, then the cycle finishes, its real outcome is recorded, and the session closes cancelled', async () => {
    await clearFaults(env.pve.nodeRoot);
    await setFault(env.pve.nodeRoot, 'slow_verbs');
    try {
      const queue = uniqueQueue('cancel-cycle');
      await env.startWorker(queue);
      const handle = await env.startSession(queue);
      const callsBefore = invocationCount(env.pve);
      const mutationId = hostRequestId(handle.workflowId, 'cyc', '.m');
      const stopping = onHostLogLine(env.pve, new RegExp(`event=verb-step verb=cycle request=${re(mutationId)} step="qm stop"`), () => undefined);
      await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'cancel during a cycle', operator: 'alice', requestKey: 'cyc' }] });
      await stopping.matched;

      await cliOk(env, 'tctl', cancelArgs('tctl', handle.workflowId));
      await expectCancelled(handle);

      const entries = await transcriptOf(handle);
      const types = typesOf(entries);
      const result = entriesOf(entries, 'verb-result');
      expect(result).toHaveLength(1);
      expect(result[0]!.result).toMatchObject({ ok: true, replayed: false });
      expect(result[0]!.result.newPid).not.toBe(result[0]!.result.oldPid);
      // The whole non-cancellable part ran: the verb, then the wait for the devvm.
      expect(entriesOf(entries, 'forensics')).toHaveLength(1);
      expectInOrder(types, 'forensics', 'verb-result', 'devvm-wait', 'session-ended');
      expect(entries.at(-1)).toMatchObject({ type: 'session-ended', outcome: 'cancelled' });
      // The host finished the verb it had started, once; the log shows it completed.
      expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
      expect(hostLog(env.pve).some((line) => line.includes(`event=verb-done verb=cycle request=${mutationId} exit=0`))).toBe(true);
      expect((await handle.describe()).typedSearchAttributes.get(OUTCOME)).toBe('cancelled');
    } finally {
      await clearFaults(env.pve.nodeRoot);
    }
  });

  it('when `temporal workflow cancel` arrives while a devvm command (sleep 30) runs, then the session closes promptly, the command\'s SSH session is let go and the command is stopped on the devvm', async () => {
    const queue = uniqueQueue('cancel-command');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    const marker = `bg-cancel-${Date.now()}`;
    await handle.executeUpdate(requestCommandUpdate, { args: [{ command: `sleep 30; echo ${marker}`, operator: 'alice', timeoutSeconds: 40 }] });
    // The devvm here is a real shell on this machine: the remote `timeout` wrapper carries the
    // marker, and its parent is the sshd process serving the command's SSH connection.
    const wrapper = await eventually(() => pidsWithArg(marker).find((pid) => commandLine(pid).startsWith('timeout')), 15_000, 'the command runs on the devvm');
    const connection = parentPid(wrapper);
    expect(commandLine(connection)).toMatch(/^sshd/);
    try {
      const started = Date.now();
      await cliOk(env, 'temporal', cancelArgs('temporal', handle.workflowId));
      await expectCancelled(handle);
      expect(Date.now() - started).toBeLessThan(10_000);
      const entries = await transcriptOf(handle);
      expect(entriesOf(entries, 'command-result')).toHaveLength(0);
      expect(entriesOf(entries, 'command-failed')).toHaveLength(0);
      // The record says what became of the command: let go, maybe still running.
      expect(entriesOf(entries, 'skipped')).toMatchObject([{ what: `devvm: sleep 30; echo ${marker}`, why: expect.stringContaining('abandoned when the session was cancelled: the devvm was asked to stop it') }]);
      expect(entries.at(-1)).toMatchObject({ type: 'session-ended', outcome: 'cancelled' });
      // The activity hears of the cancellation with its next heartbeat, closes the connection, and
      // stops the command on the devvm by its run name (closing alone would leave it running).
      await eventually(() => (commandLine(connection) === '' ? true : undefined), 15_000, 'the command\'s SSH connection is closed');
      await eventually(() => (pidsWithArg(marker).length === 0 ? true : undefined), 15_000, 'the command is stopped on the devvm');
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      // Closing the connection alone does not end the remote command (sshd only closes its pipes,
      // and refuses SSH signal requests for root and forced-command sessions): whatever a failed
      // assertion above left behind must not outlive this test.
      for (const pid of pidsWithArg(marker)) process.kill(pid, 'SIGKILL');
    }
  });
});

describe('pause and resume from the CLI', () => {
  it.each<Tool>(['temporal', 'tctl'])('when `%s workflow signal pause` holds the session, then a cycle requested by signal waits, and after resume forensics then the cycle run', async (tool) => {
    const queue = uniqueQueue(`pause-${tool}`);
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'session-started'));
    const callsBefore = invocationCount(env.pve);
    const logBefore = hostLog(env.pve).length;

    await cliOk(env, tool, signalArgs(tool, handle.workflowId, 'pause', { operator: 'bob', reason: 'hands off while I look' }));
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'paused'));
    await cliOk(env, tool, signalArgs(tool, handle.workflowId, 'requestVerb', { verb: 'cycle', reason: 'cli', operator: 'bob', requestKey: `cli-cycle-${tool}` }));
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'request'));
    const held = await stateOf(handle);
    expect(held.paused).toBe(true);
    expect(held.pauseReason).toBe('hands off while I look');
    expect(held.queue.map((item) => item.kind === 'verb' && item.verb)).toEqual(['cycle']);
    // Nothing runs while paused: not forensics, not the verb.
    await sleep(3_000);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual([]);
    expect(hostLog(env.pve).slice(logBefore).filter((line) => line.includes(handle.workflowId))).toEqual([]);
    expect((await stateOf(handle)).running).toBeNull();

    await cliOk(env, tool, signalArgs(tool, handle.workflowId, 'resume', { operator: 'bob' }));
    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait'), 60_000);
    expect(typesOf(entries).filter((type) => ['paused', 'request', 'resumed', 'forensics', 'verb-result'].includes(type))).toEqual([
      'paused',
      'request',
      'resumed',
      'forensics',
      'verb-result',
    ]);
    expect(entriesOf(entries, 'paused')[0]).toMatchObject({ operator: 'bob' });
    expect(entriesOf(entries, 'resumed')[0]).toMatchObject({ operator: 'bob' });
    expect(entriesOf(entries, 'request')[0]!.item).toMatchObject({ verb: 'cycle', reason: 'cli', requestedBy: { kind: 'operator', name: 'bob' } });
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    await handle.signal(endSessionSignal, { operator: 'bob' });
    expect(await handle.result()).toBe('recovered');
  });
});

describe('reset from the CLI', () => {
  it('when `temporal workflow reset` replays a session after an approved cycle, with or without re-applied signals and updates, then no second stop or start runs', async () => {
    const queue = uniqueQueue('reset');
    await env.startWorker(queue);
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'two-person' } });
    const callsBefore = invocationCount(env.pve);
    const accepted = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'wedged', operator: 'alice' }] });
    // An update's key comes from its update id: re-applied after a reset, it names the same
    // host request; a new update gets a new one.
    expect(accepted.key).toMatch(/^u[A-Za-z0-9]+$/);
    expect(accepted.approvalId).toBe(`a-${accepted.key}`);
    const decision = await handle.executeUpdate(approvalUpdate, { args: [{ approvalId: accepted.approvalId!, decision: 'approve', operator: 'bob' }] });
    expect(decision.executed).toBe(true);
    const first = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait'), 60_000);
    expect(entriesOf(first, 'verb-result')[0]!.result.replayed).toBe(false);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    const firstRunId = (await handle.describe()).runId;

    // 1. The default: signals and updates after the reset point are re-applied to the new run.
    await cliOk(env, 'temporal', ['workflow', 'reset', '--workflow-id', handle.workflowId, '--type', 'FirstWorkflowTask', '--reason', 'test: reset after an approved cycle']);
    const second = await settledRun(handle.workflowId, firstRunId);
    expect(second.runId).not.toBe(firstRunId);
    // Re-applied: the same request (same key, so the same host request ids) and the same approval.
    expect(entriesOf(second.entries, 'request').map((e) => e.item.key)).toEqual([accepted.key]);
    expect(entriesOf(second.entries, 'approval')).toMatchObject([{ approvalId: accepted.approvalId, decision: 'approve', operator: 'bob' }]);
    const replayedResult = entriesOf(second.entries, 'verb-result');
    expect(replayedResult).toHaveLength(1);
    // The host journal answered with the first run's result instead of acting again.
    expect(replayedResult[0]!.result.replayed).toBe(true);
    expect(entriesOf(second.entries, 'forensics')[0]!.result.replayed).toBe(true);
    expectInOrder(typesOf(second.entries), 'forensics', 'verb-result');
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);

    // 2. Nothing re-applied: the original run reset to its first workflow task (the re-applied
    // updates of the second run sit before that run's own first completed task, so they would
    // stay). The new run has no request at all, so nothing can run.
    await cliOk(env, 'temporal', [
      'workflow', 'reset', '--workflow-id', handle.workflowId, '--run-id', firstRunId, '--type', 'FirstWorkflowTask', '--reapply-exclude', 'All', '--reason', 'test: reset without re-applying',
    ]);
    const third = await settledRun(handle.workflowId, second.runId);
    expect(typesOf(third.entries)).toEqual(['session-started']);
    expect(entriesOf(third.entries, 'request')).toHaveLength(0);
    expect(entriesOf(third.entries, 'verb-result')).toHaveLength(0);
    await sleep(1_000);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);

    // 3. A genuinely new request after that reset is new: it runs, it is not the old result.
    const latestHandle = env.client.workflow.getHandle(handle.workflowId);
    const fresh = await latestHandle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'new request after reset', operator: 'alice' }] });
    expect(fresh.key).not.toBe(accepted.key);
    await latestHandle.executeUpdate(approvalUpdate, { args: [{ approvalId: fresh.approvalId!, decision: 'approve', operator: 'bob' }] });
    const fourth = await waitForTranscript(latestHandle, (all) => all.some((e) => e.type === 'devvm-wait'), 60_000);
    expect(entriesOf(fourth, 'verb-result')[0]!.result.replayed).toBe(false);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start', 'stop', 'start']);
    await latestHandle.signal(endSessionSignal, { operator: 'alice' });
  });
});

describe('signals without a requestKey', () => {
  it('when a mutating verb comes by signal without a key, then it is refused saying to pass one; a keyless read-only one gets a key a reset never reuses', async () => {
    const queue = uniqueQueue('keyless');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    const callsBefore = invocationCount(env.pve);
    await cliOk(env, 'temporal', signalArgs('temporal', handle.workflowId, 'requestVerb', { verb: 'cycle', reason: 'keyless', operator: 'bob' }));
    const refused = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'skipped'));
    expect(entriesOf(refused, 'skipped')[0]!.why).toContain('requestKey: required for cycle by signal');
    expect(entriesOf(refused, 'request')).toEqual([]);

    await cliOk(env, 'temporal', signalArgs('temporal', handle.workflowId, 'requestVerb', { verb: 'forensics', reason: 'keyless look', operator: 'bob' }));
    const first = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'forensics'), 60_000);
    const firstKey = entriesOf(first, 'request')[0]!.item.key;
    expect(firstKey).toMatch(/^r1-[A-Za-z0-9]{12}$/);
    const firstRunId = (await handle.describe()).runId;

    // Reset without re-applying: the next keyless request is numbered 1 again, in a new run.
    await cliOk(env, 'temporal', ['workflow', 'reset', '--workflow-id', handle.workflowId, '--type', 'FirstWorkflowTask', '--reapply-exclude', 'All', '--reason', 'test: keyless after reset']);
    await settledRun(handle.workflowId, firstRunId);
    const latest = env.client.workflow.getHandle(handle.workflowId);
    await cliOk(env, 'temporal', signalArgs('temporal', handle.workflowId, 'requestVerb', { verb: 'forensics', reason: 'a new look', operator: 'bob' }));
    const second = await waitForTranscript(latest, (all) => all.some((e) => e.type === 'forensics'), 60_000);
    const secondKey = entriesOf(second, 'request')[0]!.item.key;
    expect(secondKey).toMatch(/^r1-[A-Za-z0-9]{12}$/);
    expect(secondKey).not.toBe(firstKey);
    // A fresh capture, not the old request's result from the host journal.
    expect(entriesOf(second, 'forensics')[0]!.result.replayed).toBe(false);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual([]);
    await latest.signal(endSessionSignal, { operator: 'bob' });
  });
});

/** Waits for a run other than `previousRunId` to exist and go quiet (nothing queued or running). */
async function settledRun(workflowId: string, previousRunId: string): Promise<{ runId: string; entries: TranscriptEntry[] }> {
  return eventually(
    async () => {
      const handle = env.client.workflow.getHandle(workflowId);
      const { runId } = await handle.describe();
      if (runId === previousRunId) return undefined;
      const state = await stateOf(handle);
      if (state.running || state.queue.length > 0) return undefined;
      const entries = await runTranscript(env.client, workflowId, runId);
      // Still quiet a moment later: the run has done all it is going to do.
      await sleep(1_500);
      const again = await stateOf(handle);
      if (again.running || again.queue.length > 0 || again.transcript.nextSeq !== state.transcript.nextSeq) return undefined;
      return { runId, entries };
    },
    60_000,
    'the reset run settles',
    300,
  );
}

describe('finding sessions from the CLI', () => {
  it('when sessions are listed with `temporal workflow list --query`, then a session is found by operator and by outcome, and describe/metadata show its summary and current details', async () => {
    const queue = uniqueQueue('list');
    await env.startWorker(queue);
    // Started as the console starts sessions: static summary, details and search attributes.
    const sessions = new Sessions(env.client, { taskQueue: queue, target: { devvm: 'devvm', vmid: 102 }, policy: DEFAULT_POLICY, namespace: 'default' });
    const id = await sessions.start('carol', 'devvm wedged: writes stalled');
    const handle = env.client.workflow.getHandle(id);
    await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'status', reason: 'look', operator: 'carol' }] });
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'status'));

    const listed = (query: string) =>
      eventually(
        async () => {
          const rows = JSON.parse(await cliOk(env, 'temporal', ['workflow', 'list', '--query', query, '--output', 'json'])) as { execution: { workflowId: string } }[] | null;
          const ids = (rows ?? []).map((row) => row.execution.workflowId);
          return ids.includes(id) ? ids : undefined;
        },
        15_000,
        `temporal workflow list --query "${query}" finds ${id}`,
        500,
      );
    expect(await listed("BreakglassOperator='carol'")).toEqual([id]);
    expect(await listed("BreakglassOperator='carol' AND BreakglassOutcome='open' AND BreakglassTarget='devvm'")).toEqual([id]);

    const described = await cliOk(env, 'temporal', ['workflow', 'describe', '--workflow-id', id]);
    expect(described).toMatch(/StaticSummary\s+"Breakglass: devvm \(VM 102\) — carol"/);
    // The description as text in a fenced block: the Web UI renders no link or markup from it.
    expect(described).toMatch(/StaticDetails\s+".*Problem reported by carol:.*```text\\ndevvm wedged: writes stalled\\n```"/);
    expect(described).toContain('BreakglassOperator');
    const metadata = await cliOk(env, 'temporal', ['workflow', 'metadata', '--workflow-id', id]);
    expect(metadata).toMatch(/Current Details:[\s\S]*\*\*VM 102\*\* \(devvm\): running/);

    await handle.signal(endSessionSignal, { operator: 'carol', reason: 'looked fine' });
    expect(await handle.result()).toBe('ended');
    expect(await listed("BreakglassOutcome='ended' AND BreakglassOperator='carol'")).toEqual([id]);
  });
});

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

function parentPid(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}


describe('continue-as-new under a low server threshold', () => {
  // Room in the second run for its carried messages (each signed one adds its check's marker),
  // the queued status and the first cycle's start, so the boundary falls after that cycle.
  const THRESHOLD = 80;
  let canEnv: SessionEnv;

  beforeAll(async () => {
    // Its own dev server: the threshold is a server-wide dynamic config value.
    canEnv = await startSessionEnv({ dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': THRESHOLD } });
  }, 120_000);

  afterAll(async () => {
    await canEnv?.teardown();
  });

  it('when the history passes the suggested length mid-session, then the session continues as new with its state, gap-free sequence numbers and forensics before every mutation', async () => {
    const queue = uniqueQueue('can');
    await canEnv.startWorker(queue);
    const handle = await canEnv.startSession(queue, { policy: { mutatingVerbs: 'two-person' } });
    const workflowId = handle.workflowId;
    const latest = () => canEnv.client.workflow.getHandle(workflowId);
    const firstRunId = (await handle.describe()).runId;
    const callsBefore = invocationCount(canEnv.pve);
    let said = 0;
    const say = async (text: string) => {
      const updateId = `msg-${++said}`;
      return { text, updateId, seq: (await latest().executeUpdate(operatorMessageUpdate, { args: [{ text, operator: 'alice' }], updateId })).seq };
    };

    // State worth carrying: a policy change, a request waiting for approval, a used request key,
    // a status result, and a pause.
    await handle.executeUpdate(setPolicyUpdate, { args: [{ operator: 'bob', policy: { toolCallsPerMessage: 7 } }] });
    const pending = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'approve me across runs', operator: 'alice' }] });
    expect(pending.approvalId).toBe(`a-${pending.key}`);
    await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'status', reason: 'look first', operator: 'alice', requestKey: 'look' }] });
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'status'));
    await cliOk(canEnv, 'temporal', signalArgs('temporal', workflowId, 'pause', { operator: 'bob', reason: 'waiting for a second pair of eyes' }));
    await handle.signal(requestVerbSignal, { verb: 'status', reason: 'queued while paused', operator: 'bob', requestKey: 'queued' });
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'request' && e.item.key === 'queued'));

    // Talk until the server suggests continue-as-new and the session takes it.
    const acknowledged: { text: string; updateId: string; seq: number }[] = [];
    for (let i = 0; (await latest().describe()).runId === firstRunId; i++) {
      expect(i).toBeLessThan(40);
      acknowledged.push(await say(`note ${i}`));
    }
    const firstRun = canEnv.client.workflow.getHandle(workflowId, firstRunId);
    const first = await firstRun.describe();
    expect(first.status.name).toBe('CONTINUED_AS_NEW');
    // The dynamic config took effect: the run ended near the threshold, far below the default.
    expect(first.historyLength).toBeGreaterThanOrEqual(THRESHOLD);
    expect(first.historyLength).toBeLessThan(THRESHOLD + 30);
    const oldState = await firstRun.query(stateQuery);
    const secondRunId = (await latest().describe()).runId;

    const state = await stateOf(latest());
    expect(state.runId).toBe(secondRunId);
    expect(state.paused).toBe(true);
    expect(state.pauseReason).toBe('waiting for a second pair of eyes');
    expect(state.policy).toEqual({ ...DEFAULT_POLICY, mutatingVerbs: 'two-person', toolCallsPerMessage: 7 });
    expect(state.pendingApprovals.map((p) => p.approvalId)).toEqual([pending.approvalId]);
    expect(state.queue.map((item) => item.key)).toEqual(['queued']);
    expect(state.vm?.status).toBe('running');
    expect(state.startedAt).toBe(oldState.startedAt);
    expect(state.transcript).toEqual({ firstSeq: oldState.transcript.nextSeq, nextSeq: oldState.transcript.nextSeq + 1, previousRunId: firstRunId });
    const continued = await runTranscript(canEnv.client, workflowId, secondRunId);
    expect(continued[0]).toMatchObject({ type: 'session-continued', previousRunId: firstRunId, seq: oldState.transcript.nextSeq });
    // A used key stays used: repeating it is acknowledged and never queued twice.
    expect(await latest().executeUpdate(requestVerbUpdate, { args: [{ verb: 'status', reason: 'again', operator: 'alice', requestKey: 'look' }] })).toEqual({ key: 'look', approvalId: null });
    // A client's retry of a message acknowledged by the first run, landing in this one (Temporal
    // drops a repeated update id within a run only): answered with its seq, not recorded again.
    const retried = acknowledged[0]!;
    expect(await latest().executeUpdate(operatorMessageUpdate, { args: [{ text: retried.text, operator: 'alice' }], updateId: retried.updateId })).toEqual({ seq: retried.seq });

    // Fill this run close to the threshold while paused, then let two cycles go: the first one
    // carries the history over the threshold, so the second is requested before the boundary and
    // runs after it, in the next run.
    // Loosening two-person takes two people: alice proposes, bob agrees.
    for (const operator of ['alice', 'bob']) await latest().executeUpdate(setPolicyUpdate, { args: [{ operator, policy: { mutatingVerbs: 'autonomous' } }] });
    const approved = await latest().executeUpdate(approvalUpdate, { args: [{ approvalId: pending.approvalId!, decision: 'approve', operator: 'bob' }] });
    expect(approved.executed).toBe(true);
    const second = await latest().executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'right at the boundary', operator: 'alice' }] });
    expect(second.approvalId).toBeNull();
    while ((await latest().describe()).historyLength < THRESHOLD - 20) acknowledged.push(await say('filling'));
    expect((await latest().describe()).runId).toBe(secondRunId);
    await cliOk(canEnv, 'tctl', signalArgs('tctl', workflowId, 'resume', { operator: 'bob' }));

    const runs = await eventually(
      async () => {
        const all = await allRuns(canEnv, workflowId);
        const entries = all.flatMap((run) => run.entries);
        return entriesOf(entries, 'verb-result').length === 2 && entries.filter((e) => e.type === 'devvm-wait').length === 2 ? all : undefined;
      },
      90_000,
      'both cycles finish',
      500,
    );
    expect(runs.length).toBeGreaterThanOrEqual(3);
    const everything = runs.flatMap((run) => run.entries);
    // Gap-free, in order, across every boundary; each later run starts with session-continued.
    expect(everything.map((e) => e.seq)).toEqual(everything.map((_, i) => i + 1));
    for (const [index, run] of runs.entries()) {
      if (index === 0) continue;
      expect(run.entries[0]).toMatchObject({ type: 'session-continued', previousRunId: runs[index - 1]!.runId });
    }
    // Nothing acknowledged was lost.
    for (const message of acknowledged) expect(everything.find((e) => e.seq === message.seq)).toMatchObject({ type: 'operator-message', text: message.text });
    expect(entriesOf(everything, 'operator-message').filter((e) => e.text === retried.text)).toHaveLength(1);
    // Ordering: within one run, every mutation's forensics came first.
    for (const run of runs) {
      for (const result of entriesOf(run.entries, 'verb-result')) {
        const forensics = run.entries.findIndex((e) => e.type === 'forensics' && e.key === result.key);
        expectOrdered({ forensics, 'verb-result': run.entries.indexOf(result) });
      }
    }
    // The boundary fell between the two cycles: r2 was carried over and ran in a later run.
    const runOf = (key: string) => runs.findIndex((run) => run.entries.some((e) => e.type === 'verb-result' && e.key === key));
    expect(runOf(second.key)).toBeGreaterThan(runOf(pending.key));
    expect(runs[runOf(pending.key)]!.runId).toBe(secondRunId);
    expect(mutatingVerbsRun(canEnv.pve, callsBefore)).toEqual(['stop', 'start', 'stop', 'start']);
    // The console lists the session once, however many runs it took, as its latest run.
    const sessions = new Sessions(canEnv.client, { taskQueue: queue, target: { devvm: 'devvm', vmid: 102 }, policy: DEFAULT_POLICY, namespace: 'default' });
    const listed = await eventually(async () => {
      const rows = (await sessions.list()).filter((row) => row.id === workflowId);
      return rows.length === 1 && rows[0]!.status === 'RUNNING' ? rows : undefined;
    }, 15_000, 'the session listed once');
    expect(listed).toHaveLength(1);
    await latest().signal(endSessionSignal, { operator: 'alice' });
    expect(await latest().result()).toBe('recovered');
    const count = (query: string) => canEnv.client.workflow.count(`WorkflowId = '${workflowId}' AND ${query}`).then((c) => c.count);
    expect(await eventually(async () => ((await count(SESSION_RUNS)) === 1 ? 1 : undefined), 15_000, 'one run stands for the session')).toBe(1);
    expect(await count(`WorkflowType = 'breakglassSession'`)).toBe(runs.length);
  }, 150_000);
});

/** Every run of a session, oldest first, with its transcript (closed runs still answer queries). */
async function allRuns(target: SessionEnv, workflowId: string): Promise<{ runId: string; entries: TranscriptEntry[] }[]> {
  const runs: { runId: string; entries: TranscriptEntry[] }[] = [];
  let runId: string | null = (await target.client.workflow.getHandle(workflowId).describe()).runId;
  while (runId) {
    const entries = await runTranscript(target.client, workflowId, runId);
    runs.unshift({ runId, entries });
    const first = entries[0];
    runId = first?.type === 'session-continued' ? first.previousRunId : null;
  }
  return runs;
}
