/**
 * The two incidents the agent exists for, end to end: scripted models behind the Messages API
 * stand-in, the real worker and workflow on a real Temporal server, the real dispatcher over the
 * lab's qm, and the devvm as the real Debian guest booted in VM 102's real QEMU: its disk really
 * freezes (io-stall) and its kernel really OOM-kills a runaway service (oom).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { guestOomScenario, ioStallScenario } from '../lab/messages-api/scenarios.js';
import { readVm } from '../lab/pve/lab-vm.mjs';
import { invocations } from '../lab/pve/pve-node.mjs';
import { OOM_UNIT } from '../lab/scenarios.js';
import { runSshCommand } from '../activities/ssh/connection.js';
import { approvalUpdate, endSessionSignal, operatorMessageUpdate } from '../workflows/messages.js';
import type { TranscriptEntry } from '../workflows/session-types.js';
import { hostLog } from './helpers/fault-tools.js';
import { startSessionEnv, uniqueQueue, waitForTranscript, type SessionEnv } from './helpers/session-env.js';
import { expectOrdered } from './helpers/order.js';

type Entry<T extends TranscriptEntry['type']> = Extract<TranscriptEntry, { type: T }>;
const ofType = <T extends TranscriptEntry['type']>(entries: TranscriptEntry[], type: T) => entries.filter((e): e is Entry<T> => e.type === type);

/** The guest-level fix for the oom scenario: restart the unit systemd reports failed. */
const OOM_FIX = 'sudo systemctl restart code-indexer';

const envs: SessionEnv[] = [];
afterAll(async () => {
  for (const env of envs) await env.teardown();
});

describe('agent scenarios end to end', () => {
  it('when the devvm I/O stalls, then the agent finds frozen block stats, cycles after forensics and the session ends recovered with the new pid', async () => {
    // The guest boots, a writer keeps its disk busy, the fix is staged as pending config, and
    // the disk's storage freezes under the writes: SSH logins to the devvm then hang for real.
    const env = await startSessionEnv({ agentScript: ioStallScenario, guest: 'io-stall' });
    envs.push(env);
    const stalled = readVm(env.pve.nodeRoot);
    expect(stalled.faults).toContain('io_stall');
    expect(Object.keys(stalled.pending).length).toBeGreaterThan(0);
    // The lab's own `qm start` that brought VM 102 up is in the invocation log: count from here.
    const callsBefore = invocations(env.pve.nodeRoot).length;
    const queue = uniqueQueue('iostall');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: 'devvm ssh hangs, builds are stuck', operator: 'alice' }] });
    // ~75 s here under TCG: the hung probe (20 s), three forensics captures, a `qm stop` that waits
    // out QEMU's frozen disk, and the new guest's boot.
    const entries = await waitForTranscript(handle, (all) => ofType(all, 'agent-message').some((m) => m.text.startsWith('Recovered')), 150_000);

    // The agent's devvm probe did not get an answer.
    expect(ofType(entries, 'command-failed')[0]).toMatchObject({ command: 'uptime', kind: 'timeout' });
    // The evidence: QMP answers, block I/O frozen.
    const requested = ofType(entries, 'forensics').find((e) => e.trigger === 'on request')!;
    expect(requested.result.summary).toMatchObject({ qmpAnswered: true, ioFrozen: true });
    // Forensics before the cycle, in the session and on the host.
    const types = entries.map((e) => e.type);
    const cycle = ofType(entries, 'verb-result')[0]!;
    expect(cycle.result.verb).toBe('cycle');
    const cycleForensics = entries.findIndex((e) => e.type === 'forensics' && e.trigger === 'cycle');
    expectOrdered({ 'forensics before the cycle': cycleForensics, 'verb-result': types.indexOf('verb-result') });
    // On the host: the workflow's capture and the dispatcher's own (under the cycle) before `qm stop`.
    const log = hostLog(env.pve);
    const at = (pattern: RegExp) => log.findIndex((line) => pattern.test(line));
    const workflowCapture = at(/event=forensics-done verb=forensics /);
    const hostCapture = at(/event=forensics-done verb=cycle /);
    const hostStop = at(/event=verb-step verb=cycle .*step="qm stop"/);
    expect(workflowCapture).toBeGreaterThan(-1);
    expect(hostCapture).toBeGreaterThan(-1);
    expect(hostStop).toBeGreaterThan(Math.max(workflowCapture, hostCapture));
    expect(cycle.result.newPid).not.toBeNull();
    expect(cycle.result.newPid).not.toBe(cycle.result.oldPid);
    expect(ofType(entries, 'devvm-wait')[0]!.reachable).toBe(true);
    const stops = invocations(env.pve.nodeRoot).slice(callsBefore).filter((c) => c.started && c.argv[0] === 'stop');
    expect(stops).toHaveLength(1);
    expect(ofType(entries, 'agent-message').at(-1)!.text).toContain(`${cycle.result.oldPid} → ${cycle.result.newPid}`);
    // The new QEMU runs the staged fix, and the guest in it answers SSH.
    const after = readVm(env.pve.nodeRoot);
    expect(after.pid).toBe(cycle.result.newPid);
    expect(after.pending).toEqual({});
    expect(after.config.scsihw).toBe('virtio-scsi-single');
    const uptime = await runSshCommand(env.activityDeps.devvm, { command: 'uptime', deadlineMs: 15_000 });
    expect(uptime.exitCode).toBe(0);

    await handle.signal(endSessionSignal, { operator: 'alice', reason: 'recovered' });
    expect(await handle.result()).toBe('recovered');
  }, 240_000);

  it('when the guest ran out of memory, then the agent finds the cause over SSH and its non-read-only fix runs only after approval', async () => {
    // The guest boots and its kernel OOM-kills the runaway code-indexer; systemd leaves the unit failed.
    const env = await startSessionEnv({ agentScript: guestOomScenario, guest: 'oom' });
    envs.push(env);
    const callsBefore = invocations(env.pve.nodeRoot).length;
    const queue = uniqueQueue('oom');
    await env.startWorker(queue);
    const handle = await env.startSession(queue);
    await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: 'the code indexer on the devvm is gone', operator: 'alice' }] });
    const waiting = await waitForTranscript(handle, (all) => ofType(all, 'approval-needed').length > 0, 60_000);
    const approval = ofType(waiting, 'approval-needed')[0]!;
    expect(approval.item).toMatchObject({ kind: 'command', command: OOM_FIX, requestedBy: { kind: 'agent' } });
    // The read-only diagnosis ran on its own and found the OOM kill.
    const diagnosis = ofType(waiting, 'command-result').find((e) => e.result.command.startsWith('journalctl'))!;
    expect(diagnosis.result.stdout).toMatch(/Out of memory: Killed process \d+ \(code-indexer\)/);
    const failedUnits = ofType(waiting, 'command-result').find((e) => e.result.command === 'systemctl --failed')!;
    expect(failedUnits.result.stdout).toContain(OOM_UNIT);
    // Nothing ran without the approval.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(ofType(await waitForTranscript(handle, () => true), 'command-result').some((e) => e.result.command.startsWith('sudo'))).toBe(false);

    await handle.executeUpdate(approvalUpdate, { args: [{ approvalId: approval.approvalId, decision: 'approve', operator: 'bob', reason: 'go' }] });
    const done = await waitForTranscript(handle, (all) => ofType(all, 'agent-message').some((m) => m.text.startsWith('Fixed at guest level')), 60_000);
    const fix = ofType(done, 'command-result').find((e) => e.result.command.startsWith('sudo'))!;
    expect(fix.result.command).toBe(OOM_FIX);
    expect(fix.result.exitCode).toBe(0);
    // The unit really runs again in the guest.
    const unit = await runSshCommand(env.activityDeps.devvm, { command: `systemctl is-active ${OOM_UNIT}`, deadlineMs: 15_000 });
    expect(unit.stdout.text.trim()).toBe('active');
    const types = done.map((e) => e.type);
    expectOrdered({ approval: types.indexOf('approval'), 'the fix': done.indexOf(fix) });
    // A guest-level fix: no PVE mutation at all.
    expect(invocations(env.pve.nodeRoot).slice(callsBefore).filter((c) => c.started && ['reset', 'stop', 'start'].includes(c.argv[0] ?? ''))).toHaveLength(0);
    await handle.signal(endSessionSignal, { operator: 'alice' });
  }, 180_000);
});
