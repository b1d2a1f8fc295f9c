#!/usr/bin/env node
// @ts-check
// The lab's `qm`: a thin stand-in for Proxmox VE's own (which cannot run here: it needs the
// cluster filesystem and the PVE daemons), over the REAL QEMU process of VM 102 on a lab node
// (pve-node.mjs). Outputs, messages and exit codes follow qemu-server's PVE/CLI/qm.pm,
// PVE/API2/Qemu.pm, PVE/QemuServer.pm and pve-common's fork_worker and lock_file_full. Task verbs
// (start stop shutdown reset) run as qm's foreground worker: everything they print, the lock's
// "trying to acquire lock..." included, goes to stdout; a failed task puts only its bare error
// on stderr and exits 255. Other errors are plain dies on stderr.
//
//   node qm.mjs --root NODE_ROOT <qm args...>
//
//   status <vmid> [--verbose]   config <vmid> [--current]   pending <vmid>
//   start <vmid>   stop <vmid> [--timeout N]   shutdown <vmid> [--timeout N]   reset <vmid>
//   guest cmd <vmid> <command>
//
// Every call appends {t, argv, started: true} to the node's invocation log when it begins and
// {t, argv, exit} when it ends, so a hung or killed call still leaves a trace.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { SocketTimeout, qga, qmp, qmpQueue } from './qmp.mjs';
import { startQemu, stopStorage } from './qemu.mjs';
import {
  applyPending,
  isAlive,
  paths,
  readConfig,
  readLabState,
  runningPid,
  signal,
  sleep,
  updateLabState,
  waitGone,
  writeConfig,
} from './pve-node.mjs';

/** A failed qm call: message for stderr and exit code. */
class QmError extends Error {
  constructor(/** @type {string} */ message, code = 255) {
    super(message);
    this.code = code;
  }
}

const args = process.argv.slice(2);
if (args[0] !== '--root' || !args[1]) {
  process.stderr.write('usage: qm.mjs --root NODE_ROOT <qm args...>\n');
  process.exit(2);
}
const root = path.resolve(/** @type {string} */ (args[1]));
const argv = args.slice(2);

// qemu-server's numbers.
const CONFIG_LOCK_WAIT_S = 10; // lock_config: 10 s, then "got timeout"
const STATUS_QMP_TIMEOUT_MS = 3000; // vmstatus: queue_execute's 3 s, then status stands in
const QMP_COMMAND_TIMEOUT_MS = 5000; // QMPClient's default for commands without their own
const STOP_TERM_WAIT_S = 10; // _do_vm_stop: SIGTERM, 10 s, then SIGKILL and 1 s
const GUEST_PING_TIMEOUT_MS = 3000; // qga_check_running
// Played faults' delays (see lab-vm.mjs).
const SLOW_VERB_MS = 1500;

const print = (/** @type {string[]} */ lines) => {
  if (lines.length) process.stdout.write(`${lines.join('\n')}\n`);
};
/** Never finishes: the caller's time limit is what ends a hung qm, as on a real host. */
const hang = () => new Promise(() => setInterval(() => {}, 60_000));
const keyValueLines = (/** @type {Record<string, string | number>} */ obj) =>
  Object.keys(obj)
    .sort()
    .map((k) => `${k}: ${obj[k]}`);

const faults = () => readLabState(root).faults;
const hasFault = (/** @type {string} */ name) => faults().includes(name);

// ---- argument parsing (qm's own messages) ----------------------------------------------------

/**
 * @param {string} usage     e.g. "qm stop <vmid> [OPTIONS]"
 * @param {string[]} rest    arguments after the verb
 * @param {string[]} positionals  names of required positionals, vmid first
 * @param {Record<string, 'bool' | 'int'>} spec  allowed options
 */
function parse(usage, rest, positionals, spec) {
  /** @type {string[]} */
  const pos = [];
  /** @type {Record<string, number | boolean>} */
  const opts = {};
  const fail = (/** @type {string} */ msg) => new QmError(`${msg}\n${usage}`);
  for (let i = 0; i < rest.length; i++) {
    const arg = /** @type {string} */ (rest[i]);
    if (!arg.startsWith('-')) {
      pos.push(arg);
      continue;
    }
    const name = arg.replace(/^--?/, '');
    const kind = spec[name];
    if (!kind) throw fail(`Unknown option: ${name}\n400 unable to parse option`);
    const value = rest[i + 1];
    if (kind === 'bool') {
      // Like Getopt's optional value: "--verbose" or "--verbose 1|0".
      if (value === '0' || value === '1') i++;
      opts[name] = value !== '0';
    } else {
      if (value === undefined || !/^\d+$/.test(value)) throw fail(`400 Parameter verification failed.\n${name}: type check ('integer') failed - got '${value ?? ''}'`);
      opts[name] = Number(value);
      i++;
    }
  }
  if (pos.length < positionals.length) throw fail('400 not enough arguments');
  if (pos.length > positionals.length) throw fail('400 too many arguments');
  const vmidArg = /** @type {string} */ (pos[0]);
  if (!/^\d+$/.test(vmidArg)) throw fail(`400 Parameter verification failed.\nvmid: type check ('integer') failed - got '${vmidArg}'`);
  const vmid = Number(vmidArg);
  if (!fs.existsSync(paths(root, vmid).config)) throw new QmError(`Configuration file 'nodes/lab/qemu-server/${vmid}.conf' does not exist`, 2);
  return { vmid, pos, opts };
}

// ---- the config lock -------------------------------------------------------------------------

/**
 * Runs fn holding lock-<vmid>.conf as qm does (flock, 10 s wait). The lock is held by a small
 * flock(1) child tied to this process's stdin pipe: it goes when we go, and QEMU (started
 * while we hold it) never inherits it.
 * @template T @param {number} vmid @param {() => Promise<T>} fn
 */
async function underConfigLock(vmid, fn) {
  const file = paths(root, vmid).lockFile;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const holder = spawn('flock', ['-w', String(CONFIG_LOCK_WAIT_S), '-E', '75', file, 'sh', '-c', 'echo locked; exec cat >/dev/null'], {
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
function checkLock(/** @type {number} */ vmid) {
  const lock = readConfig(root, vmid).current.lock;
  if (lock) throw new QmError(`VM is locked (${lock})`);
}

// ---- stopping and starting -------------------------------------------------------------------

/** vm_stop_cleanup: pid and QMP files go, the storage path is released, pending is applied. */
async function stopCleanup(/** @type {number} */ vmid) {
  const p = paths(root, vmid);
  for (const file of [p.pidFile, p.qmpSocket, p.qgaSocket]) fs.rmSync(file, { force: true });
  await stopStorage(root, vmid);
  writeConfig(root, applyPending(readConfig(root, vmid)), vmid);
}

/**
 * _do_vm_stop's escalation: QMP quit (60 s on PVE 9; the lab's node may set less), then wait
 * `timeout` for the process; SIGTERM, 10 s; SIGKILL, 1 s; then the cleanup, unconditionally —
 * a QEMU that survives SIGKILL (D state) is not reported and qm still exits 0.
 * @param {number} vmid @param {number} pid @param {number} timeoutS
 */
async function stopProcess(vmid, pid, timeoutS) {
  if (hasFault('stop_hang')) return hang(); // still holding the config lock, like qm
  const dstate = hasFault('dstate');
  const quitTimeoutMs = (readLabState(root, vmid).qmpQuitTimeoutS ?? 60) * 1000;
  const quit = await qmp(paths(root, vmid).qmpSocket, 'quit', {}, quitTimeoutMs).then(
    () => true,
    () => false,
  );
  if (quit) {
    if (await waitGone(pid, timeoutS * 1000)) return stopCleanup(vmid);
    process.stdout.write('VM still running - terminating now with SIGTERM\n');
  } else {
    if (!isAlive(pid)) {
      process.stdout.write('Unexpected: VM shutdown command failed, but VM not running anymore..\n');
      return;
    }
    process.stdout.write('VM quit/powerdown failed - terminating now with SIGTERM\n');
  }
  if (!dstate) signal(pid, 'SIGTERM');
  if (!(await waitGone(pid, STOP_TERM_WAIT_S * 1000))) {
    process.stdout.write('VM still running - terminating now with SIGKILL\n');
    // Played D state: the kernel would hold SIGKILL pending forever; the lab does not send it.
    if (dstate) updateLabState(root, (s) => ({ ...s, stoppedAlive: [...s.stoppedAlive, pid] }), vmid);
    else signal(pid, 'SIGKILL');
    await sleep(1000);
  }
  await stopCleanup(vmid);
}

// ---- qm verbs --------------------------------------------------------------------------------

/** Real qm's enumeration for `qm guest cmd`. */
const GUEST_COMMANDS = ['fsfreeze-freeze', 'fsfreeze-status', 'fsfreeze-thaw', 'fstrim', 'get-fsinfo', 'get-host-name', 'get-memory-block-info', 'get-memory-blocks', 'get-osinfo', 'get-time', 'get-timezone', 'get-users', 'get-vcpus', 'info', 'network-get-interfaces', 'ping', 'shutdown', 'suspend-disk', 'suspend-hybrid', 'suspend-ram'];

/** @type {Record<string, (rest: string[]) => Promise<void>>} */
const verbs = {
  async status(rest) {
    const { vmid, opts } = parse('qm status <vmid> [OPTIONS]', rest, ['vmid'], { verbose: 'bool' });
    const pid = runningPid(root, vmid);
    const status = pid ? 'running' : 'stopped';
    const config = readConfig(root, vmid).current;
    /** @type {Record<string, string | number>} */
    const stat = {
      status,
      name: config.name ?? `VM ${vmid}`,
      vmid,
      cpus: Number(config.cores ?? 1) * Number(config.sockets ?? 1),
      maxmem: Number(config.memory ?? 512) * 1024 * 1024,
      maxdisk: diskBytes(config.scsi0),
      disk: 0,
      mem: 0,
      netin: 0,
      netout: 0,
      uptime: pid ? uptimeOf(pid) : 0,
    };
    if (config.lock) stat.lock = config.lock;
    /** @type {string[]} */
    let blockstat = [];
    if (pid) {
      stat.pid = pid;
      // vmstatus always asks QMP (even without --verbose): one connection, one 3 s budget for the
      // whole queue; answers that do not come are silently absent, and qmpstatus then falls back
      // to a copy of status. (The QMP-only fields are those of Proxmox's own QEMU build, which
      // answers query-proxmox-support; stock QEMU would answer only query-status.)
      const [st, stats, version, machines] = /** @type {[
        { status: string } | undefined,
        { device: string, stats: Record<string, number> }[] | undefined,
        { qemu: { major: number, minor: number, micro: number } } | undefined,
        { name: string, 'is-current'?: boolean }[] | undefined,
      ]} */ (await qmpQueue(paths(root, vmid).qmpSocket, ['query-status', 'query-blockstats', 'query-version', 'query-machines'], STATUS_QMP_TIMEOUT_MS));
      if (st) stat.qmpstatus = st.status;
      if (stats) {
        stat.diskread = stats.reduce((sum, d) => sum + (d.stats.rd_bytes ?? 0), 0);
        stat.diskwrite = stats.reduce((sum, d) => sum + (d.stats.wr_bytes ?? 0), 0);
        blockstat = ['blockstat:'];
        for (const d of stats.filter((d) => d.device.startsWith('drive-')).sort((a, b) => a.device.localeCompare(b.device))) {
          blockstat.push(`\t${d.device.replace(/^drive-/, '')}:`, ...keyValueLines(d.stats).map((line) => `\t\t${line}`));
        }
      }
      if (version) stat['running-qemu'] = `${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro}`;
      const current = machines?.find((m) => m['is-current']);
      if (current) stat['running-machine'] = current.name;
    }
    stat.qmpstatus ??= status;
    if (!opts.verbose) return print([`status: ${stat.qmpstatus}`]);
    // Sorted keys; nested hashes print their keys TAB-indented under "key:".
    const lines = keyValueLines(stat);
    if (blockstat.length) lines.splice(lines.findIndex((line) => line > 'blockstat:'), 0, ...blockstat);
    print(lines);
  },

  async config(rest) {
    const { vmid, opts } = parse('qm config <vmid> [OPTIONS]', rest, ['vmid'], { current: 'bool' });
    const config = readConfig(root, vmid);
    print(keyValueLines(opts.current ? config.current : applyPending(config).current));
  },

  async pending(rest) {
    const { vmid } = parse('qm pending <vmid>', rest, ['vmid'], {});
    const config = readConfig(root, vmid);
    const keys = [...new Set([...Object.keys(config.current), ...Object.keys(config.pending), ...config.deletes])].sort();
    /** @type {string[]} */
    const lines = [];
    for (const key of keys) {
      const cur = config.current[key];
      if (config.deletes.includes(key)) {
        if (cur !== undefined) lines.push(`del ${key}: ${cur}`);
      } else if (config.pending[key] !== undefined) {
        if (cur !== undefined) lines.push(`cur ${key}: ${cur}`);
        lines.push(`new ${key}: ${config.pending[key]}`);
      } else if (cur !== undefined) {
        lines.push(`cur ${key}: ${cur}`);
      }
    }
    print(lines);
  },

  async reset(rest) {
    const { vmid, opts } = parse('qm reset <vmid> [OPTIONS]', rest, ['vmid'], { skiplock: 'bool' });
    // Checked before the task starts: a plain die.
    if (!runningPid(root, vmid)) throw new QmError(`VM ${vmid} not running`);
    await underConfigLock(vmid, async () => {
      if (!opts.skiplock) checkLock(vmid);
      if (hasFault('slow_verbs')) await sleep(SLOW_VERB_MS);
      // QMP system_reset to the same QEMU: done when QEMU acknowledges it. Whether the guest
      // then comes back is not qm's to know (with the disk stalled, QEMU's main loop hangs).
      try {
        await qmp(paths(root, vmid).qmpSocket, 'system_reset', {}, QMP_COMMAND_TIMEOUT_MS);
      } catch (error) {
        throw new QmError(`VM ${vmid} qmp command 'system_reset' failed - ${error instanceof SocketTimeout ? 'got timeout' : /** @type {Error} */ (error).message}`);
      }
    });
  },

  async stop(rest) {
    const { vmid, opts } = parse('qm stop <vmid> [OPTIONS]', rest, ['vmid'], { timeout: 'int', skiplock: 'bool', keepActive: 'bool' });
    await underConfigLock(vmid, async () => {
      if (hasFault('slow_verbs')) await sleep(SLOW_VERB_MS);
      const pid = runningPid(root, vmid);
      // _do_vm_stop: a VM that is not running is left alone, silently (no lock check, no cleanup).
      if (!pid) return;
      if (!opts.skiplock) checkLock(vmid);
      await stopProcess(vmid, pid, typeof opts.timeout === 'number' ? opts.timeout : 60);
    });
  },

  async shutdown(rest) {
    const { vmid, opts } = parse('qm shutdown <vmid> [OPTIONS]', rest, ['vmid'], { timeout: 'int', forceStop: 'bool' });
    // The pre-check asks QMP whether the VM is paused and only warns when that fails.
    if (!runningPid(root, vmid)) {
      process.stderr.write(`VM ${vmid} not running\n\n`);
      return;
    }
    await underConfigLock(vmid, async () => {
      const pid = runningPid(root, vmid);
      if (!pid) return;
      checkLock(vmid);
      const timeoutS = typeof opts.timeout === 'number' ? opts.timeout : 60;
      const p = paths(root, vmid);
      // The guest agent's shutdown when it answers, ACPI power button otherwise.
      const viaAgent = /^(enabled=)?1\b/.test(readConfig(root, vmid).current.agent ?? '') && (await qga(p.qgaSocket, 'guest-ping', {}, GUEST_PING_TIMEOUT_MS).then(() => true, () => false));
      if (viaAgent) await qga(p.qgaSocket, 'guest-shutdown', {}, timeoutS * 1000).catch(() => undefined);
      else await qmp(p.qmpSocket, 'system_powerdown', {}, QMP_COMMAND_TIMEOUT_MS).catch(() => undefined);
      if (await waitGone(pid, timeoutS * 1000)) return stopCleanup(vmid);
      if (!opts.forceStop) throw new QmError('VM quit/powerdown failed - got timeout');
      await stopProcess(vmid, pid, 0);
    });
  },

  async start(rest) {
    const { vmid, opts } = parse('qm start <vmid> [OPTIONS]', rest, ['vmid'], { skiplock: 'bool' });
    await underConfigLock(vmid, async () => {
      if (hasFault('slow_verbs')) await sleep(SLOW_VERB_MS);
      const config0 = readConfig(root, vmid).current;
      if (runningPid(root, vmid)) {
        // vm_start: a running VM under a backup lock is resumed, not started (same process).
        if (config0.lock === 'backup') {
          await qmp(paths(root, vmid).qmpSocket, 'cont', {}, QMP_COMMAND_TIMEOUT_MS).catch(() => undefined);
          return;
        }
        throw new QmError(`VM ${vmid} already running`);
      }
      if (!opts.skiplock) checkLock(vmid);
      if (hasFault('start_systemd_timeout')) {
        await sleep(1000);
        throw new QmError('timeout waiting on systemd');
      }
      // A new QEMU starts from the config with pending applied, written back first.
      const config = applyPending(readConfig(root, vmid));
      writeConfig(root, config, vmid);
      try {
        await startQemu(root, config.current, vmid);
      } catch (error) {
        throw new QmError(`start failed: ${/** @type {Error} */ (error).message}`);
      }
    });
  },

  async guest(rest) {
    const [sub, ...cmdArgs] = rest;
    if (sub !== 'cmd') throw new QmError(`ERROR: unknown command 'qm guest ${sub ?? ''}'\nUSAGE: qm guest cmd <vmid> <command>`);
    const { vmid, pos } = parse('qm guest cmd <vmid> <command>', cmdArgs, ['vmid', 'command'], {});
    const command = /** @type {string} */ (pos[1]);
    if (!GUEST_COMMANDS.includes(command)) {
      throw new QmError(`400 Parameter verification failed.\ncommand: value '${command}' does not have a value in the enumeration '${GUEST_COMMANDS.join(', ')}'\nqm guest cmd <vmid> <command>`);
    }
    // assert_agent_available checks only that the key exists (agent: 0 passes).
    if (readConfig(root, vmid).current.agent === undefined) throw new QmError('No QEMU guest agent configured');
    if (!runningPid(root, vmid)) throw new QmError(`VM ${vmid} is not running`);
    const socket = paths(root, vmid).qgaSocket;
    if (!(await qga(socket, 'guest-ping', {}, GUEST_PING_TIMEOUT_MS).then(() => true, () => false))) throw new QmError('QEMU guest agent is not running');
    let result;
    try {
      result = await qga(socket, `guest-${command}`, {}, QMP_COMMAND_TIMEOUT_MS);
    } catch (error) {
      const why = error instanceof SocketTimeout ? 'got timeout' : /** @type {Error} */ (error).message;
      throw new QmError(`VM ${vmid} qga command 'guest-${command}' failed - ${why}`);
    }
    // Nothing for an empty answer (ping's {}), pretty JSON for the rest.
    if (result && typeof result === 'object' && Object.keys(result).length) print([JSON.stringify(result, null, 3)]);
  },
};

/** Size in bytes of a disk's `size=` (e.g. 64M, 1G), as maxdisk reports it. */
function diskBytes(/** @type {string | undefined} */ disk) {
  const match = /(?:^|,)size=(\d+)([KMGT]?)/.exec(disk ?? '');
  if (!match) return 0;
  return Number(match[1]) * 1024 ** ('KMGT'.indexOf(match[2] || '_') + 1);
}

/** Seconds since the process started (from /proc, as PVE's ProcFSTools computes it). */
function uptimeOf(/** @type {number} */ pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const uptime = Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
    return Math.max(0, Math.floor(uptime - startTicks / 100));
  } catch {
    return 0;
  }
}

// ---- main ----------------------------------------------------------------------------------

/** Append one line to the invocation log; a vanished node dir is not worth a crash. */
function logInvocation(/** @type {object} */ entry) {
  try {
    fs.appendFileSync(paths(root).invocationLog, `${JSON.stringify({ t: Date.now(), argv, ...entry })}\n`);
  } catch {
    // the node dir was removed under us (test cleanup)
  }
}

async function run() {
  const [verb = '', ...rest] = argv;
  try {
    const qmVerb = verbs[verb];
    if (!qmVerb) {
      const problem = verb ? `unknown command 'qm ${verb}'` : 'no command specified';
      throw new QmError(`ERROR: ${problem}\nUSAGE: qm <COMMAND> [ARGS] [OPTIONS]\n       (lab stand-in: ${Object.keys(verbs).join(', ')})`);
    }
    await qmVerb(rest);
    return 0;
  } catch (err) {
    if (!(err instanceof QmError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return err.code;
  }
}

logInvocation({ started: true });
const exit = await run();
logInvocation({ exit });
process.exitCode = exit;
