#!/usr/bin/env node
// @ts-check
// The lab's `qm`: a thin stand-in for Proxmox VE's own (which cannot run here: it needs the
// cluster filesystem and the PVE daemons), over the REAL QEMU process of VM 102 on a lab node
// (pve-node.mjs). Outputs, messages and exit codes follow qemu-server's PVE/CLI/qm.pm,
// PVE/API2/Qemu.pm, PVE/QemuServer.pm and pve-common's fork_worker and lock_file_full. Task verbs
// (start stop shutdown reset) run in a task worker as fork_worker runs them (tasks.mjs):
// everything they print, the lock's "trying to acquire lock..." included, goes to stdout; a
// failed task puts only its bare error on stderr and exits 255. Other errors are plain dies on
// stderr. For an HA-managed VM, stop, shutdown and start only ask the HA manager (played: the
// lab's agent acts `haDelayS` later, or never).
//
//   node qm.mjs --root NODE_ROOT <qm args...>
//
//   status <vmid> [--verbose]   config <vmid> [--current]   pending <vmid>   help <verb>
//   start <vmid>   stop <vmid> [--timeout N] [--overrule-shutdown 1]   reset <vmid>
//   shutdown <vmid> [--timeout N] [--forceStop 1]   guest cmd <vmid> <command>
//
// Every call appends {t, argv, started: true} to the node's invocation log when it begins and
// {t, argv, exit} when it ends, so a hung or killed call still leaves a trace (calls the HA
// agent makes carry `ha: true`). Internal: `--task TYPE` (a worker), `--as-ha` (the HA agent).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { scopePressure, waitScopeEmpty } from './cgroups.mjs';
import { QmError, checkLock, stopCleanup, stopProcess, underConfigLock } from './power.mjs';
import { SocketTimeout, qga, qmp, qmpQueue } from './qmp.mjs';
import { startQemu } from './qemu.mjs';
import { applyPending, paths, readConfig, readLabState, runningPid, sleep, writeConfig } from './pve-node.mjs';
import { abortTasks, runTaskFront, runTaskWorker } from './tasks.mjs';

const args = process.argv.slice(2);
if (args[0] !== '--root' || !args[1]) {
  process.stderr.write('usage: qm.mjs --root NODE_ROOT <qm args...>\n');
  process.exit(2);
}
const root = path.resolve(/** @type {string} */ (args[1]));
let argv = args.slice(2);
/** Set in a task worker: the task type its front started it as. */
let workerType = '';
if (argv[0] === '--task') {
  workerType = argv[1] ?? '';
  argv = argv.slice(2);
}
/** Called by the lab's HA agent (rpcenv type 'ha'): no HA redirection. */
const asHa = argv[0] === '--as-ha';
if (asHa) argv = argv.slice(1);

// qemu-server's numbers.
const STATUS_QMP_TIMEOUT_MS = 3000; // vmstatus: queue_execute's 3 s, then status stands in
const QMP_COMMAND_TIMEOUT_MS = 5000; // QMPClient's default for commands without their own
const GUEST_PING_TIMEOUT_MS = 3000; // qga_check_running
const SCOPE_REMOVE_WAIT_S = 20; // vm_start: wait_for_unit_removed("<vmid>.scope", 20)
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
/** A stop stuck where no signal reaches it (played stop_hang): the worker ignores SIGTERM. */
let uninterruptible = false;

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

// ---- HA ---------------------------------------------------------------------------------------

/** PVE::HA::Config::vm_is_ha_managed: the VM is a resource in resources.cfg. */
function haManaged(/** @type {number} */ vmid) {
  try {
    return new RegExp(`^vm: ${vmid}$`, 'm').test(fs.readFileSync(paths(root, vmid).haResources, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * `ha-manager crm-command stop` / `ha-manager set --state started`: the request is recorded in
 * resources.cfg, and the lab's HA agent carries it out haDelayS later (never when null) by
 * running qm itself as the HA stack does.
 * @param {number} vmid @param {'stopped' | 'started'} state
 */
function requestHaState(vmid, state) {
  const file = paths(root, vmid).haResources;
  fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/^\tstate \S+$/m, `\tstate ${state}`));
  const delay = readLabState(root, vmid).haDelayS;
  if (delay === null || delay === undefined) return;
  const verb = state === 'stopped' ? 'stop' : 'start';
  const agent = spawn('sh', ['-c', `sleep ${delay}; exec "$0" "$@"`, process.execPath, process.argv[1] ?? '', '--root', root, '--as-ha', verb, String(vmid)], {
    detached: true,
    stdio: 'ignore',
  });
  agent.unref();
}

// ---- qm verbs --------------------------------------------------------------------------------

/** Real qm's enumeration for `qm guest cmd`. */
const GUEST_COMMANDS = ['fsfreeze-freeze', 'fsfreeze-status', 'fsfreeze-thaw', 'fstrim', 'get-fsinfo', 'get-host-name', 'get-memory-block-info', 'get-memory-blocks', 'get-osinfo', 'get-time', 'get-timezone', 'get-users', 'get-vcpus', 'info', 'network-get-interfaces', 'ping', 'shutdown', 'suspend-disk', 'suspend-hybrid', 'suspend-ram'];

/** A task verb's work, run in a worker (tasks.mjs) under the given task type. */
/** @typedef {{ type: string, vmid: number, work: () => Promise<void> }} Task */

/** @type {Record<string, (rest: string[]) => Promise<void | Task>>} */
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
      // PVE 9: the scope's pressure stall averages (avg10), read from its cgroup.
      const pressure = scopePressure(root, vmid);
      for (const [resource, { some, full }] of Object.entries(pressure)) {
        stat[`pressure${resource}some`] = some;
        stat[`pressure${resource}full`] = full;
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
    return {
      type: 'qmreset',
      vmid,
      work: () =>
        underConfigLock(root, vmid, async () => {
          if (!opts.skiplock) checkLock(root, vmid);
          if (hasFault('slow_verbs')) await sleep(SLOW_VERB_MS);
          // QMP system_reset to the same QEMU: done when QEMU acknowledges it. Whether the guest
          // then comes back is not qm's to know (with the disk stalled, QEMU's main loop hangs).
          try {
            await qmp(paths(root, vmid).qmpSocket, 'system_reset', {}, QMP_COMMAND_TIMEOUT_MS);
          } catch (error) {
            throw new QmError(`VM ${vmid} qmp command 'system_reset' failed - ${error instanceof SocketTimeout ? 'got timeout' : /** @type {Error} */ (error).message}`);
          }
        }),
    };
  },

  async stop(rest) {
    const { vmid, opts } = parse('qm stop <vmid> [OPTIONS]', rest, ['vmid'], { timeout: 'int', skiplock: 'bool', keepActive: 'bool', 'overrule-shutdown': 'bool' });
    if (haManaged(vmid) && !asHa) {
      if (opts['overrule-shutdown']) throw new QmError('400 Parameter verification failed.\noverrule-shutdown: Not applicable for HA resources.\nqm stop <vmid> [OPTIONS]');
      return { type: 'hastop', vmid, work: async () => { print([`Requesting HA stop for VM ${vmid}`]); requestHaState(vmid, 'stopped'); } };
    }
    return {
      type: 'qmstop',
      vmid,
      work: async () => {
        if (opts['overrule-shutdown']) {
          const overruled = await abortTasks(root, 'qmshutdown', vmid);
          if (overruled.length) print([`overruled qmshutdown tasks: ${overruled.join(', ')}`]);
        }
        await underConfigLock(root, vmid, async () => {
          if (hasFault('slow_verbs')) await sleep(SLOW_VERB_MS);
          const pid = runningPid(root, vmid);
          // _do_vm_stop: a VM that is not running is left alone, silently (no lock check, no cleanup).
          if (!pid) return;
          if (!opts.skiplock) checkLock(root, vmid);
          if (hasFault('stop_hang')) {
            uninterruptible = true; // still holding the config lock, like a wedged qm
            return hang();
          }
          await stopProcess(root, vmid, pid, typeof opts.timeout === 'number' ? opts.timeout : 60);
        });
      },
    };
  },

  async shutdown(rest) {
    const { vmid, opts } = parse('qm shutdown <vmid> [OPTIONS]', rest, ['vmid'], { timeout: 'int', forceStop: 'bool' });
    // The pre-check asks QMP whether the VM is paused and only warns when that fails.
    if (!runningPid(root, vmid)) {
      process.stderr.write(`VM ${vmid} not running\n\n`);
      return;
    }
    const timeoutS = typeof opts.timeout === 'number' ? opts.timeout : 60;
    if (haManaged(vmid) && !asHa) {
      return { type: 'hastop', vmid, work: async () => { print([`Requesting HA stop for VM ${vmid}`]); requestHaState(vmid, 'stopped'); } };
    }
    return {
      type: 'qmshutdown',
      vmid,
      work: () =>
        underConfigLock(root, vmid, async () => {
          const pid = runningPid(root, vmid);
          if (!pid) return;
          checkLock(root, vmid);
          const p = paths(root, vmid);
          // The guest agent's shutdown when it answers, ACPI power button otherwise.
          const viaAgent = /^(enabled=)?1\b/.test(readConfig(root, vmid).current.agent ?? '') && (await qga(p.qgaSocket, 'guest-ping', {}, GUEST_PING_TIMEOUT_MS).then(() => true, () => false));
          if (viaAgent) await qga(p.qgaSocket, 'guest-shutdown', {}, timeoutS * 1000).catch(() => undefined);
          else await qmp(p.qmpSocket, 'system_powerdown', {}, QMP_COMMAND_TIMEOUT_MS).catch(() => undefined);
          for (let waited = 0; waited < timeoutS * 1000 && runningPid(root, vmid); waited += 1000) await sleep(1000);
          if (!runningPid(root, vmid)) return stopCleanup(root, vmid);
          if (!opts.forceStop) throw new QmError('VM quit/powerdown failed - got timeout');
          await stopProcess(root, vmid, pid, 0);
        }),
    };
  },

  async start(rest) {
    const { vmid, opts } = parse('qm start <vmid> [OPTIONS]', rest, ['vmid'], { skiplock: 'bool' });
    if (haManaged(vmid) && !asHa) {
      return { type: 'hastart', vmid, work: async () => { print([`Requesting HA start for VM ${vmid}`]); requestHaState(vmid, 'started'); } };
    }
    return {
      type: 'qmstart',
      vmid,
      work: () =>
        underConfigLock(root, vmid, async () => {
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
          if (!opts.skiplock) checkLock(root, vmid);
          // systemd must have removed the old run's scope: a process left in it (a QEMU thread
          // in D state) keeps it, and the start gives up after 20 s.
          if (!(await waitScopeEmpty(root, vmid, SCOPE_REMOVE_WAIT_S * 1000))) throw new QmError('timeout waiting on systemd');
          // A new QEMU starts from the config with pending applied, written back first.
          const config = applyPending(readConfig(root, vmid));
          writeConfig(root, config, vmid);
          try {
            await startQemu(root, config.current, vmid);
          } catch (error) {
            throw new QmError(`start failed: ${/** @type {Error} */ (error).message}`);
          }
        }),
    };
  },

  async help(rest) {
    // Enough of `qm help <verb>` for a caller to learn which options this qm has.
    const usage = {
      stop: ['USAGE: qm stop <vmid> [OPTIONS]', '', '  Stop virtual machine.', '', '  --keepActive <boolean>   (default=0)', "  --overrule-shutdown <boolean>   (default=0)", '  --skiplock <boolean>', '  --timeout <integer> (0 - N)'],
    }[rest[0] ?? ''];
    if (!usage) throw new QmError(`no such command '${rest[0] ?? ''}'`);
    print(usage);
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
    fs.appendFileSync(paths(root).invocationLog, `${JSON.stringify({ t: Date.now(), argv, ...(asHa ? { ha: true } : {}), ...entry })}\n`);
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
    const task = await qmVerb(rest);
    if (!task) return 0;
    if (workerType) return runTaskWorker(root, workerType, String(task.vmid), task.work, () => uninterruptible);
    return runTaskFront(root, task.type, asHa ? ['--as-ha', ...argv] : argv);
  } catch (err) {
    if (!(err instanceof QmError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return err.code;
  }
}

if (workerType) {
  await run();
} else {
  logInvocation({ started: true });
  const exit = await run();
  logInvocation({ exit });
  process.exitCode = exit;
}
