// The lab's `qm` stand-in over a REAL QEMU (no guest: a blank disk, no kernel, real QMP): its
// verbs, Proxmox's outputs and exit codes, the faults it can switch on, and that everything it
// starts goes away again.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { incidentFixPending, initVm, killVm, lockHeld, readVm, setFault, writeQmWrapper } from '../lab/pve/lab-vm.mjs';
import { paths, procState, readLabState, readPid } from '../lab/pve/pve-node.mjs';
import { freezerAvailable, scopePids, threadsOf } from '../lab/pve/cgroups.mjs';
import { activeTasks } from '../lab/pve/tasks.mjs';
import { qmp } from '../lab/pve/qmp.mjs';
import { devvmOf, loadGuestImage } from '../lab/devvm.js';
import { freePort } from '../lab/sshd.js';
import { pidsWithArg } from '../lab/processes.js';
import { removeDir, tempDir, timed, waitFor } from './helpers/fixtures.js';

const exec = promisify(execFile);
const REPO = join(import.meta.dirname, '..');

let dir: string;
let root: string;
let qmPath: string;

/** Runs the stand-in as the dispatcher does (through its wrapper); never throws. */
async function qm(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(qmPath, args, { env: { ...process.env, ...qmEnv } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
let qmEnv: Record<string, string> = {};

const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');

beforeAll(async () => {
  dir = await tempDir('lab-qm');
  root = join(dir, 'node');
  qmPath = writeQmWrapper(root, join(dir, 'qm'));
});

afterAll(async () => {
  await killVm(root);
  await removeDir(dir);
});

describe('qm over a real QEMU', () => {
  test('when the VM runs, status, config and pending read the real process and the config file', async () => {
    await initVm(root, { pending: incidentFixPending() });
    const pid = readVm(root).pid;
    expect(pid).toBeGreaterThan(0);
    expect(cmdline(pid as number)[0]).toMatch(/qemu-system-x86_64$/);
    expect(readPid(paths(root).pidFile)).toBe(pid);

    expect(await qm('status', '102')).toMatchObject({ code: 0, stdout: 'status: running\n' });
    const verbose = await qm('status', '102', '--verbose');
    expect(verbose.code).toBe(0);
    const fields = Object.fromEntries(verbose.stdout.trim().split('\n').map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)]));
    expect(fields).toMatchObject({ status: 'running', qmpstatus: 'running', pid: String(pid), name: 'devvm', vmid: '102' });
    // Asked of QEMU itself over QMP, so present only because the monitor answered.
    const { stdout: version } = await exec('qemu-system-x86_64', ['--version']);
    expect(version).toContain(`version ${fields['running-qemu']}`);

    const pending = (await qm('pending', '102')).stdout.trim().split('\n');
    expect(pending).toContain('cur scsihw: virtio-scsi-pci');
    expect(pending).toContain('new scsihw: virtio-scsi-single');
    expect(pending.indexOf('new scsi0: local-lvm:vm-102-disk-0,aio=threads,iothread=1')).toBe(pending.indexOf('cur scsi0: local-lvm:vm-102-disk-0,size=64M') + 1);
    expect((await qm('config', '102', '--current')).stdout).toContain('scsihw: virtio-scsi-pci\n');
    expect((await qm('config', '102')).stdout).toContain('scsihw: virtio-scsi-single\n');
  });

  test('when reset, the same QEMU acknowledges it and the pending config stays staged', async () => {
    await initVm(root, { pending: incidentFixPending() });
    const before = readVm(root);
    expect(await qm('reset', '102')).toMatchObject({ code: 0 });
    const after = readVm(root);
    expect(after.pid).toBe(before.pid);
    expect(after.pending).toEqual(incidentFixPending());
    expect(after.config.scsihw).toBe('virtio-scsi-pci');
    // The process was not restarted: it still runs the old disk set-up.
    expect(cmdline(after.pid as number).join(' ')).not.toContain('aio=threads');
  });

  test('when stopped then started, a new QEMU runs the config with pending applied', async () => {
    await initVm(root, { pending: incidentFixPending() });
    const old = readVm(root).pid as number;
    const storage = readPid(paths(root).storagePidFile) as number;
    expect(procState(storage)).toMatch(/[SR]/);

    expect(await qm('stop', '102', '--timeout', '5')).toMatchObject({ code: 0 });
    expect(procState(old) ?? 'gone').toMatch(/gone|Z/);
    expect(procState(storage) ?? 'gone').toMatch(/gone|Z/);
    expect((await qm('status', '102')).stdout).toBe('status: stopped\n');
    expect((await qm('status', '102', '--verbose')).stdout).toContain('qmpstatus: stopped\n');
    // qm stop's cleanup applies pending config.
    expect(readVm(root)).toMatchObject({ pending: {}, config: { scsihw: 'virtio-scsi-single' } });

    expect(await qm('start', '102')).toMatchObject({ code: 0 });
    const now = readVm(root).pid as number;
    expect(now).not.toBe(old);
    const args = cmdline(now).join(' ');
    expect(args).toContain('aio=threads');
    expect(args).toContain('iothread=iothread-virtioscsi0');
    // With aio=threads the disk no longer goes through the storage daemon.
    expect(readPid(paths(root).storagePidFile)).toBeNull();
  });

  test('when asked for the impossible, qm answers with its own messages and exit codes', async () => {
    await initVm(root);
    expect(await qm('start', '102')).toMatchObject({ code: 255, stderr: 'VM 102 already running\n' });
    expect(await qm('status', '103')).toMatchObject({ code: 2, stderr: expect.stringContaining("Configuration file 'nodes/lab/qemu-server/103.conf' does not exist") });
    // agent: 0 passes qm's "configured" check (it tests that the key exists); nothing answers.
    expect(await qm('guest', 'cmd', '102', 'ping')).toMatchObject({ code: 255, stderr: 'QEMU guest agent is not running\n' });
    expect(await qm('frobnicate', '102')).toMatchObject({ code: 255, stderr: expect.stringContaining("unknown command 'qm frobnicate'") });
    await qm('stop', '102');
    expect(await qm('reset', '102')).toMatchObject({ code: 255, stderr: 'VM 102 not running\n' });
  });

  test('when QEMU cannot be found, start says which binary and how to provision it', async () => {
    await initVm(root, { running: false });
    qmEnv = { BREAKGLASS_QEMU: '/nonexistent/qemu-system-x86_64' };
    try {
      const start = await qm('start', '102');
      expect(start.code).toBe(255);
      expect(start.stderr).toContain('/nonexistent/qemu-system-x86_64 is not installed');
      expect(start.stderr).toContain('sh scripts/provision.sh qemu');
    } finally {
      qmEnv = {};
    }
    expect(readVm(root).running).toBe(false);
  });
});

test('when the guest does not boot in time, the error names the serial console log', async () => {
  // A VM without a guest, its port 22 forwarded all the same: QEMU accepts, nothing answers.
  const sshPort = await freePort();
  await initVm(root, { sshPort });
  const image = { ...loadGuestImage(), hostPublicKey: 'ssh-ed25519 AAAA' };
  const error = await devvmOf(image, sshPort, paths(root).serialLog).waitForSsh(1_500).catch((e: Error) => e);
  expect(String(error)).toContain(`serial console log: ${paths(root).serialLog}`);
  expect(String(error)).toContain(`127.0.0.1:${sshPort}`);
});

describe('faults', () => {
  test('io_stall freezes the real storage daemon, and a new daemon stalls too until it is switched off', async () => {
    await initVm(root, { qmpQuitTimeoutS: 2 });
    const storage = readPid(paths(root).storagePidFile) as number;
    await setFault(root, 'io_stall', true);
    expect(procState(storage)).toBe('T');
    // QEMU's own monitor still answers: that is the 2026-06-11 signature.
    expect(await qmp(paths(root).qmpSocket, 'query-status')).toMatchObject({ status: 'running' });
    // The stalled disk cannot flush: quit and SIGTERM go unanswered, qm ends it with SIGKILL.
    expect(await qm('stop', '102')).toMatchObject({
      code: 0,
      stdout: 'VM quit/powerdown failed - terminating now with SIGTERM\nVM still running - terminating now with SIGKILL\n',
    });
    await qm('start', '102');
    expect(procState(readPid(paths(root).storagePidFile) as number)).toBe('T');
    await setFault(root, 'io_stall', false);
    expect(procState(readPid(paths(root).storagePidFile) as number)).toMatch(/[SR]/);
  });

  test('qmp_silent blocks the real main loop: the monitor greets, then never answers; status copies qmpstatus', async () => {
    await initVm(root);
    const pid = readVm(root).pid;
    await setFault(root, 'qmp_silent', true);
    const query = await timed(() => qmp(paths(root).qmpSocket, 'query-status', {}, 1500));
    expect(String(query.error)).toContain('got timeout');

    const status = await timed(() => qm('status', '102', '--verbose'));
    expect(status.ms).toBeLessThan(5_000);
    expect(status.value?.code).toBe(0);
    expect(status.value?.stdout).toContain('qmpstatus: running\n');
    expect(status.value?.stdout).not.toContain('running-qemu');

    const reset = await qm('reset', '102');
    expect(reset).toMatchObject({ code: 255, stderr: "VM 102 qmp command 'system_reset' failed - got timeout\n" });
    expect(readVm(root).pid).toBe(pid);

    // Thawing the storage lets the blocked write finish: the monitor answers again.
    await setFault(root, 'qmp_silent', false);
    expect(await qmp(paths(root).qmpSocket, 'query-status', {}, 3000)).toMatchObject({ status: 'running' });
  });

  test('locked: every power verb refuses with the lock named, and the QEMU keeps running', async () => {
    await initVm(root);
    const pid = readVm(root).pid;
    await setFault(root, 'locked', true);
    for (const verb of ['reset', 'stop']) expect(await qm(verb, '102')).toMatchObject({ code: 255, stderr: 'VM is locked (backup)\n' });
    expect((await qm('status', '102', '--verbose')).stdout).toContain('lock: backup\n');
    expect(readVm(root).pid).toBe(pid);
    await setFault(root, 'locked', false);
    expect(await qm('reset', '102')).toMatchObject({ code: 0 });
  });

  test('lockfile_timeout: a real flock holder makes qm wait 10 s and give up with the file named', async () => {
    await initVm(root);
    await setFault(root, 'lockfile_timeout', true);
    const stop = await timed(() => qm('stop', '102'));
    expect(stop.ms).toBeGreaterThanOrEqual(9_500);
    expect(stop.value).toMatchObject({ code: 255 });
    // A task's output (the lock's message included) goes to stdout; its error alone to stderr.
    expect(stop.value?.stdout).toBe('trying to acquire lock...\n');
    expect(stop.value?.stderr).toBe("can't lock file '/var/lock/qemu-server/lock-102.conf' - got timeout\n");
    expect(readVm(root).running).toBe(true);
    await setFault(root, 'lockfile_timeout', false);
    expect(await qm('stop', '102')).toMatchObject({ code: 0 });
  }, 30_000);

  test('an unknown fault is refused by name', async () => {
    await expect(setFault(root, 'gremlins', true)).rejects.toThrow("unknown fault 'gremlins'");
  });
});

describe('D state, for real (cgroup-v1 freezer), and qm\'s task workers', () => {
  const realDState = freezerAvailable() ? test : test.skip;

  realDState('dstate: every QEMU thread in D; qm stop ends "OK" and unlinks its files while QEMU lives on in its scope, and qm start waits for that scope in vain', async () => {
    await initVm(root, { qmpQuitTimeoutS: 1 });
    const pid = readVm(root).pid as number;
    await setFault(root, 'dstate', true);
    expect(threadsOf(pid).map((t) => t.state)).toEqual(threadsOf(pid).map(() => 'D'));
    const stop = await qm('stop', '102', '--timeout', '1');
    // qemu-server does not check after SIGKILL: exit 0, files gone, status "stopped".
    expect(stop).toMatchObject({ code: 0, stdout: expect.stringContaining('VM still running - terminating now with SIGKILL') });
    expect((await qm('status', '102')).stdout).toBe('status: stopped\n');
    expect(procState(pid)).toBe('D'); // SIGKILL pending until the thaw
    expect(scopePids(root)).toEqual([pid]);
    const start = await timed(() => qm('start', '102'));
    expect(start.value).toMatchObject({ code: 255, stderr: 'timeout waiting on systemd\n' });
    expect(start.ms).toBeGreaterThanOrEqual(19_500);
    await killVm(root);
    expect(procState(pid) ?? 'gone').toMatch(/gone|Z/);
    expect(scopePids(root)).toEqual([]);
  }, 60_000);

  realDState('zombie_leader: after the stop the main thread is a zombie while one thread stays in D, still in the scope', async () => {
    await initVm(root, { qmpQuitTimeoutS: 1 });
    const pid = readVm(root).pid as number;
    await setFault(root, 'zombie_leader', true);
    expect(await qm('stop', '102', '--timeout', '1')).toMatchObject({ code: 0 });
    expect(procState(pid)).toBe('Z');
    expect(threadsOf(pid).filter((t) => t.state === 'D').map((t) => t.comm)).toEqual(['call_rcu']);
    expect(scopePids(root)).toEqual([pid]);
    await killVm(root);
    expect(scopePids(root)).toEqual([]);
  }, 30_000);

  test('a task runs in a worker named "task UPID:…" that outlives a killed front and keeps the lock', async () => {
    await initVm(root);
    await setFault(root, 'stop_hang', true);
    const front = execFile(qmPath, ['stop', '102']);
    const worker = await waitFor('the qmstop task', () => activeTasks(root).find((t) => t.type === 'qmstop'), 5_000);
    expect(worker.upid).toMatch(/^UPID:lab:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:qmstop:102:root@pam:$/);
    expect(readFileSync(`/proc/${worker.pid}/cmdline`, 'utf8')).toMatch(/^task UPID:lab:/);
    await waitFor('the lock', () => (lockHeld(paths(root).lockFile) ? true : undefined), 5_000);
    // What `timeout` does: SIGTERM (passed on to the worker, which a wedged stop ignores), then SIGKILL.
    front.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    front.kill('SIGKILL');
    await new Promise((r) => front.on('close', r));
    expect(procState(worker.pid)).not.toBeNull();
    expect(lockHeld(paths(root).lockFile)).toBe(true);
    await killVm(root);
    expect(lockHeld(paths(root).lockFile)).toBe(false);
  }, 30_000);
});

test('labctl switches a fault for a person and shows the VM as the node has it', async () => {
  await initVm(root);
  const labctl = (...args: string[]) => exec(process.execPath, [join(REPO, 'lab/pve/labctl.mjs'), root, ...args]);
  expect((await labctl('fault', 'locked', 'on')).stdout).toBe('locked on\n');
  expect(JSON.parse((await labctl('status')).stdout)).toMatchObject({ running: true, faults: ['locked'], scopePids: [readVm(root).pid] });
  expect(readVm(root).config.lock).toBe('backup');
  await labctl('fault', 'locked', 'off');
  expect(readVm(root).config.lock).toBeUndefined();
  expect((await labctl('ha-delay', 'never')).stdout).toContain('never');
  expect(readLabState(root).haDelayS).toBeNull();
  await expect(labctl('fault', 'gremlins', 'on')).rejects.toMatchObject({ code: 64, stderr: expect.stringContaining("unknown fault 'gremlins'") });
});

test('when the node is torn down, no QEMU, storage daemon or lock holder is left behind', async () => {
  await initVm(root);
  await setFault(root, 'io_stall', true);
  await setFault(root, 'lockfile_timeout', true);
  // The lock holder is flock exec'ing sleep: its argv does not name the node, the lab state does.
  const holders = readLabState(root).holders;
  expect(holders).toHaveLength(1);
  expect(pidsWithArg(`${root}/`)).toHaveLength(2); // QEMU and its storage daemon
  await killVm(root);
  expect(pidsWithArg(`${root}/`)).toEqual([]);
  expect(holders.map((pid) => procState(pid) ?? 'gone')).toEqual([expect.stringMatching(/gone|Z/)]);
});
