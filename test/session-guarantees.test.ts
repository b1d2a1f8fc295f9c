/**
 * At most once for the agent too: an agent-driven cycle, then `temporal workflow reset` (the
 * real CLI) to points before, during and after it. The Messages API stand-in gives every tool
 * call a fresh tool-use id on every model call, so a reset that calls the model again gets new
 * ids — and the host must still have cycled exactly once. A reset after which the model asks
 * for another verb in the same place is refused by the host as a conflict: nothing runs.
 * And the session's other promises: a worker shutdown makes up no verdict, a transcript page
 * stays under its byte cap.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readConversation } from '../lab/messages-api/scenarios.js';
import type { Script } from '../lab/messages-api/server.js';
import { approvalUpdate, endSessionSignal, operatorMessageUpdate, requestCommandUpdate, requestVerbUpdate, setPolicyUpdate, transcriptQuery } from '../workflows/messages.js';
import type { TranscriptEntry } from '../workflows/session-types.js';
import { cliOk, entriesOf, eventually, invocationCount, mutatingVerbsRun, runTranscript, sleep } from './helpers/fault-tools.js';
import { startSessionEnv, stateOf, uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';

/** What the scripted model asks for first: the test switches it to see a conflict. */
let firstAsk: 'pve_cycle' | 'pve_stop' = 'pve_cycle';

/** A model that asks for one mutating verb, waits for its result, and then reports. */
const oneVerb: Script = (request) => {
  const seen = readConversation(request);
  const call = seen.calls.find((c) => c.name === 'pve_cycle' || c.name === 'pve_stop');
  if (!call) return { text: 'The devvm is wedged: acting on VM 102.', toolCalls: [{ name: firstAsk, input: { reason: 'devvm wedged (agent)' } }] };
  if (!call.result || /reported in a later message/i.test(call.result.text)) return { text: 'Waiting for the result.' };
  return { text: `Done: ${call.name} answered.` };
};

let env: SessionEnv;

beforeAll(async () => {
  env = await startSessionEnv({ agentScript: oneVerb });
}, 120_000);

afterAll(async () => {
  await env?.teardown();
});

/** Waits for a run other than `previousRunId` to exist and go quiet (nothing queued, running or thinking). */
async function settledRun(workflowId: string, previousRunId: string): Promise<{ runId: string; entries: TranscriptEntry[] }> {
  return eventually(
    async () => {
      const handle = env.client.workflow.getHandle(workflowId);
      const { runId } = await handle.describe();
      if (runId === previousRunId) return undefined;
      const state = await stateOf(handle);
      if (state.running || state.queue.length > 0 || state.agent.thinking) return undefined;
      await sleep(1_500);
      const again = await stateOf(handle);
      if (again.running || again.queue.length > 0 || again.agent.thinking || again.transcript.nextSeq !== state.transcript.nextSeq) return undefined;
      return { runId, entries: await runTranscript(env.client, workflowId, runId) };
    },
    90_000,
    'the reset run settles',
    300,
  );
}

/** The WorkflowTaskCompleted event that scheduled the first activity of `type` in the current run. */
async function taskThatScheduled(workflowId: string, type: string): Promise<number> {
  const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
  const scheduled = (history.events ?? []).find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type);
  const id = scheduled?.activityTaskScheduledEventAttributes?.workflowTaskCompletedEventId;
  if (!id) throw new Error(`no ${type} activity in the history`);
  return Number(id);
}

const toolCallIds = (entries: TranscriptEntry[]) => entriesOf(entries, 'agent-message').flatMap((m) => m.toolCalls.map((c) => c.id));
const toolCallKeys = (entries: TranscriptEntry[]) => entriesOf(entries, 'agent-message').flatMap((m) => m.toolCalls.map((c) => c.key));

describe('an agent-driven cycle under `temporal workflow reset`', () => {
  it('when the session is reset before, during and after the cycle, then the host cycled once, and every run names the same host request', async () => {
    firstAsk = 'pve_cycle';
    const queue = uniqueQueue('agent-reset');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    const callsBefore = invocationCount(env.pve);
    const modelCallsBefore = env.messagesApi!.requests.length;
    await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: 'devvm is wedged, please fix it', operator: 'alice' }] });
    const first = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait') && entriesOf(all, 'agent-message').length >= 2, 90_000);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    // The key comes from the turn and the call's place, not from the tool-use id.
    expect(toolCallKeys(first)).toEqual(['t-1-0']);
    expect(entriesOf(first, 'request').map((e) => e.item.key)).toEqual(['t-1-0']);
    expect(entriesOf(first, 'verb-result')[0]!.result).toMatchObject({ verb: 'cycle', ok: true, replayed: false });
    const firstIds = toolCallIds(first);
    const firstRunId = (await handle.describe()).runId;

    // During: back to the task that scheduled the cycle; the same activity is scheduled again.
    const during = await taskThatScheduled(handle.workflowId, 'pveMutation');
    await cliOk(env, 'temporal', ['workflow', 'reset', '--workflow-id', handle.workflowId, '--event-id', String(during), '--reason', 'test: reset during the agent cycle']);
    const second = await settledRun(handle.workflowId, firstRunId);
    expect(entriesOf(second.entries, 'verb-result')[0]!.result).toMatchObject({ verb: 'cycle', replayed: true });
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);

    // Before: back to the first task; the operator's message is re-applied, the agent turn runs
    // again, and the model answers with new tool-use ids for the same call.
    await cliOk(env, 'temporal', ['workflow', 'reset', '--workflow-id', handle.workflowId, '--type', 'FirstWorkflowTask', '--reason', 'test: reset before the agent cycle']);
    const third = await settledRun(handle.workflowId, second.runId);
    expect(env.messagesApi!.requests.length).toBeGreaterThan(modelCallsBefore + 2);
    const thirdIds = toolCallIds(third.entries);
    expect(thirdIds[0]).toBeDefined();
    expect(thirdIds[0]).not.toBe(firstIds[0]);
    expect(toolCallKeys(third.entries)).toEqual(['t-1-0']);
    expect(entriesOf(third.entries, 'verb-result')[0]!.result).toMatchObject({ verb: 'cycle', replayed: true });
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);

    // After: back to the last task; nothing is left to run.
    await cliOk(env, 'temporal', ['workflow', 'reset', '--workflow-id', handle.workflowId, '--type', 'LastWorkflowTask', '--reason', 'test: reset after the agent cycle']);
    await settledRun(handle.workflowId, third.runId);
    await sleep(1_000);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    await env.client.workflow.getHandle(handle.workflowId).signal(endSessionSignal, { operator: 'alice' });
  }, 240_000);

  it('when after a reset the model asks for another verb in the same place, then the host refuses it as a conflict and nothing runs', async () => {
    firstAsk = 'pve_cycle';
    const queue = uniqueQueue('agent-conflict');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    const callsBefore = invocationCount(env.pve);
    await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: 'devvm is wedged', operator: 'alice' }] });
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait') && entriesOf(all, 'agent-message').length >= 2, 90_000);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    const firstRunId = (await handle.describe()).runId;

    firstAsk = 'pve_stop';
    await cliOk(env, 'temporal', ['workflow', 'reset', '--workflow-id', handle.workflowId, '--type', 'FirstWorkflowTask', '--reason', 'test: the model changes its mind']);
    const second = await settledRun(handle.workflowId, firstRunId);
    expect(entriesOf(second.entries, 'request').map((e) => [e.item.key, e.item.kind === 'verb' ? e.item.verb : e.item.command])).toEqual([['t-1-0', 'stop']]);
    expect(entriesOf(second.entries, 'verb-failed')).toMatchObject([{ key: 't-1-0', verb: 'stop', kind: 'conflict', message: expect.stringContaining("already used for 'cycle'") }]);
    expect(entriesOf(second.entries, 'verb-result')).toEqual([]);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    await env.client.workflow.getHandle(handle.workflowId).signal(endSessionSignal, { operator: 'alice' });
  }, 240_000);
});

describe('a worker shut down during the wait for the devvm', () => {
  it('when the worker stops mid-wait, then no "not answering" verdict is made up: the next worker waits again and records what it finds', async () => {
    const queue = uniqueQueue('shutdown-wait');
    // This worker cannot reach the devvm (a closed port), so its wait keeps trying until it is stopped.
    const blind = await env.startWorker(queue, { devvm: { ...env.activityDeps.devvm, port: 1 } });
    const handle = await env.startSession(queue);
    await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'reset', reason: 'shutdown during the wait', operator: 'alice', requestKey: 'sdw' }] });
    await waitForTranscript(handle, (all) => all.some((e) => e.type === 'verb-result'), 60_000);
    await sleep(1_500); // the wait has begun and failed a probe or two
    await blind.stop();
    await env.startWorker(queue);
    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait' || e.type === 'skipped'), 60_000);
    expect(entriesOf(entries, 'devvm-wait')).toMatchObject([{ key: 'sdw', reachable: true }]);
    expect((await stateOf(handle)).devvmReachable).toBe(true);
    await handle.signal(endSessionSignal, { operator: 'alice' });
    expect(await handle.result()).toBe('recovered');
  }, 120_000);
});

describe('transcript pages', () => {
  it('when entries add up past 1 MiB, then a page stops at the byte cap, says more follow, and the pages together hold every entry once', async () => {
    const queue = uniqueQueue('page-bytes');
    await env.startWorker(queue);
    const handle = await env.startSession(queue, { policy: { devvmCommands: 'autonomous' } });
    // Each result keeps a capped head and tail of its output (16 KiB): 72 of them pass 1 MiB.
    const count = 72;
    for (let i = 0; i < count; i++) {
      await handle.executeUpdate(requestCommandUpdate, { args: [{ command: `head -c 40000 /dev/zero | tr '\\0' x`, operator: 'alice', requestKey: `big${i}` }] });
    }
    const all = await waitForTranscript(handle, (entries) => entriesOf(entries, 'command-result').length === count, 120_000);
    const total = all.reduce((sum, entry) => sum + JSON.stringify(entry).length, 0);
    expect(total).toBeGreaterThan(1024 * 1024);

    const first = await handle.query(transcriptQuery, { limit: 200 });
    expect(first.more).toBe(true);
    expect(first.entries.length).toBeLessThan(all.length);
    expect(JSON.stringify(first.entries).length).toBeLessThanOrEqual(1024 * 1024 + 1024);
    const pages = [first];
    while (pages.at(-1)!.more) pages.push(await handle.query(transcriptQuery, { cursor: pages.at(-1)!.nextCursor!, limit: 200 }));
    const seqs = pages.flatMap((page) => page.entries.map((entry) => entry.seq));
    expect(seqs).toEqual(all.map((entry) => entry.seq));
    await handle.signal(endSessionSignal, { operator: 'alice' });
  }, 120_000);
});

describe('cancellation', () => {
  it('when the session is cancelled, then the "session ended" notification is really sent (not scheduled in the cancelled scope and dropped)', async () => {
    const posts: string[] = [];
    const hook = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString()));
      request.on('end', () => {
        posts.push(body);
        response.end('ok');
      });
    });
    await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
    try {
      const queue = uniqueQueue('cancel-notify');
      await env.startWorker(queue, { notifier: { webhookUrl: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/`, format: 'slack' } });
      const handle = await env.startSession(queue, { notify: true });
      await eventually(() => (posts.some((p) => p.includes('opened')) ? true : undefined), 15_000, 'the opening notification');
      await handle.cancel();
      await handle.result().catch(() => undefined);
      const ended = await eventually(() => posts.find((p) => /cancelled/i.test(p)), 15_000, 'the cancelled notification');
      expect(ended).toContain(handle.workflowId);
    } finally {
      hook.close();
    }
  }, 60_000);
});

describe('approvals expire', () => {
  it('when an approval is not given in time, then it lapses (recorded, not run) and a late approval is refused', async () => {
    const queue = uniqueQueue('approval-expiry');
    await env.startWorker(queue);
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'two-person' }, approvalExpiryMinutes: 0.05 });
    const callsBefore = invocationCount(env.pve);
    const accepted = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'needs a second look', operator: 'alice', requestKey: 'late' }] });
    expect(accepted.approvalId).toBe('a-late');
    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'skipped'), 30_000);
    expect(entriesOf(entries, 'skipped')).toMatchObject([{ key: 'late', what: 'cycle', why: expect.stringContaining('approval a-late expired: not approved within 0.1 min') }]);
    expect((await stateOf(handle)).pendingApprovals).toEqual([]);
    await expect(handle.executeUpdate(approvalUpdate, { args: [{ approvalId: 'a-late', decision: 'approve', operator: 'bob' }] })).rejects.toMatchObject({
      cause: { message: expect.stringContaining('"a-late" expired unapproved; the request must be made again') },
    });
    await sleep(1_000);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual([]);
    // In time, an approval still works.
    const again = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'status', reason: 'quick', operator: 'alice', requestKey: 'quick' }] });
    expect(again.approvalId).toBeNull();
    await handle.signal(endSessionSignal, { operator: 'alice' });
  }, 60_000);
});

describe('two-person means two people for fewer eyes too', () => {
  it('when one operator loosens a two-person policy, then it is only proposed (the cycle still waits for a second operator) until another operator sets the same; tightening needs one', async () => {
    const queue = uniqueQueue('loosen');
    await env.startWorker(queue);
    const handle = await env.startSession(queue, { policy: { mutatingVerbs: 'two-person' }, agent: { enabled: false, reason: 'manual' } });
    const loosen = (operator: string) => handle.executeUpdate(setPolicyUpdate, { args: [{ operator, policy: { mutatingVerbs: 'autonomous', devvmCommands: 'autonomous' } }] });

    expect(await loosen('alice')).toMatchObject({ mutatingVerbs: 'two-person', devvmCommands: 'allowlist' });
    // Alone, alice still cannot cycle: the request waits for a second operator.
    const callsBefore = invocationCount(env.pve);
    const asked = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'alone after loosening', operator: 'alice', requestKey: 'alone' }] });
    expect(asked.approvalId).not.toBeNull();
    // Repeating it herself changes nothing and records nothing new.
    expect(await loosen('alice')).toMatchObject({ mutatingVerbs: 'two-person' });
    let entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'approval-needed'));
    expect(entriesOf(entries, 'policy-proposed')).toEqual([expect.objectContaining({ operator: 'alice', policy: expect.objectContaining({ mutatingVerbs: 'autonomous' }) })]);
    expect(entriesOf(entries, 'policy-changed')).toEqual([]);
    expect((await stateOf(handle)).policy.mutatingVerbs).toBe('two-person');

    // Bob agrees to the same change: now it is in force, and the record says who proposed it.
    expect(await loosen('bob')).toMatchObject({ mutatingVerbs: 'autonomous', devvmCommands: 'autonomous' });
    // Tightening again takes one operator.
    expect(await handle.executeUpdate(setPolicyUpdate, { args: [{ operator: 'alice', policy: { mutatingVerbs: 'two-person' } }] })).toMatchObject({ mutatingVerbs: 'two-person' });
    entries = await waitForTranscript(handle, (all) => entriesOf(all, 'policy-changed').length === 2);
    expect(entriesOf(entries, 'policy-changed')).toEqual([
      expect.objectContaining({ operator: 'bob', proposedBy: 'alice', policy: expect.objectContaining({ mutatingVerbs: 'autonomous' }) }),
      expect.objectContaining({ operator: 'alice', policy: expect.objectContaining({ mutatingVerbs: 'two-person' }) }),
    ]);
    expect(entriesOf(entries, 'policy-changed')[1]).not.toHaveProperty('proposedBy');
    // The cycle asked for while it was only proposed never ran on its own.
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual([]);
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'done' });
    await handle.result();
  }, 60_000);
});
