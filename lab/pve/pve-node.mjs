// @ts-check
// One lab "PVE node": a directory standing in for the node's / with Proxmox's own paths under it,
// shared by the `qm` stand-in (qm.mjs), the lab's controls (labctl.mjs) and the tests.
//
//   etc/pve/qemu-server/<vmid>.conf      the VM config, Proxmox's format, [PENDING] section
//   var/run/qemu-server/<vmid>.pid       QEMU's pid file           <vmid>.qmp  QMP socket
//   var/run/qemu-server/<vmid>.qga       guest agent socket        <vmid>.nbd  storage export
//   var/lock/qemu-server/lock-<vmid>.conf   the config lock (flock), as qm takes it
//   etc/pve/ha/resources.cfg             HA resources (empty unless the VM is HA-managed)
//   var/log/pve/tasks/active             qm's running tasks, one UPID per line
//   lab/vm.json       what only the lab knows: SSH port, accelerator, faults, and how long qm
//                     stop's QMP quit waits (60 s on PVE 9; a lab node may choose less)
//   lab/serial.log    the guest's serial console      lab/storage/  the VM's disk
//   lab/invocations.log  one JSON line per qm call (start and end)

import fs from 'node:fs';
import path from 'node:path';

export const paths = (/** @type {string} */ root, vmid = 102) => ({
  root,
  config: path.join(root, 'etc/pve/qemu-server', `${vmid}.conf`),
  runDir: path.join(root, 'var/run/qemu-server'),
  pidFile: path.join(root, 'var/run/qemu-server', `${vmid}.pid`),
  qmpSocket: path.join(root, 'var/run/qemu-server', `${vmid}.qmp`),
  qgaSocket: path.join(root, 'var/run/qemu-server', `${vmid}.qga`),
  nbdSocket: path.join(root, 'var/run/qemu-server', `${vmid}.nbd`),
  storagePidFile: path.join(root, 'var/run/qemu-server', `${vmid}.storage.pid`),
  lockDir: path.join(root, 'var/lock/qemu-server'),
  haResources: path.join(root, 'etc/pve/ha/resources.cfg'),
  activeTasks: path.join(root, 'var/log/pve/tasks/active'),
  lockFile: path.join(root, 'var/lock/qemu-server', `lock-${vmid}.conf`),
  labDir: path.join(root, 'lab'),
  labState: path.join(root, 'lab/vm.json'),
  serialLog: path.join(root, 'lab/serial.log'),
  storageDir: path.join(root, 'lab/storage'),
  invocationLog: path.join(root, 'lab/invocations.log'),
});

// ------------------------------------------------------------------------ the config file

/**
 * @typedef {{ current: Record<string, string>, pending: Record<string, string>, deletes: string[] }} VmConfig
 */

/** Parses Proxmox's VM config format: `key: value` lines, then an optional [PENDING] section. */
export function parseConfig(/** @type {string} */ text) {
  /** @type {VmConfig} */
  const config = { current: {}, pending: {}, deletes: [] };
  let section = config.current;
  for (const line of text.split('\n')) {
    if (!line.trim() || line.startsWith('#')) continue;
    const header = /^\[(\w+)\]$/.exec(line.trim());
    if (header) {
      // Snapshot sections are not used by the lab; only [PENDING] is read.
      section = header[1] === 'PENDING' ? config.pending : {};
      continue;
    }
    const match = /^([a-z][a-z0-9_-]*):\s*(.*)$/.exec(line);
    if (!match) continue;
    const key = /** @type {string} */ (match[1]);
    const value = /** @type {string} */ (match[2]);
    if (section === config.pending && key === 'delete') config.deletes.push(...value.split(/[,;\s]+/).filter(Boolean));
    else section[key] = value;
  }
  return config;
}

export function formatConfig(/** @type {VmConfig} */ config) {
  const lines = (/** @type {Record<string, string>} */ obj) => Object.keys(obj).sort().map((key) => `${key}: ${obj[key]}`);
  let text = `${lines(config.current).join('\n')}\n`;
  if (Object.keys(config.pending).length || config.deletes.length) {
    text += `\n[PENDING]\n`;
    if (config.deletes.length) text += `delete: ${config.deletes.join(',')}\n`;
    const pending = lines(config.pending);
    if (pending.length) text += `${pending.join('\n')}\n`;
  }
  return text;
}

/** The config with pending changes applied (what a fresh QEMU process starts with). */
export function applyPending(/** @type {VmConfig} */ config) {
  const current = { ...config.current, ...config.pending };
  for (const key of config.deletes) delete current[key];
  return /** @type {VmConfig} */ ({ current, pending: {}, deletes: [] });
}

export function readConfig(/** @type {string} */ root, vmid = 102) {
  return parseConfig(fs.readFileSync(paths(root, vmid).config, 'utf8'));
}

/** Writes atomically, as pmxcfs does: readers see the old or the new file, never half. */
export function writeConfig(/** @type {string} */ root, /** @type {VmConfig} */ config, vmid = 102) {
  const file = paths(root, vmid).config;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp`, formatConfig(config));
  fs.renameSync(`${file}.tmp`, file);
}

// ------------------------------------------------------------------------ the lab's own state

/**
 * @typedef {{
 *   vmid: number,
 *   sshPort: number | null,
 *   accel: 'kvm' | 'tcg',
 *   faults: string[],
 *   holders: number[],
 *   qmpQuitTimeoutS?: number,
 *   haDelayS?: number | null,
 * }} LabState
 */

export function readLabState(/** @type {string} */ root, vmid = 102) {
  return /** @type {LabState} */ (JSON.parse(fs.readFileSync(paths(root, vmid).labState, 'utf8')));
}

export function writeLabState(/** @type {string} */ root, /** @type {LabState} */ state, vmid = 102) {
  const file = paths(root, vmid).labState;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  fs.renameSync(`${file}.tmp`, file);
}

export function updateLabState(/** @type {string} */ root, /** @type {(s: LabState) => LabState} */ change, vmid = 102) {
  const next = change(readLabState(root, vmid));
  writeLabState(root, next, vmid);
  return next;
}

// ------------------------------------------------------------------------ processes

/** Linux process state letter (R, S, D, T, Z, …), or null when there is no such process. */
export function procState(/** @type {number} */ pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

/** Alive and not a zombie: orphaned QEMUs are reaped late (or never) by this container's init. */
export function isAlive(/** @type {number} */ pid) {
  const state = procState(pid);
  return state !== null && state !== 'Z' && state !== 'X';
}

export function readPid(/** @type {string} */ file) {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** The QEMU of this VM, checked as qm does: the pid file's process must be our QEMU. */
export function runningPid(/** @type {string} */ root, vmid = 102) {
  const p = paths(root, vmid);
  const pid = readPid(p.pidFile);
  if (pid === null || !isAlive(pid)) return null;
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.includes(p.pidFile) ? pid : null;
  } catch {
    return null;
  }
}

export function signal(/** @type {number} */ pid, /** @type {NodeJS.Signals} */ sig) {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

export const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** SIGSTOP (frozen) or SIGCONT; signals land asynchronously, so wait until /proc shows it. */
export async function freeze(/** @type {number} */ pid, /** @type {boolean} */ frozen) {
  if (!isAlive(pid)) return;
  signal(pid, frozen ? 'SIGSTOP' : 'SIGCONT');
  for (let i = 0; i < 100 && (procState(pid) === 'T') !== frozen; i++) await sleep(10);
}

/** Waits until pid is gone (or a zombie) or ms pass; true when gone. */
export async function waitGone(/** @type {number} */ pid, /** @type {number} */ ms) {
  const deadline = Date.now() + ms;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

/** @typedef {{ t: number, argv: string[], started?: true, exit?: number }} Invocation */

/** qm calls recorded in the invocation log, oldest first. */
export function invocations(/** @type {string} */ root, vmid = 102) {
  try {
    return fs
      .readFileSync(paths(root, vmid).invocationLog, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => /** @type {Invocation} */ (JSON.parse(line)));
  } catch {
    return [];
  }
}
