// The PVE forced-command dispatcher (host/pve/pve-dispatch) behind a real OpenSSH sshd, with
// the real `command="…",restrict,from="…"` authorized_keys line, over the lab's `qm` stand-in
// driving a REAL QEMU (VM 102 without a guest: blank disk, no kernel, real QMP). The stand-in
// records every call, so "nothing ran" is proven, not assumed.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { livePids } from '../lab/processes.js';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { Client, type ClientChannel } from 'ssh2';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pveForensics, pveMutation, pveStatus } from '../activities/pve/verbs.js';
import { summarizeForensics, type RawSection } from '../activities/pve/forensics.js';
import { isSshError, type SshError } from '../activities/ssh/errors.js';
import { fingerprint } from '../activities/ssh/host-keys.js';
import { DISPATCHER, REPO_ROOT, forcedCommandLine } from '../lab/pve-host.js';
import { generateKeyPair } from '../lab/keys.js';
import { incidentFixPending, initVm, lockHeld, readVm, setFault } from '../lab/pve/lab-vm.mjs';
import { isAlive, paths, procState, readPid, type Invocation } from '../lab/pve/pve-node.mjs';
import { MUTATING_VERBS, PVE_VERBS, type MutationResult } from '../workflows/pve-types.js';
import { USER, events, startPveFixture, timed, waitFor, type PveFixture } from './helpers/fixtures.js';

const DEADLINE = 90_000;

/** The qm calls forensics makes (the sections that go through qm). */
const FORENSICS_QM_CALLS = ['status 102 --verbose', 'config 102', 'config 102 --current', 'pending 102', 'guest cmd 102 ping', 'guest cmd 102 info'];
const MUTATING_QM = new Set(['reset', 'stop', 'start']);
const SECTION_NAMES = [
  'qm status --verbose',
  'qm config',
  'qm config --current',
  'qm pending',
  'qmp query-status query-block query-blockstats',
  'qmp query-blockstats (second sample)',
  'guest agent ping',
  'guest agent info',
  'qemu process',
  'vm scope',
  'ha resource',
  'host dmesg tail',
  'qm lock file',
  'guest console tail',
];

/**
 * qm guest cmd on a running VM whose agent does not answer (qemu-server's assert_agent_available:
 * `agent: 0` still counts as configured; the ping then fails).
 */
const NO_AGENT = 'QEMU guest agent is not running';

/** The grammar the dispatcher accepts, written independently of its sh implementation. */
const ACCEPTED = /^(status|forensics|reset|stop|start|cycle)( [A-Za-z][A-Za-z0-9._-]{7,127})?$/;

async function rejection(promise: Promise<unknown>): Promise<SshError> {
  try {
    await promise;
  } catch (error) {
    if (isSshError(error)) return error;
    throw error;
  }
  throw new Error('expected the call to fail with an SshError, but it succeeded');
}

/**
 * A fresh VM (new QEMU, the given pending config and faults) and where its qm record starts.
 * The lab starts QEMU through qm itself, so the record begins with that one `qm start`, and
 * only that: checked here, which also proves the record is really read. Tests look only at
 * the calls after the returned mark, i.e. the ones the dispatcher made.
 */
async function freshVm(fx: PveFixture, options: Parameters<PveFixture['resetVm']>[0] = {}): Promise<number> {
  await fx.resetVm(options);
  const calls = fx.qmCalls();
  expect(calls.map((c) => `${c.argv.join(' ')} -> ${c.exit ?? 'started'}`)).toEqual(
    options.running === false ? [] : ['start 102 -> started', 'start 102 -> 0'],
  );
  return calls.length;
}

/** Breaks the host's forensics store one way; returns what puts it back. */
function breakStore(store: string, id: string, fault: 'unwritable' | 'corrupt' | 'full'): () => void {
  switch (fault) {
    case 'unwritable': {
      // Root ignores permission bits: a directory in the document's place fails the write.
      const blocker = join(store, `${id}.json.tmp`);
      mkdirSync(blocker, { recursive: true });
      return () => rmSync(blocker, { recursive: true, force: true });
    }
    case 'corrupt': {
      const aside = `${store}.aside`;
      renameSync(store, aside);
      writeFileSync(store, 'not a directory\n');
      return () => {
        rmSync(store, { force: true });
        renameSync(aside, store);
      };
    }
    case 'full':
      // A small tmpfs over the store, filled up (root may mount here; CI runs as root).
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'breakglass-full', store]);
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${join(store, 'filler')}`, 'bs=4k'], { stdio: 'ignore' });
      } catch {
        // dd stops with "No space left on device": the store is full, as wanted.
      }
      return () => execFileSync('umount', [store]);
  }
}

/** qm calls recorded since mark (see freshVm). */
function qmCallsSince(fx: PveFixture, mark: number): Invocation[] {
  return fx.qmCalls().slice(mark);
}

/** qm calls of one verb that started since mark. */
function qmStartedSince(fx: PveFixture, mark: number, verb: string): Invocation[] {
  return qmCallsSince(fx, mark).filter((call) => call.started && call.argv[0] === verb);
}

/** The qm calls that started since mark, as "verb args", split at each mutating call. */
function mutationWindows(fx: PveFixture, mark: number): { mutation: string; before: string[] }[] {
  const windows: { mutation: string; before: string[] }[] = [];
  let before: string[] = [];
  for (const call of qmCallsSince(fx, mark).filter((c) => c.started)) {
    const line = call.argv.join(' ');
    if (MUTATING_QM.has(call.argv[0] ?? '')) {
      windows.push({ mutation: line, before });
      before = [];
    } else {
      before.push(line);
    }
  }
  return windows;
}

/** The `qm pending` lines the dispatcher reports (new/del only) for a pending config. */
function pendingLines(pending: Record<string, string>): string[] {
  return Object.keys(pending)
    .sort()
    .map((key) => `new ${key}: ${pending[key]}`);
}

/** The real QEMU's command line. */
function cmdline(pid: number): string {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
}

/** Process state letter of the lab's storage daemon (the disk's NBD server), or null when it is gone. */
function storageDaemonState(fx: PveFixture): string | null {
  const pid = readPid(paths(fx.host.nodeRoot).storagePidFile);
  return pid === null ? null : procState(pid);
}

/** The stall is real: the daemon serving the disk is stopped (SIGSTOP takes effect a moment after it is sent). */
async function expectDiskFrozen(fx: PveFixture): Promise<void> {
  await waitFor('the storage daemon to be stopped (state T)', () => (storageDaemonState(fx) === 'T' ? true : undefined), 3_000);
}

/** In the host's own log: forensics started and finished before the verb's first step, for every run. */
function expectForensicsFirstInLog(lines: string[], requestId: string): void {
  const all = events(lines);
  const mine = all.filter((e) => e.request === requestId).map((e) => (e.event === 'verb-step' ? `verb-step ${/step="([^"]*)"/.exec(e.line)?.[1]}` : e.event));
  const at = (name: string) => mine.indexOf(name);
  expect(at('forensics-start'), mine.join(' | ')).toBeGreaterThanOrEqual(0);
  expect(at('forensics-start')).toBeLessThan(at('forensics-done'));
  expect(at('forensics-done')).toBeLessThan(at('verb-start'));
  for (const [index, name] of mine.entries()) {
    if (name.startsWith('verb-step')) expect(index, name).toBeGreaterThan(at('verb-start'));
  }
  // And across the whole log: no request ever reached a step before its forensics were done.
  const done = new Set<string>();
  for (const e of all) {
    if (e.event === 'forensics-done' && e.request) done.add(e.request);
    if (e.event === 'verb-step') expect(done.has(e.request ?? ''), e.line).toBe(true);
  }
}

function sha256(text: Buffer | string): string {
  return createHash('sha256').update(text).digest('hex');
}

function savedSummary(path: string) {
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { sections: RawSection[] };
  return summarizeForensics(doc.sections);
}

function savedSection(path: string, name: string): RawSection | undefined {
  const doc = JSON.parse(readFileSync(path, 'utf8')) as { sections: RawSection[] };
  return doc.sections.find((section) => section.name === name);
}

/**
 * Each block owns its PVE host, so the blocks run side by side (they mostly wait on real
 * processes); the tests inside a block share that host's VM and run in order.
 */
function hostBlock(name: string, body: () => void): void {
  describe(name, { concurrent: true }, body);
}
const step = it.sequential;

// ------------------------------------------------------------------------------------------

hostBlock('PVE dispatcher: one verb at a time, busy and in-progress answers, a hung qm stop', () => {
  let fx: PveFixture;
  beforeAll(async () => {
    // Short waits so "busy" and "in progress" come quickly; stop_timeout 0 + stop_grace 15
    // bound a hung `qm stop` on the host at 15 s.
    fx = await startPveFixture('pve-busy', { config: { lock_wait: 1, status_lock_wait: 1, result_wait: 2, stop_timeout: 0, stop_grace: 15 } });
  });
  afterAll(async () => {
    await fx?.stop();
  });

  step('when a stop hangs on the host, then other verbs get a typed busy naming the holder, the repeat says in progress, and the stop ends timed out on the host', async () => {
    const mark = await freshVm(fx);
    const pid = readVm(fx.host.nodeRoot).pid;
    await setFault(fx.host.nodeRoot, 'stop_hang', true);

    // The first caller collects "in progress" after result_wait: the stop keeps running on the host.
    const first = await timed(() => pveMutation(fx.target, 'stop', { requestId: 'fx-hung-0001', deadlineMs: DEADLINE }));
    expect(first.error).toMatchObject({ kind: 'in_progress', retryable: true });
    await fx.waitForLog(/event=verb-step verb=stop request=fx-hung-0001 step="qm stop"/);

    // Another mutating verb: busy within lock_wait (1 s), naming the holder.
    const cycle = await timed(() => pveMutation(fx.target, 'cycle', { requestId: 'fx-hung-0002', deadlineMs: DEADLINE }));
    expect(cycle.error).toMatchObject({ kind: 'busy', retryable: true });
    expect((cycle.error as SshError).message).toContain('held by stop fx-hung-0001');
    expect(cycle.ms).toBeGreaterThanOrEqual(900);
    expect(cycle.ms).toBeLessThan(5_000);
    expect((cycle.error as SshError).detail).toMatchObject({ result: 'busy', holder: { verb: 'stop', request_id: 'fx-hung-0001' } });

    // status waits at most status_lock_wait (1 s) too.
    const status = await timed(() => pveStatus(fx.target, { deadlineMs: DEADLINE }));
    expect(status.error).toMatchObject({ kind: 'busy', retryable: true });
    expect((status.error as SshError).message).toContain('held by stop fx-hung-0001');
    expect(status.ms).toBeLessThan(5_000);

    // Repeating the running request id waits (bounded by result_wait) and says in progress.
    const again = await timed(() => pveMutation(fx.target, 'stop', { requestId: 'fx-hung-0001', deadlineMs: DEADLINE }));
    expect(again.error).toMatchObject({ kind: 'in_progress' });
    expect(again.ms).toBeGreaterThanOrEqual(1_900);
    expect(again.ms).toBeLessThan(6_000);

    // The hung qm does not hold the dispatcher's lock: a daemonising child never inherits it.
    const hungQm = qmStartedSince(fx, mark, 'stop');
    expect(hungQm).toHaveLength(1);
    expect(qmCallsSince(fx, mark).filter((c) => c.argv[0] === 'stop' && c.exit !== undefined)).toEqual([]);
    expect(qmProcessesHoldingLock(fx)).toEqual({ qmProcesses: expect.any(Number), holdingLock: 0 });
    expect(qmProcessesHoldingLock(fx).qmProcesses).toBeGreaterThan(0);

    // The host's own time limit ends the stop; the result is journaled and replayed.
    await fx.waitForLog(/event=verb-done verb=stop request=fx-hung-0001 exit=1/, 30_000);
    const done = await rejection(pveMutation(fx.target, 'stop', { requestId: 'fx-hung-0001', deadlineMs: DEADLINE }));
    expect(done).toMatchObject({ kind: 'verb_failed', retryable: false });
    // timeout's SIGTERM reaches qm's front, which passes it to its task worker (a wedged stop
    // ignores it); the SIGKILL 2 s later ends the front only: exit 137.
    expect(done.message).toContain('qm stop exited 137 (timed out on the host)');
    const detail = done.detail as MutationResult;
    expect(detail).toMatchObject({ replayed: true, ok: false, qemuSurvived: true, survivors: [{ pid }] });
    expect(detail.steps).toEqual([expect.objectContaining({ name: 'qm stop', timedOut: true })]);
    expect(detail.steps[0]!.durationMs).toBeGreaterThanOrEqual(14_500);
    expect(detail.steps[0]!.durationMs).toBeLessThan(20_000);

    // Nothing else ever ran a mutation and the VM is as it was (the same real QEMU). The killed
    // qm's front is gone, but its task worker lives on holding the VM's config lock, as a real
    // qm's does: the result names that task.
    expect(qmCallsSince(fx, mark).filter((c) => c.started && MUTATING_QM.has(c.argv[0] ?? '')).map((c) => c.argv[0])).toEqual(['stop']);
    expect(qmProcessesHoldingLock(fx).qmProcesses).toBe(0);
    expect(lockHeld(paths(fx.host.nodeRoot).lockFile)).toBe(true);
    expect(detail.lockHolder?.task).toMatch(/^UPID:lab:\S+:qmstop:102:root@pam:$/);
    await setFault(fx.host.nodeRoot, 'stop_hang', false);
    expect((await pveStatus(fx.target, { deadlineMs: DEADLINE })).vm).toMatchObject({ status: 'running', pid });
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ running: true, pid });
  });
});

/** Live qm stand-in processes of this fixture, and how many of them have the dispatcher's lock file open. */
function qmProcessesHoldingLock(fx: PveFixture): { qmProcesses: number; holdingLock: number } {
  const lockFile = join(fx.host.stateDir, 'dispatch.lock');
  let qmProcesses = 0;
  let holdingLock = 0;
  for (const pid of qmProcessesOf(fx.host.nodeRoot)) {
    let fds: string[];
    try {
      fds = readdirFds(pid);
    } catch {
      continue;
    }
    qmProcesses++;
    if (fds.includes(lockFile)) holdingLock++;
  }
  return { qmProcesses, holdingLock };
}

/** The qm stand-in runs as `node …/lab/pve/qm.mjs --root NODE_ROOT <qm args>`. */
function qmProcessesOf(nodeRoot: string): number[] {
  return livePids((argv) => argv.some((a) => a.endsWith('/lab/pve/qm.mjs')) && argv.includes(nodeRoot));
}

/** Whether a process has the dispatcher's lock file open. */
function holdsDispatcherLock(fx: PveFixture, pid: number): boolean {
  return readdirFds(pid).includes(join(fx.host.stateDir, 'dispatch.lock'));
}

function readdirFds(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return '';
    }
  });
}

// ------------------------------------------------------------------------------------------

hostBlock('PVE dispatcher: faults of the real QEMU in forensics surface as clear results', () => {
  let fx: PveFixture;
  beforeAll(async () => {
    // section_timeout 5 and status_timeout 6: with QMP silent, `qm status --verbose` answers
    // only after its 3 s QMP budget (as Proxmox's does), and must still be read.
    fx = await startPveFixture('pve-faults-forensics', { config: { section_timeout: 5, qmp_timeout: 1, status_timeout: 6 } });
  });
  afterAll(async () => {
    await fx?.stop();
  });

  step('when I/O is stalled while QMP answers (the 2026-06-11 case), then forensics completes with QMP answering, the flat counters of a guest-less disk not called a stall, and no QMP section times out', async () => {
    await freshVm(fx, { faults: ['io_stall'] });
    await expectDiskFrozen(fx);
    const result = await pveForensics(fx.target, { requestId: 'fx-iostall-0001', deadlineMs: DEADLINE });
    // Without a guest nothing waits on the disk, so its flat counters are not called a stall
    // (an idle guest's look the same): what this proves is that QMP keeps answering over a
    // really frozen disk and that the two samples are read as one delta per device. The real
    // stall's verdict is in lab-devvm.test.ts.
    expect(result.summary).toMatchObject({ qmpAnswered: true, qmpStatus: 'running', ioFrozen: false, ioVerdict: 'flat', guestAgentAnswered: false, timedOutSections: [] });
    expect(result.summary.blockDeltas).toEqual([expect.objectContaining({ device: 'drive-scsi0' })]);
    expect(result.sections.find((s) => s.name === 'guest agent ping')).toMatchObject({ exit: 255, output: NO_AGENT });
    expect(storageDaemonState(fx)).toBe('T');
  });

  step('when QMP is silent, then the QMP sections time out within their own deadlines, qm status still says running (copied, not asked), and the capture completes', async () => {
    await freshVm(fx, { faults: ['qmp_silent'] });
    const pid = readVm(fx.host.nodeRoot).pid;
    const call = await timed(() => pveForensics(fx.target, { requestId: 'fx-qmpsilent-0001', deadlineMs: DEADLINE }));
    const result = call.value!;
    expect(result.summary).toMatchObject({ qmpAnswered: false, qmpStatus: null, ioFrozen: null });
    expect(result.summary.timedOutSections).toEqual(['qmp query-status query-block query-blockstats', 'qmp query-blockstats (second sample)']);
    const limits: Record<string, number> = { 'qmp query-status query-block query-blockstats': 1, 'qmp query-blockstats (second sample)': 1 };
    for (const section of result.sections) {
      // Each section under its own limit (plus timeout's 2 s kill grace at worst).
      expect(section.durationMs, section.name).toBeLessThan((limits[section.name] ?? 5) * 1000 + 2_500);
    }
    // Far below the sum of the limits: only the two QMP sections and qm status wait at all
    // (1 + 1 + 3 s, the 1 s sample interval) plus the other qm calls, ssh and slack.
    expect(call.ms).toBeLessThan(25_000);
    expect(result.sections.map((s) => s.name)).toEqual(SECTION_NAMES);

    // `qm status` proves little: it waited for the monitor, got nothing, and copied `status`
    // into qmpstatus (no running-qemu: that one is only known when QMP answers). It still names
    // the pid, so the wedged QEMU's /proc is captured.
    const byName = new Map(result.sections.map((s) => [s.name, s.output]));
    expect(byName.get('qm status --verbose')).toMatch(/^qmpstatus: running$/m);
    expect(byName.get('qm status --verbose')).toContain(`pid: ${pid}`);
    expect(byName.get('qm status --verbose')).not.toContain('running-qemu');
    expect(byName.get('qemu process')).toContain(`== /proc/${pid}/status`);
    expect((await pveStatus(fx.target, { deadlineMs: DEADLINE })).vm).toMatchObject({ status: 'running', qmpstatus: 'running', pid });
  });
});

hostBlock('PVE dispatcher: faults in mutating verbs surface as typed errors', () => {
  let fx: PveFixture;
  beforeAll(async () => {
    // The lab's own time limits otherwise: a QEMU that answers nothing makes `qm status` take its
    // 3 s QMP budget and `qm stop` its whole escalation (quit 8 s here, SIGTERM + 10 s, SIGKILL
    // + 1 s), and both must fit the host's limits for the survivor to be seen.
    fx = await startPveFixture('pve-faults-verbs', { config: { qmp_timeout: 1 } });
  });
  afterAll(async () => {
    await fx?.stop();
  });

  step('when QEMU cannot be killed (D state), then stop fails as verb_failed with the survivor reported, although qm stop exited 0 and status says stopped', async () => {
    const mark = await freshVm(fx, { faults: ['dstate'] });
    const pid = readVm(fx.host.nodeRoot).pid!;
    expect(procState(pid)).toBe('D');
    const error = await rejection(pveMutation(fx.target, 'stop', { requestId: 'fx-dstate-0001', deadlineMs: DEADLINE }));
    expect(error).toMatchObject({ kind: 'verb_failed', retryable: false });
    expect(error.message).toContain('QEMU survived the stop');
    // qm went through its whole escalation, believed the SIGKILL took, cleaned up and exited 0
    // (as qemu-server does): the pid file is gone and status says stopped, while the old QEMU
    // lives on. Only the dispatcher's own look at the process tells.
    const detail = error.detail as MutationResult;
    expect(detail.steps).toEqual([expect.objectContaining({ name: 'qm stop', exit: 0, timedOut: false })]);
    expect(detail.steps[0]!.output).toContain('terminating now with SIGKILL');
    expect(detail).toMatchObject({
      ok: false,
      qemuSurvived: true,
      survivors: [{ pid, leaderState: expect.stringMatching(/^D /), inScope: true }],
      before: { status: 'running', pid },
      after: { status: 'stopped', pid: null },
    });
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ running: false, pid: null });
    expect(isAlive(pid)).toBe(true);
    expect(cmdline(pid)).toContain('qemu-system-x86_64');
    // The evidence taken before the stop: a QEMU that answered nothing, and its process state.
    expect(savedSummary(detail.forensics!.path)).toMatchObject({ qmpAnswered: false, qemuProcessState: expect.stringMatching(/^D /) });
    expect(qmStartedSince(fx, mark, 'stop')).toHaveLength(1);
    expect(qmCallsSince(fx, mark).filter((c) => c.argv[0] === 'stop' && c.exit !== undefined).map((c) => c.exit)).toEqual([0]);
    expectForensicsFirstInLog(await fx.log(), 'fx-dstate-0001');
  });

  step('when the VM config is locked (backup), then reset fails as vm_locked (retryable) and status shows the lock', async () => {
    await freshVm(fx, { faults: ['locked'] });
    const pid = readVm(fx.host.nodeRoot).pid;
    const error = await rejection(pveMutation(fx.target, 'reset', { requestId: 'fx-locked-0001', deadlineMs: DEADLINE }));
    expect(error).toMatchObject({ kind: 'vm_locked', retryable: true });
    expect(error.message).toContain('VM is locked (backup)');
    expect((await pveStatus(fx.target, { deadlineMs: DEADLINE })).vm).toMatchObject({ status: 'running', lock: 'backup', pid });
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ running: true, pid, config: { lock: 'backup' } });
    expectForensicsFirstInLog(await fx.log(), 'fx-locked-0001');
  });

  step("when qm cannot take the lock file, then stop fails as vm_locked with qm's message", async () => {
    await freshVm(fx, { faults: ['lockfile_timeout'] });
    const pid = readVm(fx.host.nodeRoot).pid;
    const error = await rejection(pveMutation(fx.target, 'stop', { requestId: 'fx-lockfile-0001', deadlineMs: DEADLINE }));
    expect(error).toMatchObject({ kind: 'vm_locked', retryable: true });
    expect(error.message).toContain("can't lock file '/var/lock/qemu-server/lock-102.conf' - got timeout");
    // qm really waited for the lock (10 s), then gave up; the forensics saw the holder.
    const detail = error.detail as MutationResult;
    expect(detail.steps).toEqual([expect.objectContaining({ name: 'qm stop', exit: 255, timedOut: false })]);
    expect(detail.steps[0]!.durationMs).toBeGreaterThanOrEqual(9_500);
    expect(savedSection(detail.forensics!.path, 'qm lock file')).toMatchObject({ exit: 0, timed_out: false, output: expect.stringMatching(/lock-102\.conf\nheld:\n/) });
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ running: true, pid });
    expectForensicsFirstInLog(await fx.log(), 'fx-lockfile-0001');
  });
});

// ------------------------------------------------------------------------------------------

hostBlock('PVE verbs through real sshd: happy paths and state changes', () => {
  let fx: PveFixture;
  beforeAll(async () => {
    fx = await startPveFixture('pve-verbs', { vm: { pending: incidentFixPending() } });
  });
  afterAll(async () => {
    await fx?.stop();
  });

  step('when status is asked, then it reports status, qmpstatus, pid, uptime, lock and pending config, and mutates nothing', async () => {
    const mark = await freshVm(fx, { pending: incidentFixPending() });
    const status = await pveStatus(fx.target, { deadlineMs: DEADLINE });
    expect(status).toMatchObject({ verb: 'status', vmid: 102, vm: { status: 'running', qmpstatus: 'running', pid: readVm(fx.host.nodeRoot).pid, lock: '' } });
    expect(status.vm.uptimeSeconds).toBeGreaterThanOrEqual(0);
    expect(status.vm.pending.present).toBe(true);
    expect(status.vm.pending.lines).toEqual(pendingLines(incidentFixPending()));
    expect(status.vm.pending.lines).toEqual(['new scsi0: local-lvm:vm-102-disk-0,aio=threads,iothread=1', 'new scsihw: virtio-scsi-single']);
    expect(Date.parse(status.at)).toBeGreaterThan(Date.now() - 60_000);
    expect(mutationWindows(fx, mark)).toEqual([]);
    expect(qmCallsSince(fx, mark).filter((c) => c.started).map((c) => c.argv.join(' '))).toEqual(['status 102 --verbose', 'pending 102']);
  });

  step('when forensics is asked, then every section is captured with its duration, blockstats are sampled twice, and the saved file matches its sha256', async () => {
    const mark = await freshVm(fx, { pending: incidentFixPending() });
    const vmPid = readVm(fx.host.nodeRoot).pid;
    const output = await fx.call('forensics fx-forensics-0001');
    expect(output.exitCode).toBe(0);
    const raw = JSON.parse(output.stdout.text) as {
      ok: boolean;
      forensics: { path: string; sha256: string; duration_ms: number };
      document: { vmid: number; request_id: string; blockstats_interval_s: number; sections: RawSection[] };
    };
    expect(raw.ok).toBe(true);

    // Saved on the host under the request id; the hash is of the saved bytes, which are also
    // exactly what was printed.
    expect(raw.forensics.path).toBe(join(fx.host.stateDir, 'forensics', 'fx-forensics-0001.json'));
    const saved = await readFile(raw.forensics.path);
    expect(sha256(saved)).toBe(raw.forensics.sha256);
    expect(output.stdout.text.endsWith(`"document":${saved.toString('utf8')}}\n`)).toBe(true);

    const { sections } = raw.document;
    expect(raw.document).toMatchObject({ vmid: 102, request_id: 'fx-forensics-0001', blockstats_interval_s: 1 });
    expect(sections.map((s) => s.name)).toEqual(SECTION_NAMES);
    // VM 102 runs without a guest here: no agent answers, and qm says so and fails.
    const noAgent = new Set(['guest agent ping', 'guest agent info']);
    for (const section of sections) {
      expect(section.timed_out, section.name).toBe(false);
      expect(section.duration_ms, section.name).toBeGreaterThanOrEqual(0);
      if (noAgent.has(section.name)) expect(section, section.name).toMatchObject({ exit: 255, output: NO_AGENT });
      else if (section.name !== 'host dmesg tail') expect(section.exit, `${section.name}: ${section.output}`).toBe(0);
    }
    const byName = new Map(sections.map((s) => [s.name, s.output]));
    expect(byName.get('qm status --verbose')).toContain(`pid: ${vmPid}`);
    expect(byName.get('qm config')).toMatch(/^scsihw: virtio-scsi-single$/m);
    expect(byName.get('qm config --current')).toMatch(/^scsihw: virtio-scsi-pci$/m);
    expect(byName.get('qm pending')).toMatch(/^new scsihw: virtio-scsi-single$/m);
    expect(byName.get('qemu process')).toContain(`== /proc/${vmPid}/status`);
    expect(byName.get('qemu process')).toMatch(/^State:\s+\S/m);
    // qm keeps its lock file (as Proxmox's does); nobody holds it now.
    expect(byName.get('qm lock file')).toContain(paths(fx.host.nodeRoot).lockFile);
    expect(byName.get('qm lock file')).toMatch(/^not held$/m);
    // Two QMP samples from the real QEMU, both with the disk's block statistics. (No guest,
    // so the counters are idle: whether I/O moves is not asked here.)
    expect(byName.get(SECTION_NAMES[4]!)).toMatch(/"device": ?"drive-scsi0"/);
    expect(byName.get(SECTION_NAMES[4]!)).toContain('"rd_bytes"');
    expect(byName.get(SECTION_NAMES[5]!)).toContain('"rd_bytes"');
    const summary = summarizeForensics(sections);
    expect(summary).toMatchObject({ qmpAnswered: true, qmpStatus: 'running', guestAgentAnswered: false, timedOutSections: [], failedSections: ['guest agent ping', 'guest agent info'] });
    expect(summary.blockDeltas).toEqual([expect.objectContaining({ device: 'drive-scsi0' })]);
    expect(summary.ioFrozen).not.toBeNull();

    // Forensics never mutates; asking again with the id replays the same capture.
    expect(mutationWindows(fx, mark)).toEqual([]);
    const replay = await pveForensics(fx.target, { requestId: 'fx-forensics-0001', deadlineMs: DEADLINE });
    expect(replay).toMatchObject({ replayed: true, forensics: { sha256: raw.forensics.sha256 } });
    expect(qmStartedSince(fx, mark, 'config')).toHaveLength(2); // config + config --current, once
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ running: true, pid: vmPid });
    expect(readVm(fx.host.nodeRoot).pending).toEqual(incidentFixPending());
  });

  step('when reset runs with pending config, then the QEMU pid stays, the pending config is reported unapplied with a warning, and forensics came first', async () => {
    const mark = await freshVm(fx, { pending: incidentFixPending() });
    const pid = readVm(fx.host.nodeRoot).pid!;
    const result = await pveMutation(fx.target, 'reset', { requestId: 'fx-reset-0001', deadlineMs: DEADLINE });

    expect(result).toMatchObject({ verb: 'reset', ok: true, replayed: false, pidUnchanged: true, pendingUnapplied: true, oldPid: pid, newPid: pid });
    // Not only acknowledged: the host asked the monitor again afterwards and it answered.
    expect(result).toMatchObject({ acknowledged: true, qmpAfterReset: 'answers' });
    expect(result.reason).toBeUndefined();
    expect(result.warning).toMatch(/reset does not apply it; a cycle/);
    expect(result.after.pending.present).toBe(true);
    expect(result.after.pending.lines).toEqual(pendingLines(incidentFixPending()));
    expect(result.steps.map((s) => s.name)).toEqual(['qm reset']);
    // The same real QEMU, still on the old disk set-up (the staged fix is not in its command line).
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ pid, running: true, config: { scsihw: 'virtio-scsi-pci' } });
    expect(readVm(fx.host.nodeRoot).pending).toEqual(incidentFixPending());
    expect(cmdline(pid)).not.toContain('aio=threads');

    // The evidence was captured before the reset and kept.
    expect(result.forensics?.path).toBe(join(fx.host.stateDir, 'forensics', 'fx-reset-0001.json'));
    expect(sha256(readFileSync(result.forensics!.path))).toBe(result.forensics!.sha256);
    expect(savedSummary(result.forensics!.path)).toMatchObject({ qmpAnswered: true, qmpStatus: 'running', timedOutSections: [] });
    expectForensicsFirstInLog(await fx.log(), 'fx-reset-0001');
    const windows = mutationWindows(fx, mark);
    expect(windows.map((w) => w.mutation)).toEqual(['reset 102']);
    expect(windows[0]!.before).toEqual(expect.arrayContaining(FORENSICS_QM_CALLS));
    expect(qmCallsSince(fx, mark).filter((c) => c.argv[0] === 'reset' && c.exit !== undefined).map((c) => c.exit)).toEqual([0]);
    // A repeat of the request id replays the same verified result.
    const replay = await fx.call('reset fx-reset-0001');
    expect(replay.exitCode).toBe(0);
    expect(JSON.parse(replay.stdout.text)).toMatchObject({ replayed: true, ok: true, acknowledged: true, qmp_after_reset: 'answers', reason: '' });
  });

  step('when cycle runs, then QEMU gets a new pid, the pending config is applied (qm pending empty), the stall is gone, and forensics came first', async () => {
    // The 2026-06-11 situation: I/O stalled while QMP answers, the fix staged as pending config.
    const mark = await freshVm(fx, { pending: incidentFixPending(), faults: ['io_stall'] });
    const pid = readVm(fx.host.nodeRoot).pid!;
    await expectDiskFrozen(fx);
    const result = await pveMutation(fx.target, 'cycle', { requestId: 'fx-cycle-0001', deadlineMs: DEADLINE });

    expect(result).toMatchObject({ verb: 'cycle', ok: true, replayed: false, oldPid: pid, pendingApplied: true, qemuSurvived: false });
    expect(result.failedAt).toBeUndefined();
    expect(result.newPid).not.toBeNull();
    expect(result.newPid).not.toBe(pid);
    expect(result.before.pending.present).toBe(true);
    expect(result.after).toMatchObject({ status: 'running', pid: result.newPid, pending: { present: false, lines: [] } });
    expect(result.steps.map((s) => s.name)).toEqual(['qm stop', 'qm start']);
    // The stall is real: QEMU's teardown blocks on the frozen disk, so QMP `quit` goes unanswered,
    // SIGTERM does not help either, and only qm's SIGKILL ends the old QEMU, within the host's limit.
    expect(result.steps[0]!).toMatchObject({ exit: 0, timedOut: false });
    expect(result.steps[0]!.output).toContain('VM quit/powerdown failed - terminating now with SIGTERM');
    expect(result.steps[0]!.output).toContain('VM still running - terminating now with SIGKILL');
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ pid: result.newPid, running: true, config: incidentFixPending() });
    expect(readVm(fx.host.nodeRoot).pending).toEqual({});
    expect(isAlive(pid)).toBe(false);

    // The evidence was captured before the stop: QMP answered over the frozen disk (with no
    // guest nothing waits on it, so its flat counters are not called a stall).
    expect(savedSummary(result.forensics!.path)).toMatchObject({ qmpAnswered: true, qmpStatus: 'running', ioVerdict: 'flat' });
    expectForensicsFirstInLog(await fx.log(), 'fx-cycle-0001');
    const windows = mutationWindows(fx, mark);
    expect(windows.map((w) => w.mutation)).toEqual(['stop 102 --timeout 8 --overrule-shutdown 1', 'start 102']);
    expect(windows[0]!.before).toEqual(expect.arrayContaining(FORENSICS_QM_CALLS));

    // A fresh QEMU with the fix: the disk is opened by QEMU itself with aio=threads on an
    // iothread, no longer through the frozen storage path (its daemon is gone), and the new
    // daemonised QEMU did not inherit the dispatcher's lock.
    const newPid = result.newPid!;
    expect(cmdline(newPid)).toContain('aio=threads');
    expect(cmdline(newPid)).toContain('iothread=iothread-virtioscsi0');
    expect(cmdline(newPid)).not.toContain('nbd:');
    expect(storageDaemonState(fx)).toBeNull();
    expect(holdsDispatcherLock(fx, newPid)).toBe(false);
    const after = await pveForensics(fx.target, { requestId: 'fx-cycle-0001-after', deadlineMs: DEADLINE });
    expect(after.summary).toMatchObject({ qmpAnswered: true, qmpStatus: 'running', timedOutSections: [] });
    const block = after.sections.find((s) => s.name === SECTION_NAMES[4])!.output;
    expect(block).toContain('vm-102-disk-0.raw');
    expect(block).not.toContain('nbd');
  });

  step('when stop and then start run, then the VM stops (no pid) and starts with a new pid, each after its own forensics', async () => {
    const mark = await freshVm(fx);
    const pid = readVm(fx.host.nodeRoot).pid!;
    const stop = await pveMutation(fx.target, 'stop', { requestId: 'fx-stop-0001', deadlineMs: DEADLINE });
    expect(stop).toMatchObject({ ok: true, qemuSurvived: false, oldPid: pid, after: { status: 'stopped', pid: null } });
    // QEMU quit on the QMP `quit` (no escalation to SIGKILL) and is really gone.
    expect(stop.steps[0]!.output).not.toContain('SIGKILL');
    expect(stop.steps[0]!.durationMs).toBeLessThan(8_000);
    expect(isAlive(pid)).toBe(false);
    expect(readVm(fx.host.nodeRoot).running).toBe(false);
    // Proxmox's vmstatus copies `status` into qmpstatus for a VM that is not running too.
    expect((await pveStatus(fx.target, { deadlineMs: DEADLINE })).vm).toMatchObject({ status: 'stopped', pid: null, qmpstatus: 'stopped' });

    const start = await pveMutation(fx.target, 'start', { requestId: 'fx-start-0001', deadlineMs: DEADLINE });
    expect(start).toMatchObject({ ok: true, before: { status: 'stopped' }, after: { status: 'running' } });
    expect(start.newPid).not.toBeNull();
    expect(start.newPid).not.toBe(pid);
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ running: true, pid: start.newPid });
    expect(cmdline(start.newPid!)).toContain('qemu-system-x86_64');
    // The QEMU that qm start daemonised did not inherit the dispatcher's lock.
    expect(holdsDispatcherLock(fx, start.newPid!)).toBe(false);

    const lines = await fx.log();
    expectForensicsFirstInLog(lines, 'fx-stop-0001');
    expectForensicsFirstInLog(lines, 'fx-start-0001');
    const windows = mutationWindows(fx, mark);
    expect(windows.map((w) => w.mutation)).toEqual(['stop 102 --timeout 8 --overrule-shutdown 1', 'start 102']);
    for (const window of windows) expect(window.before).toEqual(expect.arrayContaining(FORENSICS_QM_CALLS));
  });
});

hostBlock('PVE dispatcher: a cycle on a really stalled disk with Proxmox VE 9\'s own stop timing', () => {
  let fx: PveFixture;
  beforeAll(async () => {
    // result_wait 120: the caller waits for the whole cycle (the lab's default is 60 s);
    // stop_grace 90: the dispatcher's default, made for PVE 9's escalation.
    fx = await startPveFixture('pve-stall-pve9', { vm: { pending: incidentFixPending() }, config: { result_wait: 120, stop_grace: 90 } });
  });
  afterAll(async () => {
    await fx?.stop();
  });

  // The lab's VMs give QMP `quit` 8 s; Proxmox VE 9's qm gives it 60 s (QMPClient.pm), then
  // SIGTERM and 10 s, then SIGKILL and 1 s (_do_vm_stop), whatever --timeout says: ~71 s for a
  // QEMU whose teardown hangs on its disk. The host's limit on `qm stop` must let that finish,
  // or the cycle that fixes the 2026-06-11 stall leaves the wedged QEMU running.
  step('when the disk is stalled and qm stop needs its full escalation (quit 60 s, SIGTERM, SIGKILL), then the host lets it finish and the cycle succeeds', async () => {
    await initVm(fx.host.nodeRoot, { pending: incidentFixPending(), qmpQuitTimeoutS: 60 });
    await setFault(fx.host.nodeRoot, 'io_stall', true);
    const pid = readVm(fx.host.nodeRoot).pid!;
    await expectDiskFrozen(fx);

    const result = await pveMutation(fx.target, 'cycle', { requestId: 'fx-stall9-0001', deadlineMs: 150_000 });
    expect(result).toMatchObject({ verb: 'cycle', ok: true, oldPid: pid, pendingApplied: true, qemuSurvived: false });
    expect(result.steps[0]!).toMatchObject({ name: 'qm stop', exit: 0, timedOut: false });
    expect(result.steps[0]!.durationMs).toBeGreaterThanOrEqual(70_000);
    expect(result.steps[0]!.output).toContain('VM still running - terminating now with SIGKILL');
    expect(isAlive(pid)).toBe(false);
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ running: true, pid: result.newPid, config: incidentFixPending() });
    expect(cmdline(result.newPid!)).toContain('aio=threads');
  }, 150_000);
});

hostBlock('PVE dispatcher: the request-id journal (at most once, replay, client gone)', () => {
  let fx: PveFixture;
  beforeAll(async () => {
    fx = await startPveFixture('pve-journal', { vm: { pending: incidentFixPending() } });
  });
  afterAll(async () => {
    await fx?.stop();
  });

  step('when the same request id is sent twice, then the verb runs once and the repeat returns the recorded result marked replayed', async () => {
    const mark = await freshVm(fx, { pending: incidentFixPending() });
    const first = await pveMutation(fx.target, 'cycle', { requestId: 'fx-twice-0001', deadlineMs: DEADLINE });
    const second = await pveMutation(fx.target, 'cycle', { requestId: 'fx-twice-0001', deadlineMs: DEADLINE });

    expect(first.replayed).toBe(false);
    expect(second).toEqual({ ...first, replayed: true });
    expect(qmStartedSince(fx, mark, 'stop')).toHaveLength(1);
    expect(qmStartedSince(fx, mark, 'start')).toHaveLength(1);
    expect(readVm(fx.host.nodeRoot).pid).toBe(first.newPid);
    expect((await fx.log()).filter((l) => /event=replayed verb=cycle request=fx-twice-0001/.test(l))).toHaveLength(1);
  });

  step('when a used request id comes back with another verb, then it is a conflict and nothing runs', async () => {
    await freshVm(fx);
    await pveMutation(fx.target, 'stop', { requestId: 'fx-reused-0001', deadlineMs: DEADLINE });
    const calls = fx.qmCalls().length;

    const output = await fx.call('start fx-reused-0001');
    expect(output.exitCode).toBe(64);
    expect(JSON.parse(output.stdout.text)).toMatchObject({ ok: false, result: 'conflict', recorded_verb: 'stop', reason: "request id fx-reused-0001 was already used for 'stop'" });
    const error = await rejection(pveMutation(fx.target, 'start', { requestId: 'fx-reused-0001', deadlineMs: DEADLINE }));
    expect(error).toMatchObject({ kind: 'conflict', retryable: false });
    expect(error.message).toContain("already used for 'stop'");

    expect(fx.qmCalls()).toHaveLength(calls);
    expect(readVm(fx.host.nodeRoot).running).toBe(false);
    expect((await fx.log()).at(-1)).toMatch(/event=conflict verb=start request=fx-reused-0001 recorded=stop/);
  });

  // Root ignores permission bits, so the document's place is taken by a directory: writing it
  // (the .tmp) or putting it in place (the final name) then fails as a full or broken disk would.
  step.each(['.json.tmp', '.json'])('when the forensics document cannot be saved (%s blocked), then a cycle fails at forensics with the reason, valid JSON, and qm is never asked to stop or start', async (blocked) => {
    const mark = await freshVm(fx);
    const id = `fx-nodoc-${blocked === '.json' ? 'final' : 'tmp01'}`;
    mkdirSync(join(fx.host.stateDir, 'forensics', `${id}${blocked}`), { recursive: true });
    const output = await fx.call(`cycle ${id}`);
    expect(output.exitCode).toBe(1);
    const result = JSON.parse(output.stdout.text) as { ok: boolean; failed_at: string; reason: string };
    expect(result).toMatchObject({ ok: false, result: 'failed', verb: 'cycle', failed_at: 'forensics' });
    expect(result.reason).toContain(`forensics could not be saved to`);
    expect(result.reason).toContain('cycle was not run');
    expect(qmCallsSince(fx, mark).filter((c) => MUTATING_QM.has(c.argv[0] ?? ''))).toEqual([]);
    expect(readVm(fx.host.nodeRoot).running).toBe(true);
    const log = await fx.log();
    expect(log.some((l) => l.includes(`event=forensics-failed verb=cycle request=${id}`))).toBe(true);
    expect(log.some((l) => l.includes(`event=verb-start verb=cycle request=${id}`))).toBe(false);
    // Through the client: a failed verb, not retried; the workflow records it and runs nothing.
    const error = await rejection(pveMutation(fx.target, 'cycle', { requestId: id, deadlineMs: DEADLINE }));
    expect(error).toMatchObject({ kind: 'verb_failed', retryable: false });
  });

  // Every mutating verb against every way the store can fail: a document that cannot be written,
  // a store that is not a directory (corrupt), and a store that is full (a filled tmpfs over it).
  const STORE_FAULTS = ['unwritable', 'corrupt', 'full'] as const;
  step.each(MUTATING_VERBS.flatMap((verb) => STORE_FAULTS.map((fault) => [verb, fault] as const)))(
    'when %s meets a forensics store that is %s, then it is refused at forensics and qm is never asked to act',
    async (verb, fault) => {
      const mark = await freshVm(fx, verb === 'start' ? { running: false } : {});
      const id = `fx-store-${verb}-${fault}`;
      const store = join(fx.host.stateDir, 'forensics');
      const restore = breakStore(store, id, fault);
      try {
        const output = await fx.call(`${verb} ${id}`);
        expect(output.exitCode).toBe(1);
        expect(JSON.parse(output.stdout.text)).toMatchObject({ ok: false, result: 'failed', verb, failed_at: 'forensics', reason: expect.stringContaining(`${verb} was not run`) });
        expect(qmCallsSince(fx, mark).filter((c) => MUTATING_QM.has(c.argv[0] ?? ''))).toEqual([]);
        expect(readVm(fx.host.nodeRoot).running).toBe(verb !== 'start');
        expect((await fx.log()).some((l) => l.includes(`event=forensics-failed verb=${verb} request=${id}`))).toBe(true);
      } finally {
        restore();
      }
    },
  );

  step('when forensics alone cannot be saved, then it answers valid JSON that says so instead of ok', async () => {
    const id = 'fx-nodoc-alone';
    mkdirSync(join(fx.host.stateDir, 'forensics', `${id}.json`), { recursive: true });
    const output = await fx.call(`forensics ${id}`);
    expect(output.exitCode).toBe(1);
    expect(JSON.parse(output.stdout.text)).toMatchObject({ ok: false, verb: 'forensics', failed_at: 'forensics', reason: expect.stringContaining('nothing was kept') });
    await expect(pveForensics(fx.target, { requestId: id, deadlineMs: DEADLINE })).rejects.toMatchObject({ kind: 'verb_failed' });
  });

  step('when the same request id arrives twice at once, then it runs once and both callers get its result', async () => {
    const mark = await freshVm(fx, { pending: incidentFixPending() });
    const pid = readVm(fx.host.nodeRoot).pid;
    const results = await Promise.all([0, 1].map(() => pveMutation(fx.target, 'reset', { requestId: 'fx-race-0001', deadlineMs: DEADLINE })));

    expect(qmStartedSince(fx, mark, 'reset')).toHaveLength(1);
    expect(results.map((r) => r.replayed).sort()).toEqual([false, true]);
    for (const result of results) expect(result).toMatchObject({ ok: true, oldPid: pid, pidUnchanged: true, startedAt: results[0]!.startedAt });
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ running: true, pid });
  });

  step('when the client is killed mid-cycle, then the cycle still finishes on the host and repeating the request id returns its result', async () => {
    // slow_verbs: each qm stop/start takes 1.5 s more, so the client dies while qm stop runs.
    const mark = await freshVm(fx, { pending: incidentFixPending(), faults: ['slow_verbs'] });
    const pid = readVm(fx.host.nodeRoot).pid;
    const client = fx.sshCli('cycle fx-killed-0001');
    await fx.waitForLog(/event=verb-step verb=cycle request=fx-killed-0001 step="qm stop"/);
    client.child.kill('SIGKILL');
    const killedAt = Date.now();
    expect((await client.done).code).toBeNull();

    await fx.waitForLog(/event=verb-done verb=cycle request=fx-killed-0001 exit=0/, 30_000);
    const stopEnd = qmCallsSince(fx, mark).find((c) => c.argv[0] === 'stop' && c.exit !== undefined);
    const [start] = qmStartedSince(fx, mark, 'start');
    expect(stopEnd!.t).toBeGreaterThan(killedAt); // the stop was still running when the client died
    expect(start!.t).toBeGreaterThan(killedAt); // and the start came after, with nobody connected

    const result: MutationResult = await pveMutation(fx.target, 'cycle', { requestId: 'fx-killed-0001', deadlineMs: DEADLINE });
    expect(result).toMatchObject({ ok: true, replayed: true, oldPid: pid, pendingApplied: true });
    expect(result.newPid).not.toBe(pid);
    expect(readVm(fx.host.nodeRoot)).toMatchObject({ running: true, pid: result.newPid });
    expect(readVm(fx.host.nodeRoot).pending).toEqual({});
    expect(qmStartedSince(fx, mark, 'stop')).toHaveLength(1);
    expect(qmStartedSince(fx, mark, 'start')).toHaveLength(1);
    expectForensicsFirstInLog(await fx.log(), 'fx-killed-0001');
  });
});

// ------------------------------------------------------------------------------------------

hostBlock('PVE dispatcher: every input outside the verb grammar is rejected and nothing runs', () => {
  let fx: PveFixture;
  /** The qm record as the lab left it: its own `qm start` of VM 102, nothing else. */
  let labCalls: Invocation[];
  beforeAll(async () => {
    fx = await startPveFixture('pve-reject', { vm: { pending: incidentFixPending() } });
    labCalls = fx.qmCalls();
  });
  afterAll(async () => {
    await fx?.stop();
  });

  step('when the block starts, then the qm record holds only the lab\'s own start of VM 102', () => {
    expect(labCalls.map((c) => `${c.argv.join(' ')} -> ${c.exit ?? 'started'}`)).toEqual(['start 102 -> started', 'start 102 -> 0']);
  });

  /** Runs fn and proves the dispatcher ran nothing: no qm call, no journal or forensics entry. */
  async function expectNothingRan<T>(fn: () => Promise<T>): Promise<{ value: T; newLogLines: string[] }> {
    const state = fx.stateEntries();
    const logLength = (await fx.log()).length;
    const value = await fn();
    // Not one qm call in this whole block beyond the lab's own start.
    expect(fx.qmCalls()).toEqual(labCalls);
    expect(fx.stateEntries()).toEqual(state);
    return { value, newLogLines: (await fx.log()).slice(logLength) };
  }

  const longId = `a${'b'.repeat(128)}`; // 129 characters: one over the id limit
  const cases: [string, string][] = [
    ['extra words', 'reset fx-extra-0001 now'],
    ['a semicolon', 'status; reboot'],
    ['a command substitution', 'status $(touch CANARY)'],
    ['backticks', 'status `touch CANARY`'],
    ['a pipe', 'status | sh'],
    ['&&', 'status && reboot'],
    ['a newline', 'status\nreset'],
    ['a carriage return', 'status\r'],
    ['a tab', 'status\tfx-tab-00001'],
    ['a VM id as the request id (reset 103)', 'reset 103'],
    ['a VM id as the request id (cycle 102)', 'cycle 102'],
    ['a digit-leading request id', 'reset 10300000'],
    ['a request id that is too short', 'cycle abc1234'],
    ['a request id that is too long', `cycle ${longId}`],
    ['an over-long command', `forensics ${'a'.repeat(200)}`],
    ['non-ASCII', 'status é'],
    ['a homoglyph verb', 'ѕtatus'],
    ['a leading space', ' status'],
    ['a trailing space', 'status '],
    ['a double space', 'reset  fx-double-0001'],
    ['an uppercase verb', 'STATUS'],
    ['a capitalised verb', 'Reset fx-upper-00001'],
    ['an option', 'status --help'],
    ['a path', '../pve-dispatch'],
    ['a path as request id', 'status ../../etc'],
    ['an unknown verb', 'reboot'],
    ['a qm command line', 'qm stop 102'],
    ['an internal mode', '--run'],
    ['a shell', 'sh'],
  ];

  step.each(cases)('when the command has %s, then it exits 64 with a JSON "rejected", logs it and runs nothing', async (_label, command) => {
    const canary = join(fx.dir, 'CANARY');
    const { value: output, newLogLines } = await expectNothingRan(() => fx.call(command.replace('CANARY', canary)));
    expect(output.exitCode).toBe(64);
    expect(output.stdout.text.split('\n').filter(Boolean)).toHaveLength(1);
    const answer = JSON.parse(output.stdout.text) as { ok: boolean; result: string; reason: string };
    expect(answer).toMatchObject({ ok: false, result: 'rejected' });
    expect(answer.reason.length).toBeGreaterThan(5);
    expect(output.stderr.text).toBe(`breakglass: rejected: ${answer.reason}\n`);
    expect(newLogLines).toHaveLength(1);
    expect(newLogLines[0]).toMatch(new RegExp(`event=rejected conn="127\\.0\\.0\\.1 \\d+ 127\\.0\\.0\\.1 ${fx.host.sshd.port}"`));
    if (/^[\x20-\x7e]*$/.test(command) && !command.includes('CANARY')) expect(newLogLines[0]).toContain(`received="${command.slice(0, 200).replace(/["\\]/g, '?')}"`);
    expect(existsSync(canary)).toBe(false);
  });

  step('when the rejected words carry quotes, then its log line cannot be made to say anything else (one event, one reason)', async () => {
    const forged = 'status" reason="ok" event=verb-done verb=cycle request=fxforged01 exit=0 x="\\';
    const { value: output, newLogLines } = await expectNothingRan(() => fx.call(forged));
    expect(output.exitCode).toBe(64);
    expect(newLogLines).toHaveLength(1);
    const line = newLogLines[0]!;
    expect(line.match(/event=/g)).toHaveLength(2); // event=rejected and the harmless quoted text
    expect(line).toContain('received="status? reason=?ok? event=verb-done verb=cycle request=fxforged01 exit=0 x=??"');
    expect(line.match(/ reason="/g)).toHaveLength(1);
    expect(line).toMatch(/reason="forbidden character[^"]*"$/);
  });

  step('when a verb function gets a VM id as request id, then the client refuses it before connecting', async () => {
    const { value: error, newLogLines } = await expectNothingRan(() => rejection(pveMutation(fx.target, 'reset', { requestId: '103', deadlineMs: DEADLINE })));
    expect(error).toMatchObject({ kind: 'verb_rejected', retryable: false });
    expect(newLogLines).toEqual([]);
  });

  step('when the command is empty (an exec of "" or a shell request), then it exits 64 and runs nothing', async () => {
    const { value: output } = await expectNothingRan(() => fx.call(''));
    expect(output.exitCode).toBe(64);
    expect(JSON.parse(output.stdout.text)).toMatchObject({ result: 'rejected', reason: expect.stringContaining('empty command') });

    const { value: shell, newLogLines } = await expectNothingRan(() =>
      withClient(fx, (client, done) =>
        client.shell(false, (error, stream) => (error ? done({ error: error.message }) : collect(stream, done))),
      ),
    );
    expect(shell).toMatchObject({ exit: 64 });
    expect(JSON.parse(shell.stdout ?? '')).toMatchObject({ result: 'rejected', reason: expect.stringContaining('empty command') });
    expect(newLogLines).toEqual([expect.stringMatching(/event=rejected .*received=""/)]);
  });

  step('when a pseudo-terminal is requested (exec or shell), then sshd refuses it and nothing runs', async () => {
    const { value: exec, newLogLines } = await expectNothingRan(() =>
      withClient(fx, (client, done) => client.exec('status', { pty: true }, (error, stream) => (error ? done({ error: error.message }) : collect(stream, done)))),
    );
    expect(exec.error).toMatch(/pseudo-terminal/);
    const { value: shell } = await expectNothingRan(() =>
      withClient(fx, (client, done) => client.shell((error, stream) => (error ? done({ error: error.message }) : collect(stream, done)))),
    );
    expect(shell.error).toMatch(/pseudo-terminal/);
    expect(newLogLines).toEqual([]);
  });

  step('when port forwarding is requested (local or remote), then sshd refuses it', async () => {
    const { value: local } = await expectNothingRan(() =>
      withClient(fx, (client, done) => client.forwardOut('127.0.0.1', 0, '127.0.0.1', fx.host.sshd.port, (error) => done({ error: error?.message ?? 'channel opened' }))),
    );
    expect(local.error).toMatch(/open failed|prohibited/);
    const { value: remote } = await expectNothingRan(() =>
      withClient(fx, (client, done) => client.forwardIn('127.0.0.1', 0, (error) => done({ error: error?.message ?? 'listening' }))),
    );
    expect(remote.error).toMatch(/Unable to bind/);
  });

  step('when the sftp subsystem is requested, then the forced command still runs and rejects it', async () => {
    const { value: sftp, newLogLines } = await expectNothingRan(() =>
      withClient(fx, (client, done) => client.subsys('sftp', (error, stream) => (error ? done({ error: error.message }) : collect(stream, done)))),
    );
    expect(sftp).toMatchObject({ exit: 64 });
    expect(newLogLines).toEqual([expect.stringMatching(/event=rejected .*received="\/usr\/lib\/openssh\/sftp-server"/)]);
  });

  step('when the command carries a NUL byte, then sshd drops the connection and the dispatcher never runs', async () => {
    const { value: result, newLogLines } = await expectNothingRan(() => timed(() => fx.call('status\0reset', 10_000)));
    expect(result.error).toMatchObject({ kind: 'unreachable' });
    expect(newLogLines).toEqual([]);
  });

  step('when a key line permits a pty by mistake, then the dispatcher itself refuses the terminal with 64', async () => {
    const extra = await generateKeyPair(fx.dir, 'pty-permitted');
    const line = forcedCommandLine(fx.host.configFile, extra.publicKey).replace(',restrict,', ',restrict,pty,');
    await writeFile(join(fx.dir, 'sshd', 'authorized_keys'), `${forcedCommandLine(fx.host.configFile, fx.key.publicKey)}\n${line}\n`);
    const target = { ...fx.target, privateKey: readFileSync(extra.privateKeyPath) };
    const { value: exec, newLogLines } = await expectNothingRan(() =>
      withClient(fx, (client, done) => client.exec('status', { pty: true }, (error, stream) => (error ? done({ error: error.message }) : collect(stream, done))), target),
    );
    expect(exec.exit).toBe(64);
    expect(exec.stdout).toContain('interactive terminals are not accepted');
    expect(newLogLines).toEqual([expect.stringMatching(/event=rejected .*received="status" reason="interactive terminals are not accepted"/)]);
  });

  step('when the request id starts with a digit (any verb, any such id), then it is rejected over sshd', async () => {
    await expectNothingRan(() =>
      fc.assert(
        fc.asyncProperty(fc.constantFrom(...PVE_VERBS), fc.stringMatching(/^[0-9][A-Za-z0-9._-]{7,30}$/), async (verb, id) => {
          const output = await fx.call(`${verb} ${id}`);
          expect(output.exitCode).toBe(64);
          expect(JSON.parse(output.stdout.text)).toMatchObject({ result: 'rejected', reason: expect.stringContaining('bad request id') });
        }),
        { numRuns: 12 },
      ),
    );
  });

  step('when any string outside the grammar reaches the forced command, then it exits 64 and runs nothing (property, direct invocation)', async () => {
    const noise = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 12 }),
      fc.constantFrom(';', '|', '&', '&&', '$(', ')', '`', '\n', '\t', ' ', '  ', '../', '/', 'é', '--help', '*', '?', '>', '<', '"', "'", '\\', '=', ','),
    );
    const verb = fc.constantFrom(...PVE_VERBS, 'STATUS', 'reboot', 'qm', '');
    const id = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/);
    const candidate = fc
      .oneof(
        fc.string({ unit: 'binary', maxLength: 40 }),
        fc.tuple(verb, noise).map(([v, n]) => `${v}${n}`),
        fc.tuple(verb, id, noise).map(([v, i, n]) => `${v} ${i}${n}`),
        fc.tuple(noise, verb, id).map(([n, v, i]) => `${n}${v} ${i}`),
        fc.tuple(verb, noise, id).map(([v, n, i]) => `${v}${n}${i}`),
        fc.tuple(verb, fc.stringMatching(/^[A-Za-z][A-Za-z0-9._-]{128,140}$/)).map(([v, i]) => `${v} ${i}`),
      )
      .filter((s) => !s.includes('\0') && !ACCEPTED.test(s));
    let runs = 0;
    const { newLogLines } = await expectNothingRan(() =>
      fc.assert(
        fc.asyncProperty(candidate, async (command) => {
          runs++;
          const result = await runDispatcherDirectly(fx.host.configFile, command);
          expect(result.code, JSON.stringify(command)).toBe(64);
          expect(JSON.parse(result.stdout)).toMatchObject({ ok: false, result: 'rejected' });
        }),
        { numRuns: 150 },
      ),
    );
    expect(newLogLines).toHaveLength(runs);
    for (const line of newLogLines) expect(line).toMatch(/ event=rejected conn="198\.51\.100\.7 50000 127\.0\.0\.1 22" received="/);
  });
});

/** The forced command run the way sshd runs it (SSH_ORIGINAL_COMMAND), without the network. */
function runDispatcherDirectly(configFile: string, command: string): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    execFile(
      DISPATCHER,
      [configFile],
      { env: { SSH_ORIGINAL_COMMAND: command, SSH_CONNECTION: '198.51.100.7 50000 127.0.0.1 22' }, timeout: 10_000 },
      (error, stdout) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout }),
    );
  });
}

interface ChannelOutcome {
  error?: string;
  exit?: number | null;
  stdout?: string;
}

/** One raw ssh2 connection (host key pinned by fingerprint) for requests runSshCommand never makes. */
function withClient(
  fx: PveFixture,
  use: (client: Client, done: (outcome: ChannelOutcome) => void) => void,
  target = fx.target,
): Promise<ChannelOutcome> {
  return new Promise((resolve) => {
    const client = new Client();
    const timer = setTimeout(() => finish({ error: 'test timeout: no outcome within 15 s' }), 15_000);
    function finish(outcome: ChannelOutcome) {
      clearTimeout(timer);
      client.end();
      client.destroy();
      resolve(outcome);
    }
    client.on('error', (error) => finish({ error: `connection: ${error.message}` }));
    client.on('ready', () => use(client, finish));
    client.connect({
      host: '127.0.0.1',
      port: fx.host.sshd.port,
      username: USER,
      privateKey: target.privateKey,
      hostVerifier: (key: Buffer) => fingerprint(key) === fx.host.sshd.hostKeyFingerprint,
    });
  });
}

function collect(stream: ClientChannel, done: (outcome: ChannelOutcome) => void): void {
  let stdout = '';
  let exit: number | null = null;
  stream.end();
  stream.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  stream.stderr.on('data', () => {});
  stream.on('exit', (code: number | null) => (exit = code));
  stream.on('close', () => done({ exit, stdout }));
}

// ------------------------------------------------------------------------------------------

hostBlock('PVE dispatcher: the install config', () => {
  let fx: PveFixture;
  let original: string;
  beforeAll(async () => {
    // A stopped VM: the lab runs no qm at all, so the qm record starts empty.
    fx = await startPveFixture('pve-config', { vm: { running: false } });
    original = await readFile(fx.host.configFile, 'utf8');
  });
  afterEach(async () => {
    await writeFile(fx.host.configFile, original);
    await chmod(fx.host.configFile, 0o644);
  });
  afterAll(async () => {
    await fx?.stop();
  });

  const broken: [string, (config: string) => string, number, RegExp][] = [
    ['an unknown key', (c) => `${c}bogus_key=1\n`, 0o644, /unknown key 'bogus_key'/],
    ['a non-numeric time limit', (c) => `${c}lock_wait=soon\n`, 0o644, /lock_wait must be a whole number/],
    ['a relative qm path', (c) => `${c}qm=qm\n`, 0o644, /qm must be an absolute path/],
    ['a line without "="', (c) => `${c}vmid\n`, 0o644, /line without '=': vmid/],
    ['group write permission', (c) => c, 0o664, /must not be group- or world-writable/],
    ['world write permission', (c) => c, 0o646, /must not be group- or world-writable/],
  ];

  step.each(broken)('when the config has %s, then every call exits 78 with config_error naming the problem (typed host_config)', async (_label, edit, mode, reason) => {
    await writeFile(fx.host.configFile, edit(original));
    await chmod(fx.host.configFile, mode);
    const output = await fx.call('status');
    expect(output.exitCode).toBe(78);
    expect(JSON.parse(output.stdout.text)).toMatchObject({ ok: false, result: 'config_error', reason: expect.stringMatching(reason) });
    const error = await rejection(pveStatus(fx.target, { deadlineMs: DEADLINE }));
    expect(error).toMatchObject({ kind: 'host_config', retryable: false });
    expect(error.message).toMatch(reason);
    expect(fx.qmCalls()).toEqual([]);
  });

  step('when the config is restored, then status answers again', async () => {
    expect((await pveStatus(fx.target, { deadlineMs: DEADLINE })).vm.status).toBe('stopped');
  });
});

// ------------------------------------------------------------------------------------------

hostBlock('PVE dispatcher: the script itself', () => {
  step('when shellcheck reads it as POSIX sh, then it has no warnings', async () => {
    const provisioned = join(REPO_ROOT, '.tools/bin/shellcheck');
    const shellcheck = existsSync(provisioned) ? provisioned : 'shellcheck';
    const result = await new Promise<{ code: number | null; stdout: string }>((resolve) =>
      execFile(shellcheck, ['-s', 'sh', '-S', 'warning', DISPATCHER], (error, stdout) =>
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout }),
      ),
    );
    expect(result.stdout).toBe('');
    expect(result.code).toBe(0);
  });

  step('when read by dash, then it parses (sh -n) and starts with a POSIX shebang', async () => {
    expect((await readFile(DISPATCHER, 'utf8')).split('\n')[0]).toBe('#!/bin/sh');
    const code = await new Promise<number | null>((resolve) => execFile('sh', ['-n', DISPATCHER], (error) => resolve(error ? 1 : 0)));
    expect(code).toBe(0);
  });
});
