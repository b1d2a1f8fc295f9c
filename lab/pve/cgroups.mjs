// @ts-check
// The lab node's kernel control groups, real ones:
//   - the VM's systemd scope, as Proxmox runs QEMU in `qemu.slice/<vmid>.scope` on cgroup v2:
//     a process (or a thread of it) that outlives its stop keeps the scope non-empty, and the
//     scope's pressure files are what PVE 9's `qm status` reads;
//   - a cgroup-v1 freezer, the lab's way to put QEMU threads into real D state: a frozen task
//     reports `D (disk sleep)`, and a SIGKILL stays pending until it is thawed — what a thread
//     stuck on dead storage does on a real host.
// Each node gets its own directories, named after its root, so parallel labs never meet.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { sleep } from './pve-node.mjs';

const LAB_GROUP = 'breakglass-lab';

/** cgroup v2's mount: /sys/fs/cgroup on a pure v2 host (PVE 8/9), .../unified on a hybrid one. */
function v2Root() {
  for (const dir of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    if (fs.existsSync(path.join(dir, 'cgroup.controllers'))) return dir;
  }
  return null;
}

const nodeId = (/** @type {string} */ root) => createHash('sha256').update(path.resolve(root)).digest('hex').slice(0, 12);

/** Where the node's `qemu.slice/<vmid>.scope` lives; null when this machine has no writable cgroup v2. */
export function scopeDir(/** @type {string} */ root, vmid = 102) {
  const base = v2Root();
  if (!base) return null;
  return path.join(base, LAB_GROUP, nodeId(root), 'qemu.slice', `${vmid}.scope`);
}

function freezerDir(/** @type {string} */ root) {
  return path.join('/sys/fs/cgroup/freezer', LAB_GROUP, nodeId(root));
}

/** Whether real D state can be made here (a writable cgroup-v1 freezer). */
export function freezerAvailable() {
  try {
    fs.accessSync('/sys/fs/cgroup/freezer/tasks', fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Moves a process (all its threads) into the VM's scope, creating it as systemd would. */
export function enterScope(/** @type {string} */ root, /** @type {number} */ pid, vmid = 102) {
  const dir = scopeDir(root, vmid);
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
}

/** Processes in the VM's scope (a zombie leader stays listed while any of its threads lives). */
export function scopePids(/** @type {string} */ root, vmid = 102) {
  const dir = scopeDir(root, vmid);
  if (!dir) return [];
  try {
    return fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Waits until no process is left in the VM's scope (or ms pass); true when empty. */
export async function waitScopeEmpty(/** @type {string} */ root, /** @type {number} */ vmid, /** @type {number} */ ms) {
  const deadline = Date.now() + ms;
  while (scopePids(root, vmid).length) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/** The scope's pressure stall information ({ some, full } avg10 per resource), when it exists. */
export function scopePressure(/** @type {string} */ root, vmid = 102) {
  const dir = scopeDir(root, vmid);
  /** @type {Record<string, { some: number, full: number }>} */
  const out = {};
  if (!dir) return out;
  for (const resource of ['cpu', 'io', 'memory']) {
    try {
      const text = fs.readFileSync(path.join(dir, `${resource}.pressure`), 'utf8');
      const avg10 = (/** @type {string} */ kind) => Number(new RegExp(`^${kind} avg10=([0-9.]+)`, 'm').exec(text)?.[1] ?? 0);
      out[resource] = { some: avg10('some'), full: avg10('full') };
    } catch {
      // no scope (VM stopped) or no PSI on this kernel
    }
  }
  return out;
}

/** Removes the scope once it is empty, as systemd does when its last process is gone (and the lab's parents). */
export function releaseScope(/** @type {string} */ root, vmid = 102) {
  const dir = scopeDir(root, vmid);
  if (!dir || scopePids(root, vmid).length) return;
  for (const group of [dir, path.dirname(dir), path.dirname(path.dirname(dir))]) {
    try {
      fs.rmdirSync(group);
    } catch {
      return; // gone already, or still holds another VM's scope
    }
  }
}

/**
 * Freezes the given threads (task ids) for real: each moves into the node's freezer group,
 * which is then frozen. Their state turns D; signals, SIGKILL included, wait for the thaw.
 */
export async function freezeThreads(/** @type {string} */ root, /** @type {number[]} */ tids) {
  if (!freezerAvailable()) throw new Error('real D state needs the cgroup-v1 freezer (/sys/fs/cgroup/freezer), which this machine does not offer');
  const dir = freezerDir(root);
  fs.mkdirSync(dir, { recursive: true });
  for (const tid of tids) fs.writeFileSync(path.join(dir, 'tasks'), String(tid));
  fs.writeFileSync(path.join(dir, 'freezer.state'), 'FROZEN');
  for (let i = 0; i < 200 && fs.readFileSync(path.join(dir, 'freezer.state'), 'utf8').trim() !== 'FROZEN'; i++) await sleep(10);
}

/** Thaws everything the node froze (pending signals then take effect) and removes the group. */
export async function thawAll(/** @type {string} */ root) {
  const dir = freezerDir(root);
  if (!fs.existsSync(dir)) return;
  fs.writeFileSync(path.join(dir, 'freezer.state'), 'THAWED');
  // Thawed tasks go back to the root group so that the node's group can be removed.
  const top = '/sys/fs/cgroup/freezer/tasks';
  for (const tid of fs.readFileSync(path.join(dir, 'tasks'), 'utf8').split('\n').filter(Boolean)) {
    try {
      fs.writeFileSync(top, tid);
    } catch {
      // the task has exited meanwhile
    }
  }
  for (let i = 0; i < 100; i++) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch {
      await sleep(20);
    }
  }
}

/** Threads of a process: task id, name and state letter (from /proc/PID/task). */
export function threadsOf(/** @type {number} */ pid) {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return {
        tid: Number(tid),
        comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
        state: stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3),
      };
    });
  } catch {
    return [];
  }
}
