// @ts-check
// State of one simulated Proxmox VM, kept in a "state dir" shared by the simulated `qm`
// (sim-qm.mjs), the simulated QEMU process (sim-qemu.mjs) and tests that drive them directly.
//
// Layout of a state dir:
//   state.json       the VM: config, pending changes, QEMU pid, faults (written atomically)
//   state.lock       short mutex around read-modify-write of state.json
//   config.lock      held by a mutating qm verb for its whole run (PVE's lock-<vmid>.conf)
//   qmp.sock         the QMP socket served by the simulated QEMU
//   invocations.log  one JSON line per qm invocation start and end

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const SIM_QEMU = path.join(here, 'sim-qemu.mjs');
const SIM_QM = path.join(here, 'sim-qm.mjs');

/** Faults that belong to one QEMU process: a fresh QEMU (start, stop) clears them. */
export const PROCESS_FAULTS = Object.freeze(['io_stall', 'qmp_silent', 'dstate']);
/** Faults of the host or the config: they stay until cleared. */
export const HOST_FAULTS = Object.freeze(['stop_hang', 'locked', 'lockfile_timeout', 'start_systemd_timeout', 'slow_verbs']);
export const FAULTS = Object.freeze([...PROCESS_FAULTS, ...HOST_FAULTS]);

/**
 * @typedef {{ key: string, value: string } | { key: string, delete: true }} PendingChange
 * @typedef {{ vmid: number, node: string, config: Record<string, string>, pending: PendingChange[],
 *   pid: number | null, startedAt: number | null, faults: string[] }} VmState
 */

export const statePath = (/** @type {string} */ dir) => path.join(dir, 'state.json');
export const qmpSocketPath = (/** @type {string} */ dir) => path.join(dir, 'qmp.sock');
export const invocationLogPath = (/** @type {string} */ dir) => path.join(dir, 'invocations.log');

/** The VM's config as created by the installer (what `qm config --current` shows). */
export function defaultConfig(vmid = 102) {
  return {
    agent: '1',
    boot: 'order=scsi0;net0',
    cores: '4',
    cpu: 'host',
    memory: '16384',
    name: 'devvm',
    net0: 'virtio=BC:24:11:5E:10:02,bridge=vmbr0,firewall=1',
    ostype: 'l26',
    scsi0: `local-lvm:vm-${vmid}-disk-0,size=200G`,
    scsihw: 'virtio-scsi-pci',
    sockets: '1',
  };
}

/** The fix staged after the 2026-06-11 I/O stall, waiting for a cycle to apply it. */
export function incidentFixPending(vmid = 102) {
  return [
    { key: 'scsi0', value: `local-lvm:vm-${vmid}-disk-0,aio=threads,iothread=1,size=200G` },
    { key: 'scsihw', value: 'virtio-scsi-single' },
  ];
}

/** Config with pending changes applied: what `qm config` shows and what a fresh QEMU runs with. */
export function applyPending(/** @type {Record<string, string>} */ config, /** @type {PendingChange[]} */ pending) {
  const out = { ...config };
  for (const change of pending) {
    if ('delete' in change) delete out[change.key];
    else out[change.key] = change.value;
  }
  return out;
}

// ---- processes ---------------------------------------------------------------------------

/** Whether pid is a live process. A zombie counts as dead: our PID 1 may never reap orphans. */
export function isAlive(/** @type {number} */ pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return /** @type {NodeJS.ErrnoException} */ (err).code === 'EPERM';
  }
  try {
    // /proc/<pid>/stat is "pid (comm) S ...": the state letter follows the last ')'.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Synchronous sleep, for the short lock retries that must work from sync callers. */
function sleepSync(/** @type {number} */ ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- locks -------------------------------------------------------------------------------

/**
 * Try once to take a lock file holding our pid. A lock whose holder died (e.g. a hung qm killed
 * by its caller's timeout) is taken over, as the kernel drops a dead process's flock in real PVE.
 */
export function tryLock(/** @type {string} */ file) {
  try {
    fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
    return true;
  } catch (err) {
    if (/** @type {NodeJS.ErrnoException} */ (err).code !== 'EEXIST') throw err;
  }
  let holder;
  try {
    holder = Number(fs.readFileSync(file, 'utf8'));
  } catch {
    return false; // released meanwhile: the caller retries
  }
  // An empty file is a holder between create and write: not stale.
  if (Number.isInteger(holder) && holder > 0 && !isAlive(holder)) {
    // Rename first so only one of several racing stealers removes it.
    const grave = `${file}.stale.${process.pid}`;
    try {
      fs.renameSync(file, grave);
      fs.rmSync(grave, { force: true });
    } catch {
      // another process took it over first
    }
  }
  return false;
}

export function unlock(/** @type {string} */ file) {
  fs.rmSync(file, { force: true });
}

/**
 * Run fn holding the state mutex. Sections are a few milliseconds long, so a synchronous
 * retry loop is fine, and it lets tests call setFault() without awaiting.
 * @template T
 * @param {string} dir
 * @param {() => T} fn
 * @returns {T}
 */
function withStateLock(dir, fn) {
  const file = path.join(dir, 'state.lock');
  const deadline = Date.now() + 5000;
  while (!tryLock(file)) {
    if (Date.now() > deadline) throw new Error(`sim-vm: state lock ${file} held too long`);
    sleepSync(5);
  }
  try {
    return fn();
  } finally {
    unlock(file);
  }
}

// ---- state -------------------------------------------------------------------------------

/** Read state.json without locking: writers rename a complete file into place. */
export function readState(/** @type {string} */ dir) {
  return /** @type {VmState} */ (JSON.parse(fs.readFileSync(statePath(dir), 'utf8')));
}

function writeState(/** @type {string} */ dir, /** @type {VmState} */ state) {
  const tmp = `${statePath(dir)}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
  fs.renameSync(tmp, statePath(dir));
}

/**
 * Read-modify-write state.json under the state mutex; returns the new state.
 * @param {string} dir
 * @param {(state: VmState) => VmState} change
 */
export function updateState(dir, change) {
  return withStateLock(dir, () => {
    const next = change(readState(dir));
    writeState(dir, next);
    return next;
  });
}

/** The VM as `qm` sees it: running means the recorded QEMU process is alive. */
export function readVm(/** @type {string} */ dir) {
  const state = readState(dir);
  return { ...state, running: state.pid !== null && isAlive(state.pid) };
}

export function setFault(/** @type {string} */ dir, /** @type {string} */ name, on = true) {
  if (!FAULTS.includes(name)) throw new Error(`sim-vm: unknown fault '${name}' (known: ${FAULTS.join(', ')})`);
  return updateState(dir, (s) => ({ ...s, faults: on ? [...new Set([...s.faults, name])] : s.faults.filter((f) => f !== name) }));
}

export function clearFaults(/** @type {string} */ dir) {
  return updateState(dir, (s) => ({ ...s, faults: [] }));
}

/**
 * Spawn a fresh simulated QEMU for the VM and wait until its QMP socket listens. The caller
 * records the pid in state.json (the process exits within ~1 s if it never sees its own pid).
 */
export async function spawnQemu(/** @type {string} */ dir) {
  const sock = qmpSocketPath(dir);
  // Remove the old socket first, so its presence below means the new QEMU is listening.
  fs.rmSync(sock, { force: true });
  // Detached with stdio ignored: like QEMU in its own systemd scope, it outlives the qm call.
  const child = spawn(process.execPath, [SIM_QEMU, '--state', dir], { detached: true, stdio: 'ignore' });
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error('sim-vm: could not spawn the simulated QEMU');
  const deadline = Date.now() + 5000;
  while (!fs.existsSync(sock)) {
    if (!isAlive(pid) || Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      throw new Error('sim-vm: simulated QEMU did not open its QMP socket');
    }
    await sleep(10);
  }
  return pid;
}

/**
 * Create (or re-create) the VM in dir. With running (the default) a simulated QEMU is started
 * and its QMP socket is ready when the promise resolves.
 * @param {string} dir
 * @param {{ vmid?: number, running?: boolean, pending?: PendingChange[] }} [opts]
 */
export async function initVm(dir, opts = {}) {
  const { vmid = 102, running = true, pending = [] } = opts;
  fs.mkdirSync(dir, { recursive: true });
  if (fs.existsSync(statePath(dir))) await stopVmProcesses(dir);
  for (const stale of ['state.lock', 'config.lock', 'invocations.log', 'qmp.sock']) fs.rmSync(path.join(dir, stale), { force: true });
  /** @type {VmState} */
  const state = { vmid, node: 'pve', config: defaultConfig(vmid), pending: [...pending], pid: null, startedAt: null, faults: [] };
  writeState(dir, state);
  if (!running) return readVm(dir);
  // The process checks its pid against state.json only after ~500 ms, so record it right away.
  const pid = await spawnQemu(dir);
  updateState(dir, (s) => ({ ...s, pid, startedAt: Date.now() }));
  return readVm(dir);
}

/** Pids of every simulated QEMU serving dir, including stale ones (found via /proc). */
function simQemuPids(/** @type {string} */ dir) {
  const want = path.resolve(dir);
  /** @type {number[]} */
  const pids = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv;
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // exited while we looked
    }
    const at = argv.indexOf('--state');
    if (argv.some((a) => a.endsWith('sim-qemu.mjs')) && at >= 0 && path.resolve(argv[at + 1] ?? '') === want) pids.push(Number(entry));
  }
  return pids;
}

/** Test cleanup: SIGKILL every simulated QEMU of dir (SIGKILL works even in simulated D-state). */
export async function stopVmProcesses(/** @type {string} */ dir) {
  const pids = simQemuPids(dir);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 5000;
  while (pids.some(isAlive) && Date.now() < deadline) await sleep(10);
}

/**
 * The invocation log, parsed: a start line ({started: true}) and, unless the command was
 * killed or hangs, an end line ({exit}) per qm call.
 * @returns {{ t: number, argv: string[], started?: true, exit?: number }[]}
 */
export function invocations(/** @type {string} */ dir) {
  let text;
  try {
    text = fs.readFileSync(invocationLogPath(dir), 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line));
}

/** Quote for a POSIX shell: single quotes, with embedded ones closed and escaped. */
const shQuote = (/** @type {string} */ s) => `'${s.replaceAll("'", `'\\''`)}'`;

/** Write an executable `qm` wrapper that runs the simulated qm against dir. */
export function writeQmWrapper(/** @type {string} */ dir, /** @type {string} */ wrapperPath) {
  const script = `#!/bin/sh\nexec ${shQuote(process.execPath)} ${shQuote(SIM_QM)} --state ${shQuote(path.resolve(dir))} "$@"\n`;
  fs.writeFileSync(wrapperPath, script);
  fs.chmodSync(wrapperPath, 0o755);
  return wrapperPath;
}
