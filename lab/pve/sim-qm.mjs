#!/usr/bin/env node
// @ts-check
// Simulated Proxmox `qm` for one VM kept in a state dir (see sim-vm.mjs):
//
//   node sim-qm.mjs --state DIR <qm args...>
//
// qm verbs, with real qm's output shapes and exit codes (255 when a task fails):
//   status <vmid> [--verbose]    config <vmid> [--current]    pending <vmid>
//   reset <vmid>    stop <vmid> [--timeout N]    start <vmid>    guest cmd <vmid> ping|info
//
// "sim-" verbs are NOT qm verbs: they drive the simulation, for humans and the lab, and are
// not written to the invocation log:
//   sim-init [--vmid N] [--stopped] [--pending]   (re)create the VM; --pending stages the
//                                                 2026-06-11 fix as pending config
//   sim-fault <name> on|off | sim-fault clear      faults: io_stall qmp_silent dstate (per QEMU
//                                                 process), stop_hang locked lockfile_timeout
//                                                 start_systemd_timeout (host, until cleared)
//   sim-kill                                      kill every simulated QEMU of DIR
//
// Every qm invocation appends {t, argv, started: true} to DIR/invocations.log when it begins
// and {t, argv, exit} when it ends, so a hung or killed command still leaves a trace.

import fs from 'node:fs';
import path from 'node:path';
import {
  FAULTS,
  PROCESS_FAULTS,
  applyPending,
  clearFaults,
  incidentFixPending,
  initVm,
  invocationLogPath,
  isAlive,
  qmpSocketPath,
  readVm,
  setFault,
  sleep,
  spawnQemu,
  stopVmProcesses,
  tryLock,
  unlock,
  updateState,
} from './sim-vm.mjs';

/** @typedef {ReturnType<typeof readVm>} Vm */

/** A failed qm call: message for stderr and exit code. */
class QmError extends Error {
  constructor(/** @type {string} */ message, code = 255) {
    super(message);
    this.code = code;
  }
}

const args = process.argv.slice(2);
if (args[0] !== '--state' || !args[1]) {
  process.stderr.write('usage: sim-qm.mjs --state DIR <qm args...>\n');
  process.exit(2);
}
const dir = path.resolve(args[1]);
const argv = args.slice(2);

// Real qm waits 10 s for the config lock; the faults answer after about a second, so tests
// stay quick while the messages and exit codes stay real.
const CONFIG_LOCK_WAIT_MS = 10_000;
const FAULT_DELAY_MS = 1000;
const GUEST_TIMEOUT_MS = 2000;

const print = (/** @type {string[]} */ lines) => {
  if (lines.length) process.stdout.write(`${lines.join('\n')}\n`);
};

/** Never finishes: the caller's time limit is what ends a hung qm, as on a real host. */
const hang = () => new Promise(() => setInterval(() => {}, 60_000));

const hasFault = (/** @type {Vm} */ vm, /** @type {string} */ name) => vm.faults.includes(name);

/** The config with the lock a running backup would hold. */
function withLock(/** @type {Vm} */ vm, /** @type {Record<string, string>} */ config) {
  return hasFault(vm, 'locked') ? { ...config, lock: 'backup' } : config;
}

const keyValueLines = (/** @type {Record<string, string | number>} */ obj) =>
  Object.keys(obj)
    .sort()
    .map((k) => `${k}: ${obj[k]}`);

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
  /** @type {Record<string, string | number | boolean>} */
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
  return { vmid: Number(vmidArg), pos, opts };
}

/** Load the VM, failing like qm does for any vmid this node does not have. */
function loadVm(/** @type {number} */ vmid) {
  let vm;
  try {
    vm = readVm(dir);
  } catch {
    throw new QmError(`sim-qm: no simulated VM in ${dir} (run sim-init)`);
  }
  if (vmid !== vm.vmid) throw new QmError(`Configuration file 'nodes/${vm.node}/qemu-server/${vmid}.conf' does not exist`, 2);
  return vm;
}

/**
 * Run a mutating verb as qm does: under the VM's config lock, refusing a locked config.
 * @template T
 * @param {number} vmid
 * @param {(vm: Vm) => Promise<T>} fn
 */
const SLOW_VERB_MS = 1500;

async function underConfigLock(vmid, fn) {
  const lockTimeout = new QmError(`can't lock file '/var/lock/qemu-server/lock-${vmid}.conf' - got timeout`);
  if (hasFault(loadVm(vmid), 'lockfile_timeout')) {
    await sleep(FAULT_DELAY_MS);
    throw lockTimeout;
  }
  const file = path.join(dir, 'config.lock');
  const deadline = Date.now() + CONFIG_LOCK_WAIT_MS;
  while (!tryLock(file)) {
    if (Date.now() > deadline) throw lockTimeout;
    await sleep(50);
  }
  try {
    const vm = loadVm(vmid); // re-read: another verb may have changed it while we waited
    if (hasFault(vm, 'locked')) throw new QmError('VM is locked (backup)');
    // slow_verbs: reset/stop/start take a while, as on a loaded host; tests use it to act
    // "during" a verb.
    if (hasFault(vm, 'slow_verbs')) await sleep(SLOW_VERB_MS);
    return await fn(vm);
  } finally {
    unlock(file);
  }
}

/** Send a signal to a process that may have just exited. */
function signal(/** @type {number} */ pid, /** @type {NodeJS.Signals} */ sig) {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone: that is what we wanted
  }
}

/** Wait until pid is gone or ms pass; true when gone. */
async function waitGone(/** @type {number} */ pid, /** @type {number} */ ms) {
  const deadline = Date.now() + ms;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** State after a QEMU process ends: pending applied (qm's stop cleanup), its faults gone. */
function afterQemuExit(/** @type {import('./sim-vm.mjs').VmState} */ s) {
  return {
    ...s,
    config: applyPending(s.config, s.pending),
    pending: [],
    pid: null,
    startedAt: null,
    faults: s.faults.filter((f) => !PROCESS_FAULTS.includes(f)),
  };
}

/** Real qm's enumeration for `qm guest cmd`; the sim answers ping and info. */
const GUEST_COMMANDS = ['fsfreeze-freeze', 'fsfreeze-status', 'fsfreeze-thaw', 'fstrim', 'get-fsinfo', 'get-host-name', 'get-memory-block-info', 'get-memory-blocks', 'get-osinfo', 'get-time', 'get-timezone', 'get-users', 'get-vcpus', 'info', 'network-get-interfaces', 'ping', 'shutdown', 'suspend-disk', 'suspend-hybrid', 'suspend-ram'];

// ---- qm verbs --------------------------------------------------------------------------------

/** @type {Record<string, (rest: string[]) => Promise<void>>} */
const verbs = {
  async status(rest) {
    const { vmid, opts } = parse('qm status <vmid> [OPTIONS]', rest, ['vmid'], { verbose: 'bool' });
    const vm = loadVm(vmid);
    if (!opts.verbose) return print([`status: ${vm.running ? 'running' : 'stopped'}`]);
    // --verbose asks QEMU over QMP; a monitor that never answers leaves qm waiting.
    if (vm.running && hasFault(vm, 'qmp_silent')) return hang();
    const config = withLock(vm, vm.config);
    /** @type {Record<string, string | number>} */
    const stat = {
      status: vm.running ? 'running' : 'stopped',
      name: config.name ?? '',
      vmid,
      cpus: Number(config.cores ?? 1) * Number(config.sockets ?? 1),
      maxmem: Number(config.memory ?? 512) * 1024 * 1024,
      uptime: vm.running && vm.startedAt ? Math.floor((Date.now() - vm.startedAt) / 1000) : 0,
    };
    if (config.lock) stat.lock = config.lock;
    if (vm.running) {
      Object.assign(stat, { pid: /** @type {number} */ (vm.pid), qmpstatus: 'running', 'running-qemu': '8.1.5', 'running-machine': 'pc-i440fx-8.1+pve0' });
    }
    print(keyValueLines(stat));
  },

  async config(rest) {
    const { vmid, opts } = parse('qm config <vmid> [OPTIONS]', rest, ['vmid'], { current: 'bool' });
    const vm = loadVm(vmid);
    print(keyValueLines(withLock(vm, opts.current ? vm.config : applyPending(vm.config, vm.pending))));
  },

  async pending(rest) {
    const { vmid } = parse('qm pending <vmid>', rest, ['vmid'], {});
    const vm = loadVm(vmid);
    const current = withLock(vm, vm.config);
    const changes = new Map(vm.pending.map((c) => [c.key, c]));
    const keys = [...new Set([...Object.keys(current), ...changes.keys()])].sort();
    /** @type {string[]} */
    const lines = [];
    for (const key of keys) {
      const cur = current[key];
      const change = changes.get(key);
      if (change && 'delete' in change) {
        if (cur !== undefined) lines.push(`del ${key}: ${cur}`);
      } else if (change) {
        if (cur !== undefined) lines.push(`cur ${key}: ${cur}`);
        lines.push(`new ${key}: ${change.value}`);
      } else if (cur !== undefined) {
        lines.push(`cur ${key}: ${cur}`);
      }
    }
    print(lines);
  },

  async reset(rest) {
    const { vmid } = parse('qm reset <vmid> [OPTIONS]', rest, ['vmid'], {});
    await underConfigLock(vmid, async (vm) => {
      if (!vm.running) throw new QmError(`VM ${vmid} not running`);
      // A reset is QMP system_reset to the same QEMU: it needs a monitor that answers, and it
      // changes neither the process, nor the config, nor a wedged QEMU's faults.
      if (hasFault(vm, 'qmp_silent') || hasFault(vm, 'dstate')) {
        await sleep(FAULT_DELAY_MS);
        throw new QmError(`VM ${vmid} qmp command 'system_reset' failed - got timeout`);
      }
    });
  },

  async stop(rest) {
    const { vmid, opts } = parse('qm stop <vmid> [OPTIONS]', rest, ['vmid'], { timeout: 'int' });
    await underConfigLock(vmid, async (vm) => {
      if (!vm.running) return; // real qm: stopping a stopped VM succeeds silently
      if (hasFault(vm, 'stop_hang')) return hang(); // still holding the config lock, like qm
      const pid = /** @type {number} */ (vm.pid);
      signal(pid, 'SIGTERM');
      if (hasFault(vm, 'dstate')) {
        // A D-state QEMU shrugs off SIGKILL too; a simulated one cannot, so we do not send it.
        await sleep(FAULT_DELAY_MS);
        throw new QmError(`VM ${vmid} stop failed - got timeout`);
      }
      const graceMs = (typeof opts.timeout === 'number' ? opts.timeout : 5) * 1000;
      if (!(await waitGone(pid, graceMs))) {
        signal(pid, 'SIGKILL');
        await waitGone(pid, 5000);
      }
      updateState(dir, afterQemuExit);
      fs.rmSync(qmpSocketPath(dir), { force: true });
    });
  },

  async start(rest) {
    const { vmid } = parse('qm start <vmid> [OPTIONS]', rest, ['vmid'], {});
    await underConfigLock(vmid, async (vm) => {
      if (vm.running) throw new QmError(`VM ${vmid} already running`);
      if (hasFault(vm, 'start_systemd_timeout')) {
        await sleep(FAULT_DELAY_MS);
        throw new QmError('timeout waiting on systemd');
      }
      // qm start applies pending config before launching; a new process has none of the old
      // one's faults, and must not see them while it starts.
      updateState(dir, afterQemuExit);
      let pid;
      try {
        pid = await spawnQemu(dir);
      } catch {
        throw new QmError('start failed: QEMU exited with code 1');
      }
      updateState(dir, (s) => ({ ...s, pid, startedAt: Date.now() }));
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
    const vm = loadVm(vmid);
    if (!/^(enabled=)?1\b/.test(vm.config.agent ?? '')) throw new QmError('No QEMU guest agent configured');
    if (!vm.running) throw new QmError(`VM ${vmid} is not running`);
    // The agent lives in the guest: a wedged guest or a mute monitor means no answer.
    if (['io_stall', 'qmp_silent', 'dstate'].some((f) => hasFault(vm, f))) {
      await sleep(GUEST_TIMEOUT_MS);
      throw new QmError(`VM ${vmid} qmp command 'guest-${command}' failed - got timeout`);
    }
    if (command === 'ping') return;
    if (command === 'info') {
      const supported = ['guest-exec', 'guest-file-open', 'guest-fsfreeze-status', 'guest-get-host-name', 'guest-get-osinfo', 'guest-info', 'guest-network-get-interfaces', 'guest-ping', 'guest-shutdown'];
      const info = { supported_command: supported.map((name) => ({ enabled: true, name, 'success-response': name !== 'guest-shutdown' })), version: '8.1.3' };
      return print([JSON.stringify(info, null, 3)]);
    }
    throw new QmError(`sim-qm: guest command '${command}' is not simulated`);
  },
};

// ---- simulation verbs ------------------------------------------------------------------------

/** @type {Record<string, (rest: string[]) => Promise<void>>} */
const simVerbs = {
  async 'sim-init'(rest) {
    const vmidAt = rest.indexOf('--vmid');
    const vmid = vmidAt >= 0 ? Number(rest[vmidAt + 1]) : 102;
    const vm = await initVm(dir, { vmid, running: !rest.includes('--stopped'), pending: rest.includes('--pending') ? incidentFixPending(vmid) : [] });
    print([`sim: VM ${vm.vmid} ${vm.running ? `running, pid ${vm.pid}` : 'stopped'}, ${vm.pending.length} pending change(s), state in ${dir}`]);
  },

  async 'sim-fault'([name, state]) {
    if (name === 'clear') {
      clearFaults(dir);
      return;
    }
    if (!name || !FAULTS.includes(name) || (state !== 'on' && state !== 'off')) {
      throw new QmError(`usage: sim-fault <${FAULTS.join('|')}> on|off  |  sim-fault clear`, 2);
    }
    setFault(dir, name, state === 'on');
  },

  async 'sim-kill'() {
    await stopVmProcesses(dir);
  },
};

// ---- main ----------------------------------------------------------------------------------

/** Append one line to the invocation log; a vanished state dir is not worth a crash. */
function logInvocation(/** @type {object} */ entry) {
  try {
    fs.appendFileSync(invocationLogPath(dir), `${JSON.stringify({ t: Date.now(), argv, ...entry })}\n`);
  } catch {
    // the state dir was removed under us (test cleanup)
  }
}

async function run() {
  const [verb = '', ...rest] = argv;
  try {
    const simVerb = simVerbs[verb];
    if (simVerb) {
      await simVerb(rest);
      return 0;
    }
    const qmVerb = verbs[verb];
    if (!qmVerb) {
      const problem = verb ? `unknown command 'qm ${verb}'` : 'no command specified';
      throw new QmError(`ERROR: ${problem}\nUSAGE: qm <COMMAND> [ARGS] [OPTIONS]\n       (simulated: ${Object.keys(verbs).join(', ')})`);
    }
    await qmVerb(rest);
    return 0;
  } catch (err) {
    if (!(err instanceof QmError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return err.code;
  }
}

const logged = !argv[0]?.startsWith('sim-');
if (logged) logInvocation({ started: true });
const exit = await run();
if (logged) logInvocation({ exit });
process.exitCode = exit;
