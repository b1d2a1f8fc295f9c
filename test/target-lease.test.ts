/**
 * Two sessions on one wedged VM see each other instead of racing: the VM's mutation lease (a
 * workflow whose id names the PVE host and the VM) lets one session's verb run and refuses the
 * other's with the holder's name, until the holder lets go, ends, or an operator takes over
 * explicitly (recorded in both sessions). Proven from the PVE host's own log and qm's calls.
 */
import type { WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearFaults, setFault } from '../lab/pve/lab-vm.mjs';
import { leaseWorkflowId } from '../activities/lease.js';
import { endSessionSignal, requestVerbUpdate } from '../workflows/messages.js';
import { hostRequestId, type breakglassSession } from '../workflows/session.js';
import type { TranscriptEntry } from '../workflows/session-types.js';
import { leaseHolderQuery } from '../workflows/target-lease.js';
import { entriesOf, eventually, hostLog, invocationCount, mutatingVerbsRun, onHostLogLine, re } from './helpers/fault-tools.js';
import { startSessionEnv, uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';

let env: SessionEnv;
let queue: string;

beforeAll(async () => {
  env = await startSessionEnv();
  queue = uniqueQueue('lease');
  await env.startWorker(queue);
}, 120_000);

afterAll(async () => {
  await env?.teardown();
});

const HOLD = { leaseHoldMinutes: 10 };
const leaseHandle = () => env.client.workflow.getHandle(leaseWorkflowId(env.pve.target('', 'breakglass'), 102));

/** A verb is finished when refused or failed, or — when it ran — once the devvm's answer is in (the lease is settled right after). */
const finished = (key: string) => (entries: TranscriptEntry[]) => entries.some((e) => 'key' in e && e.key === key && ['devvm-wait', 'verb-failed', 'skipped', 'outcome-unknown'].includes(e.type));
const holderNow = () => leaseHandle().query(leaseHolderQuery);
const skippedFor = (entries: TranscriptEntry[], key: string) => entriesOf(entries, 'skipped').find((e) => e.key === key);
/** Every host log line that names a request of this session. */
const hostLinesOf = (workflowId: string) => hostLog(env.pve).filter((line) => line.includes(`request=${hostRequestId(workflowId, '', '')}`));

type Session = WorkflowHandle<typeof breakglassSession>;

async function cycle(handle: Session, key: string, extra: { takeOver?: boolean } = {}) {
  return handle.executeUpdate(requestVerbUpdate, { args: [{ verb: 'cycle', reason: `lease test ${key}`, operator: 'alice', requestKey: key, ...extra }] });
}

async function endSession(handle: Session) {
  await handle.signal(endSessionSignal, { operator: 'alice', reason: 'lease test done' });
  await handle.result();
}

describe("the VM's mutation lease", () => {
  it('when a second session asks for a cycle while the first holds the VM, then it is refused naming the holder and nothing reaches the host; a take-over runs it, recorded in both; the first is then refused', async () => {
    await clearFaults(env.pve.nodeRoot);
    const first = await env.startSession(queue, HOLD);
    const second = await env.startSession(queue, { ...HOLD, operator: 'bob' });
    const callsBefore = invocationCount(env.pve);

    await cycle(first, 'c1');
    const firstDone = await waitForTranscript(first, finished('c1'), 120_000);
    expect(entriesOf(firstDone, 'verb-result').find((e) => e.key === 'c1')?.result.ok).toBe(true);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    await eventually(async () => ((await holderNow())?.state === 'holding' ? true : undefined), 15_000, 'the lease is held after the cycle');
    expect(await holderNow()).toMatchObject({ sessionId: first.workflowId, state: 'holding', verb: 'cycle' });

    // The second session's cycle: refused before forensics, with the holder named.
    const callsBeforeSecond = invocationCount(env.pve);
    await cycle(second, 'c2');
    const refused = skippedFor(await waitForTranscript(second, finished('c2')), 'c2');
    expect(refused?.lease).toMatchObject({ sessionId: first.workflowId, operator: 'alice', state: 'holding' });
    expect(refused?.why).toContain(`session ${first.workflowId}`);
    expect(refused?.why).toMatch(/take over/);
    expect(hostLinesOf(second.workflowId)).toEqual([]);
    expect(invocationCount(env.pve)).toBe(callsBeforeSecond);

    // An explicit take-over: forensics, then the cycle, for the second session.
    await cycle(second, 'c3', { takeOver: true });
    const secondDone = await waitForTranscript(second, finished('c3'), 120_000);
    expect(entriesOf(secondDone, 'verb-result').find((e) => e.key === 'c3')?.result.ok).toBe(true);
    expect(entriesOf(secondDone, 'lease')).toEqual([expect.objectContaining({ event: 'took-over', sessionId: first.workflowId, operator: 'alice', reason: 'lease test c3' })]);
    expect(hostLinesOf(second.workflowId).some((line) => line.includes(`request=${hostRequestId(second.workflowId, 'c3', '.f')}`))).toBe(true);
    const told = await waitForTranscript(first, (entries) => entriesOf(entries, 'lease').length > 0);
    expect(entriesOf(told, 'lease')).toEqual([expect.objectContaining({ event: 'taken-over', sessionId: second.workflowId, verb: 'cycle' })]);

    // The first session is now the one refused.
    const callsBeforeThird = invocationCount(env.pve);
    await cycle(first, 'c4');
    const refusedFirst = skippedFor(await waitForTranscript(first, finished('c4')), 'c4');
    expect(refusedFirst?.lease).toMatchObject({ sessionId: second.workflowId });
    expect(invocationCount(env.pve)).toBe(callsBeforeThird);

    // Ending the holder frees the VM at once: the first session's next cycle runs.
    await endSession(second);
    await eventually(async () => ((await leaseHandle().describe()).status.name === 'COMPLETED' ? true : undefined), 15_000, 'the lease workflow ends once released');
    await cycle(first, 'c5');
    const freed = await waitForTranscript(first, finished('c5'), 120_000);
    expect(entriesOf(freed, 'verb-result').find((e) => e.key === 'c5')?.result.ok).toBe(true);
    await endSession(first);
  }, 300_000);

  it('when two sessions ask for a cycle at the same moment, then exactly one cycle reaches the host', async () => {
    await clearFaults(env.pve.nodeRoot);
    const sessions = await Promise.all([env.startSession(queue, HOLD), env.startSession(queue, { ...HOLD, operator: 'bob' })]);
    const callsBefore = invocationCount(env.pve);
    await Promise.all(sessions.map((handle) => cycle(handle, 'race')));
    const records = await Promise.all(sessions.map((handle) => waitForTranscript(handle, finished('race'), 120_000)));
    const ran = records.filter((entries) => entriesOf(entries, 'verb-result').some((e) => e.key === 'race'));
    const refused = records.filter((entries) => skippedFor(entries, 'race')?.lease !== undefined);
    expect(ran).toHaveLength(1);
    expect(refused).toHaveLength(1);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    for (const handle of sessions) await endSession(handle);
  }, 300_000);

  it('when a take-over is asked while the holder is running its verb, then it is refused (it waits for that verb to finish) and the host runs only the holder’s', async () => {
    await clearFaults(env.pve.nodeRoot);
    await setFault(env.pve.nodeRoot, 'slow_verbs');
    try {
      const holder = await env.startSession(queue, HOLD);
      const other = await env.startSession(queue, { ...HOLD, operator: 'bob' });
      const callsBefore = invocationCount(env.pve);
      const running = onHostLogLine(env.pve, new RegExp(`event=verb-step verb=cycle request=${re(hostRequestId(holder.workflowId, 'slow', '.m'))} step="qm stop"`), () => undefined);
      await cycle(holder, 'slow');
      await running.matched;
      await cycle(other, 'grab', { takeOver: true });
      const refused = skippedFor(await waitForTranscript(other, finished('grab')), 'grab');
      expect(refused?.lease).toMatchObject({ sessionId: holder.workflowId, state: 'in-flight' });
      expect(refused?.why).toMatch(/take-over waits until that verb has finished/);
      await waitForTranscript(holder, finished('slow'), 120_000);
      expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
      expect(hostLinesOf(other.workflowId)).toEqual([]);
      for (const handle of [holder, other]) await endSession(handle);
    } finally {
      await clearFaults(env.pve.nodeRoot);
    }
  }, 300_000);

  it('when the holder is terminated without letting go, then the next session’s verb runs without a take-over', async () => {
    await clearFaults(env.pve.nodeRoot);
    const gone = await env.startSession(queue, HOLD);
    await cycle(gone, 'held');
    await waitForTranscript(gone, finished('held'), 120_000);
    await eventually(async () => ((await holderNow())?.state === 'holding' ? true : undefined), 15_000, 'the lease is held after the cycle');
    expect(await holderNow()).toMatchObject({ sessionId: gone.workflowId, state: 'holding' });
    await gone.terminate('lease test: a session that never let go');
    const next = await env.startSession(queue, { ...HOLD, operator: 'bob' });
    const callsBefore = invocationCount(env.pve);
    await cycle(next, 'after');
    const done = await waitForTranscript(next, finished('after'), 120_000);
    expect(entriesOf(done, 'verb-result').find((e) => e.key === 'after')?.result.ok).toBe(true);
    expect(entriesOf(done, 'lease')).toEqual([]);
    expect(mutatingVerbsRun(env.pve, callsBefore)).toEqual(['stop', 'start']);
    await endSession(next);
  }, 300_000);
});
