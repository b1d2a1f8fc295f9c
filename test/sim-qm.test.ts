// The simulated qm and QEMU (lab/pve) must behave like the real ones where the breakglass relies
// on it: output shapes, exit codes, pid changes, pending config, QMP, and the failure modes.
import { execFile, type ExecFileException } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  incidentFixPending,
  initVm,
  invocations,
  isAlive,
  qmpSocketPath,
  readVm,
  setFault,
  stopVmProcesses,
  writeQmWrapper,
  type PendingChange,
} from '../lab/pve/sim-vm.mjs';

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 5, "minor": 1, "major": 8}, "package": "pve-qemu-kvm_8.1.5-1"}, "capabilities": []}}\r\n';

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  /** True when the caller's timeout killed the command. */
  killed: boolean;
  ms: number;
}

function run(file: string, args: string[], timeout = 10_000): Promise<Result> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(file, args, { timeout }, (err: ExecFileException | null, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr, killed: err?.killed ?? false, ms: Date.now() - started });
    });
  });
}

const dirs: string[] = [];

afterEach(async () => {
  for (const dir of dirs.splice(0)) {
    await stopVmProcesses(dir);
    await fs.rm(dir, { recursive: true, force: true });
  }
});

/** A fresh simulated VM in its own temp dir, driven through a real `qm` wrapper script. */
async function makeVm(opts: { running?: boolean; pending?: PendingChange[] } = {}) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sim-qm-'));
  dirs.push(dir);
  await initVm(dir, opts);
  const wrapper = writeQmWrapper(dir, path.join(dir, 'qm'));
  return { dir, qm: (args: string[], timeout?: number) => run(wrapper, args, timeout) };
}

/** `key: value` lines into a map, checking they are sorted as qm prints them. */
function keyValues(stdout: string): Record<string, string> {
  const lines = stdout.trimEnd().split('\n');
  expect(lines).toEqual([...lines].sort());
  return Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(': ')), l.slice(l.indexOf(': ') + 2)]));
}

async function verbosePid(qm: (args: string[]) => Promise<Result>) {
  return Number(keyValues((await qm(['status', '102', '--verbose'])).stdout).pid);
}

type QmpReply = { return?: unknown; error?: { class: string; desc: string }; id?: unknown };
interface BlockStats {
  device: string;
  stats: Record<string, number>;
}

/** A minimal QMP client over the simulated QEMU's unix socket. */
function qmpConnect(socketPath: string) {
  const socket = net.createConnection(socketPath);
  socket.setEncoding('utf8');
  let received = '';
  let buffered = '';
  const lines: string[] = [];
  let wake = () => {};
  socket.on('data', (chunk: string) => {
    received += chunk;
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      lines.push(buffered.slice(0, nl).trim());
      buffered = buffered.slice(nl + 1);
    }
    wake();
  });
  socket.on('error', () => {});

  /** The next line, or undefined when none arrives in time. */
  async function nextLine(timeoutMs = 2000): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (lines.length === 0 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, deadline - Date.now());
      });
    }
    return lines.shift();
  }

  return {
    received: () => received,
    nextLine,
    async execute(command: string): Promise<QmpReply> {
      socket.write(`${JSON.stringify({ execute: command })}\n`);
      const line = await nextLine();
      if (line === undefined) throw new Error(`no QMP reply to ${command}`);
      return JSON.parse(line) as QmpReply;
    },
    close: () => socket.destroy(),
  };
}

async function negotiated(dir: string) {
  const qmp = qmpConnect(qmpSocketPath(dir));
  await qmp.nextLine(); // greeting
  expect(await qmp.execute('qmp_capabilities')).toEqual({ return: {} });
  return qmp;
}

async function drive0Stats(qmp: ReturnType<typeof qmpConnect>) {
  const reply = await qmp.execute('query-blockstats');
  const drive = (reply.return as BlockStats[]).find((b) => b.device === 'drive-scsi0');
  if (!drive) throw new Error('no drive-scsi0 in query-blockstats');
  return drive.stats;
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('simulated qm status, config and pending', () => {
  it('when the VM runs, then status and status --verbose print the real qm shapes', async () => {
    const { dir, qm } = await makeVm();
    expect(await qm(['status', '102'])).toMatchObject({ code: 0, stdout: 'status: running\n', stderr: '' });

    const verbose = await qm(['status', '102', '--verbose']);
    expect(verbose.code).toBe(0);
    const stat = keyValues(verbose.stdout);
    expect(Object.keys(stat).sort()).toEqual(['cpus', 'maxmem', 'name', 'pid', 'qmpstatus', 'running-machine', 'running-qemu', 'status', 'uptime', 'vmid']);
    expect(stat).toMatchObject({ status: 'running', qmpstatus: 'running', name: 'devvm', vmid: '102', cpus: '4', maxmem: String(16384 * 1024 * 1024), 'running-qemu': '8.1.5' });
    expect(Number(stat.pid)).toBe(readVm(dir).pid);
    expect(isAlive(Number(stat.pid))).toBe(true);
  });

  it('when the VM is stopped, then status says stopped and --verbose has no pid or qmpstatus', async () => {
    const { qm } = await makeVm({ running: false });
    expect((await qm(['status', '102'])).stdout).toBe('status: stopped\n');
    const stat = keyValues((await qm(['status', '102', '--verbose'])).stdout);
    expect(stat.status).toBe('stopped');
    expect(stat).not.toHaveProperty('pid');
    expect(stat).not.toHaveProperty('qmpstatus');
  });

  it('when config is staged, then config applies it, config --current does not, and pending prints cur/new/del lines', async () => {
    const { qm } = await makeVm({ pending: [...incidentFixPending(), { key: 'cpu', delete: true }, { key: 'tags', value: 'dev' }] });
    const config = keyValues((await qm(['config', '102'])).stdout);
    expect(config).toMatchObject({ scsihw: 'virtio-scsi-single', tags: 'dev' });
    expect(config).not.toHaveProperty('cpu');
    const current = keyValues((await qm(['config', '102', '--current'])).stdout);
    expect(current).toMatchObject({ scsihw: 'virtio-scsi-pci', cpu: 'host' });
    expect(current).not.toHaveProperty('tags');

    const pending = (await qm(['pending', '102'])).stdout.trimEnd().split('\n');
    expect(pending).toContain('cur name: devvm');
    expect(pending).toContain('del cpu: host');
    expect(pending).toContain('new tags: dev');
    const at = pending.indexOf('cur scsihw: virtio-scsi-pci');
    expect(pending[at + 1]).toBe('new scsihw: virtio-scsi-single');
  });
});

describe('simulated qm reset, stop and start', () => {
  it('when a running VM with pending config is reset, then the pid, the pending config and an I/O stall all survive', async () => {
    const { dir, qm } = await makeVm({ pending: incidentFixPending() });
    setFault(dir, 'io_stall', true);
    const pid = await verbosePid(qm);
    const pendingBefore = (await qm(['pending', '102'])).stdout;

    expect(await qm(['reset', '102'])).toMatchObject({ code: 0, stdout: '', stderr: '' });

    expect(await verbosePid(qm)).toBe(pid);
    expect((await qm(['pending', '102'])).stdout).toBe(pendingBefore);
    expect(pendingBefore).toMatch(/^new scsihw: virtio-scsi-single$/m);
    expect(readVm(dir).faults).toContain('io_stall');
  });

  it('when the VM is cycled (stop then start), then QEMU gets a new pid, pending config is applied and the stall is gone', async () => {
    const { dir, qm } = await makeVm({ pending: incidentFixPending() });
    setFault(dir, 'io_stall', true);
    const oldPid = await verbosePid(qm);

    expect(await qm(['stop', '102', '--timeout', '10'])).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect((await qm(['status', '102'])).stdout).toBe('status: stopped\n');
    expect(isAlive(oldPid)).toBe(false);
    expect(await qm(['stop', '102'])).toMatchObject({ code: 0, stdout: '', stderr: '' }); // already stopped

    expect(await qm(['start', '102'])).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const newPid = await verbosePid(qm);
    expect(newPid).not.toBe(oldPid);
    expect(isAlive(newPid)).toBe(true);
    expect((await qm(['pending', '102'])).stdout).not.toMatch(/^(new|del) /m);
    expect(keyValues((await qm(['config', '102', '--current'])).stdout).scsihw).toBe('virtio-scsi-single');
    expect(readVm(dir).faults).not.toContain('io_stall');
  });

  it('when reset hits a stopped VM or start a running one, then qm fails with 255 and the real message', async () => {
    const [stopped, running] = await Promise.all([makeVm({ running: false }), makeVm()]);
    expect(await stopped.qm(['reset', '102'])).toMatchObject({ code: 255, stderr: 'VM 102 not running\n' });
    expect(await running.qm(['start', '102'])).toMatchObject({ code: 255, stderr: 'VM 102 already running\n' });
  });

  it('when QEMU is in D-state, then stop fails with 255 after about a second, the process survives, and cleanup still kills it', async () => {
    const { dir, qm } = await makeVm();
    const pid = await verbosePid(qm);
    setFault(dir, 'dstate', true);

    const stop = await qm(['stop', '102']);
    expect(stop).toMatchObject({ code: 255, stderr: 'VM 102 stop failed - got timeout\n' });
    expect(stop.ms).toBeGreaterThanOrEqual(900);
    expect(isAlive(pid)).toBe(true);
    expect((await qm(['status', '102'])).stdout).toBe('status: running\n');
    expect(await verbosePid(qm)).toBe(pid);

    await stopVmProcesses(dir);
    expect(isAlive(pid)).toBe(false);
  });

  it('when the config is locked, then reset, stop and start fail with "VM is locked (backup)" and status shows the lock', async () => {
    const { dir, qm } = await makeVm();
    setFault(dir, 'locked', true);
    for (const verb of ['reset', 'stop', 'start']) {
      expect(await qm([verb, '102'])).toMatchObject({ code: 255, stderr: 'VM is locked (backup)\n' });
    }
    expect(keyValues((await qm(['status', '102', '--verbose'])).stdout).lock).toBe('backup');
    expect(keyValues((await qm(['config', '102'])).stdout).lock).toBe('backup');
  });

  it('when the lock file cannot be taken, then every mutating verb fails with the lock timeout', async () => {
    const { dir, qm } = await makeVm();
    setFault(dir, 'lockfile_timeout', true);
    const results = await Promise.all(['reset', 'stop', 'start'].map((verb) => qm([verb, '102'])));
    for (const result of results) {
      expect(result).toMatchObject({ code: 255, stderr: "can't lock file '/var/lock/qemu-server/lock-102.conf' - got timeout\n" });
    }
    expect((await qm(['status', '102'])).stdout).toBe('status: running\n');
  });

  it('when systemd times out, then start fails with 255 and the VM stays stopped', async () => {
    const { dir, qm } = await makeVm({ running: false, pending: incidentFixPending() });
    setFault(dir, 'start_systemd_timeout', true);
    expect(await qm(['start', '102'])).toMatchObject({ code: 255, stderr: 'timeout waiting on systemd\n' });
    expect((await qm(['status', '102'])).stdout).toBe('status: stopped\n');
    expect((await qm(['pending', '102'])).stdout).toMatch(/^new scsihw: /m);
  });

  it('when stop hangs and its caller kills it, then the VM keeps running and the next stop takes over the config lock', async () => {
    const { dir, qm } = await makeVm();
    setFault(dir, 'stop_hang', true);
    const hung = await qm(['stop', '102'], 1000);
    expect(hung.killed).toBe(true);
    expect((await qm(['status', '102'])).stdout).toBe('status: running\n');

    setFault(dir, 'stop_hang', false);
    const stop = await qm(['stop', '102']);
    expect(stop).toMatchObject({ code: 0, stderr: '' });
    expect(stop.ms).toBeLessThan(5000); // well under the 10 s wait for a live lock holder
    expect((await qm(['status', '102'])).stdout).toBe('status: stopped\n');
  });
});

describe('simulated qm errors, guest agent and invocation log', () => {
  it('when asked about another vmid, a bad option or an unknown verb, then qm fails like real qm', async () => {
    const { qm } = await makeVm();
    expect(await qm(['status', '103'])).toMatchObject({ code: 2, stderr: "Configuration file 'nodes/pve/qemu-server/103.conf' does not exist\n" });
    expect(await qm(['stop', '103'])).toMatchObject({ code: 2 });
    const badOption = await qm(['stop', '102', '--force']);
    expect(badOption.code).toBe(255);
    expect(badOption.stderr).toMatch(/^Unknown option: force\n400 unable to parse option\n/);
    const unknown = await qm(['frobnicate', '102']);
    expect(unknown.code).toBe(255);
    expect(unknown.stderr).toMatch(/^ERROR: unknown command 'qm frobnicate'\nUSAGE: qm <COMMAND>/);
  });

  it('when the guest agent is asked, then ping and info answer while healthy, and it times out under an I/O stall', async () => {
    const [healthy, stalled, stopped] = await Promise.all([makeVm(), makeVm(), makeVm({ running: false })]);
    setFault(stalled.dir, 'io_stall', true);

    expect(await healthy.qm(['guest', 'cmd', '102', 'ping'])).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const info = await healthy.qm(['guest', 'cmd', '102', 'info']);
    expect(info.code).toBe(0);
    const parsed = JSON.parse(info.stdout) as { version: string; supported_command: { name: string }[] };
    expect(parsed.version).toBe('8.1.3');
    expect(parsed.supported_command.map((c) => c.name)).toContain('guest-ping');
    expect(await stopped.qm(['guest', 'cmd', '102', 'ping'])).toMatchObject({ code: 255, stderr: 'VM 102 is not running\n' });

    const timedOut = await stalled.qm(['guest', 'cmd', '102', 'ping']);
    expect(timedOut).toMatchObject({ code: 255, stderr: "VM 102 qmp command 'guest-ping' failed - got timeout\n" });
    expect(timedOut.ms).toBeGreaterThanOrEqual(1900);
  });

  it('when qm runs, then each call is logged with a start line and an end line, and a killed call only with a start line', async () => {
    const { dir, qm } = await makeVm();
    await qm(['status', '102']);
    await qm(['start', '102']);
    setFault(dir, 'qmp_silent', true);
    expect((await qm(['status', '102', '--verbose'], 800)).killed).toBe(true); // QMP never answers

    const log = invocations(dir);
    expect(log.map(({ argv, started, exit }) => ({ argv, started, exit }))).toEqual([
      { argv: ['status', '102'], started: true, exit: undefined },
      { argv: ['status', '102'], started: undefined, exit: 0 },
      { argv: ['start', '102'], started: true, exit: undefined },
      { argv: ['start', '102'], started: undefined, exit: 255 },
      { argv: ['status', '102', '--verbose'], started: true, exit: undefined },
    ]);
    for (const entry of log) expect(entry.t).toBeGreaterThan(Date.now() - 60_000);
  });
});

describe('simulated QEMU monitor (QMP)', () => {
  it('when a client connects, then QEMU greets it, insists on negotiation and answers queries', async () => {
    const { dir } = await makeVm();
    const qmp = qmpConnect(qmpSocketPath(dir));
    try {
      await qmp.nextLine();
      expect(qmp.received()).toBe(GREETING);
      expect((await qmp.execute('query-status')).error?.class).toBe('CommandNotFound');
      expect(await qmp.execute('qmp_capabilities')).toEqual({ return: {} });
      expect(await qmp.execute('query-status')).toEqual({ return: { status: 'running', singlestep: false, running: true } });
      const block = (await qmp.execute('query-block')).return as { device: string; inserted: { file: string; image: { format: string } } }[];
      expect(block[0]).toMatchObject({ device: 'drive-scsi0', inserted: { file: '/dev/pve/vm-102-disk-0', image: { format: 'raw' } } });
      expect(await qmp.execute('x')).toEqual({ error: { class: 'CommandNotFound', desc: 'The command x has not been found' } });
    } finally {
      qmp.close();
    }
  });

  it('when a second client connects while one holds the monitor, then it gets nothing until the first closes', async () => {
    const { dir } = await makeVm();
    const first = qmpConnect(qmpSocketPath(dir));
    const second = qmpConnect(qmpSocketPath(dir));
    try {
      expect(await first.nextLine()).toBeDefined();
      expect(await second.nextLine(300)).toBeUndefined();
      first.close();
      expect(`${await second.nextLine()}\r\n`).toBe(GREETING);
    } finally {
      first.close();
      second.close();
    }
  });

  it('when I/O flows, then block counters grow; under io_stall they freeze while query-status still answers', async () => {
    const { dir } = await makeVm();
    const qmp = await negotiated(dir);
    try {
      const a = await drive0Stats(qmp);
      await pause(300);
      const b = await drive0Stats(qmp);
      expect(b.wr_bytes! - a.wr_bytes!).toBeGreaterThan(3 * 8192);
      expect(b.wr_operations).toBeGreaterThan(a.wr_operations!);

      setFault(dir, 'io_stall', true);
      const c = await drive0Stats(qmp);
      await pause(300);
      const d = await drive0Stats(qmp);
      for (const key of ['rd_bytes', 'wr_bytes', 'rd_operations', 'wr_operations', 'flush_operations', 'wr_total_time_ns']) {
        expect(d[key], key).toBe(c[key]);
      }
      expect(d.idle_time_ns).toBeGreaterThan(c.idle_time_ns!);
      expect((await qmp.execute('query-status')).return).toMatchObject({ status: 'running' });
    } finally {
      qmp.close();
    }
  });

  it('when QMP is silent, then a client gets no greeting within 500 ms', async () => {
    const { dir } = await makeVm();
    setFault(dir, 'qmp_silent', true);
    const qmp = qmpConnect(qmpSocketPath(dir));
    try {
      expect(await qmp.nextLine(500)).toBeUndefined();
      expect(qmp.received()).toBe('');
    } finally {
      qmp.close();
    }
  });
});
