// The dispatcher against what a real Proxmox VE 8/9 host does where our first simulation was
// wrong (issue: "The dispatcher as a real Proxmox VE host answers it"), one test per point,
// through the real sshd and the real dispatcher, over the lab's qm stand-in and a real QEMU:
// HA-managed VMs, a shutdown holding the config lock, a zombie QEMU main thread with a thread in
// real D state (cgroup-v1 freezer) left in the VM's real cgroup-v2 scope, QMP silent while
// `qm status` says running, the backup lock, qm's task worker outliving `timeout`, per-thread
// forensics, stopped-but-alive, and pending config applied by a stop whose start then fails.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pveForensics, pveMutation, pveStatus } from '../activities/pve/verbs.js';
import { isSshError, type SshError } from '../activities/ssh/errors.js';
import { freezerAvailable, scopePids, threadsOf } from '../lab/pve/cgroups.mjs';
import { lockHeld, readVm } from '../lab/pve/lab-vm.mjs';
import { isAlive, paths, updateLabState } from '../lab/pve/pve-node.mjs';
import type { MutationResult } from '../workflows/pve-types.js';
import { startPveFixture, waitFor, type PveFixture } from './helpers/fixtures.js';

const DEADLINE = 120_000;
const UPID = /^UPID:lab:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:(\w+):102:root@pam:$/;

async function failure(promise: Promise<unknown>): Promise<SshError & { detail: MutationResult }> {
  try {
    await promise;
  } catch (error) {
    if (isSshError(error)) return error as SshError & { detail: MutationResult };
    throw error;
  }
  throw new Error('expected the verb to fail, but it succeeded');
}

/** The qm calls (argv joined) the dispatcher made since the mark, HA agent's own calls marked. */
function qmSince(fx: PveFixture, mark: number): string[] {
  return fx
    .qmCalls()
    .slice(mark)
    .filter((call) => call.started)
    .map((call) => `${(call as { ha?: boolean }).ha ? 'ha: ' : ''}${call.argv.join(' ')}`);
}

async function freshVm(fx: PveFixture, faults: string[] = [], pending: Record<string, string> = {}): Promise<number> {
  await fx.resetVm({ faults, pending });
  return fx.qmCalls().length;
}

const needsFreezer = freezerAvailable() ? it.sequential : it.skip;

describe('a Proxmox host as it really answers', { concurrent: true }, () => {
  describe('HA-managed VM, shutdown lock, backup lock, QMP silent', () => {
    let fx: PveFixture;
    beforeAll(async () => {
      fx = await startPveFixture('pve-real-a', { config: { ha_wait: 6, qmp_timeout: 1 } });
    });
    afterAll(async () => {
      await fx?.stop();
    });

    it.sequential('1. an HA-managed stop and start are followed to the state the HA manager reaches, and reported as such', async () => {
      const mark = await freshVm(fx, ['ha_managed']);
      const old = readVm(fx.host.nodeRoot).pid!;
      const stop = await pveMutation(fx.target, 'stop', { requestId: 'real-ha-stop-1', deadlineMs: DEADLINE });
      expect(stop.steps[0]!.output).toContain('Requesting HA stop for VM 102');
      expect(stop).toMatchObject({ ok: true, qemuSurvived: false, ha: { managed: true, requested: 'stopped', observed: 'stopped' }, before: { ha: { managed: true } } });
      expect(stop.checks).toEqual(expect.arrayContaining([expect.objectContaining({ check: 'HA manager brought the VM to stopped', ok: true })]));
      // No --overrule-shutdown for an HA resource (qemu-server refuses it), and the HA agent did the stop.
      expect(qmSince(fx, mark)).toEqual(expect.arrayContaining(['stop 102 --timeout 8', 'ha: stop 102']));
      expect(isAlive(old)).toBe(false);

      const start = await pveMutation(fx.target, 'start', { requestId: 'real-ha-start-1', deadlineMs: DEADLINE });
      expect(start.steps[0]!.output).toContain('Requesting HA start for VM 102');
      expect(start).toMatchObject({ ok: true, ha: { requested: 'started', observed: 'running' }, after: { status: 'running', qmp: 'answered' } });
      expect(start.newPid).not.toBe(old);
    });

    it.sequential('1. when the HA manager does not act, the stop fails saying so, not as a D-state survivor', async () => {
      const mark = await freshVm(fx, ['ha_managed']);
      updateLabState(fx.host.nodeRoot, (s) => ({ ...s, haDelayS: null }));
      const error = await failure(pveMutation(fx.target, 'stop', { requestId: 'real-ha-stuck-1', deadlineMs: DEADLINE }));
      expect(error.kind).toBe('verb_failed');
      expect(error.detail).toMatchObject({ ok: false, failedAt: 'ha-wait', qemuSurvived: false, ha: { requested: 'stopped', observed: 'running' } });
      expect(error.detail.reason).toMatch(/^VM 102 is HA-managed: the stop was requested from the HA manager; still running after \d+ s/);
      expect(error.message).toContain('HA-managed');
      expect(qmSince(fx, mark).filter((c) => c.startsWith('ha:'))).toEqual([]);
      expect(readVm(fx.host.nodeRoot).running).toBe(true);
    });

    it.sequential('3. a running qm shutdown holding the lock is overruled (qm stop --overrule-shutdown), and the stop goes through', async () => {
      const mark = await freshVm(fx);
      // No guest: the ACPI power button goes unanswered, so the shutdown holds the lock for its 120 s.
      const shutdown = spawn(`${fx.dir}/qm`, ['shutdown', '102', '--timeout', '120'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let shutdownErr = '';
      shutdown.stderr.on('data', (chunk: Buffer) => (shutdownErr += chunk.toString()));
      const shutdownDone = new Promise<number | null>((resolve) => shutdown.on('close', resolve));
      await waitFor('the shutdown to hold the lock', () => (lockHeld(paths(fx.host.nodeRoot).lockFile) ? true : undefined), 5_000);
      const stop = await pveMutation(fx.target, 'stop', { requestId: 'real-overrule-1', deadlineMs: DEADLINE });
      expect(stop).toMatchObject({ ok: true, overruleShutdown: true, overruledTasks: [expect.stringMatching(UPID)], after: { status: 'stopped' } });
      expect(stop.steps[0]!.output).toMatch(/^overruled qmshutdown tasks: UPID:lab:\S+:qmshutdown:102:root@pam:$/m);
      expect(qmSince(fx, mark)).toContain('stop 102 --timeout 8 --overrule-shutdown 1');
      // The shutdown task was aborted as Proxmox aborts it.
      expect(await shutdownDone).toBe(255);
      expect(shutdownErr).toContain('received interrupt');
    });

    it.sequential('7. a start on a running VM under a backup lock is refused: qm would only resume it, same pid', async () => {
      const mark = await freshVm(fx, ['locked']);
      const pid = readVm(fx.host.nodeRoot).pid;
      const error = await failure(pveMutation(fx.target, 'start', { requestId: 'real-backup-1', deadlineMs: DEADLINE }));
      expect(error.detail).toMatchObject({ ok: false, failedAt: 'precheck', before: { status: 'running', lock: 'backup' } });
      expect(error.detail.reason).toContain('already running');
      expect(error.detail.reason).toContain('only resume it');
      expect(qmSince(fx, mark).filter((c) => c.startsWith('start'))).toEqual([]);
      expect(readVm(fx.host.nodeRoot).pid).toBe(pid);
    });

    it.sequential('5. with QMP silent, qm status still says running (copied) and the dispatcher says QMP did not answer', async () => {
      await freshVm(fx, ['qmp_silent']);
      const status = await pveStatus(fx.target, { deadlineMs: DEADLINE });
      expect(status.vm).toMatchObject({ status: 'running', qmpstatus: 'running', qmp: 'silent' });
      // 12. The greeting still comes (from the monitor's I/O thread) and proves nothing.
      const forensics = await pveForensics(fx.target, { requestId: 'real-qmp-silent-1', deadlineMs: DEADLINE });
      const qmp = forensics.sections.find((s) => s.name === 'qmp query-status query-block query-blockstats')!;
      expect(qmp.output).toContain('"QMP"');
      expect(qmp.timedOut).toBe(true);
      expect(forensics.summary).toMatchObject({ qmpAnswered: false, ioFrozen: null });
    });

    needsFreezer('11. QEMU in D state: qm stop exits 0 and status says stopped while QEMU lives in its scope; the dispatcher says so', async () => {
      await freshVm(fx, ['dstate']);
      const pid = readVm(fx.host.nodeRoot).pid!;
      expect(threadsOf(pid).every((t) => t.state === 'D')).toBe(true);
      const error = await failure(pveMutation(fx.target, 'stop', { requestId: 'real-dstate-1', deadlineMs: DEADLINE }));
      expect(error.detail.steps[0]).toMatchObject({ exit: 0 });
      expect(error.detail).toMatchObject({ qemuSurvived: true, survivors: [{ pid, leaderState: expect.stringMatching(/^D/) }] });
      const status = await pveStatus(fx.target, { deadlineMs: DEADLINE });
      expect(status.vm).toMatchObject({ status: 'stopped', scopePids: [pid], warning: expect.stringContaining("remain in the VM's scope") });
    }, 60_000);

    it.sequential('12. a stopped VM shows qmpstatus stopped, and a healthy one that QMP answered is marked so', async () => {
      await freshVm(fx);
      expect((await pveStatus(fx.target, { deadlineMs: DEADLINE })).vm).toMatchObject({ status: 'running', qmp: 'answered', scopePids: [readVm(fx.host.nodeRoot).pid] });
      await pveMutation(fx.target, 'stop', { requestId: 'real-stopped-1', deadlineMs: DEADLINE });
      expect((await pveStatus(fx.target, { deadlineMs: DEADLINE })).vm).toMatchObject({ status: 'stopped', qmpstatus: 'stopped', qmp: null, scopePids: [] });
    });

    it.sequential('12. a cycle whose start fails still reports the pending config as applied (qm stop applied it)', async () => {
      // A staged config QEMU refuses: the stop applies it, the start then fails on it.
      await freshVm(fx, [], { args: '-no-such-option' });
      const error = await failure(pveMutation(fx.target, 'cycle', { requestId: 'real-pending-1', deadlineMs: DEADLINE }));
      expect(error.detail).toMatchObject({ ok: false, failedAt: 'start', pendingApplied: true, after: { status: 'stopped' } });
      expect(error.detail.reason).toContain('qm start failed');
      expect(readVm(fx.host.nodeRoot).config.args).toBe('-no-such-option');
    });
  });

  describe('zombie main thread, D state, a worker that outlives its timeout', () => {
    let fx: PveFixture;
    beforeAll(async () => {
      // stop_timeout 0 + stop_grace 15: a hung qm stop is cut off on the host after 15 s (room for a
      // loaded machine, where even a quick stop of a zombie leader can take several seconds).
      fx = await startPveFixture('pve-real-b', { config: { qmp_timeout: 1, stop_timeout: 0, stop_grace: 15, result_wait: 40 } });
    });
    afterAll(async () => {
      await fx?.stop();
    });

    needsFreezer('9. forensics walks every QEMU thread: the one in D state, its kernel stack, the scope', async () => {
      await freshVm(fx, ['zombie_leader']);
      const pid = readVm(fx.host.nodeRoot).pid!;
      const forensics = await pveForensics(fx.target, { requestId: 'real-threads-1', deadlineMs: DEADLINE });
      const proc = forensics.sections.find((s) => s.name === 'qemu process')!.output;
      const stuck = threadsOf(pid).find((t) => t.comm === 'call_rcu')!;
      expect(proc).toContain(`== process ${pid} (in scope: yes)`);
      expect(proc).toMatch(new RegExp(`^${stuck.tid} D \\S+ call_rcu$`, 'm'));
      expect(proc).toContain(`== stack of ${stuck.tid} (D)`);
      expect(forensics.sections.find((s) => s.name === 'vm scope')!.output).toContain(`procs: ${pid}`);
      expect(forensics.summary).toMatchObject({ dStateThreads: 1 });
      expect(forensics.summary.zombieLeader).not.toBe(true);
    });

    needsFreezer('4. after the stop the main thread is a zombie while a D-state thread lives on: reported as a survivor, and a start is refused', async () => {
      await freshVm(fx, ['zombie_leader']);
      const pid = readVm(fx.host.nodeRoot).pid!;
      const error = await failure(pveMutation(fx.target, 'stop', { requestId: 'real-zombie-1', deadlineMs: DEADLINE }));
      // qm itself saw a dead pid and exited 0.
      expect(error.detail.steps[0]).toMatchObject({ name: 'qm stop', exit: 0 });
      expect(error.detail).toMatchObject({
        ok: false,
        qemuSurvived: true,
        survivors: [{ pid, leaderState: expect.stringMatching(/^Z/), inScope: true, threads: expect.arrayContaining([expect.objectContaining({ comm: 'call_rcu', state: 'D' })]) }],
        after: { status: 'stopped', scopePids: [pid], warning: expect.stringContaining(String(pid)) },
      });
      expect(error.detail.reason).toContain('D state');
      expect(scopePids(fx.host.nodeRoot)).toEqual([pid]);

      const mark = fx.qmCalls().length;
      const start = await failure(pveMutation(fx.target, 'start', { requestId: 'real-zombie-2', deadlineMs: DEADLINE }));
      expect(start.detail).toMatchObject({ failedAt: 'precheck' });
      expect(start.detail.reason).toContain("still in the VM's scope");
      expect(qmSince(fx, mark).filter((c) => c.startsWith('start'))).toEqual([]);
    });

    it.sequential("8. a qm stop cut off by the host's limit leaves its task worker holding the lock: the result names the task", async () => {
      await freshVm(fx, ['stop_hang']);
      const error = await failure(pveMutation(fx.target, 'stop', { requestId: 'real-orphan-1', deadlineMs: DEADLINE }));
      expect(error.detail.steps[0]).toMatchObject({ name: 'qm stop', timedOut: true });
      const holder = error.detail.lockHolder!;
      expect(holder.task).toMatch(UPID);
      expect(UPID.exec(holder.task!)![1]).toBe('qmstop');
      expect(error.detail.reason).toContain(`qm stop did not finish within 15 s; ${holder.task} still holds the VM's config lock`);
      // The worker really is alive, named as Proxmox names it.
      const workerPid = parseInt(holder.task!.split(':')[2]!, 16);
      expect(readFileSync(`/proc/${workerPid}/cmdline`, 'utf8')).toMatch(/^task UPID:lab:/);

      // The next verb waits for the lock, fails on it after qm's 10 s, and names the same task.
      const reset = await failure(pveMutation(fx.target, 'reset', { requestId: 'real-orphan-2', deadlineMs: DEADLINE }));
      expect(reset.kind).toBe('vm_locked');
      expect(reset.detail.lockHolder?.task).toBe(holder.task);
      expect(reset.detail.reason).toContain(`(the lock is held by ${holder.task})`);
    }, 60_000);
  });
});
