/**
 * The two incidents the agent exists for, end to end: scripted models behind the Messages API
 * stand-in, the real worker and workflow on a real Temporal server, the real dispatcher over the
 * simulated qm, and the lab's simulated devvm whose reachability follows the simulated VM.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { guestOomScenario, ioStallScenario } from '../lab/messages-api/scenarios.js';
import { invocations, setFault } from '../lab/pve/sim-vm.mjs';
import { approvalUpdate, endSessionSignal, operatorMessageUpdate } from '../workflows/messages.js';
import type { TranscriptEntry } from '../workflows/session-types.js';
import { startSessionEnv, uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';

type Entry<T extends TranscriptEntry['type']> = Extract<TranscriptEntry, { type: T }>;
const ofType = <T extends TranscriptEntry['type']>(entries: TranscriptEntry[], type: T) => entries.filter((e): e is Entry<T> => e.type === type);

const envs: SessionEnv[] = [];
afterAll(async () => {
  for (const env of envs) await env.teardown();
});

describe('agent scenarios end to end', () => {
  it('when the devvm I/O stalls, then the agent finds frozen block stats, cycles after forensics and the session ends recovered with the new pid', async () => {
    const env = await startSessionEnv({ agentScript: ioStallScenario, simDevvm: 'io-stall' });
    envs.push(env);
    setFault(env.pve.vmDir, 'io_stall', true);
    const queue = uniqueQueue('iostall');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: 'devvm ssh hangs, builds are stuck', operator: 'alice' }] });
    const entries = await waitForTranscript(handle, (all) => ofType(all, 'agent-message').some((m) => m.text.startsWith('Recovered')), 110_000);

    // The agent's devvm probe did not get an answer.
    expect(ofType(entries, 'command-failed')[0]).toMatchObject({ command: 'uptime', kind: 'timeout' });
    // The evidence: QMP answers, block I/O frozen.
    const requested = ofType(entries, 'forensics').find((e) => e.trigger === 'on request')!;
    expect(requested.result.summary).toMatchObject({ qmpAnswered: true, ioFrozen: true });
    // Forensics before the cycle, in the session and on the host.
    const types = entries.map((e) => e.type);
    const cycle = ofType(entries, 'verb-result')[0]!;
    expect(cycle.result.verb).toBe('cycle');
    expect(entries.findIndex((e) => e.type === 'forensics' && e.trigger === 'cycle')).toBeLessThan(types.indexOf('verb-result'));
    expect(cycle.result.newPid).not.toBeNull();
    expect(cycle.result.newPid).not.toBe(cycle.result.oldPid);
    expect(ofType(entries, 'devvm-wait')[0]!.reachable).toBe(true);
    const stops = invocations(env.pve.vmDir).filter((c) => c.started && c.argv[0] === 'stop');
    expect(stops).toHaveLength(1);
    expect(ofType(entries, 'agent-message').at(-1)!.text).toContain(`${cycle.result.oldPid} → ${cycle.result.newPid}`);

    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    expect(await handle.result()).toBe('recovered');
  }, 150_000);

  it('when the guest ran out of memory, then the agent finds the cause over SSH and its non-read-only fix runs only after approval', async () => {
    const env = await startSessionEnv({ agentScript: guestOomScenario, simDevvm: 'oom' });
    envs.push(env);
    const queue = uniqueQueue('oom');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: 'the database on the devvm is gone', operator: 'alice' }] });
    const waiting = await waitForTranscript(handle, (all) => ofType(all, 'approval-needed').length > 0, 60_000);
    const approval = ofType(waiting, 'approval-needed')[0]!;
    expect(approval.item).toMatchObject({ kind: 'command', command: 'sudo systemctl restart postgresql', requestedBy: { kind: 'agent' } });
    // The read-only diagnosis ran on its own and found the OOM kill.
    const diagnosis = ofType(waiting, 'command-result').find((e) => e.result.command.startsWith('journalctl'))!;
    expect(diagnosis.result.stdout).toMatch(/Out of memory: Killed process \d+ \(postgres\)/);
    // Nothing ran without the approval.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(ofType(await waitForTranscript(handle, () => true), 'command-result').some((e) => e.result.command.startsWith('sudo'))).toBe(false);

    await handle.executeUpdate(approvalUpdate, { args: [{ approvalId: approval.approvalId, decision: 'approve', operator: 'bob', reason: 'go' }] });
    const done = await waitForTranscript(handle, (all) => ofType(all, 'agent-message').some((m) => m.text.startsWith('Fixed at guest level')), 60_000);
    const fix = ofType(done, 'command-result').find((e) => e.result.command.startsWith('sudo'))!;
    expect(fix.result.exitCode).toBe(0);
    const types = done.map((e) => e.type);
    expect(types.indexOf('approval')).toBeLessThan(done.indexOf(fix));
    // A guest-level fix: no PVE mutation at all.
    expect(invocations(env.pve.vmDir).filter((c) => c.started && ['reset', 'stop', 'start'].includes(c.argv[0] ?? ''))).toHaveLength(0);
    await handle.signal(endSessionSignal, { operator: 'alice' });
  }, 120_000);
});
