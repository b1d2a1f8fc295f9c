// @ts-check
// The lab's hands on its PVE node: create VM 102 (config, disk, guest image), switch faults on
// and off, and kill everything the node runs. Used by the lab, the tests and labctl.mjs.
//
// Faults, each either REAL (the thing itself happens to the real QEMU, its storage or its
// cgroups) or PLAYED (the qm stand-in behaves as Proxmox would, because the real cause needs a
// real cluster):
//   io_stall          REAL    the disk's storage daemon is frozen (SIGSTOP): block counters stop,
//                             QMP still answers, guest tasks hang on I/O; stays on for a new
//                             daemon until switched off
//   qmp_silent        REAL    io_stall, plus one write to the frozen disk issued through the
//                             monitor: QEMU's main loop blocks on it, so QMP greets (from its I/O
//                             thread) and then never answers, as after a reset during the stall
//   locked            REAL    `lock: backup` in the VM config, as a running vzdump leaves it
//   lockfile_timeout  REAL    another process holds lock-<vmid>.conf (flock), as a long
//                             `qm shutdown` does: qm waits 10 s and gives up
//   dstate            REAL    every QEMU thread in D state (cgroup-v1 freezer): QMP silent,
//                             SIGKILL stays pending, so qm stop ends "OK" while QEMU lives on in
//                             its scope, and the next qm start waits for that scope in vain
//   zombie_leader     REAL    one QEMU thread in D state: after the stop's signal the main thread
//                             is a zombie (pid "dead") while that thread lives in the scope
//   ha_managed        PLAYED  VM 102 is an HA resource: qm stop/start only ask the HA manager,
//                             which acts `haDelayS` later (never, when null)
//   stop_hang         PLAYED  `qm stop` never returns (holding the lock)
//   slow_verbs        PLAYED  reset/stop/start take 1.5 s longer, as on a loaded host

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { qmp } from './qmp.mjs';
import { freezeThreads, releaseScope, scopePids, thawAll, threadsOf, waitScopeEmpty } from './cgroups.mjs';
import { freezeStorage, stopStorage, usesStoragePath } from './qemu.mjs';
import { activeTasks } from './tasks.mjs';
import {
  applyPending,
  paths,
  readConfig,
  readLabState,
  readPid,
  runningPid,
  signal,
  updateLabState,
  waitGone,
  writeConfig,
  writeLabState,
} from './pve-node.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const QM_SCRIPT = path.join(here, 'qm.mjs');

export const REAL_FAULTS = Object.freeze(['io_stall', 'qmp_silent', 'locked', 'lockfile_timeout', 'dstate', 'zombie_leader']);
export const PLAYED_FAULTS = Object.freeze(['ha_managed', 'stop_hang', 'slow_verbs']);
export const FAULTS = Object.freeze([...REAL_FAULTS, ...PLAYED_FAULTS]);

/** The devvm's config as created on the real PVE host (sizes scaled to the lab). */
export function devvmConfig(/** @type {{ vmid?: number, guest?: { dir: string } | null }} */ { vmid = 102, guest = null } = {}) {
  /** @type {Record<string, string>} */
  const config = {
    // A VM without the guest has no agent to answer: configured off, so qm says so at once.
    agent: guest ? '1' : '0',
    boot: 'order=scsi0;net0',
    cores: guest ? '2' : '1',
    cpu: 'host',
    memory: guest ? '512' : '128',
    name: 'devvm',
    net0: 'virtio=BC:24:11:5E:10:02,bridge=vmbr0,firewall=1',
    ostype: 'l26',
    scsi0: `local-lvm:vm-${vmid}-disk-0,size=${guest ? '1G' : '64M'}`,
    scsihw: 'virtio-scsi-pci',
    sockets: '1',
  };
  // The lab boots the Debian kernel directly (`args:` is Proxmox's own key for extra QEMU
  // arguments); real devvms boot from their disk.
  if (guest) {
    config.args = `-kernel ${guest.dir}/vmlinux -initrd ${guest.dir}/initrd.img -append "console=ttyS0 root=/dev/sda rw quiet mitigations=off"`;
  }
  return config;
}

/** The fix staged after the 2026-06-11 I/O stall: applied only by a fresh QEMU (a cycle). */
export function incidentFixPending(vmid = 102) {
  return { scsihw: 'virtio-scsi-single', scsi0: `local-lvm:vm-${vmid}-disk-0,aio=threads,iothread=1` };
}

/**
 * Creates (or re-creates) VM `vmid` on the node at `root`: config, lab state, a fresh disk (a
 * copy of the guest image's root filesystem, or a blank disk for a VM without a guest), and
 * starts it unless `running` is false. Any QEMU the node ran before is killed first.
 * @param {string} root
 * @param {{ vmid?: number, guest?: { dir: string } | null, sshPort?: number | null, running?: boolean,
 *   pending?: Record<string, string>, accel?: 'kvm' | 'tcg', qmpQuitTimeoutS?: number, haDelayS?: number | null }} [options]
 */
export async function initVm(root, options = {}) {
  const { vmid = 102, guest = null, sshPort = null, running = true, pending = {}, accel = 'tcg', qmpQuitTimeoutS = 60, haDelayS = 2 } = options;
  const p = paths(root, vmid);
  await killVm(root, vmid);
  for (const dir of [p.runDir, p.lockDir, p.labDir, p.storageDir]) fs.mkdirSync(dir, { recursive: true });
  const config = devvmConfig({ vmid, guest });
  writeConfig(root, { current: config, pending: {}, deletes: [] }, vmid);
  writeLabState(root, { vmid, sshPort, accel, faults: [], holders: [], qmpQuitTimeoutS, haDelayS }, vmid);
  writeHaResources(root, false, vmid);
  const disk = path.join(p.storageDir, `vm-${vmid}-disk-0.raw`);
  fs.rmSync(disk, { force: true });
  // Sparse: the image is a 1 GiB filesystem holding ~200 MiB.
  if (guest) execFileSync('cp', ['--sparse=always', '--reflink=auto', path.join(guest.dir, 'rootfs.raw'), disk]);
  else {
    fs.closeSync(fs.openSync(disk, 'w'));
    fs.truncateSync(disk, 64 * 1024 * 1024);
  }
  fs.writeFileSync(p.serialLog, '');
  fs.writeFileSync(p.invocationLog, '');
  if (running) await runQm(root, ['start', String(vmid)]);
  // Staged while the VM runs, as the 2026-06-11 fix was: only a fresh QEMU applies it.
  if (Object.keys(pending).length) writeConfig(root, { current: config, pending, deletes: [] }, vmid);
}

/** Runs the qm stand-in (logged like any qm call); rejects with its stderr on failure. */
export function runQm(/** @type {string} */ root, /** @type {string[]} */ argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [QM_SCRIPT, '--root', root, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`qm ${argv.join(' ')}: exit ${code}: ${stderr.trim()}`))));
  });
}

/** What the node says about VM 102 right now: QEMU's pid (null when stopped), config, faults. */
export function readVm(/** @type {string} */ root, vmid = 102) {
  const pid = runningPid(root, vmid);
  const config = readConfig(root, vmid);
  return { vmid, running: pid !== null, pid, config: config.current, pending: config.pending, deletes: config.deletes, faults: readLabState(root, vmid).faults };
}

/** Switches a fault on or off (see the list at the top). */
export async function setFault(/** @type {string} */ root, /** @type {string} */ name, on = true, vmid = 102) {
  if (!FAULTS.includes(name)) throw new Error(`unknown fault '${name}' (known: ${FAULTS.join(', ')})`);
  const p = paths(root, vmid);
  const state = updateLabState(root, (s) => ({ ...s, faults: on ? [...new Set([...s.faults, name])] : s.faults.filter((f) => f !== name) }), vmid);
  const config = readConfig(root, vmid);
  switch (name) {
    case 'io_stall':
      await freezeStorage(root, on || state.faults.includes('qmp_silent'), vmid);
      break;
    case 'qmp_silent':
      if (!on) {
        await freezeStorage(root, state.faults.includes('io_stall'), vmid);
        break;
      }
      if (!usesStoragePath(applyPending(config).current) && !usesStoragePath(config.current)) {
        throw new Error('qmp_silent needs the disk on the storage path (no aio=threads)');
      }
      await freezeStorage(root, true, vmid);
      if (runningPid(root, vmid) !== null) {
        // The write never completes, so neither does this command: the main loop is now blocked.
        await qmp(p.qmpSocket, 'human-monitor-command', { 'command-line': 'qemu-io drive-scsi0 "write 0 4096"' }, 300).catch(() => undefined);
      }
      break;
    case 'locked':
      if (on) config.current.lock = 'backup';
      else delete config.current.lock;
      writeConfig(root, config, vmid);
      break;
    case 'lockfile_timeout':
      if (on) {
        // --no-fork: the holder is the very process that has the lock, so killing it frees it.
        const holder = spawn('flock', ['--no-fork', p.lockFile, 'sleep', '86400'], { stdio: 'ignore', detached: true });
        holder.unref();
        updateLabState(root, (s) => ({ ...s, holders: [...s.holders, holder.pid ?? 0] }), vmid);
        // Hold it before returning: the caller's next qm call must find it taken.
        for (let i = 0; i < 100 && !lockHeld(p.lockFile); i++) await new Promise((r) => setTimeout(r, 20));
      } else {
        releaseHolders(root, vmid);
      }
      break;
    case 'dstate':
    case 'zombie_leader': {
      if (!on) {
        await thawAll(root);
        break;
      }
      const pid = runningPid(root, vmid);
      if (pid === null) break;
      // zombie_leader: QEMU's RCU thread, whose freezing does not stop the guest; a real host's
      // stuck thread is an I/O worker or an iothread blocked on dead storage.
      const threads = threadsOf(pid);
      const stuck = name === 'dstate' ? threads : threads.filter((t) => t.comm === 'call_rcu').slice(0, 1);
      if (!stuck.length) throw new Error(`zombie_leader: QEMU ${pid} has no call_rcu thread to freeze`);
      await freezeThreads(root, stuck.map((t) => t.tid));
      break;
    }
    case 'ha_managed':
      writeHaResources(root, on, vmid);
      break;
    default:
      break; // played faults: the qm stand-in reads them from the lab state
  }
}

export async function clearFaults(/** @type {string} */ root, vmid = 102) {
  for (const name of readLabState(root, vmid).faults) await setFault(root, name, false, vmid);
}

/** Whether any process holds a lock on the file (from /proc/locks, as the dispatcher reads it). */
export function lockHeld(/** @type {string} */ file) {
  try {
    const inode = fs.statSync(file).ino;
    return fs.readFileSync('/proc/locks', 'utf8').split('\n').some((line) => line.includes(`:${inode} `));
  } catch {
    return false;
  }
}

function releaseHolders(/** @type {string} */ root, vmid = 102) {
  for (const pid of readLabState(root, vmid).holders) signal(pid, 'SIGKILL');
  updateLabState(root, (s) => ({ ...s, holders: [] }), vmid);
}

/** Kills the VM's QEMU (thawed first, with whatever else is left in its scope), storage daemon and lock holders (lab teardown; not a qm verb). */
export async function killVm(/** @type {string} */ root, vmid = 102) {
  const p = paths(root, vmid);
  if (!fs.existsSync(p.labState)) return;
  await thawAll(root);
  // qm task workers rename themselves ("task UPID:…"), so their command line no longer names
  // the node: the node's active task list does.
  for (const task of activeTasks(root)) signal(-task.pid, 'SIGKILL');
  for (const pid of new Set([readPid(p.pidFile), ...scopePids(root, vmid)])) {
    if (pid !== null && fs.existsSync(`/proc/${pid}`)) {
      signal(pid, 'SIGKILL');
      await waitGone(pid, 5000);
    }
  }
  await waitScopeEmpty(root, vmid, 5000);
  releaseScope(root, vmid);
  releaseHolders(root, vmid);
  await stopStorage(root, vmid);
}

/** An HA resource entry for the VM in the node's resources.cfg (Proxmox's section format). */
function writeHaResources(/** @type {string} */ root, /** @type {boolean} */ managed, vmid = 102) {
  const file = paths(root, vmid).haResources;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, managed ? `vm: ${vmid}\n\tstate started\n\tmax_restart 1\n\tmax_relocate 1\n` : '');
}

/** The wrapper script the dispatcher's config names as `qm` (an absolute path, no arguments). */
export function writeQmWrapper(/** @type {string} */ root, /** @type {string} */ wrapperPath) {
  fs.writeFileSync(wrapperPath, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(QM_SCRIPT)} --root ${JSON.stringify(root)} "$@"\n`, { mode: 0o755 });
  return wrapperPath;
}
