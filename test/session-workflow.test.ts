import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { invocations } from '../lab/pve/pve-node.mjs';
import { requestVerbUpdate, requestCommandUpdate, endSessionSignal, stateQuery } from '../workflows/messages.js';
import type { TranscriptEntry } from '../workflows/session-types.js';
import { startSessionEnv, uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';
import { expectInOrder } from './helpers/order.js';

/** qm reset/stop/start calls that started, from index `from` of the invocation log on. */
const mutatingCalls = (nodeRoot: string, from: number) =>
  invocations(nodeRoot).slice(from).filter((call) => call.started && ['reset', 'stop', 'start'].includes(call.argv[0] ?? ''));

let env: SessionEnv;

beforeAll(async () => {
  env = await startSessionEnv();
}, 120_000);

afterAll(async () => {
  await env?.teardown();
});

describe('breakglass session workflow', () => {
  it('when an operator requests a cycle, then forensics is recorded before the cycle, the pid changes and the devvm answers again', async () => {
    const queue = uniqueQueue('cycle');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    // The lab's own `qm start` that brought VM 102 up is in the log too: count from here.
    const callsBefore = invocations(env.pve.nodeRoot).length;
    const accepted = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'I/O stalled', operator: 'alice' }] });
    expect(accepted.approvalId).toBeNull();
    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait'));
    const types = entries.map((e) => e.type);
    expectInOrder(types, 'forensics', 'verb-result');
    const result = entries.find((e): e is Extract<TranscriptEntry, { type: 'verb-result' }> => e.type === 'verb-result')!.result;
    expect(result.ok).toBe(true);
    expect(result.newPid).not.toBe(result.oldPid);
    const wait = entries.find((e): e is Extract<TranscriptEntry, { type: 'devvm-wait' }> => e.type === 'devvm-wait')!;
    expect(wait.reachable).toBe(true);
    expect(mutatingCalls(env.pve.nodeRoot, callsBefore).map((c) => c.argv[0])).toEqual(['stop', 'start']);

    const command = await handle.executeUpdate(requestCommandUpdate, { args: [{ command: 'echo hello from the devvm', operator: 'alice' }] });
    const withCommand = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'command-result'));
    const commandEntry = withCommand.find((e): e is Extract<TranscriptEntry, { type: 'command-result' }> => e.type === 'command-result')!;
    expect(commandEntry.key).toBe(command.key);
    expect(commandEntry.result.stdout).toContain('hello from the devvm');

    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'fixed' });
    expect(await handle.result()).toBe('recovered');
  });
});

describe('an operator who asks for a mutation does not wait behind a devvm command', () => {
  it('when a devvm command hangs and an operator asks for a cycle, then the command is stopped and the cycle starts at once; an unsigned request waits its turn', async () => {
    const queue = uniqueQueue('preempt');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    const keyOf = (e: TranscriptEntry) => ('key' in e ? e.key : undefined);
    const busy = async () => (await handle.query(stateQuery)).running?.item.kind === 'command';
    const runningCommand = async () => {
      for (const until = Date.now() + 20_000; Date.now() < until; ) {
        if (await busy()) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('the command never ran');
    };

    // An unsigned cycle (sent straight through Temporal) does not stop anything.
    const short = await handle.executeUpdate(requestCommandUpdate, { args: [{ command: 'sleep 12', timeoutSeconds: 30, operator: 'alice' }] });
    await runningCommand();
    const raw = env.rawClient.workflow.getHandle(handle.workflowId);
    await raw.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'unsigned', operator: 'mallory' }] });
    // Admitted while the command still ran (else the half below would prove nothing).
    expect((await handle.query(stateQuery)).running?.item).toMatchObject({ kind: 'command', command: 'sleep 12' });
    const afterShort = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'verb-result'), 90_000);
    expect(afterShort.find((e) => keyOf(e) === short.key && e.type !== 'request')?.type).toBe('command-result');

    const hanging = await handle.executeUpdate(requestCommandUpdate, { args: [{ command: 'sleep 120', timeoutSeconds: 150, operator: 'alice' }] });
    await runningCommand();
    const asked = Date.now();
    const cycle = await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'devvm stalled', operator: 'alice' }] });
    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'forensics' && keyOf(e) === cycle.key), 60_000);
    const startedAfter = Date.now() - asked;
    const stopped = entries.find((e) => keyOf(e) === hanging.key && e.type === 'skipped') as Extract<TranscriptEntry, { type: 'skipped' }> | undefined;
    expect(stopped?.why).toMatch(/^stopped because alice asked for cycle: the devvm was asked to stop it/);
    expect(entries.some((e) => keyOf(e) === hanging.key && e.type === 'command-result')).toBe(false);
    // Forensics of the cycle was recorded long before the 120 s sleep could have ended.
    expect(startedAfter).toBeLessThan(60_000);
    console.log(`preempt: forensics for the cycle recorded ${startedAfter} ms after the operator asked, a 120 s command stopped`);
    await waitForTranscript(handle, (all) => all.filter((e) => e.type === 'verb-result').length === 2, 90_000);
    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'done' });
    expect(await handle.result()).toBe('recovered');
  }, 240_000);
});

describe('when the worker cannot write its data dir', () => {
  it('when the local forensics copy fails (full or broken data dir), then forensics is still recorded and the cycle still runs', async () => {
    const blocker = join(env.dir, 'not-a-directory');
    await writeFile(blocker, 'a file where the data dir should be');
    const queue = uniqueQueue('datadir');
    await env.startWorker(queue, { artifactsDir: join(blocker, 'forensics') });
    const handle = await env.startSession(queue);
    await handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: 'disk full on the worker', operator: 'alice' }] });
    const entries = await waitForTranscript(handle, (all) => all.some((e) => e.type === 'devvm-wait'));
    expect(entries.map((e) => e.type)).toEqual(expect.arrayContaining(['forensics', 'verb-result']));
    expect(entries.find((e): e is Extract<TranscriptEntry, { type: 'verb-result' }> => e.type === 'verb-result')!.result.ok).toBe(true);
    await handle.signal(endSessionSignal, { operator: 'alice' });
  });
});
