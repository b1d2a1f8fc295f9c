#!/usr/bin/env node
// @ts-check
// The lab's `qm`: a thin stand-in for Proxmox VE's own (which cannot run here: it needs the
// cluster filesystem and the PVE daemons), over the REAL QEMU process of VM 102 on a lab node
// (pve-node.mjs). Outputs, messages and exit codes follow qemu-server's PVE/CLI/qm.pm,
// PVE/API2/Qemu.pm and PVE/QemuServer.pm:
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
import { CommandError, SocketTimeout, qga, qmp } from './qmp.mjs';
import { startQemu, stopStorage } from './qemu.mjs';
import {
  applyPending,
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
const STATUS_QMP_TIMEOUT_MS = 2500; // vmstatus: the QMP queue gets ~2-3 s, then status stands in
const QMP_COMMAND_TIMEOUT_MS = 5000; // vm_qmp_command default for commands without their own
const QUIT_TIMEOUT_MS = 60_000; // vm_stop: QMP quit gets 60 s on PVE 9
const GUEST_PING_TIMEOUT_MS = 3000;
// Played faults' delays (see lab-vm.mjs): real behaviour, shorter waits.
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
  if (quick === null) process.stderr.write('trying to acquire lock...');
  if (!(await acquired)) {
    if (quick === null) process.stderr.write('\n');
    throw new QmError(`can't lock file '/var/lock/qemu-server/lock-${vmid}.conf' - got timeout`);
  }
  if (quick === null) process.stderr.write(' OK\n');
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
 * vm_stop: QMP quit (the monitor may never answer), SIGTERM, wait `timeout`, SIGKILL.
 * @param {number} vmid @param {number} pid @param {number} timeoutS
 */
async function stopProcess(vmid, pid, timeoutS) {
  if (hasFault('stop_hang')) return hang(); // still holding the config lock, like qm
  if (hasFault('dstate')) {
    // Played: a QEMU in D state lets every signal pend. qm gives up after its waits and, as
    // qemu-server does, still cleans up: the VM then *looks* stopped while QEMU lives.
    await sleep(1000);
    updateLabState(root, (s) => ({ ...s, stoppedAlive: [...s.stoppedAlive, pid] }), vmid);
    process.stdout.write(`VM still running - terminating now with SIGKILL\n`);
    await stopCleanup(vmid);
    throw new QmError(`VM ${vmid} stop failed - got timeout`);
  }
  // Bounded by the QMP timeout alone: a hung monitor answers neither quit nor anything else.
  await qmp(paths(root, vmid).qmpSocket, 'quit', {}, Math.min(QUIT_TIMEOUT_MS, timeoutS * 1000)).catch(() => undefined);
  if (!(await waitGone(pid, timeoutS * 1000))) {
    signal(pid, 'SIGTERM');
    if (!(await waitGone(pid, timeoutS * 1000))) {
      process.stdout.write('VM still running - terminating now with SIGKILL\n');
      signal(pid, 'SIGKILL');
      await waitGone(pid, 5000);
    }
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
    if (!opts.verbose) return print([`status: ${status}`]);
    const config = readConfig(root, vmid).current;
    /** @type {Record<string, string | number>} */
    const stat = {
      status,
      name: config.name ?? '',
      vmid,
      cpus: Number(config.cores ?? 1) * Number(config.sockets ?? 1),
      maxmem: Number(config.memory ?? 512) * 1024 * 1024,
      uptime: pid ? uptimeOf(pid) : 0,
    };
    if (config.lock) stat.lock = config.lock;
    if (pid) {
      stat.pid = pid;
      // vmstatus asks QMP; answers that do not come within the queue's time are simply absent,
      // and qmpstatus then falls back to a copy of `status`.
      const socket = paths(root, vmid).qmpSocket;
      const deadline = Date.now() + STATUS_QMP_TIMEOUT_MS;
      const left = () => Math.max(1, deadline - Date.now());
      try {
        const st = /** @type {{ status: string }} */ (await qmp(socket, 'query-status', {}, left()));
        stat.qmpstatus = st.status;
        const version = /** @type {{ qemu: { major: number, minor: number, micro: number } }} */ (await qmp(socket, 'query-version', {}, left()));
        stat['running-qemu'] = `${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro}`;
        const machines = /** @type {{ name: string, 'is-current'?: boolean, alias?: string }[]} */ (await qmp(socket, 'query-machines', {}, left()));
        const current = machines.find((m) => m['is-current']);
        if (current) stat['running-machine'] = current.name;
      } catch {
        // the rest of the answers never came
      }
    }
    stat.qmpstatus ??= status;
    print(keyValueLines(stat));
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
    const { vmid } = parse('qm reset <vmid> [OPTIONS]', rest, ['vmid'], {});
    await underConfigLock(vmid, async () => {
      checkLock(vmid);
      if (hasFault('slow_verbs')) await sleep(SLOW_VERB_MS);
      if (!runningPid(root, vmid)) throw new QmError(`VM ${vmid} not running`);
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
      if (!opts.skiplock) checkLock(vmid);
      if (hasFault('slow_verbs')) await sleep(SLOW_VERB_MS);
      const pid = runningPid(root, vmid);
      // qemu-server: stopping a stopped VM is not an error; the cleanup still runs.
      if (!pid) return stopCleanup(vmid);
      await stopProcess(vmid, pid, typeof opts.timeout === 'number' ? opts.timeout : 5);
    });
  },

  async shutdown(rest) {
    const { vmid, opts } = parse('qm shutdown <vmid> [OPTIONS]', rest, ['vmid'], { timeout: 'int', forceStop: 'bool' });
    await underConfigLock(vmid, async () => {
      checkLock(vmid);
      const pid = runningPid(root, vmid);
      if (!pid) throw new QmError(`VM ${vmid} not running`);
      const timeoutS = typeof opts.timeout === 'number' ? opts.timeout : 600;
      await qmp(paths(root, vmid).qmpSocket, 'system_powerdown', {}, QMP_COMMAND_TIMEOUT_MS).catch(() => undefined);
      if (await waitGone(pid, timeoutS * 1000)) return stopCleanup(vmid);
      if (!opts.forceStop) throw new QmError(`VM quit/powerdown failed - got timeout`);
      await stopProcess(vmid, pid, 5);
    });
  },

  async start(rest) {
    const { vmid } = parse('qm start <vmid> [OPTIONS]', rest, ['vmid'], { skiplock: 'bool' });
    await underConfigLock(vmid, async () => {
      if (hasFault('slow_verbs')) await sleep(SLOW_VERB_MS);
      if (runningPid(root, vmid)) throw new QmError(`VM ${vmid} already running`);
      checkLock(vmid);
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
    if (!/^(enabled=)?1\b/.test(readConfig(root, vmid).current.agent ?? '')) throw new QmError('No QEMU guest agent configured');
    if (!runningPid(root, vmid)) throw new QmError(`VM ${vmid} is not running`);
    try {
      const result = await qga(paths(root, vmid).qgaSocket, `guest-${command}`, {}, GUEST_PING_TIMEOUT_MS);
      if (command !== 'ping') print([JSON.stringify(result, null, 3)]);
    } catch (error) {
      if (error instanceof SocketTimeout || error instanceof CommandError) throw new QmError('QEMU guest agent is not running');
      throw new QmError(`QEMU guest agent is not running`);
    }
  },
};

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
