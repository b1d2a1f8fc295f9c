// @ts-check
// The parts of qemu-server's power verbs that the lab's qm (qm.mjs) runs inside its task
// workers: the config lock (pve-common's lock_file_full via AbstractConfig::lock_config),
// check_lock, vm_stop_cleanup and _do_vm_stop's escalation.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { releaseScope } from './cgroups.mjs';
import { qmp } from './qmp.mjs';
import { stopStorage } from './qemu.mjs';
import { applyPending, isAlive, paths, readConfig, readLabState, signal, sleep, waitGone, writeConfig } from './pve-node.mjs';

/** A failed qm call: message for stderr and exit code. */
export class QmError extends Error {
  constructor(/** @type {string} */ message, code = 255) {
    super(message);
    this.code = code;
  }
}

// qemu-server's numbers.
const CONFIG_LOCK_WAIT_S = 10; // lock_config: 10 s, then "got timeout"
const STOP_TERM_WAIT_S = 10; // _do_vm_stop: SIGTERM, 10 s, then SIGKILL and 1 s

/**
 * Runs fn holding lock-<vmid>.conf as qm does (flock, 10 s wait). The lock is held by a small
 * flock(1) child tied to this process's stdin pipe: it goes when we go, and QEMU (started
 * while we hold it) never inherits it. /proc/locks names that child; its parent is the task.
 * @template T @param {string} root @param {number} vmid @param {() => Promise<T>} fn
 */
export async function underConfigLock(root, vmid, fn) {
  const file = paths(root, vmid).lockFile;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  // SIGTERM/SIGINT ignored (inherited through exec): the lock belongs to the task's process as
  // in Perl, so a SIGTERM to the task's process group must not free it while the task lives.
  const holder = spawn('sh', ['-c', `trap '' TERM INT; exec flock -w ${CONFIG_LOCK_WAIT_S} -E 75 "$0" sh -c 'echo locked; exec cat >/dev/null'`, file], {
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  const acquired = new Promise((resolve) => {
    holder.stdout.once('data', () => resolve(true));
    holder.once('close', () => resolve(false));
  });
  const quick = await Promise.race([acquired, sleep(100).then(() => null)]);
  // Printed to STDERR by lock_file_full, which the CLI's task worker sends to stdout.
  if (quick === null) process.stdout.write('trying to acquire lock...\n');
  if (!(await acquired)) throw new QmError(`can't lock file '/var/lock/qemu-server/lock-${vmid}.conf' - got timeout`);
  if (quick === null) process.stdout.write(' OK\n');
  try {
    return await fn();
  } finally {
    holder.stdin.end();
  }
}

/** check_lock: a config with a `lock:` key refuses power verbs. */
export function checkLock(/** @type {string} */ root, /** @type {number} */ vmid) {
  const lock = readConfig(root, vmid).current.lock;
  if (lock) throw new QmError(`VM is locked (${lock})`);
}

/**
 * vm_stop_cleanup: pid and QMP files go, the storage path is released, pending is applied —
 * whatever became of the process. The scope goes only once systemd finds it empty.
 */
export async function stopCleanup(/** @type {string} */ root, /** @type {number} */ vmid) {
  const p = paths(root, vmid);
  for (const file of [p.pidFile, p.qmpSocket, p.qgaSocket]) fs.rmSync(file, { force: true });
  await stopStorage(root, vmid);
  writeConfig(root, applyPending(readConfig(root, vmid)), vmid);
  releaseScope(root, vmid);
}

/**
 * _do_vm_stop's escalation: QMP quit (60 s on PVE 9; the lab's node may set less), then wait
 * `timeout` for the process; SIGTERM, 10 s; SIGKILL, 1 s; then the cleanup, unconditionally —
 * a QEMU that survives SIGKILL (D state) is not reported and qm still exits 0. "Gone" is
 * qemu-server's own check: the pid's process is not running (a zombie leader counts as gone).
 * @param {string} root @param {number} vmid @param {number} pid @param {number} timeoutS
 */
export async function stopProcess(root, vmid, pid, timeoutS) {
  const quitTimeoutMs = (readLabState(root, vmid).qmpQuitTimeoutS ?? 60) * 1000;
  const quit = await qmp(paths(root, vmid).qmpSocket, 'quit', {}, quitTimeoutMs).then(
    () => true,
    () => false,
  );
  if (quit) {
    if (await waitGone(pid, timeoutS * 1000)) return stopCleanup(root, vmid);
    process.stdout.write('VM still running - terminating now with SIGTERM\n');
  } else {
    if (!isAlive(pid)) {
      process.stdout.write('Unexpected: VM shutdown command failed, but VM not running anymore..\n');
      return;
    }
    process.stdout.write('VM quit/powerdown failed - terminating now with SIGTERM\n');
  }
  signal(pid, 'SIGTERM');
  if (!(await waitGone(pid, STOP_TERM_WAIT_S * 1000))) {
    process.stdout.write('VM still running - terminating now with SIGKILL\n');
    signal(pid, 'SIGKILL');
    await sleep(1000);
  }
  await stopCleanup(root, vmid);
}
