// @ts-check
// qm's task workers, run as pve-common's RESTEnvironment::fork_worker runs them for the CLI:
//   - the front process (what the caller started) ignores SIGINT/SIGQUIT/SIGTERM while it sets
//     the worker up, then relays the worker's output; a SIGTERM then is passed on to the
//     worker's process group (SIGKILL after three), a SIGKILL ends only the front;
//   - the worker calls setsid, renames itself `task UPID:…` and registers in the node's active
//     task list (var/log/pve/tasks/active, "UPID 0" lines); it reports "TASK OK" or
//     "TASK ERROR: …" on a control pipe, and the front prints only the error, on stderr;
//   - a worker whose front is gone dies at its next output (SIGPIPE, as Perl's default);
//   - `qm stop --overrule-shutdown` aborts active qmshutdown tasks of the VM the way
//     pve-guest-common's abort_guest_tasks does: SIGTERM to the task's process group, up to 5 s,
//     then SIGKILL.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAlive, paths, signal, sleep } from './pve-node.mjs';

const QM_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'qm.mjs');
const NODE_NAME = 'lab';
const TASK_USER = 'root@pam';

/** Start time of a process in clock ticks since boot (/proc/PID/stat field 22), as ProcFSTools reads it. */
function procStartTicks(/** @type {number} */ pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return 0;
  }
}

const hex8 = (/** @type {number} */ n) => n.toString(16).toUpperCase().padStart(8, '0');

/** PVE::UPID::encode: UPID:node:pid:pstart:starttime:type:id:user: (hex fields 8 wide). */
export function encodeUpid(/** @type {{ pid: number, pstart: number, starttime: number, type: string, id: string }} */ task) {
  return `UPID:${NODE_NAME}:${hex8(task.pid)}:${hex8(task.pstart)}:${hex8(task.starttime)}:${task.type}:${task.id}:${TASK_USER}:`;
}

/** Running tasks of the node: { upid, pid, type, id } from the active list. */
export function activeTasks(/** @type {string} */ root) {
  let text;
  try {
    text = fs.readFileSync(paths(root).activeTasks, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map((line) => /^(UPID:[^:]+:([0-9A-F]{8}):[0-9A-F]{8}:[0-9A-F]{8}:([^:]+):([^:]*):[^:]+:) 0$/.exec(line))
    .filter((m) => m !== null)
    .map((m) => ({ upid: /** @type {string} */ (m[1]), pid: parseInt(/** @type {string} */ (m[2]), 16), type: /** @type {string} */ (m[3]), id: /** @type {string} */ (m[4]) }));
}

/** Rewrites the active list through a temporary file (readers never see half a list). */
function changeActiveTasks(/** @type {string} */ root, /** @type {(lines: string[]) => string[]} */ change) {
  const file = paths(root).activeTasks;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  /** @type {string[]} */
  let lines = [];
  try {
    lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
  } catch {
    // first task on this node
  }
  fs.writeFileSync(`${file}.${process.pid}`, change(lines).map((line) => `${line}\n`).join(''));
  fs.renameSync(`${file}.${process.pid}`, file);
}

/**
 * The front: starts the worker for `argv` (a qm task verb) and relays it. Resolves with the exit
 * code qm exits with: 0, or 255 after printing the task's error on stderr.
 * @param {string} root @param {string} type  task type (qmstop, qmstart, hastop, …) @param {string[]} argv
 */
export function runTaskFront(root, type, argv) {
  // Ignored while the worker is set up, as fork_worker's `local $SIG{…} = 'IGNORE'`.
  const ignore = () => {};
  for (const sig of /** @type {NodeJS.Signals[]} */ (['SIGINT', 'SIGQUIT', 'SIGTERM'])) process.on(sig, ignore);
  return new Promise((resolve) => {
    const worker = spawn(process.execPath, [QM_SCRIPT, '--root', root, '--task', type, ...argv], {
      detached: true, // setsid(): the worker is not in the caller's process group
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    let control = '';
    worker.stdout?.on('data', (chunk) => process.stdout.write(chunk));
    worker.stderr?.on('data', (chunk) => process.stdout.write(chunk)); // STDERR >& STDOUT in the worker
    /** @type {import('node:stream').Readable} */ (worker.stdio[3]).on('data', (chunk) => (control += chunk));
    // The tee phase: a TERM to the front goes to the worker's whole process group.
    let interrupts = 0;
    process.off('SIGTERM', ignore);
    process.on('SIGTERM', () => {
      if (worker.pid) signal(-worker.pid, interrupts++ < 3 ? 'SIGTERM' : 'SIGKILL');
    });
    worker.on('close', (code) => {
      const error = /^TASK ERROR: (.*)$/m.exec(control);
      if (error) process.stderr.write(`${error[1]}\n`);
      resolve(error ? 255 : code === 0 && /^TASK OK$/m.test(control) ? 0 : 255);
    });
  });
}

/**
 * The worker side: runs fn as task `type` for `vmid` and exits. While `uninterruptible()` says
 * so, a SIGTERM is swallowed (a Perl worker inside an eval, or a process in the kernel's
 * uninterruptible sleep); otherwise it ends the task with "received interrupt".
 * @param {string} root @param {string} type @param {string} vmid
 * @param {() => Promise<void>} fn @param {() => boolean} uninterruptible
 */
export async function runTaskWorker(root, type, vmid, fn, uninterruptible) {
  const upid = encodeUpid({ pid: process.pid, pstart: procStartTicks(process.pid), starttime: Math.floor(Date.now() / 1000), type, id: vmid });
  process.title = `task ${upid}`;
  const control = fs.createWriteStream('', { fd: 3 });
  const finish = (/** @type {string} */ message, /** @type {number} */ code) => {
    changeActiveTasks(root, (lines) => lines.filter((line) => !line.startsWith(upid)));
    control.end(`${message}\n`, () => process.exit(code));
  };
  // SIGPIPE: the front is gone, so the next line of output ends the worker.
  process.stdout.on('error', () => process.exit(141));
  process.on('SIGTERM', () => {
    if (!uninterruptible()) finish('TASK ERROR: received interrupt', 255);
  });
  changeActiveTasks(root, (lines) => [...lines, `${upid} 0`]);
  try {
    await fn();
    finish('TASK OK', 0);
  } catch (error) {
    finish(`TASK ERROR: ${/** @type {Error} */ (error).message.replace(/\n/g, ' ')}`, 255);
  }
}

/**
 * abort_guest_tasks: every active task of `type` for the VM gets kill_process_group (SIGTERM to
 * its group, up to 5 s, then SIGKILL). Resolves with the UPIDs it aborted.
 */
export async function abortTasks(/** @type {string} */ root, /** @type {string} */ type, /** @type {number} */ vmid) {
  const aborted = [];
  for (const task of activeTasks(root).filter((t) => t.type === type && t.id === String(vmid) && isAlive(t.pid))) {
    signal(-task.pid, 'SIGTERM');
    for (let i = 0; i < 5 && isAlive(task.pid); i++) await sleep(1000);
    if (isAlive(task.pid)) signal(-task.pid, 'SIGKILL');
    aborted.push(task.upid);
  }
  return aborted;
}
