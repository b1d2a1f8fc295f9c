// The lab's simulated devvm, through a real sshd and the real client (runDevvmCommand): it answers
// the usual diagnostics like a Debian guest consistent with its scenario and with the simulated
// VM, never runs anything on the host, and follows the VM's power state: refused while stopped,
// hanging while the I/O stall is on (even after a reset), back after a cycle with the same
// pinned host key.
import { execFile, type ExecFileException } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { pidsWithArg } from '../lab/processes.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runDevvmCommand, type DevvmCommandResult } from '../activities/devvm/command.js';
import type { SshTarget } from '../activities/ssh/connection.js';
import { SshError } from '../activities/ssh/errors.js';
import { startDevvmHost, type DevvmHost, type DevvmScenario } from '../lab/devvm-host.js';
import { SIM_DEVVM_SCRIPT, updateDevvmState } from '../lab/devvm/sim-devvm.mjs';
import { generateKeyPair } from '../lab/keys.js';
import { initVm, readVm, setFault, stopVmProcesses, writeQmWrapper } from '../lab/pve/sim-vm.mjs';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeout = 20_000): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout }, (err: ExecFileException | null, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr, ms: Date.now() - started });
    });
  });
}


interface Lab {
  dir: string;
  vmDir: string;
  host: DevvmHost;
  target: SshTarget;
  /** The simulated `qm` (the same wrapper the PVE dispatcher runs). */
  qm(...args: string[]): Promise<Run>;
  cmd(command: string, timeoutSeconds?: number): Promise<DevvmCommandResult>;
  stop(): Promise<void>;
}

const labs: Lab[] = [];

async function startLab(scenario: DevvmScenario): Promise<Lab> {
  const dir = await mkdtemp(join(tmpdir(), 'bg-sim-devvm-'));
  const vmDir = join(dir, 'vm');
  await initVm(vmDir, { running: true });
  const qmPath = writeQmWrapper(vmDir, join(dir, 'qm'));
  const key = await generateKeyPair(dir, 'client');
  const host = await startDevvmHost({ dir: join(dir, 'devvm'), vmDir, clientPublicKey: key.publicKey, scenario, bootDelayMs: 800 });
  // A short handshake deadline keeps the "hangs" cases quick.
  const target = { ...host.target(readFileSync(key.privateKeyPath), userInfo().username), readyTimeoutMs: 2_000 };
  const lab: Lab = {
    dir,
    vmDir,
    host,
    target,
    qm: (...args) => run(qmPath, args),
    cmd: (command, timeoutSeconds = 10) => runDevvmCommand(target, command, { timeoutSeconds }),
    stop: async () => {
      await host.stop();
      await stopVmProcesses(vmDir);
      await rm(dir, { recursive: true, force: true });
    },
  };
  labs.push(lab);
  return lab;
}

async function expectSshError(call: Promise<unknown>, kind: string): Promise<void> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SshError);
  expect((error as SshError).kind).toBe(kind);
}

afterAll(async () => {
  for (const lab of labs.splice(0)) await lab.stop();
});

describe('a healthy devvm', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab('healthy');
    await lab.host.waitForState('up');
  });

  it('answers uptime, df -h and dmesg | tail -n 5 like a Debian guest', async () => {
    const uptime = await lab.cmd('uptime');
    expect(uptime).toMatchObject({ exitCode: 0, timedOut: false });
    expect(uptime.stdout.text).toMatch(/^ \d\d:\d\d:\d\d up \d+ min, +0 users, +load average: \d+\.\d\d, \d+\.\d\d, \d+\.\d\d\n$/);

    const df = await lab.cmd('df -h');
    expect(df.exitCode).toBe(0);
    expect(df.stdout.text).toMatch(/^Filesystem +Size +Used +Avail +Use% +Mounted on\n/);
    expect(df.stdout.text).toMatch(/^\/dev\/sda1 +\d+G +\d+G +\d+G +\d+% \/$/m);

    const dmesg = await lab.cmd('dmesg | tail -n 5');
    expect(dmesg.exitCode).toBe(0);
    const lines = dmesg.stdout.text.trimEnd().split('\n');
    expect(lines).toHaveLength(5);
    for (const line of lines) expect(line).toMatch(/^\[ *\d+\.\d{6}\] \S/);
  });

  it('keeps the usual diagnostics consistent: the guest, not the lab host', async () => {
    const ps = await lab.cmd('ps aux');
    expect(ps.stdout.text).toMatch(/^USER +PID %CPU %MEM +VSZ +RSS TTY +STAT START +TIME COMMAND$/m);
    expect(ps.stdout.text).toContain('/usr/lib/postgresql/15/bin/postgres');
    expect(ps.stdout.text).not.toContain('vitest');
    expect((await lab.cmd('hostname')).stdout.text).toBe('devvm\n');
    expect((await lab.cmd('uname -a')).stdout.text).toMatch(/^Linux devvm 6\.1\.0-\d+-amd64 .* x86_64 GNU\/Linux\n$/);
    expect((await lab.cmd('whoami; sudo -n whoami')).stdout.text).toBe('breakglass\nroot\n');
    expect((await lab.cmd('systemctl --failed')).stdout.text).toContain('0 loaded units listed.');
    expect((await lab.cmd('cat /proc/pressure/io')).stdout.text).toMatch(/^some avg10=\d+\.\d\d avg60=\d+\.\d\d avg300=\d+\.\d\d total=\d+\nfull /);
    expect((await lab.cmd('free -m')).stdout.text).toMatch(/^Mem: +\d+ +\d+ +\d+/m);
  });

  it('answers an unknown command with 127 and honours the timeout with 124', async () => {
    const missing = await lab.cmd('no-such-tool --now');
    expect(missing).toMatchObject({ exitCode: 127 });
    expect(missing.stderr.text).toBe('sh: 1: no-such-tool: not found\n');

    const started = Date.now();
    const slow = await lab.cmd('echo before; sleep 30', 1);
    expect(slow).toMatchObject({ exitCode: 124, timedOut: true });
    expect(slow.stdout.text).toBe('before\n');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('never executes anything on the host', async () => {
    const proof = join(tmpdir(), `bg-sim-proof-${randomBytes(6).toString('hex')}`);
    expect((await lab.cmd(`touch ${proof}`)).exitCode).toBe(127);
    expect((await lab.cmd(`sudo touch ${proof}`)).exitCode).not.toBe(0);
    expect((await lab.cmd(`echo pwned > ${proof}`)).exitCode).toBe(2);
    expect((await lab.cmd(`echo $(touch ${proof})`)).exitCode).toBe(2);
    expect((await lab.cmd(`sh -c 'touch ${proof}'`)).exitCode).toBe(127);
    expect(existsSync(proof)).toBe(false);
    // …and cannot: the forced command loads no module that starts processes.
    expect(readFileSync(SIM_DEVVM_SCRIPT, 'utf8')).not.toMatch(/child_process|from '\.\.\/pve\//);
  });
});

describe('the oom scenario', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab('oom');
    await lab.host.waitForState('up');
  });

  it('shows the OOM kill, lists the failed unit, and a sudo restart fixes it', async () => {
    const dmesg = await lab.cmd('dmesg -T | grep -i "out of memory"');
    expect(dmesg.stdout.text).toMatch(/^\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\] Out of memory: Killed process \d+ \(postgres\)/);
    expect((await lab.cmd('journalctl -b -p err')).stdout.text).toMatch(/kernel: Out of memory: Killed process \d+ \(postgres\)/);
    expect((await lab.cmd('journalctl -u postgresql -n 20')).stdout.text).toContain("postgresql.service: Failed with result 'oom-kill'.");

    const failed = await lab.cmd('systemctl --failed');
    expect(failed.stdout.text).toMatch(/^● postgresql\.service +loaded +failed +failed +PostgreSQL RDBMS$/m);
    expect(failed.stdout.text).toContain('1 loaded units listed.');
    expect((await lab.cmd('systemctl status postgresql')).exitCode).toBe(3);

    const denied = await lab.cmd('systemctl restart postgresql');
    expect(denied.exitCode).toBe(1);
    expect(denied.stderr.text).toContain('Interactive authentication required');

    expect((await lab.cmd('sudo systemctl restart postgresql')).exitCode).toBe(0);
    expect((await lab.cmd('systemctl --failed')).stdout.text).toContain('0 loaded units listed.');
    const status = await lab.cmd('systemctl status postgresql');
    expect(status.exitCode).toBe(0);
    expect(status.stdout.text).toMatch(/Active: active \(running\) since/);
    expect((await lab.cmd('journalctl -t sudo')).stdout.text).toContain('COMMAND=/usr/bin/systemctl restart postgresql');
  });
});

describe('the io-stall scenario follows the VM', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab('io-stall');
    await lab.host.waitForState('up');
  });

  it('hangs while the I/O stall is on, stays stalled after a reset, is refused while stopped, and answers after a cycle with the same pinned key', async () => {
    expect((await lab.cmd('uptime')).exitCode).toBe(0);
    const port = lab.host.sshd.port;
    const knownHostsLine = lab.host.sshd.knownHostsLine;

    setFault(lab.vmDir, 'io_stall', true);
    await lab.host.waitForState('wedged', 3_000);
    expect(lab.host.sshdMode()).toBe('frozen');
    await expectSshError(lab.cmd('uptime', 2), 'timeout');

    // A reset is a warm reboot in the same, still wedged, QEMU process.
    const pidBefore = readVm(lab.vmDir).pid;
    expect((await lab.qm('reset', '102')).code).toBe(0);
    await new Promise((r) => setTimeout(r, 600)); // a few watcher rounds
    expect(readVm(lab.vmDir)).toMatchObject({ pid: pidBefore, running: true });
    expect(lab.host.state()).toBe('wedged');
    await expectSshError(lab.cmd('uptime', 2), 'timeout');

    expect((await lab.qm('stop', '102')).code).toBe(0);
    await lab.host.waitForState('down', 3_000);
    const refusedAt = Date.now();
    await expectSshError(lab.cmd('uptime', 2), 'unreachable');
    expect(Date.now() - refusedAt).toBeLessThan(1_500);

    const startedAt = Date.now();
    expect((await lab.qm('start', '102')).code).toBe(0);
    let answered: DevvmCommandResult | undefined;
    while (!answered && Date.now() - startedAt < 8_000) {
      answered = await lab.cmd('uptime', 2).catch(() => undefined);
      if (!answered) await new Promise((r) => setTimeout(r, 100));
    }
    expect(answered).toMatchObject({ exitCode: 0 });
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    expect(answered?.stdout.text).toMatch(/ up 0 min, /);
    expect(lab.host.sshd).toMatchObject({ port, knownHostsLine });

    // The new boot: ext4 replayed its journal; the stalled boot's journal ends where the stall
    // began (nothing written after it reached the disk), and its ring buffer died with its QEMU.
    expect((await lab.cmd('dmesg | grep EXT4-fs')).stdout.text).toContain('EXT4-fs (sda1): recovery complete');
    expect((await lab.cmd('journalctl -b 0 -u systemd-journald')).stdout.text).toContain('uncleanly shut down');
    const boots = (await lab.cmd('journalctl --list-boots')).stdout.text.trimEnd().split('\n');
    expect(boots.slice(1).map((line) => line.trim().split(/\s+/)[0])).toEqual(['-1', '0']);
    expect((await lab.cmd('journalctl -b -1 | grep -c "blocked for more than"')).stdout.text).toBe('0\n');
    expect((await lab.cmd('uptime')).exitCode).toBe(0);
  });

  it('leaves no process behind when stopped', async () => {
    await lab.stop();
    labs.splice(labs.indexOf(lab), 1);
    expect(pidsWithArg(lab.dir)).toEqual([]);
  });
});

describe('a stall that ends in place (same QEMU)', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab('io-stall');
    await lab.host.waitForState('up');
  });
  afterEach(() => setFault(lab.vmDir, 'io_stall', false));

  it('answers again at once, with hung-task reports, a high load and Dirty pages written back', async () => {
    setFault(lab.vmDir, 'io_stall', true);
    await lab.host.waitForState('wedged', 3_000);
    // Pretend the stall has lasted 10 minutes (and the guest was up before it).
    updateDevvmState(lab.vmDir, 'io-stall', (st) => {
      const boot = st.boots.at(-1)!;
      boot.bootAt -= 660_000;
      boot.readyAt = boot.bootAt + 2_500;
      boot.stalls.at(-1)!.from -= 600_000;
      return true;
    });
    setFault(lab.vmDir, 'io_stall', false);
    await lab.host.waitForState('up', 3_000);

    const hung = await lab.cmd('dmesg | grep "INFO: task"');
    expect(hung.stdout.text).toMatch(/INFO: task jbd2\/sda1-8:\d+ blocked for more than 120 seconds\./);
    expect((await lab.cmd('journalctl -k -p err | grep -c "blocked for more than"')).stdout.text).not.toBe('0\n');
    const load1 = Number((await lab.cmd('cat /proc/loadavg')).stdout.text.split(' ')[0]);
    expect(load1).toBeGreaterThan(55);
    expect((await lab.cmd('cat /proc/pressure/io')).stdout.text).toMatch(/^some avg10=\d+\.\d\d avg60=(9\d|100)\./);
    expect((await lab.cmd('grep Dirty /proc/meminfo')).stdout.text).toMatch(/^Dirty: +\d{1,4} kB$/m);
  });
});

describe('the forced command on its own (defence in depth)', () => {
  let dir: string;
  let vmDir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bg-sim-devvm-direct-'));
    vmDir = join(dir, 'vm');
    await initVm(vmDir, { running: true });
  });
  afterAll(async () => {
    await stopVmProcesses(vmDir);
    await rm(dir, { recursive: true, force: true });
  });

  const direct = (command: string, extra: string[] = []) =>
    run(process.execPath, [SIM_DEVVM_SCRIPT, vmDir, 'io-stall', ...extra], { PATH: process.env.PATH, SSH_ORIGINAL_COMMAND: command });

  it('hangs until its timeout (124) while the guest is wedged or the VM is stopped; --inspect shows the D-state pile-up', async () => {
    setFault(vmDir, 'io_stall', true);
    const stalled = await direct(`timeout --kill-after=5 1 sh -c 'uptime'`);
    expect(stalled).toMatchObject({ code: 124, stdout: '' });
    expect(stalled.ms).toBeGreaterThanOrEqual(900);

    const inspect = await direct(`timeout 5 sh -c 'ps -eo stat,comm | grep -c "^D"; cat /proc/pressure/io'`, ['--inspect']);
    expect(inspect.code).toBe(0);
    const [dstate] = inspect.stdout.split('\n');
    expect(Number(dstate)).toBeGreaterThanOrEqual(5);
    expect(inspect.stdout).toMatch(/^some avg10=[1-9]/m);

    setFault(vmDir, 'io_stall', false);
    expect((await direct(`timeout 5 sh -c 'uptime'`)).code).toBe(0);
    await stopVmProcesses(vmDir);
    expect((await direct(`timeout --kill-after=5 1 sh -c 'uptime'`)).code).toBe(124);
  });
});
