#!/usr/bin/env node
// @ts-check
// The lab's simulated devvm: the forced command of the lab devvm's (real) sshd.
//
//   node sim-devvm.mjs <vmStateDir> <io-stall|oom|healthy> [--inspect]
//
// It reads SSH_ORIGINAL_COMMAND and ANSWERS it from a simulation of a Debian 12 guest whose
// state follows the simulated VM in <vmStateDir> (lab/pve/sim-vm.mjs) and the scenario. It never
// runs anything on the machine hosting the lab: no child processes, no file writes outside
// <vmStateDir>/devvm.json (the guest's own bookkeeping) and its lock.
//
// Shell subset (what `sh -c` understands here): words with '…', "…", \ escapes and $VAR / ${VAR}
// / $? expansion (no field splitting, no globbing); pipelines `a | b` (each stage runs to the
// end, then the next gets its output); lists with `;`, `&&`, `||`, `&` (run in the foreground)
// and newlines; redirections `2>&1`, `>&2`, `>/dev/null`, `2>/dev/null`, `&>/dev/null`,
// `</dev/null`. Writing to a file, command substitution, subshells, here-documents and compound
// commands (if/for/while/case) are NOT simulated: they fail with exit 2 and say so.
//
// Commands: uptime, dmesg, journalctl, systemctl, ps, top, vmstat, free, df, cat (of /proc and
// /etc files the simulation knows), who, w, users, hostname, uname, date, id, whoami, echo,
// printf, true, false, sleep, pwd, cd, export, exit, command -v, which, head, tail, grep, wc,
// sort, uniq, timeout, sudo, sh/bash -c. Anything else: `sh: 1: <cmd>: not found`, exit 127.
// `timeout [opts] N cmd…` is honoured: a simulated command still running after N seconds (sleep,
// vmstat 1 5, dmesg -w, journalctl -f, or any command while the guest is wedged) ends with 124.
//
// The guest model, consistent with the VM (sim-vm.mjs state.json) and <vmStateDir>/devvm.json:
//   - A boot is one run of the guest kernel: a QEMU pid plus the time it started or was last
//     reset (a successful `qm reset` in the VM's invocation log reboots the guest in the same
//     QEMU process). Uptime, dmesg and the current journal belong to the current boot; earlier
//     boots stay in the journal (`journalctl --list-boots`, `-b -1`).
//   - The guest is wedged while the VM has one of WEDGING_FAULTS (io_stall: the 2026-06-11 QEMU
//     I/O stall; dstate). Nothing answers then (defence in depth: the lab's watcher also freezes
//     sshd): every command hangs until its `timeout`, which exits 124.
//   - Stalls are recorded per boot. When a stall ends IN PLACE (the fault is cleared and the
//     same QEMU keeps running), the guest catches up: dmesg and the journal show hung-task
//     reports ("INFO: task jbd2/sda1-8:212 blocked for more than 120 seconds.") for every 120 s
//     the stall lasted, the load average decays from the D-state pile-up, PSI io shows it.
//     After a CYCLE the stalled boot's ring buffer died with its QEMU and nothing written while
//     the disk was stalled ever reached it: `journalctl -b -1` ends where the stall began, and
//     the new boot shows ext4 journal recovery and journald's "uncleanly shut down" notice —
//     which is why the breakglass captures forensics before a cycle.
//   - oom: in the scenario's first boot, a runaway PostgreSQL backend exhausted memory; the
//     kernel OOM killer killed it ("Out of memory: Killed process … (postgres)") and systemd's
//     OOMPolicy stopped the unit: `systemctl --failed` lists postgresql.service until
//     `sudo systemctl restart postgresql` (or a reboot). Later boots are healthy.
//   - The login account is `breakglass` (uid 1001, adm) whatever the lab's ssh user is; `sudo`
//     (NOPASSWD, as host/devvm/install.sh installs it) makes the command run as root. Unit
//     changes (systemctl start|stop|restart|reset-failed) need root and are kept per boot.
//
// --inspect (never used by sshd) answers even while the guest is wedged, as an already-open root
// console would: tests and curious humans use it to see the D-state pile-up and PSI at 100 %.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const SIM_DEVVM_SCRIPT = fileURLToPath(import.meta.url);
export const SCENARIOS = Object.freeze(['io-stall', 'oom', 'healthy']);
/** VM faults that leave the guest unable to answer anything. */
export const WEDGING_FAULTS = Object.freeze(['io_stall', 'dstate']);

const ACCOUNT = Object.freeze({ name: 'breakglass', uid: 1001, home: '/home/breakglass' });
const KERNEL_RELEASE = '6.1.0-28-amd64';
const KERNEL_VERSION = '#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)';
const SYSTEMD_VERSION = '252.33-1~deb12u1';
const HUNG_TASK_TIMEOUT_MS = 120_000;
const HUNG_TASK_WARNINGS = 10;
const MAX_BOOTS = 8;
const MAX_BOOT_LOG = 400;
/** Without a `timeout` wrapper a hanging command gives up after this long. */
const NO_TIMEOUT_CAP_MS = 3_600_000;

// ---- the simulated VM, read-only ---------------------------------------------------------------
// The VM's state dir is owned by lab/pve/sim-vm.mjs (the format is documented there). These few
// readers are repeated here on purpose: that module can spawn processes (the simulated QEMU),
// and this script must not even load code that could.

/**
 * @typedef {{ vmid: number, node: string, config: Record<string, string>, pending: unknown[], pid: number | null,
 *   startedAt: number | null, faults: string[], running: boolean }} Vm
 */

/** Whether pid is a live process (a zombie is dead), as sim-vm.mjs's isAlive(). */
function isAlive(/** @type {number} */ pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (/** @type {NodeJS.ErrnoException} */ (err).code !== 'EPERM') return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** state.json plus whether its QEMU lives, as sim-vm.mjs's readVm(). */
function readVm(/** @type {string} */ vmDir) {
  const state = JSON.parse(fs.readFileSync(path.join(vmDir, 'state.json'), 'utf8'));
  return /** @type {Vm} */ ({ ...state, running: state.pid !== null && isAlive(state.pid) });
}

/** invocations.log: one JSON line per qm call start ({started}) and end ({exit}). */
function invocations(/** @type {string} */ vmDir) {
  let text;
  try {
    text = fs.readFileSync(path.join(vmDir, 'invocations.log'), 'utf8');
  } catch {
    return [];
  }
  /** @type {{ t: number, argv: string[], started?: true, exit?: number }[]} */
  const out = [];
  for (const line of text.split('\n')) {
    try {
      if (line) out.push(JSON.parse(line));
    } catch {
      // a line being written right now
    }
  }
  return out;
}

/** Take a lock file holding our pid; a dead holder's lock is taken over (sim-vm.mjs's tryLock). */
function tryLock(/** @type {string} */ file) {
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
    return false;
  }
  if (Number.isInteger(holder) && holder > 0 && !isAlive(holder)) {
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

const unlock = (/** @type {string} */ file) => fs.rmSync(file, { force: true });

// ---- devvm.json: the guest's bookkeeping -----------------------------------------------------

/**
 * @typedef {{ from: number, to: number | null }} Stall
 * @typedef {{ t: number, unit: string, kind: 'start' | 'stop' | 'reset', pid?: number }} UnitAction
 * @typedef {{ t: number, prio: number, ident: string, pid: number, msg: string, unit?: string, kernel?: boolean }} LogEntry
 * @typedef {{ key: string, id: string, pid: number, bootAt: number, readyAt: number | null,
 *   endedAt: number | null, config: Record<string, string>, unclean: boolean, incident: 'oom' | null,
 *   stalls: Stall[], actions: UnitAction[], log: LogEntry[], nextPid: number, logins: number }} Boot
 * @typedef {{ v: 1, scenario: string, vmid: number, incidentAssigned: boolean, boots: Boot[] }} DevvmState
 */

export const devvmStatePath = (/** @type {string} */ vmDir) => path.join(vmDir, 'devvm.json');

function sleepSync(/** @type {number} */ ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** devvm.json, or null when there is none (or it is unreadable). */
export function readDevvmState(/** @type {string} */ vmDir) {
  try {
    return /** @type {DevvmState} */ (JSON.parse(fs.readFileSync(devvmStatePath(vmDir), 'utf8')));
  } catch {
    return null;
  }
}

function writeDevvmState(/** @type {string} */ vmDir, /** @type {DevvmState} */ st) {
  const tmp = `${devvmStatePath(vmDir)}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(st)}\n`);
  fs.renameSync(tmp, devvmStatePath(vmDir));
}

const emptyState = (/** @type {string} */ scenario) => /** @type {DevvmState} */ ({ v: 1, scenario, vmid: 102, incidentAssigned: false, boots: [] });

/**
 * Read-modify-write devvm.json under its lock. mutate changes st in place and returns whether
 * it did; a file of another scenario (or none) starts over empty.
 * @param {string} vmDir
 * @param {string} scenario
 * @param {(st: DevvmState) => boolean} mutate
 */
export function updateDevvmState(vmDir, scenario, mutate) {
  const lock = path.join(vmDir, 'devvm.lock');
  const deadline = Date.now() + 5000;
  while (!tryLock(lock)) {
    if (Date.now() > deadline) throw new Error(`${ME}: lock ${lock} held too long`);
    sleepSync(5);
  }
  try {
    const current = readDevvmState(vmDir);
    const st = current && current.v === 1 && current.scenario === scenario ? current : emptyState(scenario);
    const changed = mutate(st);
    if (changed || st !== current) writeDevvmState(vmDir, st);
    return st;
  } finally {
    unlock(lock);
  }
}

/** Forget the guest's history (a fresh lab: the VM was just re-created). */
export function resetDevvmState(/** @type {string} */ vmDir, /** @type {string} */ scenario) {
  return updateDevvmState(vmDir, scenario, (st) => {
    st.boots = [];
    st.incidentAssigned = false;
    return true;
  });
}

const ME = 'sim-devvm';
const sha = (/** @type {string} */ text) => crypto.createHash('sha256').update(text).digest('hex');

/**
 * When the guest's current boot began: the QEMU start, or the last successful `qm reset` of
 * that QEMU (a reset reboots the guest in the same process). null while the VM is stopped.
 * @param {string} vmDir
 * @param {Vm} vm
 */
export function guestBootAt(vmDir, vm) {
  if (!vm.running || vm.startedAt === null) return null;
  let at = vm.startedAt;
  for (const call of invocations(vmDir)) {
    if (call.argv[0] === 'reset' && call.exit === 0 && call.t > at) at = call.t;
  }
  return at;
}

/**
 * Look at the VM and record what the guest went through since the last look: a new boot (new
 * QEMU or reset), the end of the previous one, the start or end of a stall. Called by the
 * watcher every few hundred ms and by every command.
 * @param {string} vmDir
 * @param {string} scenario
 * @param {number} [now]
 * @returns {{ vm: Vm | null, running: boolean, wedged: boolean, boot: Boot | null, state: DevvmState | null }}
 */
export function observeGuest(vmDir, scenario, now = Date.now()) {
  /** @type {Vm} */
  let vm;
  try {
    vm = readVm(vmDir);
  } catch {
    return { vm: null, running: false, wedged: false, boot: null, state: null };
  }
  const wedged = vm.running && vm.faults.some((f) => WEDGING_FAULTS.includes(f));
  const bootAt = guestBootAt(vmDir, vm);
  const key = bootAt === null ? null : `${vm.pid}@${bootAt}`;
  /** @type {Boot | null} */
  let boot = null;
  const state = updateDevvmState(vmDir, scenario, (st) => {
    let changed = false;
    if (st.vmid !== vm.vmid) {
      st.vmid = vm.vmid;
      changed = true;
    }
    const last = st.boots.at(-1);
    if (last && last.endedAt === null && last.key !== key) {
      last.endedAt = now;
      changed = true;
    }
    if (key !== null && bootAt !== null && (!last || last.key !== key)) {
      const incident = scenario === 'oom' && !st.incidentAssigned ? 'oom' : null;
      if (incident) st.incidentAssigned = true;
      st.boots.push({
        key,
        id: sha(`boot:${key}`).slice(0, 32),
        pid: /** @type {number} */ (vm.pid),
        bootAt,
        readyAt: null,
        endedAt: null,
        config: { ...vm.config },
        unclean: st.boots.length > 0,
        incident,
        stalls: [],
        actions: [],
        log: [],
        nextPid: 1400,
        logins: 0,
      });
      while (st.boots.length > MAX_BOOTS) st.boots.shift();
      changed = true;
    }
    const cur = key === null ? null : (st.boots.at(-1) ?? null);
    if (cur) {
      const open = cur.stalls.at(-1);
      const isOpen = open !== undefined && open.to === null;
      if (wedged && !isOpen) {
        cur.stalls.push({ from: now, to: null });
        changed = true;
      } else if (!wedged && open && isOpen) {
        open.to = now;
        changed = true;
      }
    }
    boot = cur;
    return changed;
  });
  return { vm, running: vm.running, wedged, boot, state };
}

/**
 * The guest finished booting at `at` (the watcher calls this when it lets sshd answer): boot
 * messages are laid out between the boot's start and this moment.
 * @param {string} vmDir
 * @param {string} scenario
 * @param {string} key
 * @param {number} at
 */
export function markGuestReady(vmDir, scenario, key, at) {
  updateDevvmState(vmDir, scenario, (st) => {
    const boot = st.boots.find((b) => b.key === key);
    if (!boot || boot.readyAt !== null) return false;
    boot.readyAt = at;
    return true;
  });
}

// ---- time formatting (the guest runs in UTC) -------------------------------------------------

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const p2 = (/** @type {number} */ n) => String(n).padStart(2, '0');

function parts(/** @type {number} */ t) {
  const d = new Date(t);
  return {
    y: d.getUTCFullYear(),
    mo: d.getUTCMonth(),
    d: d.getUTCDate(),
    wd: d.getUTCDay(),
    hms: `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}`,
    hm: `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}`,
    ms: d.getUTCMilliseconds(),
  };
}

const fmt = {
  /** journalctl's short format: "Jun 11 14:02:11" */
  journal: (/** @type {number} */ t) => {
    const x = parts(t);
    return `${MONTHS[x.mo]} ${p2(x.d)} ${x.hms}`;
  },
  iso: (/** @type {number} */ t) => {
    const x = parts(t);
    return `${x.y}-${p2(x.mo + 1)}-${p2(x.d)}T${x.hms}+00:00`;
  },
  precise: (/** @type {number} */ t) => {
    const x = parts(t);
    return `${MONTHS[x.mo]} ${p2(x.d)} ${x.hms}.${String(x.ms * 1000).padStart(6, '0')}`;
  },
  /** dmesg -T: "Thu Jun 11 14:02:11 2026" */
  ctime: (/** @type {number} */ t) => {
    const x = parts(t);
    return `${DAYS[x.wd]} ${MONTHS[x.mo]} ${String(x.d).padStart(2, ' ')} ${x.hms} ${x.y}`;
  },
  /** systemd: "Thu 2026-06-11 14:02:11 UTC" */
  systemd: (/** @type {number} */ t) => {
    const x = parts(t);
    return `${DAYS[x.wd]} ${x.y}-${p2(x.mo + 1)}-${p2(x.d)} ${x.hms} UTC`;
  },
  /** date(1): "Thu Jun 11 14:02:11 UTC 2026" */
  date: (/** @type {number} */ t) => {
    const x = parts(t);
    return `${DAYS[x.wd]} ${MONTHS[x.mo]} ${String(x.d).padStart(2, ' ')} ${x.hms} UTC ${x.y}`;
  },
  /** PostgreSQL's log_line_prefix %m */
  pg: (/** @type {number} */ t) => {
    const x = parts(t);
    return `${x.y}-${p2(x.mo + 1)}-${p2(x.d)} ${x.hms}.${String(x.ms).padStart(3, '0')} UTC`;
  },
  hms: (/** @type {number} */ t) => parts(t).hms,
  hm: (/** @type {number} */ t) => parts(t).hm,
  /** systemd's relative time: "3min 2s ago" */
  ago: (/** @type {number} */ ms) => `${fmt.span(ms)} ago`,
  span: (/** @type {number} */ ms) => {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return s % 60 ? `${m}min ${s % 60}s` : `${m}min`;
    const h = Math.floor(m / 60);
    if (h < 24) return m % 60 ? `${h}h ${m % 60}min` : `${h}h`;
    const d = Math.floor(h / 24);
    return h % 24 ? `${d} day${d > 1 ? 's' : ''} ${h % 24}h` : `${d} day${d > 1 ? 's' : ''}`;
  },
  /** systemd's CPU time: "1min 2.114s", "812ms" */
  cpu: (/** @type {number} */ ms) => {
    if (ms < 1000) return `${Math.round(ms)}ms`;
    const m = Math.floor(ms / 60_000);
    const rest = ((ms % 60_000) / 1000).toFixed(3);
    return m ? `${m}min ${rest}s` : `${rest}s`;
  },
};

// ---- the guest -------------------------------------------------------------------------------

/**
 * @typedef {{ name: string, desc: string, pid: number, user: string, procs: [string, string, number, number, number][],
 *   aliases?: string[], path?: string }} UnitDef
 * procs: [command line, comm, RSS kB, VSZ kB, lifetime %CPU]; the first is the main process.
 */

/** @type {UnitDef[]} */
const UNITS = [
  { name: 'systemd-journald.service', desc: 'Journal Service', pid: 281, user: 'root', procs: [['/lib/systemd/systemd-journald', 'systemd-journal', 31_204, 58_212, 0.1]] },
  { name: 'systemd-udevd.service', desc: 'Rule-based Manager for Device Events and Files', pid: 305, user: 'root', procs: [['/lib/systemd/systemd-udevd', 'systemd-udevd', 9_876, 25_744, 0.0]] },
  { name: 'systemd-timesyncd.service', desc: 'Network Time Synchronization', pid: 512, user: 'systemd-timesync', procs: [['/lib/systemd/systemd-timesyncd', 'systemd-timesyn', 7_012, 90_092, 0.0]] },
  { name: 'dbus.service', desc: 'D-Bus System Message Bus', pid: 598, user: 'messagebus', procs: [['/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only', 'dbus-daemon', 5_120, 9_180, 0.0]] },
  { name: 'cron.service', desc: 'Regular background program processing daemon', pid: 602, user: 'root', procs: [['/usr/sbin/cron -f', 'cron', 2_688, 6_612, 0.0]] },
  { name: 'qemu-guest-agent.service', desc: 'QEMU Guest Agent', pid: 611, user: 'root', procs: [['/usr/sbin/qemu-ga', 'qemu-ga', 3_904, 78_252, 0.0]] },
  { name: 'ssh.service', desc: 'OpenBSD Secure Shell server', pid: 640, user: 'root', aliases: ['sshd.service'], procs: [['sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups', 'sshd', 9_212, 15_428, 0.0]] },
  { name: 'containerd.service', desc: 'containerd container runtime', pid: 702, user: 'root', path: '/lib/systemd/system/containerd.service', procs: [['/usr/bin/containerd', 'containerd', 48_112, 1_830_412, 0.2]] },
  { name: 'docker.service', desc: 'Docker Application Container Engine', pid: 763, user: 'root', procs: [['/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock', 'dockerd', 91_420, 2_270_116, 0.3]] },
  {
    name: 'postgresql.service',
    desc: 'PostgreSQL RDBMS',
    pid: 812,
    user: 'postgres',
    procs: [
      ['/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf', 'postgres', 30_412, 220_448, 0.1],
      ['postgres: 15/main: checkpointer', 'postgres', 12_108, 220_580, 0.0],
      ['postgres: 15/main: background writer', 'postgres', 6_204, 220_448, 0.0],
      ['postgres: 15/main: walwriter', 'postgres', 10_276, 220_448, 0.0],
      ['postgres: 15/main: autovacuum launcher', 'postgres', 8_912, 221_996, 0.0],
      ['postgres: 15/main: logical replication launcher', 'postgres', 7_400, 221_984, 0.0],
    ],
  },
];

/** @param {string} name */
function findUnit(name) {
  const full = name.includes('.') ? name : `${name}.service`;
  return UNITS.find((u) => u.name === full || (u.aliases ?? []).includes(full)) ?? null;
}

/** Kernel threads ps shows: [pid, name, stat]. */
const KTHREADS = /** @type {[number, string, string][]} */ ([
  [2, 'kthreadd', 'S'],
  [3, 'rcu_gp', 'I<'],
  [4, 'rcu_par_gp', 'I<'],
  [10, 'mm_percpu_wq', 'I<'],
  [13, 'ksoftirqd/0', 'S'],
  [14, 'rcu_preempt', 'I'],
  [15, 'migration/0', 'S'],
  [61, 'kswapd0', 'S'],
  [95, 'kworker/u8:2-events_unbound', 'I'],
  [212, 'jbd2/sda1-8', 'S'],
  [213, 'ext4-rsv-conver', 'I<'],
]);

/** Tasks the hung-task detector reports during a stall: [comm, pid, ppid, call trace]. */
const HUNG_TASKS = /** @type {[string, number, number, string[]][]} */ ([
  ['jbd2/sda1-8', 212, 2, ['io_schedule+0x46/0x70', 'bit_wait_io+0x11/0x60', '__wait_on_bit+0x46/0x130', 'out_of_line_wait_on_bit+0x90/0xb0', 'jbd2_journal_commit_transaction+0x1672/0x1a80 [jbd2]', 'kjournald2+0xa9/0x280 [jbd2]', 'kthread+0xda/0x100', 'ret_from_fork+0x22/0x30']],
  ['systemd-journal', 281, 1, ['io_schedule+0x46/0x70', 'folio_wait_bit_common+0x13d/0x350', 'filemap_fault+0x3b6/0xa40', '__do_fault+0x36/0x130', 'do_fault+0x1c3/0x410', '__handle_mm_fault+0x6a0/0xc20', 'handle_mm_fault+0xdb/0x2d0', 'exc_page_fault+0x70/0x170', 'asm_exc_page_fault+0x22/0x30']],
  ['kworker/u8:2', 95, 2, ['io_schedule+0x46/0x70', 'rq_qos_wait+0xc0/0x130', 'wbt_wait+0xa3/0x100', '__rq_qos_throttle+0x20/0x40', 'blk_mq_submit_bio+0x2d6/0x5a0', 'submit_bio_noacct_nocheck+0x107/0x2f0', 'ext4_io_submit+0x24/0x40 [ext4]', 'ext4_writepages+0x5a7/0x1070 [ext4]', 'do_writepages+0xcd/0x1e0', 'wb_writeback+0x2bf/0x310', 'wb_workfn+0x2d2/0x4a0', 'process_one_work+0x1c7/0x380', 'worker_thread+0x4d/0x380', 'kthread+0xda/0x100', 'ret_from_fork+0x22/0x30']],
  ['postgres', 813, 812, ['io_schedule+0x46/0x70', 'folio_wait_bit_common+0x13d/0x350', 'folio_wait_writeback+0x28/0x80', '__filemap_fdatawait_range+0x7f/0x100', 'file_write_and_wait_range+0x8e/0xb0', 'ext4_sync_file+0xf6/0x320 [ext4]', '__x64_sys_fsync+0x3b/0x70', 'do_syscall_64+0x58/0xc0', 'entry_SYSCALL_64_after_hwframe+0x64/0xce']],
]);

const RUNAWAY_QUERY = 'SELECT e.*, array_agg(l.payload ORDER BY l.at) FROM events e JOIN event_log l USING (event_id) GROUP BY e.event_id';

/**
 * Everything the guest shows for one boot, derived from the boot record and the time. Entries
 * carry absolute times; filtering by "now" and by what survived is the caller's business.
 */
class GuestBoot {
  /**
   * @param {Boot} boot
   * @param {number} now
   * @param {string} hostname
   */
  constructor(boot, now, hostname) {
    this.b = boot;
    this.now = now;
    this.hostname = hostname;
    // Boot messages are spread between the boot's start and the moment it was ready, so all of
    // them (and the oom scenario's OOM kill) have happened by the time anyone can log in.
    this.span = Math.min(30_000, Math.max(1, (boot.readyAt ?? now) - boot.bootAt));
    this.oomAt = boot.incident === 'oom' ? this.at(0.9) : null;
    this.memKb = Number(boot.config.memory ?? 2048) * 1024;
    this.cpus = Math.max(1, Number(boot.config.cores ?? 1) * Number(boot.config.sockets ?? 1));
    const size = /(?:^|,)size=(\d+)([KMGT]?)/.exec(boot.config.scsi0 ?? '');
    this.diskGiB = size ? Number(size[1]) * 1024 ** (' KMGT'.indexOf(size[2] || 'G') - 3) : 32;
  }

  /** The time a fraction of the way through the boot. */
  at(/** @type {number} */ frac) {
    return this.b.bootAt + Math.round(frac * this.span);
  }

  /** The stall covering t, if any. */
  stallAt(/** @type {number} */ t) {
    return this.b.stalls.find((s) => s.from <= t && (s.to === null || t < s.to)) ?? null;
  }

  /** When the journal stopped reaching the disk: the start of a stall the boot never left. */
  persistedUntil() {
    // A boot that never finished booting (say, reset while the disk was stalled) wrote nothing.
    if (this.b.readyAt === null) return this.b.bootAt;
    const open = this.b.stalls.find((s) => s.to === null);
    return Math.min(open ? open.from : Infinity, this.b.endedAt ?? Infinity);
  }

  /** Tasks in D state at t during a stall: the fixed victims plus a pile of cron and sshd. */
  blockedAt(/** @type {number} */ t) {
    const stall = this.stallAt(t);
    if (!stall) return 0;
    // (threads count: journald's, dockerd's and postgres's blocked threads are tasks too)
    return 10 + Math.min(56, Math.floor((t - stall.from) / 10_000));
  }

  /** The unit's events, in time order, up to now: base start at boot, OOM, operator actions. */
  unitEvents(/** @type {string} */ unit) {
    const def = /** @type {UnitDef} */ (findUnit(unit));
    const idx = UNITS.indexOf(def);
    /** @type {{ t: number, kind: string, pid?: number, base?: boolean }[]} */
    const events = [{ t: this.at(0.45 + idx * 0.03), kind: 'start', pid: def.pid, base: true }];
    if (unit === 'postgresql.service' && this.oomAt !== null) events.push({ t: this.oomAt + Math.round((60 * this.span) / 2000), kind: 'oom' });
    for (const a of this.b.actions) if (a.unit === unit) events.push({ t: a.t, kind: a.kind, ...(a.pid ? { pid: a.pid } : {}) });
    return events.filter((e) => e.t <= this.now).sort((x, y) => x.t - y.t);
  }

  /**
   * @param {string} unit
   * @returns {{ state: 'active' | 'failed' | 'inactive', since: number, pid: number | null, startedAt: number | null, lastPid: number | null, result: string }}
   */
  unitState(unit) {
    /** @type {ReturnType<GuestBoot['unitState']>} */
    let s = { state: 'inactive', since: this.b.bootAt, pid: null, startedAt: null, lastPid: null, result: 'success' };
    for (const e of this.unitEvents(unit)) {
      if (e.kind === 'start') s = { state: 'active', since: e.t, pid: e.pid ?? null, startedAt: e.t, lastPid: e.pid ?? null, result: 'success' };
      else if (e.kind === 'oom') s = { ...s, state: 'failed', since: e.t, pid: null, result: 'oom-kill' };
      else if (e.kind === 'stop' && s.state === 'active') s = { ...s, state: 'inactive', since: e.t, pid: null };
      else if (e.kind === 'reset' && s.state === 'failed') s = { ...s, state: 'inactive', result: 'success' };
    }
    return s;
  }

  /** All entries of this boot (kernel ring and journal), unsorted and unfiltered. */
  entries() {
    /** @type {LogEntry[]} */
    const out = [];
    const k = (/** @type {number} */ t, /** @type {number} */ prio, /** @type {string} */ msg) => out.push({ t, prio, ident: 'kernel', pid: 0, msg, kernel: true });
    const j = (/** @type {number} */ t, /** @type {string} */ ident, /** @type {number} */ pid, /** @type {number} */ prio, /** @type {string} */ msg, /** @type {string} */ unit = '') =>
      out.push({ t, prio, ident, pid, msg, ...(unit ? { unit } : {}) });
    const sectors = this.diskGiB * 2 * 1024 * 1024;
    const gb = Math.round((this.diskGiB * 1024 ** 3) / 1e9);
    const kernel = /** @type {[number, number, string][]} */ ([
      [0, 5, `Linux version ${KERNEL_RELEASE} (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) ${KERNEL_VERSION}`],
      [0, 6, `Command line: BOOT_IMAGE=/boot/vmlinuz-${KERNEL_RELEASE} root=UUID=${uuid(`root:${this.b.config.scsi0 ?? ''}`)} ro console=tty0 console=ttyS0,115200 quiet`],
      [0, 6, 'DMI: QEMU Standard PC (i440FX + PIIX, 1996), BIOS rel-1.16.3-0-ga6ed6b701f0a-prebuilt.qemu.org 04/01/2014'],
      [0, 6, 'Hypervisor detected: KVM'],
      [0.002, 6, `Memory: ${this.memKb - 452_164}K/${this.memKb + 392_620}K available (14336K kernel code, 2412K rwdata, 9332K rodata, 2800K init, 17440K bss, 452164K reserved, 0K cma-reserved)`],
      [0.01, 6, `smpboot: Allowing ${this.cpus} CPUs, 0 hotplug CPUs`],
      [0.06, 6, `smp: Brought up 1 node, ${this.cpus} CPUs`],
      [0.12, 6, 'scsi host2: Virtio SCSI HBA'],
      [0.13, 5, 'scsi 2:0:0:0: Direct-Access     QEMU     QEMU HARDDISK    2.5+ PQ: 0 ANSI: 5'],
      [0.14, 5, `sd 2:0:0:0: [sda] ${sectors} 512-byte logical blocks: (${gb} GB/${this.diskGiB} GiB)`],
      [0.141, 5, 'sd 2:0:0:0: [sda] Write Protect is off'],
      [0.142, 5, "sd 2:0:0:0: [sda] Write cache: enabled, read cache: enabled, doesn't support DPO or FUA"],
      [0.15, 6, ' sda: sda1 sda14 sda15'],
      [0.152, 5, 'sd 2:0:0:0: [sda] Attached SCSI disk'],
      ...(this.b.unclean ? /** @type {[number, number, string][]} */ ([[0.2, 6, 'EXT4-fs (sda1): recovery complete']]) : []),
      [0.205, 6, 'EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.'],
      [0.3, 6, `systemd[1]: systemd ${SYSTEMD_VERSION} running in system mode (+PAM +AUDIT +SELINUX +APPARMOR +SECCOMP +OPENSSL +ACL +BLKID +KMOD +ZSTD default-hierarchy=unified)`],
      [0.305, 6, 'systemd[1]: Detected virtualization kvm.'],
      [0.306, 6, 'systemd[1]: Detected architecture x86-64.'],
      [0.31, 6, `systemd[1]: Hostname set to <${this.hostname}>.`],
      [0.38, 6, 'EXT4-fs (sda1): re-mounted. Quota mode: none.'],
      [0.42, 6, 'virtio_net virtio1 ens18: renamed from eth0'],
      [0.7, 6, 'bridge: filtering via arp/ip/ip6tables is no longer available by default. Update your scripts to load br_netfilter if you need this.'],
      [0.71, 6, 'Bridge firewalling registered'],
      [0.74, 6, 'Initializing XFRM netlink socket'],
    ]);
    for (const [frac, prio, msg] of kernel) k(this.at(frac), prio, msg);

    j(this.at(0.33), 'systemd-journald', 281, 6, 'Journal started', 'systemd-journald.service');
    if (this.b.unclean) {
      j(this.at(0.331), 'systemd-journald', 281, 4, `File /var/log/journal/${machineId()}/system.journal corrupted or uncleanly shut down, renaming and replacing.`, 'systemd-journald.service');
    }
    for (const def of UNITS) out.push(...this.unitEntries(def));
    j(this.at(0.8), 'systemd', 1, 6, 'Reached target multi-user.target - Multi-User System.');
    const kernelS = (this.span * 0.3) / 1000;
    const userS = (this.span * 0.52) / 1000;
    j(this.at(0.82), 'systemd', 1, 6, `Startup finished in ${kernelS.toFixed(3)}s (kernel) + ${userS.toFixed(3)}s (userspace) = ${(kernelS + userS).toFixed(3)}s.`);
    j(this.at(0.83), 'systemd-timesyncd', 512, 6, 'Initial clock synchronization to Thu 1970-01-01 00:00:00 UTC.'.replace('Thu 1970-01-01 00:00:00 UTC', fmt.systemd(this.at(0.83))), 'systemd-timesyncd.service');

    if (this.oomAt !== null) {
      // The whole OOM sequence fits in the boot's last tenth, so it is over when sshd answers.
      const t = this.oomAt;
      const d = (/** @type {number} */ x) => t + Math.round((x * this.span) / 2000);
      const killed = 1187;
      k(d(0), 4, 'postgres invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0');
      k(d(2), 6, `oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/system.slice/postgresql.service,task=postgres,pid=${killed},uid=105`);
      k(d(3), 3, `Out of memory: Killed process ${killed} (postgres) total-vm:${this.memKb + 240_000}kB, anon-rss:${Math.round(this.memKb * 0.88)}kB, file-rss:1296kB, shmem-rss:131072kB, UID:105 pgtables:28120kB oom_score_adj:0`);
      j(d(20), 'systemd', 1, 4, 'postgresql.service: A process of this unit has been killed by the OOM killer.', 'postgresql.service');
      k(d(30), 6, `oom_reaper: reaped process ${killed} (postgres), now anon-rss:0kB, file-rss:0kB, shmem-rss:131072kB`);
      const pg = (/** @type {number} */ x, /** @type {string} */ msg) => j(d(x), 'postgres', 812, 6, `${fmt.pg(d(x))} [812] ${msg}`, 'postgresql.service');
      pg(35, `LOG:  server process (PID ${killed}) was terminated by signal 9: Killed`);
      pg(36, `DETAIL:  Failed process was running: ${RUNAWAY_QUERY}`);
      pg(37, 'LOG:  terminating any other active server processes');
      pg(50, 'LOG:  received fast shutdown request');
      pg(55, 'LOG:  database system is shut down');
      j(d(60), 'systemd', 1, 4, "postgresql.service: Failed with result 'oom-kill'.", 'postgresql.service');
      j(d(61), 'systemd', 1, 6, 'postgresql.service: Consumed 1min 2.114s CPU time.', 'postgresql.service');
    }

    // Hung-task reports: every 120 s a task stays blocked, up to the kernel's warning budget.
    let warnings = 0;
    for (const stall of this.b.stalls) {
      const end = stall.to ?? this.now;
      for (let t = stall.from + HUNG_TASK_TIMEOUT_MS; t <= end && warnings < HUNG_TASK_WARNINGS; t += HUNG_TASK_TIMEOUT_MS) {
        for (const [comm, pid, ppid, trace] of HUNG_TASKS) {
          if (warnings >= HUNG_TASK_WARNINGS) break;
          warnings++;
          const tt = t + warnings * 3;
          k(tt, 3, `INFO: task ${comm}:${pid} blocked for more than ${Math.floor((t - stall.from) / 1000)} seconds.`);
          k(tt, 3, `      Not tainted ${KERNEL_RELEASE} #1 Debian 6.1.119-1`);
          k(tt, 3, '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.');
          k(tt, 6, `task:${comm.padEnd(15)} state:D stack:0     pid:${String(pid).padEnd(5)} ppid:${String(ppid).padEnd(6)} flags:0x00004000`);
          k(tt, 4, 'Call Trace:');
          k(tt, 4, ' <TASK>');
          for (const frame of ['__schedule+0x351/0xa20', 'schedule+0x5d/0xe0', ...trace]) k(tt, 4, ` ${frame}`);
          k(tt, 4, ' </TASK>');
        }
      }
    }

    // Debian's hourly cron run, at 17 past (not while cron's children are stuck on the disk).
    const firstHour = Math.ceil((this.b.bootAt - 17 * 60_000) / 3_600_000) * 3_600_000 + 17 * 60_000;
    for (let t = firstHour; t <= this.now; t += 3_600_000) {
      if (t < this.at(0.8) || this.stallAt(t)) continue;
      j(t, 'CRON', 20_000 + ((t / 60_000) % 9000), 6, '(root) CMD (cd / && run-parts --report /etc/cron.hourly)', 'cron.service');
    }
    out.push(...this.b.log);
    return out;
  }

  /** Journal lines of one unit's starts, stops and OOM (systemd's and the daemon's own). */
  unitEntries(/** @type {UnitDef} */ def) {
    /** @type {LogEntry[]} */
    const out = [];
    const sd = (/** @type {number} */ t, /** @type {number} */ prio, /** @type {string} */ msg) => out.push({ t, prio, ident: 'systemd', pid: 1, msg, unit: def.name });
    let active = false;
    let pid = def.pid;
    for (const e of this.unitEvents(def.name)) {
      if (e.kind === 'start' && !active) {
        pid = e.pid ?? def.pid;
        sd(e.t - 8, 6, `Starting ${def.name} - ${def.desc}...`);
        if (def.name === 'postgresql.service') out.push(...this.postgresStart(e.t - 6, e.pid ?? def.pid, !!e.base && this.b.unclean));
        if (def.name === 'ssh.service') {
          out.push({ t: e.t - 2, prio: 6, ident: 'sshd', pid: e.pid ?? def.pid, msg: 'Server listening on 0.0.0.0 port 22.', unit: def.name });
          out.push({ t: e.t - 2, prio: 6, ident: 'sshd', pid: e.pid ?? def.pid, msg: 'Server listening on :: port 22.', unit: def.name });
        }
        sd(e.t, 6, `Started ${def.name} - ${def.desc}.`);
        active = true;
      } else if (e.kind === 'stop' && active) {
        sd(e.t, 6, `Stopping ${def.name} - ${def.desc}...`);
        if (def.name === 'postgresql.service') {
          out.push({ t: e.t + 1, prio: 6, ident: 'postgres', pid, msg: `${fmt.pg(e.t + 1)} [${pid}] LOG:  received fast shutdown request`, unit: def.name });
          out.push({ t: e.t + 2, prio: 6, ident: 'postgres', pid, msg: `${fmt.pg(e.t + 2)} [${pid}] LOG:  database system is shut down`, unit: def.name });
        }
        sd(e.t + 2, 6, `${def.name}: Deactivated successfully.`);
        sd(e.t + 3, 6, `Stopped ${def.name} - ${def.desc}.`);
        active = false;
      } else if (e.kind === 'oom') {
        active = false;
      }
    }
    return out;
  }

  /** PostgreSQL's start-up log; after an unclean end of the previous boot, crash recovery. */
  postgresStart(/** @type {number} */ t, /** @type {number} */ pid, /** @type {boolean} */ recovery) {
    const lines = [
      'LOG:  starting PostgreSQL 15.10 (Debian 15.10-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) 12.2.0, 64-bit',
      'LOG:  listening on IPv4 address "127.0.0.1", port 5432',
      'LOG:  listening on Unix socket "/var/run/postgresql/.s.PGSQL.5432"',
      ...(recovery
        ? [
            'LOG:  database system was interrupted; last known up at an earlier boot',
            'LOG:  database system was not properly shut down; automatic recovery in progress',
            'LOG:  redo starts at 0/3A1F2C8',
            'LOG:  redo done at 0/3B20D10 system usage: CPU: user: 0.01 s, system: 0.00 s, elapsed: 0.04 s',
            'LOG:  checkpoint starting: end-of-recovery immediate wait',
          ]
        : []),
      'LOG:  database system is ready to accept connections',
    ];
    return lines.map((msg, i) => ({ t: t + i, prio: 6, ident: 'postgres', pid, msg: `${fmt.pg(t + i)} [${pid}] ${msg}`, unit: 'postgresql.service' }));
  }
}

const machineId = () => sha('machine-id:devvm').slice(0, 32);

function uuid(/** @type {string} */ seed) {
  const h = sha(seed);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Exponential moving average of f over [from, now], as the kernel's load and PSI averages. */
function ema(/** @type {(t: number) => number} */ f, /** @type {number} */ from, /** @type {number} */ now, /** @type {number} */ tauMs) {
  const start = Math.max(from, now - 3_600_000);
  const step = Math.max(1000, (now - start) / 4000);
  // From boot the averages start at zero; a window cut short starts at its steady state.
  let v = start === from ? 0 : f(start);
  for (let t = start; t < now; t += step) {
    const dt = Math.min(step, now - t);
    v += (f(t) - v) * (1 - Math.exp(-dt / tauMs));
  }
  return v;
}

/** Integral of f (a percentage) over [from, now], in microseconds: PSI's total= field. */
function integral(/** @type {(t: number) => number} */ f, /** @type {number} */ from, /** @type {number} */ now) {
  const step = Math.max(1000, (now - from) / 4000);
  let sum = 0;
  for (let t = from; t < now; t += step) sum += (f(t) / 100) * Math.min(step, now - t) * 1000;
  return Math.round(sum);
}

// ---- the live guest: processes, memory, pressure, files ---------------------------------------

/**
 * @typedef {{ pid: number, ppid: number, user: string, cmd: string, comm: string, stat: string, rss: number,
 *   vsz: number, cpu: number, start: number, tty: string, wchan: string }} Proc
 * @typedef {{ argv: string[], root: boolean, pid: number }} SessionInfo
 */

class LiveGuest extends GuestBoot {
  /**
   * @param {Boot} boot
   * @param {number} now
   * @param {string} hostname
   * @param {boolean} wedged
   */
  constructor(boot, now, hostname, wedged) {
    super(boot, now, hostname);
    this.wedged = wedged;
    this.inStall = this.stallAt(now) !== null;
  }

  uptimeMs() {
    return this.now - this.b.bootAt;
  }

  /** Tasks contending for a CPU or stuck in D state at t (what the load average counts). */
  runnableAt(/** @type {number} */ t) {
    let n = 0.06 + this.blockedAt(t);
    if (t < this.at(1)) n += 1.6; // booting
    if (this.oomAt !== null && t >= this.at(0.8) && t <= this.oomAt) n += 5; // reclaim storm
    return n;
  }

  loadavg() {
    const f = (/** @type {number} */ t) => this.runnableAt(t);
    return [60_000, 300_000, 900_000].map((tau) => ema(f, this.b.bootAt, this.now, tau));
  }

  /** PSI: [some, full] percentage at t for io, memory or cpu. */
  pressureAt(/** @type {'io' | 'memory' | 'cpu'} */ kind, /** @type {number} */ t) {
    const stalled = this.stallAt(t) !== null;
    const oom = this.oomAt !== null && t >= this.at(0.8) && t <= this.oomAt;
    const booting = t < this.at(1);
    if (kind === 'io') return stalled ? [100, 99.2] : booting ? [24, 11] : [0.4, 0.1];
    if (kind === 'memory') return oom ? [93, 71] : [0, 0];
    return oom ? [38, 0] : booting ? [12, 0] : [1.1, 0];
  }

  pressure(/** @type {'io' | 'memory' | 'cpu'} */ kind) {
    const lines = [];
    for (const [i, name] of /** @type {[number, string][]} */ ([[0, 'some'], [1, 'full']])) {
      const f = (/** @type {number} */ t) => /** @type {number} */ (this.pressureAt(kind, t)[i]);
      const avgs = [10_000, 60_000, 300_000].map((tau) => ema(f, this.b.bootAt, this.now, tau).toFixed(2));
      const total = kind === 'cpu' && name === 'full' ? 0 : integral(f, this.b.bootAt, this.now);
      lines.push(`${name} avg10=${avgs[0]} avg60=${avgs[1]} avg300=${avgs[2]} total=${total}`);
    }
    return lines.join('\n') + '\n';
  }

  /** The processes at now, in pid order. */
  processes(/** @type {SessionInfo} */ session) {
    /** @type {Proc[]} */
    const procs = [];
    const add = (/** @type {Partial<Proc> & { pid: number, cmd: string }} */ p) =>
      procs.push({ ppid: 1, user: 'root', comm: p.cmd.split(' ')[0]?.split('/').pop() ?? p.cmd, stat: 'S', rss: 0, vsz: 0, cpu: 0, start: this.b.bootAt, tty: '?', wchan: '-', ...p });
    add({ pid: 1, ppid: 0, cmd: '/sbin/init', comm: 'systemd', stat: 'Ss', rss: 12_108, vsz: 168_044, cpu: 0.2 });
    for (const [pid, name, stat] of KTHREADS) add({ pid, ppid: pid === 2 ? 0 : 2, cmd: `[${name}]`, comm: name, stat });
    for (const def of UNITS) {
      const s = this.unitState(def.name);
      const main = s.pid;
      if (s.state !== 'active' || main === null) continue;
      def.procs.forEach(([cmd, comm, rss, vsz, cpu], i) => {
        add({ pid: main + i, ppid: i === 0 ? 1 : main, user: def.user, cmd, comm, stat: i === 0 ? (def.name.startsWith('postgres') ? 'Ss' : 'Ssl') : 'Ss', rss, vsz, cpu, start: s.startedAt ?? this.b.bootAt });
      });
    }
    if (this.oomAt !== null && this.now >= this.at(0.8) && this.now < this.oomAt) {
      add({ pid: 1187, ppid: 812, user: 'postgres', cmd: 'postgres: 15/main: app appdb 10.0.0.23(51122) SELECT', comm: 'postgres', stat: 'Rs', rss: Math.round(this.memKb * 0.8), vsz: this.memKb, cpu: 96, start: this.at(0.78) });
    }
    add({ pid: 650, cmd: '/sbin/agetty -o -p -- \\u --noclear - linux', comm: 'agetty', stat: 'Ss+', rss: 1_932, vsz: 5_872, tty: 'tty1' });
    add({ pid: 651, cmd: '/sbin/agetty -o -p -- \\u --keep-baud 115200,57600,38400,9600 - vt220', comm: 'agetty', stat: 'Ss+', rss: 1_980, vsz: 5_872, tty: 'ttyS0' });
    // This session: sshd's privileged and user halves, then the command itself.
    const ssh = this.unitState('ssh.service').pid ?? 640;
    const sp = session.pid;
    add({ pid: sp, ppid: ssh, cmd: `sshd: ${ACCOUNT.name} [priv]`, comm: 'sshd', stat: 'Ss', rss: 10_920, vsz: 17_380, start: this.now });
    add({ pid: sp + 2, ppid: sp, user: ACCOUNT.name, cmd: `sshd: ${ACCOUNT.name}@notty`, comm: 'sshd', rss: 6_952, vsz: 17_608, start: this.now });
    if (session.root) add({ pid: sp + 3, ppid: sp + 2, cmd: `sudo ${session.argv.join(' ')}`, comm: 'sudo', stat: 'S', rss: 5_620, vsz: 11_480, start: this.now });
    add({ pid: sp + 4, ppid: session.root ? sp + 3 : sp + 2, user: session.root ? 'root' : ACCOUNT.name, cmd: session.argv.join(' '), comm: session.argv[0] ?? 'sh', stat: 'R', rss: 3_908, vsz: 11_204, start: this.now });

    const stall = this.stallAt(this.now);
    if (stall) {
      // The disk stopped answering: writeback, the journal, journald and postgres's fsyncs
      // wait in D state, and everything that needs the disk piles up behind them.
      const dstate = new Map([[212, 'jbd2_log_wait_commit'], [281, 'folio_wait_bit_common'], [813, 'folio_wait_bit_common'], [815, 'io_schedule'], [763, 'io_schedule'], [602, 'io_schedule']]);
      for (const p of procs) {
        const w = dstate.get(p.pid);
        if (w) Object.assign(p, { stat: p.stat.replace(/^[SRI]/, 'D'), wchan: w });
      }
      const kw = procs.find((p) => p.pid === 95);
      if (kw) Object.assign(kw, { cmd: '[kworker/u8:2+flush-8:0]', comm: 'kworker/u8:2+flush-8:0', stat: 'D', wchan: 'rq_qos_wait' });
      const piled = this.blockedAt(this.now) - 10;
      for (let i = 0; i < piled; i++) {
        const t = stall.from + (i + 1) * 10_000;
        if (i % 2 === 0) add({ pid: 3000 + i * 11, ppid: 602, cmd: '/usr/sbin/CRON -f', comm: 'cron', stat: 'D', rss: 2_304, vsz: 9_284, start: t, wchan: 'io_schedule' });
        else add({ pid: 3000 + i * 11, ppid: ssh, cmd: 'sshd: [accepted]', comm: 'sshd', stat: 'Ds', rss: 5_012, vsz: 15_884, start: t, wchan: 'folio_wait_bit_common' });
      }
    }
    return procs.sort((a, b) => a.pid - b.pid);
  }

  /** Memory in kB: total, used, free, shared, buffers, cache, available, dirty, writeback. */
  memory(/** @type {SessionInfo} */ session) {
    const total = this.memKb - 452_164;
    const rss = this.processes(session).reduce((sum, p) => sum + (p.comm === 'postgres' && p.pid !== 1187 ? p.rss / 3 : p.rss), 0);
    const pgUp = this.unitState('postgresql.service').state === 'active';
    const cacheBase = this.oomAt !== null && this.now >= this.oomAt ? this.oomAt : this.b.bootAt;
    const cacheFull = Math.min(total * 0.4, 5_800_000);
    let cache = Math.round(Math.min(cacheFull, 380_000 + ((this.now - cacheBase) / 1000) * 2_000));
    if (this.oomAt !== null && this.now >= this.at(0.8) && this.now < this.oomAt) cache = 120_000;
    const buffers = 48_000 + Math.min(180_000, Math.round((this.now - this.b.bootAt) / 100));
    const used = Math.min(total - 60_000, Math.round(980_000 + rss));
    const shared = 2_340 + (pgUp ? 131_072 : 0);
    const free = Math.max(60_000, total - used - cache - buffers);
    const available = Math.round(free + (cache + buffers) * 0.86);
    const stall = this.stallAt(this.now);
    const dirty = stall ? Math.min(1_600_000, 4_096 + Math.round((this.now - stall.from) / 1000) * 4_000) : 1_204;
    return { total, used, free, shared, buffers, cache, available, dirty, writeback: stall ? 65_536 : 0 };
  }

  /** The simulated content of a file, or null. */
  file(/** @type {string} */ name, /** @type {SessionInfo} */ session) {
    const up = this.uptimeMs() / 1000;
    switch (path.posix.normalize(name)) {
      case '/proc/loadavg': {
        const [a, b, c] = this.loadavg().map((v) => v.toFixed(2));
        const procs = this.processes(session);
        const running = Math.max(1, Math.round(this.runnableAt(this.now) - this.blockedAt(this.now)));
        return `${a} ${b} ${c} ${running}/${procs.length + 160} ${Math.max(...procs.map((p) => p.pid))}\n`;
      }
      case '/proc/pressure/io':
        return this.pressure('io');
      case '/proc/pressure/memory':
        return this.pressure('memory');
      case '/proc/pressure/cpu':
        return this.pressure('cpu');
      case '/proc/uptime':
        return `${up.toFixed(2)} ${(up * this.cpus * 0.97).toFixed(2)}\n`;
      case '/proc/meminfo': {
        const m = this.memory(session);
        const rows = /** @type {[string, number][]} */ ([
          ['MemTotal', m.total], ['MemFree', m.free], ['MemAvailable', m.available], ['Buffers', m.buffers], ['Cached', m.cache],
          ['SwapCached', 0], ['Active', Math.round(m.used * 0.6 + m.cache * 0.4)], ['Inactive', Math.round(m.cache * 0.55)],
          ['SwapTotal', 0], ['SwapFree', 0], ['Dirty', m.dirty], ['Writeback', m.writeback], ['Shmem', m.shared],
        ]);
        return rows.map(([k, v]) => `${`${k}:`.padEnd(16)}${String(v).padStart(8)} kB`).join('\n') + '\n';
      }
      case '/proc/version':
        return `Linux version ${KERNEL_RELEASE} (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) ${KERNEL_VERSION}\n`;
      case '/proc/sys/kernel/hung_task_timeout_secs':
        return `${HUNG_TASK_TIMEOUT_MS / 1000}\n`;
      case '/etc/hostname':
        return `${this.hostname}\n`;
      case '/etc/debian_version':
        return '12.8\n';
      case '/etc/os-release':
      case '/usr/lib/os-release':
        return [
          'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
          'NAME="Debian GNU/Linux"',
          'VERSION_ID="12"',
          'VERSION="12 (bookworm)"',
          'VERSION_CODENAME=bookworm',
          'ID=debian',
          'HOME_URL="https://www.debian.org/"',
          'SUPPORT_URL="https://www.debian.org/support"',
          'BUG_REPORT_URL="https://bugs.debian.org/"',
          '',
        ].join('\n');
      case '/dev/null':
        return '';
      default:
        return null;
    }
  }
}

// ---- the shell ---------------------------------------------------------------------------------

/** A shell-level failure: `sh: 1: <message>`, exit code (2: syntax or not simulated). */
class ShellError extends Error {
  constructor(/** @type {string} */ message, code = 2) {
    super(message);
    this.code = code;
  }
}
/** The command was stopped by its `timeout` (or the session ended). */
class Aborted extends Error {}
/** `exit N`. */
class ExitRequest extends Error {
  constructor(/** @type {number} */ code) {
    super(`exit ${code}`);
    this.code = code;
  }
}

/**
 * @typedef {({ lit: string } | { v: string })[]} Word
 * @typedef {{ t: 'w', w: Word, plain: string | null } | { t: 'op', v: string } | { t: 'redir', fd: number | 'both', op: string }} Token
 * @typedef {{ argv: Word[], redirs: { fd: number | 'both', op: string, target: Word }[] }} Simple
 * @typedef {{ op: string, pipeline: Simple[] }} ListItem
 * @typedef {{ stdin: string, out: (s: string) => void, err: (s: string) => void, signal: AbortSignal, root: boolean }} Io
 */

const NOT_SIMULATED = 'is not simulated on this lab devvm';

/** Read a $-expansion at src[i] === '$'. */
function readDollar(/** @type {string} */ src, /** @type {number} */ i) {
  const n = src[i + 1];
  if (n === '(') throw new ShellError(`command substitution $(…) ${NOT_SIMULATED}`);
  if (n === '{') {
    const end = src.indexOf('}', i);
    const name = end < 0 ? '' : src.slice(i + 2, end);
    if (!/^([A-Za-z_][A-Za-z0-9_]*|[?$#0-9])$/.test(name)) throw new ShellError(`${src.slice(i, end < 0 ? undefined : end + 1)}: Bad substitution`);
    return { part: { v: name }, next: end + 1 };
  }
  if (n !== undefined && /[?$#0-9]/.test(n)) return { part: { v: n }, next: i + 2 };
  const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i + 1));
  if (m) return { part: { v: m[0] }, next: i + 1 + m[0].length };
  return { part: { lit: '$' }, next: i + 1 };
}

/** Split a command line into words, operators and redirections (POSIX sh quoting). */
function tokenize(/** @type {string} */ src) {
  /** @type {Token[]} */
  const tokens = [];
  /** @type {Word | null} */
  let word = null;
  /** @type {string | null} the word's text while it is unquoted literal text only */
  let plain = null;
  const lit = (/** @type {string} */ s, quoted = false) => {
    if (word === null) {
      word = [];
      plain = '';
    }
    word.push({ lit: s });
    plain = quoted || plain === null ? null : plain + s;
  };
  const part = (/** @type {{ v: string } | { lit: string }} */ p) => {
    if (word === null) word = [];
    word.push(p);
    plain = null;
  };
  const flush = () => {
    if (word !== null) tokens.push({ t: 'w', w: word, plain });
    word = null;
    plain = null;
  };
  let i = 0;
  while (i < src.length) {
    const c = /** @type {string} */ (src[i]);
    if (c === ' ' || c === '\t') {
      flush();
      i++;
    } else if (c === '\n') {
      flush();
      tokens.push({ t: 'op', v: ';' });
      i++;
    } else if (c === '#' && word === null) {
      while (i < src.length && src[i] !== '\n') i++;
    } else if (c === "'") {
      const end = src.indexOf("'", i + 1);
      if (end < 0) throw new ShellError('Syntax error: Unterminated quoted string');
      lit(src.slice(i + 1, end), true);
      i = end + 1;
    } else if (c === '"') {
      i++;
      lit('', true);
      for (;;) {
        if (i >= src.length) throw new ShellError('Syntax error: Unterminated quoted string');
        const d = /** @type {string} */ (src[i]);
        if (d === '"') break;
        if (d === '\\' && i + 1 < src.length && '$`"\\\n'.includes(/** @type {string} */ (src[i + 1]))) {
          if (src[i + 1] !== '\n') lit(/** @type {string} */ (src[i + 1]), true);
          i += 2;
        } else if (d === '$') {
          const r = readDollar(src, i);
          part(r.part);
          i = r.next;
        } else if (d === '`') {
          throw new ShellError(`command substitution \`…\` ${NOT_SIMULATED}`);
        } else {
          lit(d, true);
          i++;
        }
      }
      i++;
    } else if (c === '\\') {
      if (src[i + 1] !== '\n') lit(src[i + 1] ?? '', true);
      i += 2;
    } else if (c === '$') {
      const r = readDollar(src, i);
      part(r.part);
      i = r.next;
    } else if (c === '`') {
      throw new ShellError(`command substitution \`…\` ${NOT_SIMULATED}`);
    } else if (c === '(' || c === ')') {
      throw new ShellError(`subshells ( … ) ${NOT_SIMULATED}`);
    } else if (c === '>' || c === '<') {
      /** @type {number | 'both'} */
      let fd = c === '>' ? 1 : 0;
      if (word !== null && plain !== null && /^\d$/.test(plain)) {
        fd = Number(plain);
        word = null;
        plain = null;
      } else flush();
      let op = c;
      i++;
      if (c === '>' && src[i] === '>') {
        op = '>>';
        i++;
      } else if (src[i] === '&') {
        op = `${c}&`;
        i++;
      } else if (c === '<' && src[i] === '<') {
        throw new ShellError(`here-documents ${NOT_SIMULATED}`);
      } else if (c === '>' && src[i] === '|') {
        i++;
      }
      tokens.push({ t: 'redir', fd, op });
    } else if (c === '&' && src[i + 1] === '>') {
      flush();
      tokens.push({ t: 'redir', fd: 'both', op: src[i + 2] === '>' ? '>>' : '>' });
      i += src[i + 2] === '>' ? 3 : 2;
    } else if (c === '|' || c === '&' || c === ';') {
      flush();
      const two = src.slice(i, i + 2);
      if (two === '&&' || two === '||' || two === ';;') {
        if (two === ';;') throw new ShellError('Syntax error: ";;" unexpected');
        tokens.push({ t: 'op', v: two });
        i += 2;
      } else {
        tokens.push({ t: 'op', v: c });
        i++;
      }
    } else if (c === '~' && word === null && (i + 1 === src.length || /[\s/;|&]/.test(/** @type {string} */ (src[i + 1])))) {
      part({ v: 'HOME' });
      i++;
    } else {
      lit(c);
      i++;
    }
  }
  flush();
  return tokens;
}

const COMPOUND = ['if', 'then', 'else', 'elif', 'fi', 'for', 'while', 'until', 'do', 'done', 'case', 'esac', '{', '}', '!', 'function', 'select'];

/** Group tokens into `;`/`&&`/`||` separated pipelines of simple commands. */
function parse(/** @type {Token[]} */ tokens) {
  /** @type {ListItem[]} */
  const list = [];
  /** @type {Simple[]} */
  let pipeline = [];
  /** @type {Simple} */
  let cmd = { argv: [], redirs: [] };
  let pending = ';';
  const unexpected = (/** @type {string} */ what) => new ShellError(`Syntax error: "${what}" unexpected`);
  for (let k = 0; k < tokens.length; k++) {
    const tok = /** @type {Token} */ (tokens[k]);
    if (tok.t === 'w' && !cmd.argv.length && tok.plain !== null && COMPOUND.includes(tok.plain)) {
      throw new ShellError(`compound commands ('${tok.plain}') ${NOT_SIMULATED}`);
    }
    if (tok.t === 'w') cmd.argv.push(tok.w);
    else if (tok.t === 'redir') {
      const target = tokens[k + 1];
      if (!target || target.t !== 'w') throw new ShellError('Syntax error: redirection unexpected');
      cmd.redirs.push({ fd: tok.fd, op: tok.op, target: target.w });
      k++;
    } else if (tok.v === '|') {
      if (!cmd.argv.length && !cmd.redirs.length) throw unexpected('|');
      pipeline.push(cmd);
      cmd = { argv: [], redirs: [] };
    } else {
      const empty = !cmd.argv.length && !cmd.redirs.length;
      if (empty && (pipeline.length || tok.v !== ';')) throw unexpected(tok.v);
      if (!empty) pipeline.push(cmd);
      if (pipeline.length) list.push({ op: pending, pipeline });
      else if (tok.v !== ';') throw unexpected(tok.v);
      pipeline = [];
      cmd = { argv: [], redirs: [] };
      pending = tok.v === '&' ? ';' : tok.v;
    }
  }
  if (cmd.argv.length || cmd.redirs.length) pipeline.push(cmd);
  else if (pipeline.length) throw new ShellError('Syntax error: end of file unexpected');
  if (pipeline.length) list.push({ op: pending, pipeline });
  else if (pending === '&&' || pending === '||') throw new ShellError('Syntax error: end of file unexpected');
  return list;
}

/** Wait ms, or reject with Aborted when signal fires. */
function delay(/** @type {number} */ ms, /** @type {AbortSignal} */ signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Aborted('aborted'));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Aborted('aborted'));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(undefined);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** A command that never finishes: only its timeout (or the end of the session) ends it. */
async function hang(/** @type {AbortSignal} */ signal) {
  await delay(NO_TIMEOUT_CAP_MS, signal);
  throw new Aborted('gave up');
}

/** "1.5", "2m", "1h", "0.5d" → ms; NaN when invalid. */
function parseDuration(/** @type {string} */ s) {
  const m = /^(\d+(?:\.\d*)?|\.\d+)([smhd]?)$/.exec(s);
  if (!m) return NaN;
  return Number(m[1]) * { '': 1000, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[/** @type {'' | 's' | 'm' | 'h' | 'd'} */ (m[2])];
}

const lines = (/** @type {string} */ text) => (text === '' ? [] : text.replace(/\n$/, '').split('\n'));
const joinLines = (/** @type {string[]} */ ls) => (ls.length ? `${ls.join('\n')}\n` : '');

/** Commands a `command -v` / `which` / sudo log line names by path. */
const PATHS = /** @type {Record<string, string>} */ ({
  uptime: '/usr/bin/uptime', dmesg: '/usr/bin/dmesg', journalctl: '/usr/bin/journalctl', systemctl: '/usr/bin/systemctl',
  ps: '/usr/bin/ps', top: '/usr/bin/top', vmstat: '/usr/bin/vmstat', free: '/usr/bin/free', df: '/usr/bin/df', cat: '/usr/bin/cat',
  who: '/usr/bin/who', w: '/usr/bin/w', users: '/usr/bin/users', hostname: '/usr/bin/hostname', uname: '/usr/bin/uname', date: '/usr/bin/date',
  id: '/usr/bin/id', whoami: '/usr/bin/whoami', sleep: '/usr/bin/sleep', head: '/usr/bin/head', tail: '/usr/bin/tail', grep: '/usr/bin/grep',
  wc: '/usr/bin/wc', sort: '/usr/bin/sort', uniq: '/usr/bin/uniq', timeout: '/usr/bin/timeout', sudo: '/usr/bin/sudo', sh: '/usr/bin/sh',
  bash: '/usr/bin/bash', echo: '/usr/bin/echo', printf: '/usr/bin/printf', true: '/usr/bin/true', false: '/usr/bin/false', which: '/usr/bin/which',
});
const BUILTINS = new Set(['echo', 'printf', 'true', 'false', 'pwd', 'cd', 'export', 'exit', 'command']);

/** One SSH connection's worth of simulated shell. */
class Session {
  /**
   * @param {{ vmDir: string, scenario: string, inspect?: boolean, sshClient?: string }} opts
   */
  constructor(opts) {
    this.vmDir = opts.vmDir;
    this.scenario = opts.scenario;
    this.inspect = !!opts.inspect;
    this.sshClient = opts.sshClient ?? '';
    /** @type {Record<string, string>} */
    this.vars = { HOME: ACCOUNT.home, USER: ACCOUNT.name, LOGNAME: ACCOUNT.name, SHELL: '/bin/bash', PATH: '/usr/local/bin:/usr/bin:/bin:/usr/games', PWD: ACCOUNT.home, LANG: 'C.UTF-8', '?': '0', $: '1433', '#': '0', '0': 'sh' };
    this.pid = 1420;
    /** @type {string[]} the command line the session runs, for ps */
    this.argv = [];
    this.rootSeen = false;
  }

  /** The guest as of now (and a record of anything that changed since the last look). */
  world() {
    const now = Date.now();
    const obs = observeGuest(this.vmDir, this.scenario, now);
    let boot = obs.boot;
    if (boot && boot.readyAt === null) {
      markGuestReady(this.vmDir, this.scenario, boot.key, now);
      boot = { ...boot, readyAt: now };
    }
    const hostname = obs.vm?.config.name ?? 'devvm';
    const live = boot ? new LiveGuest(boot, now, hostname, obs.wedged) : null;
    const boots = (obs.state?.boots ?? []).map((b) => (live && b.key === live.b.key ? live : new GuestBoot(b, now, hostname)));
    return { now, running: obs.running, wedged: obs.wedged, live, boots, hostname };
  }

  /** The current boot, or hang like a guest that is not there. */
  async guest(/** @type {AbortSignal} */ signal) {
    const w = this.world();
    if (!w.live || (w.wedged && !this.inspect)) await hang(signal);
    return /** @type {typeof w & { live: LiveGuest }} */ (w);
  }

  /** Append journal entries to the current boot (sshd logins, sudo). */
  log(/** @type {Omit<LogEntry, 't'>[]} */ entries) {
    const now = Date.now();
    updateDevvmState(this.vmDir, this.scenario, (st) => {
      const boot = st.boots.at(-1);
      if (!boot || boot.endedAt !== null) return false;
      boot.log.push(...entries.map((e) => ({ t: now, ...e })));
      if (boot.log.length > MAX_BOOT_LOG) boot.log.splice(0, boot.log.length - MAX_BOOT_LOG);
      return true;
    });
  }

  /** Record unit changes and hand out main pids for started units; returns the pids. */
  act(/** @type {{ unit: string, kind: 'start' | 'stop' | 'reset' }[]} */ actions) {
    const now = Date.now();
    /** @type {number[]} */
    const pids = [];
    updateDevvmState(this.vmDir, this.scenario, (st) => {
      const boot = st.boots.at(-1);
      if (!boot || boot.endedAt !== null) return false;
      actions.forEach((a, i) => {
        const t = now - (actions.length - 1 - i);
        if (a.kind === 'start') {
          const pid = boot.nextPid;
          boot.nextPid += 8;
          pids.push(pid);
          boot.actions.push({ t, unit: a.unit, kind: 'start', pid });
        } else boot.actions.push({ t, unit: a.unit, kind: a.kind });
      });
      return true;
    });
    return pids;
  }

  expand(/** @type {Word} */ word) {
    return word.map((p) => ('lit' in p ? p.lit : (this.vars[p.v] ?? ''))).join('');
  }

  /** Run a command line; returns its exit status. */
  async runLine(/** @type {string} */ line, /** @type {Io} */ io) {
    let list;
    try {
      list = parse(tokenize(line));
    } catch (error) {
      if (!(error instanceof ShellError)) throw error;
      io.err(`sh: 1: ${error.message}\n`);
      return error.code;
    }
    let status = 0;
    for (const item of list) {
      if ((item.op === '&&' && status !== 0) || (item.op === '||' && status === 0)) continue;
      status = await this.runPipeline(item.pipeline, io);
      this.vars['?'] = String(status);
    }
    return status;
  }

  async runPipeline(/** @type {Simple[]} */ stages, /** @type {Io} */ io) {
    let input = io.stdin;
    let status = 0;
    for (const [idx, stage] of stages.entries()) {
      const last = idx === stages.length - 1;
      let buffered = '';
      const out = last ? io.out : (/** @type {string} */ s) => (buffered += s);
      status = await this.runSimple(stage, { ...io, stdin: input, out });
      input = buffered;
    }
    return status;
  }

  async runSimple(/** @type {Simple} */ cmd, /** @type {Io} */ io) {
    let { out, err, stdin } = io;
    for (const r of cmd.redirs) {
      const target = this.expand(r.target);
      if (r.op === '>&' || r.op === '<&') {
        if (r.fd === 2 && target === '1') err = out;
        else if (r.fd === 1 && target === '2') out = err;
        else if (target === '-' || String(r.fd) === target) continue;
        else {
          io.err(`sh: 1: ${r.fd}${r.op}${target}: redirection ${NOT_SIMULATED}\n`);
          return 2;
        }
      } else if (r.op === '<') {
        if (target !== '/dev/null') {
          io.err(`sh: 1: cannot open ${target}: input redirection from files ${NOT_SIMULATED}\n`);
          return 2;
        }
        stdin = '';
      } else if (target === '/dev/null') {
        if (r.fd === 1 || r.fd === 'both') out = () => {};
        if (r.fd === 2 || r.fd === 'both') err = () => {};
      } else {
        io.err(`sh: 1: cannot create ${target}: writing files ${NOT_SIMULATED}\n`);
        return 2;
      }
    }
    const argv = cmd.argv.map((w) => this.expand(w));
    // Leading VAR=value words: set (when alone) or ignored for the command.
    while (argv.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(/** @type {string} */ (argv[0]))) {
      const assign = /** @type {string} */ (argv.shift());
      if (!argv.length) {
        const at = assign.indexOf('=');
        this.vars[assign.slice(0, at)] = assign.slice(at + 1);
      }
    }
    if (!argv.length) return 0;
    return this.runArgv(argv, { ...io, out, err, stdin });
  }

  /** Run one command by name. */
  async runArgv(/** @type {string[]} */ argv, /** @type {Io} */ io) {
    const name = /** @type {string} */ (argv[0]);
    if (COMPOUND.includes(name)) {
      io.err(`sh: 1: compound commands ('${name}') ${NOT_SIMULATED}\n`);
      return 2;
    }
    const base = name.includes('/') && Object.values(PATHS).includes(name) ? name.split('/').pop() ?? name : name;
    const fn = Object.hasOwn(COMMANDS, base) ? COMMANDS[base] : undefined;
    if (!fn) {
      // A guest that is not there cannot even say "not found".
      await this.guest(io.signal);
      io.err(`sh: 1: ${name}: not found\n`);
      return 127;
    }
    if (base !== 'timeout' && base !== 'exit') await this.guest(io.signal);
    return fn(argv.slice(1), io, this);
  }
}

// ---- commands ----------------------------------------------------------------------------------

/** @typedef {(args: string[], io: Io, sh: Session) => Promise<number>} Command */

/** Expand clustered short options: ["-bn1"] stays for commands that parse values themselves. */
function shortFlags(/** @type {string} */ arg) {
  return /^-[A-Za-z]+$/.test(arg) ? arg.slice(1).split('') : null;
}

function uptimeLine(/** @type {LiveGuest} */ g) {
  const mins = Math.floor(g.uptimeMs() / 60_000);
  const days = Math.floor(mins / 1440);
  const h = Math.floor((mins % 1440) / 60);
  const m = mins % 60;
  let s = ` ${fmt.hms(g.now)} up `;
  if (days) s += `${days} day${days > 1 ? 's' : ''}, `;
  s += h ? `${String(h).padStart(2)}:${p2(m)}, ` : `${m} min, `;
  return `${s} 0 users,  load average: ${g.loadavg().map((v) => v.toFixed(2)).join(', ')}`;
}

const LEVELS = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'];
/** "err" / "3" / "warn" → 3 / 4 …; -1 when unknown. */
function level(/** @type {string} */ s) {
  if (/^[0-7]$/.test(s)) return Number(s);
  const alias = /** @type {Record<string, string>} */ ({ warn: 'warning', error: 'err', panic: 'emerg' })[s] ?? s;
  return LEVELS.indexOf(alias);
}

const byTime = (/** @type {LogEntry} */ a, /** @type {LogEntry} */ b) => a.t - b.t;

/** Turn a grep/journalctl pattern (basic or extended regex, or fixed string) into a RegExp. */
function regex(/** @type {string} */ pattern, /** @type {{ fixed?: boolean, extended?: boolean, ignoreCase?: boolean, word?: boolean }} */ o) {
  let src;
  if (o.fixed) src = pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  else if (o.extended) src = pattern;
  else {
    // Basic regex: \| \( \) \{ \} \+ \? are the operators; the bare characters are literal.
    src = '';
    for (let i = 0; i < pattern.length; i++) {
      const c = /** @type {string} */ (pattern[i]);
      if (c === '\\' && i + 1 < pattern.length) {
        const n = /** @type {string} */ (pattern[++i]);
        src += '|(){}+?'.includes(n) ? n : `\\${n}`;
      } else src += '|(){}+?'.includes(c) ? `\\${c}` : c;
    }
  }
  if (o.word) src = `\\b(?:${src})\\b`;
  return new RegExp(src, o.ignoreCase ? 'i' : '');
}

/** Read files named on a command line (simulated ones only), or stdin. */
async function inputs(/** @type {string} */ cmd, /** @type {string[]} */ files, /** @type {Io} */ io, /** @type {Session} */ sh) {
  if (!files.length) return { texts: [{ name: '(standard input)', text: io.stdin }], failed: false };
  const { live } = await sh.guest(io.signal);
  /** @type {{ name: string, text: string }[]} */
  const texts = [];
  let failed = false;
  for (const f of files) {
    const text = f === '-' ? io.stdin : live.file(f, sessionInfo(sh, io));
    if (text === null) {
      io.err(`${cmd}: ${f}: ${fileMissing(f)}\n`);
      failed = true;
    } else texts.push({ name: f, text });
  }
  return { texts, failed };
}

const fileMissing = (/** @type {string} */ f) => (f.startsWith('/') ? `reading this file ${NOT_SIMULATED}` : 'No such file or directory');
const sessionInfo = (/** @type {Session} */ sh, /** @type {Io} */ io) => ({ argv: sh.argv, root: io.root, pid: sh.pid });

/** Sizes as procps/coreutils -h print them: 1.8G, 15G, 142M, 0. */
function human(/** @type {number} */ kb, /** @type {string} */ suffix = '') {
  // df (coreutils) rounds up; free (procps, suffix 'i') truncates.
  const round = suffix ? Math.floor : Math.ceil;
  if (kb <= 0) return suffix ? '0B' : '0';
  const units = ['K', 'M', 'G', 'T'];
  let v = kb;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const n = v < 10 ? (round(v * 10) / 10).toFixed(1) : String(round(v));
  return `${n}${units[u]}${suffix}`;
}

/** Right-align columns like the procps tools do. */
function table(/** @type {string[][]} */ rows, /** @type {boolean[]} */ leftAligned, gap = ' ') {
  const widths = /** @type {number[]} */ ([]);
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) => row.map((cell, i) => (i === row.length - 1 && leftAligned[i] ? cell : leftAligned[i] ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(gap))
    .join('\n') + '\n';
}

/** journalctl --since / --until values. */
function parseWhen(/** @type {string} */ s, /** @type {number} */ now) {
  const day = Math.floor(now / 86_400_000) * 86_400_000;
  if (s === 'now') return now;
  if (s === 'today') return day;
  if (s === 'yesterday') return day - 86_400_000;
  if (s === 'tomorrow') return day + 86_400_000;
  const rel = /^(?:-\s*)?(\d+)\s*(s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hour|hours|d|day|days)(?:\s+ago)?$/.exec(s.trim());
  if (rel) {
    const unit = /** @type {string} */ (rel[2])[0];
    return now - Number(rel[1]) * (unit === 's' ? 1000 : unit === 'm' ? 60_000 : unit === 'h' ? 3_600_000 : 86_400_000);
  }
  const abs = /^(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}(?::\d{2})?))?$/.exec(s.trim());
  if (abs) return Date.parse(`${abs[1]}T${abs[2] ?? '00:00:00'}${abs[2]?.length === 5 ? ':00' : ''}Z`);
  const time = /^(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(s.trim());
  if (time) return day + Number(time[1]) * 3_600_000 + Number(time[2]) * 60_000 + Number(time[3] ?? 0) * 1000;
  return NaN;
}

/** @type {Record<string, Command>} */
const COMMANDS = {
  async true() {
    return 0;
  },
  async false() {
    return 1;
  },
  async exit(args) {
    throw new ExitRequest(args[0] !== undefined && /^\d+$/.test(args[0]) ? Number(args[0]) & 255 : 0);
  },
  async pwd(_args, io) {
    io.out(`${ACCOUNT.home}\n`);
    return 0;
  },
  async cd() {
    return 0;
  },
  async export(args, _io, sh) {
    for (const a of args) {
      const at = a.indexOf('=');
      if (at > 0) sh.vars[a.slice(0, at)] = a.slice(at + 1);
    }
    return 0;
  },

  async echo(args, io) {
    let newline = true;
    if (args[0] === '-n') {
      newline = false;
      args = args.slice(1);
    }
    // dash's echo: backslash escapes are always interpreted; \c ends the output.
    let text = args.join(' ');
    const cut = text.indexOf('\\c');
    if (cut >= 0) {
      text = text.slice(0, cut);
      newline = false;
    }
    text = text.replace(/\\([nt\\])/g, (_m, c) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\'));
    io.out(newline ? `${text}\n` : text);
    return 0;
  },

  async printf(args, io) {
    if (!args.length) {
      io.err('printf: usage: printf format [arguments]\n');
      return 2;
    }
    const format = /** @type {string} */ (args[0]);
    const rest = args.slice(1);
    const unescape = (/** @type {string} */ s) => s.replace(/\\([nt\\])/g, (_m, c) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\'));
    let out = '';
    do {
      out += unescape(format).replace(/%([%sdib])/g, (_m, c) => {
        if (c === '%') return '%';
        const v = rest.shift() ?? '';
        if (c === 'd' || c === 'i') return String(Math.trunc(Number(v) || 0));
        return c === 'b' ? unescape(v) : v;
      });
    } while (rest.length && /%[sdib]/.test(format));
    io.out(out);
    return 0;
  },

  async sleep(args, io) {
    if (!args.length) {
      io.err("sleep: missing operand\nTry 'sleep --help' for more information.\n");
      return 1;
    }
    let ms = 0;
    for (const a of args) {
      const d = parseDuration(a);
      if (Number.isNaN(d)) {
        io.err(`sleep: invalid time interval '${a}'\nTry 'sleep --help' for more information.\n`);
        return 1;
      }
      ms += d;
    }
    await delay(ms, io.signal);
    return 0;
  },

  async command(args, io) {
    if (args[0] !== '-v' && args[0] !== '-V') {
      io.err(`sh: 1: command: only 'command -v NAME' ${NOT_SIMULATED}\n`);
      return 2;
    }
    let status = 0;
    for (const a of args.slice(1)) {
      if (BUILTINS.has(a)) io.out(`${a}\n`);
      else if (PATHS[a]) io.out(`${PATHS[a]}\n`);
      else status = 127;
    }
    return status;
  },

  async which(args, io) {
    let status = 0;
    for (const a of args.filter((x) => !x.startsWith('-'))) {
      if (PATHS[a]) io.out(`${PATHS[a]}\n`);
      else status = 1;
    }
    return status;
  },

  async hostname(args, io, sh) {
    const { hostname } = await sh.guest(io.signal);
    if (args.includes('-I') || args.includes('--all-ip-addresses')) io.out('10.20.0.102 172.17.0.1 \n');
    else if (args.includes('-i') || args.includes('--ip-address')) io.out('127.0.1.1\n');
    else io.out(`${hostname}\n`);
    return 0;
  },

  async uname(args, io, sh) {
    const { hostname } = await sh.guest(io.signal);
    const fields = /** @type {Record<string, string>} */ ({ s: 'Linux', n: hostname, r: KERNEL_RELEASE, v: KERNEL_VERSION, m: 'x86_64', p: 'unknown', i: 'unknown', o: 'GNU/Linux' });
    const long = /** @type {Record<string, string>} */ ({ '--all': 'a', '--kernel-name': 's', '--nodename': 'n', '--kernel-release': 'r', '--kernel-version': 'v', '--machine': 'm', '--operating-system': 'o' });
    /** @type {Set<string>} */
    const want = new Set();
    for (const a of args) {
      const flags = long[a] ? [long[a]] : shortFlags(a);
      if (!flags || flags.some((f) => !'asnrvmpio'.includes(f))) {
        io.err(`uname: extra operand '${a}'\nTry 'uname --help' for more information.\n`);
        return 1;
      }
      for (const f of flags) want.add(f);
    }
    if (!want.size) want.add('s');
    const order = want.has('a') ? ['s', 'n', 'r', 'v', 'm', 'o'] : ['s', 'n', 'r', 'v', 'm', 'p', 'i', 'o'].filter((f) => want.has(f));
    io.out(`${order.map((f) => fields[f]).join(' ')}\n`);
    return 0;
  },

  async date(args, io, sh) {
    const { now } = await sh.guest(io.signal);
    const opts = args.filter((a) => a !== '-u' && a !== '--utc' && a !== '--universal');
    const a = opts[0];
    if (a === undefined) io.out(`${fmt.date(now)}\n`);
    else if (a === '-R' || a === '--rfc-email') {
      const x = parts(now);
      io.out(`${DAYS[x.wd]}, ${p2(x.d)} ${MONTHS[x.mo]} ${x.y} ${x.hms} +0000\n`);
    } else if (a === '-I' || a === '--iso-8601' || a === '--iso-8601=date') io.out(`${fmt.iso(now).slice(0, 10)}\n`);
    else if (/^(-Is|-Iseconds|--iso-8601=seconds)$/.test(a)) io.out(`${fmt.iso(now)}\n`);
    else if (a.startsWith('+')) {
      const x = parts(now);
      const map = /** @type {Record<string, string>} */ ({
        Y: String(x.y), m: p2(x.mo + 1), d: p2(x.d), e: String(x.d).padStart(2), H: x.hms.slice(0, 2), M: x.hms.slice(3, 5), S: x.hms.slice(6, 8),
        s: String(Math.floor(now / 1000)), F: fmt.iso(now).slice(0, 10), T: x.hms, Z: 'UTC', z: '+0000', a: /** @type {string} */ (DAYS[x.wd]),
        b: /** @type {string} */ (MONTHS[x.mo]), N: String(x.ms * 1_000_000).padStart(9, '0'), '%': '%', n: '\n',
      });
      io.out(`${a.slice(1).replace(/%(.)/g, (m, c) => map[c] ?? m)}\n`);
    } else {
      io.err(`date: invalid date '${a}'\n`);
      return 1;
    }
    return 0;
  },

  async id(args, io) {
    const u = io.root ? { name: 'root', uid: 0 } : ACCOUNT;
    const groups = io.root ? '0(root)' : `${u.uid}(${u.name}),4(adm),100(users)`;
    const flags = args.flatMap((a) => shortFlags(a) ?? [a]);
    if (flags.includes('u')) io.out(`${flags.includes('n') ? u.name : u.uid}\n`);
    else if (flags.includes('g')) io.out(`${flags.includes('n') ? u.name : u.uid}\n`);
    else if (flags.includes('G')) io.out(`${io.root ? (flags.includes('n') ? 'root' : '0') : flags.includes('n') ? `${u.name} adm users` : `${u.uid} 4 100`}\n`);
    else io.out(`uid=${u.uid}(${u.name}) gid=${u.uid}(${u.name}) groups=${groups}\n`);
    return 0;
  },

  async whoami(_args, io) {
    io.out(`${io.root ? 'root' : ACCOUNT.name}\n`);
    return 0;
  },

  async uptime(args, io, sh) {
    const { live } = await sh.guest(io.signal);
    if (args.includes('-p') || args.includes('--pretty')) {
      const mins = Math.floor(live.uptimeMs() / 60_000);
      const d = Math.floor(mins / 1440);
      const h = Math.floor((mins % 1440) / 60);
      const m = mins % 60;
      const partsOut = [d && `${d} day${d > 1 ? 's' : ''}`, h && `${h} hour${h > 1 ? 's' : ''}`, `${m} minute${m === 1 ? '' : 's'}`].filter(Boolean);
      io.out(`up ${partsOut.join(', ')}\n`);
    } else if (args.includes('-s') || args.includes('--since')) {
      io.out(`${fmt.iso(live.b.bootAt).slice(0, 10)} ${fmt.hms(live.b.bootAt)}\n`);
    } else io.out(`${uptimeLine(live)}\n`);
    return 0;
  },

  async who(_args, io, sh) {
    await sh.guest(io.signal);
    return 0; // nobody has a terminal session: the breakglass logs in without a tty
  },

  async users(_args, io, sh) {
    await sh.guest(io.signal);
    io.out('\n');
    return 0;
  },

  async w(_args, io, sh) {
    const { live } = await sh.guest(io.signal);
    io.out(`${uptimeLine(live)}\nUSER     TTY      FROM             LOGIN@   IDLE   JCPU   PCPU WHAT\n`);
    return 0;
  },

  async cat(args, io, sh) {
    const files = args.filter((a) => a === '-' || !a.startsWith('-'));
    const { texts, failed } = await inputs('cat', files, io, sh);
    for (const t of texts) io.out(t.text);
    return failed ? 1 : 0;
  },

  async head(args, io, sh) {
    return headTail('head', args, io, sh);
  },
  async tail(args, io, sh) {
    return headTail('tail', args, io, sh);
  },

  async grep(args, io, sh) {
    const o = { ignoreCase: false, invert: false, count: false, extended: false, fixed: false, number: false, quiet: false, word: false, only: false };
    /** @type {string | undefined} */
    let pattern;
    const files = [];
    for (let i = 0; i < args.length; i++) {
      const a = /** @type {string} */ (args[i]);
      if (a === '-e' || a === '--regexp') pattern = args[++i];
      else if (a.startsWith('--regexp=')) pattern = a.slice(9);
      else if (a === '--') files.push(...args.slice(i + 1 + (pattern === undefined ? 0 : 0)));
      else if (/^-[A-Za-z]+$/.test(a)) {
        for (const f of a.slice(1)) {
          if (f === 'i') o.ignoreCase = true;
          else if (f === 'v') o.invert = true;
          else if (f === 'c') o.count = true;
          else if (f === 'E') o.extended = true;
          else if (f === 'F') o.fixed = true;
          else if (f === 'n') o.number = true;
          else if (f === 'q') o.quiet = true;
          else if (f === 'w') o.word = true;
          else if (f === 'o') o.only = true;
          else if (f === 'a' || f === 's' || f === 'h' || f === 'H') continue;
          else {
            io.err(`grep: invalid option -- '${f}'\nUsage: grep [OPTION]... PATTERNS [FILE]...\n`);
            return 2;
          }
        }
      } else if (a === '--color=auto' || a === '--color=never' || a === '--color') continue;
      else if (pattern === undefined) pattern = a;
      else files.push(a);
    }
    if (pattern === undefined) {
      io.err("Usage: grep [OPTION]... PATTERNS [FILE]...\nTry 'grep --help' for more information.\n");
      return 2;
    }
    let re;
    try {
      re = regex(pattern, o);
    } catch {
      io.err(`grep: Invalid regular expression\n`);
      return 2;
    }
    const { texts, failed } = await inputs('grep', files, io, sh);
    let matched = 0;
    for (const { name, text } of texts) {
      let count = 0;
      lines(text).forEach((line, n) => {
        if (re.test(line) === o.invert) return;
        count++;
        if (o.quiet || o.count) return;
        const prefix = `${texts.length > 1 ? `${name}:` : ''}${o.number ? `${n + 1}:` : ''}`;
        if (o.only && !o.invert) {
          for (const m of line.matchAll(new RegExp(re.source, `${re.flags}g`))) if (m[0]) io.out(`${prefix}${m[0]}\n`);
        } else io.out(`${prefix}${line}\n`);
      });
      if (o.count && !o.quiet) io.out(`${texts.length > 1 ? `${name}:` : ''}${count}\n`);
      matched += count;
    }
    if (failed) return 2;
    return matched ? 0 : 1;
  },

  async wc(args, io, sh) {
    const flags = new Set(args.flatMap((a) => shortFlags(a) ?? []));
    const files = args.filter((a) => !a.startsWith('-'));
    const { texts, failed } = await inputs('wc', files, io, sh);
    for (const { name, text } of texts) {
      const counts = [];
      const all = !flags.has('l') && !flags.has('w') && !flags.has('c') && !flags.has('m');
      if (all || flags.has('l')) counts.push((text.match(/\n/g) ?? []).length);
      if (all || flags.has('w')) counts.push(text.split(/\s+/).filter(Boolean).length);
      if (all || flags.has('c') || flags.has('m')) counts.push(Buffer.byteLength(text));
      const width = counts.length > 1 || files.length ? 7 : 0;
      io.out(`${counts.map((c) => String(c).padStart(width)).join(' ')}${files.length ? ` ${name}` : ''}\n`);
    }
    return failed ? 1 : 0;
  },

  async sort(args, io, sh) {
    const flags = new Set(args.flatMap((a) => shortFlags(a) ?? []));
    const { texts, failed } = await inputs('sort', args.filter((a) => !a.startsWith('-')), io, sh);
    let ls = texts.flatMap((t) => lines(t.text));
    ls.sort(flags.has('n') ? (a, b) => parseFloat(a) - parseFloat(b) || (a < b ? -1 : a > b ? 1 : 0) : (a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (flags.has('r')) ls.reverse();
    if (flags.has('u')) ls = ls.filter((l, i) => i === 0 || l !== ls[i - 1]);
    io.out(joinLines(ls));
    return failed ? 1 : 0;
  },

  async uniq(args, io, sh) {
    const flags = new Set(args.flatMap((a) => shortFlags(a) ?? []));
    const { texts, failed } = await inputs('uniq', args.filter((a) => !a.startsWith('-')), io, sh);
    /** @type {[string, number][]} */
    const runs = [];
    for (const l of texts.flatMap((t) => lines(t.text))) {
      const last = runs.at(-1);
      if (last && last[0] === l) last[1]++;
      else runs.push([l, 1]);
    }
    io.out(joinLines(runs.map(([l, n]) => (flags.has('c') ? `${String(n).padStart(7)} ${l}` : l))));
    return failed ? 1 : 0;
  },

  async timeout(args, io, sh) {
    let i = 0;
    for (; i < args.length; i++) {
      const a = /** @type {string} */ (args[i]);
      if (a === '-k' || a === '-s' || a === '--kill-after' || a === '--signal') i++;
      else if (!a.startsWith('-') || a === '-') break;
    }
    const durationArg = args[i];
    const rest = args.slice(i + 1);
    if (durationArg === undefined || !rest.length) {
      io.err("timeout: missing operand\nTry 'timeout --help' for more information.\n");
      return 125;
    }
    const ms = parseDuration(durationArg);
    if (Number.isNaN(ms)) {
      io.err(`timeout: invalid time interval '${durationArg}'\nTry 'timeout --help' for more information.\n`);
      return 125;
    }
    const name = /** @type {string} */ (rest[0]);
    if (!Object.hasOwn(COMMANDS, name) && !Object.values(PATHS).includes(name)) {
      await sh.guest(io.signal);
      io.err(`timeout: failed to run command '${name}': No such file or directory\n`);
      return 127;
    }
    const ctl = new AbortController();
    const onParent = () => ctl.abort();
    io.signal.addEventListener('abort', onParent, { once: true });
    const timer = ms > 0 ? setTimeout(() => ctl.abort(), ms) : null;
    try {
      return await sh.runArgv(rest, { ...io, signal: ctl.signal });
    } catch (error) {
      if (error instanceof Aborted && ctl.signal.aborted && !io.signal.aborted) return 124;
      throw error;
    } finally {
      if (timer) clearTimeout(timer);
      io.signal.removeEventListener('abort', onParent);
    }
  },

  async sudo(args, io, sh) {
    let i = 0;
    for (; i < args.length; i++) {
      const a = /** @type {string} */ (args[i]);
      if (a === '-u') {
        if (args[i + 1] !== 'root') {
          io.err(`sudo: ${NOT_SIMULATED}: running as a user other than root\n`);
          return 1;
        }
        i++;
      } else if (a === '--') {
        i++;
        break;
      } else if (/^-[nEHSk]+$/.test(a) || a === '--non-interactive' || a === '--preserve-env') continue;
      else if (a.startsWith('-')) {
        io.err(`sudo: option ${a} ${NOT_SIMULATED}\n`);
        return 1;
      } else break;
    }
    const rest = args.slice(i);
    if (!rest.length) {
      io.err('usage: sudo -h | -K | -k | -V\nusage: sudo [-n] [-u user] command [arg ...]\n');
      return 1;
    }
    const name = /** @type {string} */ (rest[0]);
    await sh.guest(io.signal);
    const known = Object.hasOwn(COMMANDS, name) || Object.values(PATHS).includes(name);
    if (!known || BUILTINS.has(name)) {
      if (!known || ['cd', 'export', 'exit', 'command'].includes(name)) {
        io.err(`sudo: ${name}: command not found\n`);
        return 1;
      }
    }
    const cmdPath = name.includes('/') ? name : (PATHS[name] ?? `/usr/bin/${name}`);
    sh.log([{ prio: 5, ident: 'sudo', pid: sh.pid + 3, msg: `${ACCOUNT.name} : PWD=${ACCOUNT.home} ; USER=root ; COMMAND=${[cmdPath, ...rest.slice(1)].join(' ')}` }]);
    sh.rootSeen = true;
    return sh.runArgv(rest, { ...io, root: true });
  },

  async sh(args, io, sh) {
    return shellC('sh', args, io, sh);
  },
  async bash(args, io, sh) {
    return shellC('bash', args, io, sh);
  },

  async dmesg(args, io, sh) {
    let ctime = false;
    let follow = false;
    let decode = false;
    /** @type {Set<number> | null} */
    let levels = null;
    for (let i = 0; i < args.length; i++) {
      const a = /** @type {string} */ (args[i]);
      let value = null;
      if (a === '-l' || a === '--level') value = args[++i] ?? '';
      else if (a.startsWith('--level=')) value = a.slice(8);
      if (value !== null) {
        levels = new Set();
        for (const l of value.split(',')) {
          const n = level(l);
          if (n < 0) {
            io.err(`dmesg: unknown level '${l}'\n`);
            return 1;
          }
          levels.add(n);
        }
        continue;
      }
      if (a === '--ctime') ctime = true;
      else if (a === '--follow') follow = true;
      else if (a === '--decode') decode = true;
      else if (['--kernel', '--color=never', '--color=always', '--nopager', '--human', '--notime'].includes(a)) continue;
      else if (/^-[A-Za-z]+$/.test(a)) {
        for (const f of a.slice(1)) {
          if (f === 'T') ctime = true;
          else if (f === 'w' || f === 'W') follow = true;
          else if (f === 'x') decode = true;
          else if ('kLHP'.includes(f)) continue;
          else {
            io.err(`dmesg: invalid option -- '${f}'\nTry 'dmesg --help' for more information.\n`);
            return 1;
          }
        }
      } else {
        io.err(`dmesg: unrecognized option '${a}'\nTry 'dmesg --help' for more information.\n`);
        return 1;
      }
    }
    const { live, now } = await sh.guest(io.signal);
    const entries = live.entries().filter((e) => e.kernel && e.t <= now && (!levels || levels.has(e.prio))).sort(byTime);
    for (const e of entries) {
      const rel = Math.max(0, e.t - live.b.bootAt);
      const stamp = ctime ? `[${fmt.ctime(e.t)}]` : `[${String(Math.floor(rel / 1000)).padStart(5)}.${String((rel % 1000) * 1000).padStart(6, '0')}]`;
      const prefix = decode ? `kern  :${(LEVELS[e.prio] ?? 'info').replace('warning', 'warn').padEnd(6)}: ` : '';
      io.out(`${prefix}${stamp} ${e.msg}\n`);
    }
    if (follow) await hang(io.signal);
    return 0;
  },

  async journalctl(args, io, sh) {
    return journalctl(args, io, sh);
  },
  async systemctl(args, io, sh) {
    return systemctl(args, io, sh);
  },
  async ps(args, io, sh) {
    return ps(args, io, sh);
  },
  async top(args, io, sh) {
    return top(args, io, sh);
  },

  async free(args, io, sh) {
    /** @type {(kb: number) => string} */
    let show = (kb) => String(kb);
    let wide = false;
    let total = false;
    for (const a of args) {
      if (a === '-m' || a === '--mebi') show = (kb) => String(Math.round(kb / 1024));
      else if (a === '-g' || a === '--gibi') show = (kb) => String(Math.round(kb / 1024 / 1024));
      else if (a === '-k' || a === '--kibi') show = (kb) => String(kb);
      else if (a === '-b' || a === '--bytes') show = (kb) => String(kb * 1024);
      else if (a === '-h' || a === '--human') show = (kb) => human(kb, 'i');
      else if (a === '-w' || a === '--wide') wide = true;
      else if (a === '-t' || a === '--total') total = true;
      else {
        io.err(`free: invalid option -- '${a.replace(/^-+/, '')}'\n`);
        return 1;
      }
    }
    const { live } = await sh.guest(io.signal);
    const m = live.memory(sessionInfo(sh, io));
    const head = wide ? ['', 'total', 'used', 'free', 'shared', 'buffers', 'cache', 'available'] : ['', 'total', 'used', 'free', 'shared', 'buff/cache', 'available'];
    const mem = wide ? [m.total, m.used, m.free, m.shared, m.buffers, m.cache, m.available] : [m.total, m.used, m.free, m.shared, m.buffers + m.cache, m.available];
    const rows = [['Mem:', ...mem.map(show)], ['Swap:', show(0), show(0), show(0)]];
    if (total) rows.push(['Total:', show(m.total), show(m.used), show(m.free)]);
    io.out(`${head.map((h, i) => (i === 0 ? ''.padEnd(7) : h.padStart(11))).join(' ')}\n`);
    for (const r of rows) io.out(`${r.map((c, i) => (i === 0 ? c.padEnd(7) : c.padStart(11))).join(' ')}\n`);
    return 0;
  },

  async df(args, io, sh) {
    let mode = 'k';
    let showType = false;
    /** @type {string[]} */
    const exclude = [];
    const paths = [];
    for (let i = 0; i < args.length; i++) {
      const a = /** @type {string} */ (args[i]);
      if (a === '-x' || a === '--exclude-type') exclude.push(args[++i] ?? '');
      else if (a.startsWith('--exclude-type=')) exclude.push(a.slice(15));
      else if (a === '--human-readable') mode = 'h';
      else if (/^-[A-Za-z]+$/.test(a)) {
        for (const f of a.slice(1)) {
          if (f === 'h' || f === 'H') mode = 'h';
          else if (f === 'i') mode = 'i';
          else if (f === 'T') showType = true;
          else if (f === 'k' || f === 'l' || f === 'P' || f === 'a') continue;
          else {
            io.err(`df: invalid option -- '${f}'\nTry 'df --help' for more information.\n`);
            return 1;
          }
        }
      } else paths.push(a);
    }
    const { live } = await sh.guest(io.signal);
    const totalKb = live.memKb - 452_164;
    const rootKb = Math.round((live.diskGiB * 1024 * 1024 - 1_300_000) * 0.984);
    const rootUsed = Math.round(Math.min(rootKb * 0.36, 74_448_000));
    const tmp = Math.round(totalKb / 10);
    const fs_ = /** @type {[string, string, number, number, string][]} */ ([
      ['udev', 'devtmpfs', Math.round(totalKb / 2), 0, '/dev'],
      ['tmpfs', 'tmpfs', tmp, 1_104, '/run'],
      ['/dev/sda1', 'ext4', rootKb, rootUsed, '/'],
      ['tmpfs', 'tmpfs', Math.round(totalKb / 2), 0, '/dev/shm'],
      ['tmpfs', 'tmpfs', 5120, 0, '/run/lock'],
      ['/dev/sda15', 'vfat', 126_678, 11_840, '/boot/efi'],
      ['tmpfs', 'tmpfs', tmp, 0, `/run/user/${ACCOUNT.uid}`],
    ]).filter((f) => !exclude.includes(f[1]));
    const chosen = paths.length
      ? paths.map((p) => [...fs_].sort((a, b) => b[4].length - a[4].length).find((f) => p === f[4] || p.startsWith(f[4] === '/' ? '/' : `${f[4]}/`)) ?? fs_[2])
      : fs_;
    const header = mode === 'i' ? ['Filesystem', 'Inodes', 'IUsed', 'IFree', 'IUse%', 'Mounted on'] : ['Filesystem', mode === 'h' ? 'Size' : '1K-blocks', 'Used', mode === 'h' ? 'Avail' : 'Available', 'Use%', 'Mounted on'];
    if (showType) header.splice(1, 0, 'Type');
    const rows = [header];
    for (const f of chosen) {
      if (!f) continue;
      const [name, type, size, used, mnt] = f;
      const avail = Math.max(0, size - used - (type === 'ext4' ? Math.round(size * 0.05) : 0));
      const pct = size ? `${Math.ceil((used / (used + avail || 1)) * 100)}%` : '-';
      let row;
      if (mode === 'i') {
        const inodes = Math.round(size / 16);
        const iused = Math.round(used / 40) + 300;
        row = [name, String(inodes), String(iused), String(inodes - iused), `${Math.ceil((iused / inodes) * 100)}%`, mnt];
      } else if (mode === 'h') row = [name, human(size), human(used), human(avail), pct, mnt];
      else row = [name, String(size), String(used), String(avail), pct, mnt];
      if (showType) row.splice(1, 0, type);
      rows.push(row);
    }
    const left = header.map((_h, i) => i === 0 || (showType && i === 1) || i === header.length - 1);
    io.out(table(rows, left));
    return 0;
  },

  async vmstat(args, io, sh) {
    const nums = args.filter((a) => /^\d+$/.test(a)).map(Number);
    const bad = args.find((a) => !/^\d+$/.test(a) && !['-w', '--wide', '-S', 'M', 'K', 'k', 'm', '-a', '-t'].includes(a));
    if (bad) {
      io.err(`vmstat: invalid option -- '${bad.replace(/^-+/, '')}'\n`);
      return 2;
    }
    const delayS = nums[0];
    const count = nums[1] ?? (delayS === undefined ? 1 : Infinity);
    io.out('procs -----------memory---------- ---swap-- -----io---- -system-- ------cpu-----\n');
    io.out(' r  b   swpd   free   buff  cache   si   so    bi    bo   in   cs us sy id wa st\n');
    for (let n = 0; n < count; n++) {
      if (n > 0) await delay((delayS ?? 1) * 1000, io.signal);
      const { live } = await sh.guest(io.signal);
      const m = live.memory(sessionInfo(sh, io));
      const blocked = live.blockedAt(live.now);
      const first = n === 0;
      const [us, sy, id, wa] = blocked ? [0, 1, 0, 99] : first ? [2, 1, 97, 0] : [1, 0, 99, 0];
      const io_ = blocked ? [0, 0] : first ? [61, 240] : [0, 36];
      const row = [Math.max(1, Math.round(live.runnableAt(live.now) - blocked)), blocked, 0, m.free, m.buffers, m.cache, 0, 0, io_[0], io_[1], first ? 211 : 140, first ? 402 : 266, us, sy, id, wa, 0];
      const widths = [2, 2, 6, 6, 6, 6, 4, 4, 5, 5, 4, 4, 2, 2, 2, 2, 2];
      io.out(`${row.map((v, i) => String(v).padStart(/** @type {number} */ (widths[i]))).join(' ')}\n`);
    }
    return 0;
  },
};

/** head and tail: -n N, -N, --lines=N, tail -n +N, tail -f. */
async function headTail(/** @type {'head' | 'tail'} */ cmd, /** @type {string[]} */ args, /** @type {Io} */ io, /** @type {Session} */ sh) {
  let n = 10;
  let fromStart = false;
  let follow = false;
  const files = [];
  for (let i = 0; i < args.length; i++) {
    const a = /** @type {string} */ (args[i]);
    let v = null;
    if (a === '-n' || a === '--lines') v = args[++i] ?? '';
    else if (a.startsWith('--lines=')) v = a.slice(8);
    else if (/^-n.+/.test(a)) v = a.slice(2);
    else if (/^-\d+$/.test(a)) v = a.slice(1);
    else if (a === '-f' || a === '-F' || a === '--follow') follow = cmd === 'tail';
    else if (a === '-q' || a === '-v') continue;
    else files.push(a);
    if (v !== null) {
      const m = /^([+-]?)(\d+)$/.exec(v);
      if (!m) {
        io.err(`${cmd}: invalid number of lines: '${v}'\n`);
        return 1;
      }
      n = Number(m[2]);
      fromStart = m[1] === '+';
    }
  }
  const { texts, failed } = await inputs(cmd, files, io, sh);
  for (const { name, text } of texts) {
    if (texts.length > 1) io.out(`==> ${name} <==\n`);
    const ls = lines(text);
    const picked = cmd === 'head' ? ls.slice(0, n) : fromStart ? ls.slice(Math.max(0, n - 1)) : n === 0 ? [] : ls.slice(-n);
    io.out(joinLines(picked));
  }
  if (follow) await hang(io.signal);
  return failed ? 1 : 0;
}

/** sh -c 'command' (and bash -c): a nested command line. */
async function shellC(/** @type {string} */ name, /** @type {string[]} */ args, /** @type {Io} */ io, /** @type {Session} */ sh) {
  const at = args.indexOf('-c');
  const script = at >= 0 ? args[at + 1] : undefined;
  if (script === undefined) {
    io.err(`${name}: ${at >= 0 ? '0: -c requires an argument' : `interactive shells and scripts ${NOT_SIMULATED} (use ${name} -c 'command')`}\n`);
    return 2;
  }
  try {
    return await sh.runLine(script, io);
  } catch (error) {
    if (error instanceof ExitRequest) return error.code;
    throw error;
  }
}

// ---- journalctl --------------------------------------------------------------------------------

/** Entries of one boot that a reader sees now: all of the current boot, what reached the disk of earlier ones. */
function journalOf(/** @type {GuestBoot} */ g, /** @type {boolean} */ current) {
  const until = current ? g.now : Math.min(g.now, g.persistedUntil() - 1);
  return g.entries().filter((e) => e.t <= until).sort(byTime);
}

function journalLine(/** @type {LogEntry} */ e, /** @type {string} */ host, /** @type {string} */ output, /** @type {boolean} */ noHost) {
  if (output === 'cat') return e.msg;
  const stamp = output === 'short-iso' ? fmt.iso(e.t) : output === 'short-precise' ? fmt.precise(e.t) : output === 'short-unix' ? (e.t / 1000).toFixed(6) : fmt.journal(e.t);
  const who = e.kernel ? 'kernel' : `${e.ident}${e.pid ? `[${e.pid}]` : ''}`;
  return `${stamp}${noHost ? '' : ` ${host}`} ${who}: ${e.msg}`;
}

async function journalctl(/** @type {string[]} */ args, /** @type {Io} */ io, /** @type {Session} */ sh) {
  /** @type {string | null} */
  let bootSel = null;
  let kernelOnly = false;
  /** @type {string[]} */
  const units = [];
  /** @type {string[]} */
  const idents = [];
  /** @type {[number, number] | null} */
  let prio = null;
  /** @type {number | null} */
  let lastN = null;
  let reverse = false;
  let follow = false;
  let output = 'short';
  let noHost = false;
  let listBoots = false;
  /** @type {string | null} */
  let grep = null;
  /** @type {string | null} */
  let since = null;
  /** @type {string | null} */
  let until = null;
  const fail = (/** @type {string} */ msg) => {
    io.err(`${msg}\n`);
    return 1;
  };
  for (let i = 0; i < args.length; i++) {
    let a = /** @type {string} */ (args[i]);
    /** @type {string | undefined} */
    let inline;
    if (a.startsWith('--') && a.includes('=')) {
      inline = a.slice(a.indexOf('=') + 1);
      a = a.slice(0, a.indexOf('='));
    } else if (/^-[bunptogSUN][^-]/.test(a) && !/^-[A-Za-z]{2,}$/.test(a.replace(/\d+$/, '')) ) {
      // -n20, -b-1, -uunit: a short option with its value attached
      inline = a.slice(2);
      a = a.slice(0, 2);
    }
    const value = () => inline ?? args[++i];
    const optionalNumber = () => {
      if (inline !== undefined) return inline;
      const next = args[i + 1];
      if (next !== undefined && /^[+-]?\d+$/.test(next)) return args[++i];
      return undefined;
    };
    switch (a) {
      case '-b':
      case '--boot': {
        const next = inline ?? args[i + 1];
        if (inline === undefined && next !== undefined && (/^[+-]?\d+$/.test(next) || /^[0-9a-f]{32}$/.test(next) || next === 'all')) i++;
        bootSel = inline ?? (next !== undefined && (/^[+-]?\d+$/.test(next) || /^[0-9a-f]{32}$/.test(next) || next === 'all') ? next : '0');
        break;
      }
      case '-k':
      case '--dmesg':
        kernelOnly = true;
        if (bootSel === null) bootSel = '0';
        break;
      case '-u':
      case '--unit':
        units.push(value() ?? '');
        break;
      case '-t':
      case '--identifier':
        idents.push(value() ?? '');
        break;
      case '-p':
      case '--priority': {
        const v = value() ?? '';
        const [lo, hi] = v.includes('..') ? v.split('..') : ['0', v];
        const from = level(lo || '0');
        const to = level(hi || '7');
        if (from < 0 || to < 0) return fail(`Unknown log level ${v}`);
        prio = [Math.min(from, to), Math.max(from, to)];
        break;
      }
      case '-n':
      case '--lines': {
        const v = optionalNumber();
        lastN = v === undefined ? 10 : Math.abs(Number(v));
        break;
      }
      case '-e':
      case '--pager-end':
        if (lastN === null) lastN = 1000;
        break;
      case '-r':
      case '--reverse':
        reverse = true;
        break;
      case '-f':
      case '--follow':
        follow = true;
        if (lastN === null) lastN = 10;
        break;
      case '-o':
      case '--output':
        output = value() ?? 'short';
        break;
      case '-g':
      case '--grep':
        grep = value() ?? '';
        break;
      case '-S':
      case '--since':
        since = value() ?? '';
        break;
      case '-U':
      case '--until':
        until = value() ?? '';
        break;
      case '--no-hostname':
        noHost = true;
        break;
      case '--list-boots':
        listBoots = true;
        break;
      case '--no-pager':
      case '--no-tail':
      case '-x':
      case '--catalog':
      case '-q':
      case '--quiet':
      case '-a':
      case '--all':
      case '-l':
      case '--full':
      case '--utc':
      case '-m':
      case '--merge':
      case '--system':
        break;
      default:
        if (/^-[A-Za-z]{2,}$/.test(a)) {
          // clustered flags such as -xe, -kb, -fu (value-less ones only)
          const flags = a.slice(1).split('');
          if (flags.every((f) => 'xeqaklrfm'.includes(f))) {
            for (const f of flags) {
              if (f === 'e' && lastN === null) lastN = 1000;
              if (f === 'k') {
                kernelOnly = true;
                if (bootSel === null) bootSel = '0';
              }
              if (f === 'r') reverse = true;
              if (f === 'f') {
                follow = true;
                if (lastN === null) lastN = 10;
              }
            }
            break;
          }
          const last = flags.pop();
          if (flags.every((f) => 'xeqaklrfm'.includes(f)) && last && 'bupnt'.includes(last)) {
            args.splice(i + 1, 0, `-${last}`);
            for (const f of flags) if (f === 'k') kernelOnly = true;
            if (flags.includes('e') && lastN === null) lastN = 1000;
            if (flags.includes('r')) reverse = true;
            break;
          }
        }
        if (a.startsWith('-')) return fail(`journalctl: unrecognized option '${a}'`);
        if (/^_?[A-Z_]+=/.test(a)) return fail(`journalctl: field matches (${a}) ${NOT_SIMULATED}; use -u, -t, -k or -p`);
        return fail(`journalctl: ${a}: file arguments ${NOT_SIMULATED}`);
    }
  }
  const w = await sh.guest(io.signal);
  const { live, boots, now, hostname } = w;
  const known = boots.filter((g) => journalOf(g, g === live).length > 0 || g === live);
  if (listBoots) {
    const rows = [['IDX', 'BOOT ID', 'FIRST ENTRY', 'LAST ENTRY']];
    known.forEach((g, idx) => {
      const es = journalOf(g, g === live);
      const first = es[0]?.t ?? g.b.bootAt;
      const last = es.at(-1)?.t ?? first;
      rows.push([String(idx - (known.length - 1)), g.b.id, fmt.systemd(first), fmt.systemd(last)]);
    });
    io.out(table(rows, [false, true, true, true]));
    return 0;
  }
  /** @type {GuestBoot[]} */
  let chosen;
  if (bootSel === null || bootSel === 'all') chosen = known;
  else if (/^[0-9a-f]{32}$/.test(bootSel)) {
    const g = known.find((x) => x.b.id === bootSel);
    if (!g) return fail(`Data from the specified boot (${bootSel}) is not available: No such boot ID in journal`);
    chosen = [g];
  } else {
    const n = Number(bootSel);
    const g = n <= 0 ? known[known.length - 1 + n] : known[n - 1];
    if (!g) return fail(`Data from the specified boot (${bootSel}) is not available: No such boot ID in journal`);
    chosen = [g];
  }
  const sinceT = since === null ? -Infinity : parseWhen(since, now);
  const untilT = until === null ? Infinity : parseWhen(until, now);
  if (Number.isNaN(sinceT)) return fail(`Failed to parse timestamp: ${since}`);
  if (Number.isNaN(untilT)) return fail(`Failed to parse timestamp: ${until}`);
  const unitNames = units.map((u) => findUnit(u)?.name ?? (u.includes('.') ? u : `${u}.service`));
  let re = null;
  if (grep !== null) {
    try {
      re = new RegExp(grep, grep === grep.toLowerCase() ? 'i' : '');
    } catch {
      return fail(`Bad pattern "${grep}"`);
    }
  }
  /** @type {{ e: LogEntry, boot: GuestBoot }[]} */
  let picked = [];
  for (const g of chosen) {
    for (const e of journalOf(g, g === live)) {
      if (kernelOnly && !e.kernel) continue;
      if (unitNames.length && !(e.unit && unitNames.includes(e.unit))) continue;
      if (idents.length && !idents.includes(e.kernel ? 'kernel' : e.ident)) continue;
      if (prio && (e.prio < prio[0] || e.prio > prio[1])) continue;
      if (e.t < sinceT || e.t > untilT) continue;
      if (re && !re.test(e.msg)) continue;
      picked.push({ e, boot: g });
    }
  }
  if (lastN !== null) picked = lastN === 0 ? [] : picked.slice(-lastN);
  if (reverse) picked.reverse();
  if (!picked.length) io.out('-- No entries --\n');
  let prevBoot = picked[0]?.boot;
  for (const { e, boot } of picked) {
    if (boot !== prevBoot && output !== 'cat') io.out(`-- Boot ${boot.b.id} --\n`);
    prevBoot = boot;
    io.out(`${journalLine(e, hostname, output, noHost)}\n`);
  }
  if (follow) await hang(io.signal);
  return 0;
}

// ---- systemctl ---------------------------------------------------------------------------------

const LEGEND = [
  'LOAD   = Reflects whether the unit definition was properly loaded.',
  'ACTIVE = The high-level unit activation state, i.e. generalization of SUB.',
  'SUB    = The low-level unit activation state, values depend on unit type.',
];

function unitRow(/** @type {LiveGuest} */ g, /** @type {UnitDef} */ def) {
  const s = g.unitState(def.name);
  const sub = s.state === 'active' ? 'running' : s.state === 'failed' ? 'failed' : 'dead';
  return { def, s, cells: [`${s.state === 'failed' ? '●' : ' '} ${def.name}`, 'loaded', s.state, sub, def.desc] };
}

async function systemctl(/** @type {string[]} */ args, /** @type {Io} */ io, /** @type {Session} */ sh) {
  const positional = [];
  let failedOnly = false;
  let all = false;
  let legend = true;
  let statusLines = 10;
  /** @type {string | null} */
  let stateFilter = null;
  for (let i = 0; i < args.length; i++) {
    const a = /** @type {string} */ (args[i]);
    if (a === '--failed') failedOnly = true;
    else if (a === '--all' || a === '-a') all = true;
    else if (a === '--no-legend') legend = false;
    else if (a === '-n' || a === '--lines') statusLines = Number(args[++i] ?? 10);
    else if (a.startsWith('--lines=')) statusLines = Number(a.slice(8));
    else if (a.startsWith('--state=')) stateFilter = a.slice(8);
    else if (a.startsWith('--type=') || a === '-t') {
      if (a === '-t') i++;
    } else if (['--no-pager', '-l', '--full', '--plain', '-q', '--quiet', '--no-ask-password', '--system'].includes(a)) continue;
    else if (a.startsWith('-')) {
      io.err(`systemctl: unrecognized option '${a}'\n`);
      return 1;
    } else positional.push(a);
  }
  const verb = positional[0] ?? 'list-units';
  const names = positional.slice(1);
  const { live, now, hostname } = await sh.guest(io.signal);

  if (verb === 'list-units' || (verb === 'list-units' && failedOnly)) {
    const wanted = failedOnly || stateFilter === 'failed' ? 'failed' : stateFilter;
    const rows = UNITS.map((def) => unitRow(live, def)).filter((r) => (wanted ? r.s.state === wanted : all || r.s.state !== 'inactive'));
    if (!rows.length) {
      io.out(legend ? '  UNIT LOAD ACTIVE SUB DESCRIPTION\n0 loaded units listed.\n' : '');
      return 0;
    }
    const text = table([['  UNIT', 'LOAD', 'ACTIVE', 'SUB', 'DESCRIPTION'], ...rows.map((r) => r.cells)], [true, true, true, true, true]);
    const body = legend ? text : joinLines(lines(text).slice(1));
    io.out(body);
    if (legend) {
      io.out(`\n${LEGEND.join('\n')}\n${rows.length} loaded units listed.${wanted || all ? '' : ' Pass --all to see loaded but inactive units, too.'}\n`);
      if (!wanted) io.out("To show all installed unit files use 'systemctl list-unit-files'.\n");
    }
    return 0;
  }

  if (verb === 'status' && !names.length) {
    const failed = UNITS.filter((d) => live.unitState(d.name).state === 'failed').length;
    /** @type {string[]} */
    const tree = [];
    const active = UNITS.filter((d) => live.unitState(d.name).pid !== null);
    active.forEach((d, i) => {
      const lastUnit = i === active.length - 1;
      const s = live.unitState(d.name);
      tree.push(`             ${lastUnit ? '└─' : '├─'}${d.name}`);
      tree.push(`             ${lastUnit ? '  ' : '│ '}└─${s.pid} ${d.procs[0]?.[0] ?? ''}`);
    });
    io.out(
      [
        `${failed ? '×' : '●'} ${hostname}`,
        `    State: ${failed ? 'degraded' : 'running'}`,
        '    Units: 287 loaded (incl. loaded aliases)',
        '     Jobs: 0 queued',
        `   Failed: ${failed} units`,
        `    Since: ${fmt.systemd(live.b.bootAt)}; ${fmt.ago(now - live.b.bootAt)}`,
        `  systemd: ${SYSTEMD_VERSION}`,
        '   CGroup: /',
        '           ├─init.scope',
        '           │ └─1 /sbin/init',
        '           └─system.slice',
        ...tree,
        '',
      ].join('\n'),
    );
    return 0;
  }

  if (verb === 'status') {
    let status = 0;
    let first = true;
    for (const n of names) {
      const def = findUnit(n);
      if (!def) {
        io.err(`Unit ${n.includes('.') ? n : `${n}.service`} could not be found.\n`);
        status = 4;
        continue;
      }
      if (!first) io.out('\n');
      first = false;
      const s = live.unitState(def.name);
      const dot = s.state === 'active' ? '●' : s.state === 'failed' ? '×' : '○';
      const out = [`${dot} ${def.name} - ${def.desc}`, `     Loaded: loaded (${def.path ?? `/lib/systemd/system/${def.name}`}; enabled; preset: enabled)`];
      if (s.state === 'active') {
        out.push(`     Active: active (running) since ${fmt.systemd(s.since)}; ${fmt.ago(now - s.since)}`);
        const mainPid = /** @type {number} */ (s.pid);
        out.push(`   Main PID: ${mainPid} (${def.procs[0]?.[1] ?? def.name})`);
        out.push(`      Tasks: ${def.procs.length * (def.name.startsWith('docker') || def.name.startsWith('containerd') ? 9 : 1)} (limit: 19034)`);
        const mem = def.procs.reduce((sum, p) => sum + p[2], 0);
        out.push(`     Memory: ${(mem / 1024).toFixed(1)}M`);
        out.push(`        CPU: ${fmt.cpu(Math.max(12, ((now - s.since) / 1000) * (def.procs[0]?.[4] ?? 0) * 10))}`);
        out.push(`     CGroup: /system.slice/${def.name}`);
        def.procs.forEach((p, i) => out.push(`             ${i === def.procs.length - 1 ? '└─' : '├─'}${mainPid + i} ${i === 0 ? p[0] : `"${p[0]}"`}`));
      } else if (s.state === 'failed') {
        out.push(`     Active: failed (Result: ${s.result}) since ${fmt.systemd(s.since)}; ${fmt.ago(now - s.since)}`);
        if (s.startedAt !== null) out.push(`   Duration: ${fmt.cpu(s.since - s.startedAt)}`);
        if (s.lastPid !== null) {
          out.push(`    Process: ${s.lastPid} ExecStart=${def.procs[0]?.[0] ?? ''} (code=exited, status=0/SUCCESS)`);
          out.push(`   Main PID: ${s.lastPid} (code=exited, status=0/SUCCESS)`);
        }
        out.push('        CPU: 1min 2.114s');
      } else {
        out.push(`     Active: inactive (dead)${s.startedAt !== null ? ` since ${fmt.systemd(s.since)}; ${fmt.ago(now - s.since)}` : ''}`);
        if (s.startedAt !== null) out.push(`   Duration: ${fmt.cpu(s.since - s.startedAt)}`);
      }
      const log = journalOf(live, true).filter((e) => e.unit === def.name).slice(-statusLines);
      if (log.length && statusLines > 0) out.push('', ...log.map((e) => journalLine(e, hostname, 'short', false)));
      io.out(`${out.join('\n')}\n`);
      if (status === 0 && s.state !== 'active') status = 3;
    }
    return status;
  }

  if (verb === 'is-active' || verb === 'is-failed' || verb === 'is-enabled') {
    let ok = names.length > 0;
    for (const n of names) {
      const def = findUnit(n);
      const state = def ? live.unitState(def.name).state : 'inactive';
      if (verb === 'is-enabled') {
        io.out(def ? 'enabled\n' : '');
        if (!def) io.err(`Failed to get unit file state for ${n}: No such file or directory\n`);
        ok &&= !!def;
      } else {
        io.out(`${state}\n`);
        ok &&= verb === 'is-active' ? state === 'active' : state === 'failed';
      }
    }
    return ok ? 0 : verb === 'is-enabled' ? 1 : verb === 'is-active' ? 3 : 1;
  }

  if (['start', 'stop', 'restart', 'reload', 'try-restart', 'reload-or-restart', 'reset-failed', 'daemon-reload'].includes(verb)) {
    const targets = verb === 'reset-failed' && !names.length ? UNITS.map((d) => d.name) : names;
    if (verb !== 'daemon-reload' && verb !== 'reset-failed' && !targets.length) {
      io.err(`Too few arguments.\n`);
      return 1;
    }
    const defs = [];
    for (const n of targets) {
      const def = findUnit(n);
      if (!def) {
        io.err(`Failed to ${verb} ${n.includes('.') ? n : `${n}.service`}: Unit ${n.includes('.') ? n : `${n}.service`} not found.\n`);
        return 5;
      }
      defs.push(def);
    }
    if (!io.root) {
      const what = defs[0]?.name ?? '';
      io.err(
        verb === 'daemon-reload' || verb === 'reset-failed'
          ? `Failed to ${verb}: Interactive authentication required.\n`
          : `Failed to ${verb} ${what}: Interactive authentication required.\nSee system logs and 'systemctl status ${what}' for details.\n`,
      );
      return 1;
    }
    /** @type {{ unit: string, kind: 'start' | 'stop' | 'reset' }[]} */
    const actions = [];
    for (const def of defs) {
      const state = live.unitState(def.name).state;
      if (verb === 'start' && state !== 'active') actions.push({ unit: def.name, kind: 'start' });
      if (verb === 'stop' && state === 'active') actions.push({ unit: def.name, kind: 'stop' });
      if (verb === 'restart' || verb === 'reload-or-restart' || (verb === 'try-restart' && state === 'active')) {
        if (state === 'active') actions.push({ unit: def.name, kind: 'stop' });
        actions.push({ unit: def.name, kind: 'start' });
      }
      if (verb === 'reload' && state !== 'active') {
        io.err(`Job for ${def.name} failed.\nSee "systemctl status ${def.name}" and "journalctl -xeu ${def.name}" for details.\n`);
        return 1;
      }
      if (verb === 'reset-failed' && state === 'failed') actions.push({ unit: def.name, kind: 'reset' });
    }
    if (actions.length) sh.act(actions);
    return 0;
  }

  io.err(`Unknown command verb '${verb}'.\n`);
  return 1;
}

// ---- ps and top --------------------------------------------------------------------------------

const psTime = (/** @type {number} */ s) => `${Math.floor(s / 60)}:${p2(Math.floor(s % 60))}`;
const psTimeLong = (/** @type {number} */ s) => `${p2(Math.floor(s / 3600))}:${p2(Math.floor((s % 3600) / 60))}:${p2(Math.floor(s % 60))}`;

/** ps -o field definitions: header, right-aligned?, value. */
const PS_FIELDS = /** @type {Record<string, [string, boolean, (p: Proc, now: number, memKb: number) => string]>} */ ({
  pid: ['PID', true, (p) => String(p.pid)],
  ppid: ['PPID', true, (p) => String(p.ppid)],
  user: ['USER', false, (p) => (p.user.length > 8 ? `${p.user.slice(0, 7)}+` : p.user)],
  uid: ['UID', true, (p) => String(p.user === 'root' ? 0 : p.user === ACCOUNT.name ? ACCOUNT.uid : p.user === 'postgres' ? 105 : 102)],
  stat: ['STAT', false, (p) => p.stat],
  state: ['S', false, (p) => p.stat.slice(0, 1)],
  s: ['S', false, (p) => p.stat.slice(0, 1)],
  comm: ['COMMAND', false, (p) => p.comm.slice(0, 15)],
  ucomm: ['COMMAND', false, (p) => p.comm.slice(0, 15)],
  cmd: ['CMD', false, (p) => p.cmd],
  args: ['COMMAND', false, (p) => p.cmd],
  command: ['COMMAND', false, (p) => p.cmd],
  '%cpu': ['%CPU', true, (p) => p.cpu.toFixed(1)],
  pcpu: ['%CPU', true, (p) => p.cpu.toFixed(1)],
  '%mem': ['%MEM', true, (p, _n, memKb) => ((p.rss / memKb) * 100).toFixed(1)],
  pmem: ['%MEM', true, (p, _n, memKb) => ((p.rss / memKb) * 100).toFixed(1)],
  rss: ['RSS', true, (p) => String(p.rss)],
  rssize: ['RSS', true, (p) => String(p.rss)],
  vsz: ['VSZ', true, (p) => String(p.vsz)],
  wchan: ['WCHAN', false, (p) => p.wchan],
  tty: ['TT', false, (p) => p.tty],
  etime: ['ELAPSED', true, (p, now) => psTime((now - p.start) / 1000)],
  etimes: ['ELAPSED', true, (p, now) => String(Math.floor((now - p.start) / 1000))],
  time: ['TIME', true, (p, now) => psTimeLong(((now - p.start) / 1000) * (p.cpu / 100))],
  start: ['STARTED', true, (p) => fmt.hms(p.start)],
  lstart: ['STARTED', false, (p) => fmt.ctime(p.start)],
  nlwp: ['NLWP', true, (p) => (p.stat.includes('l') ? '12' : '1')],
});

async function ps(/** @type {string[]} */ args, /** @type {Io} */ io, /** @type {Session} */ sh) {
  /** @type {string[] | null} */
  let fields = null;
  let style = 'own';
  /** @type {string | null} */
  let sortKey = null;
  for (let i = 0; i < args.length; i++) {
    const a = /** @type {string} */ (args[i]);
    if (a.startsWith('--sort=')) sortKey = a.slice(7);
    else if (a === '--sort') sortKey = args[++i] ?? null;
    else if (a === '-o' || a === 'o' || a === '--format') fields = (args[++i] ?? '').split(/[,\s]+/).filter(Boolean);
    else if (a.startsWith('-o') && a.length > 2) fields = a.slice(2).split(',');
    else if (a.startsWith('--format=')) fields = a.slice(9).split(',');
    else if (/^-(e|A|ef|eF|ely|elf|aux)$/.test(a) || a === '-ef') style = a.includes('f') ? 'full' : a === '-aux' ? 'bsd' : 'all';
    else if (/^-e?o$/.test(a) || /^-[eA]o$/.test(a)) {
      fields = (args[++i] ?? '').split(',').filter(Boolean);
      style = 'all';
    } else if (/^[auxfwe]+o?$/.test(a)) {
      style = a.includes('u') ? 'bsd' : 'bsdall';
      if (a.endsWith('o')) fields = (args[++i] ?? '').split(',').filter(Boolean);
    } else if (a === '-w' || a === '-ww' || a === 'ww' || a === '--no-headers' || a === '-H' || a === '--forest') continue;
    else {
      io.err(`error: unsupported option (BSD syntax)\n\nUsage:\n ps [options]\n\n ${a}: ${NOT_SIMULATED}\n`);
      return 1;
    }
  }
  const noHeaders = args.includes('--no-headers');
  const { live, now } = await sh.guest(io.signal);
  let procs = live.processes(sessionInfo(sh, io));
  const memKb = live.memKb;
  if (style === 'own' && !fields) procs = procs.filter((p) => p.pid >= sh.pid + 2 && p.user === (io.root ? 'root' : ACCOUNT.name));
  if (sortKey) {
    const desc = sortKey.startsWith('-');
    const key = sortKey.replace(/^[+-]/, '');
    const get = /** @type {Record<string, (p: Proc) => number>} */ ({ pid: (p) => p.pid, '%cpu': (p) => p.cpu, pcpu: (p) => p.cpu, '%mem': (p) => p.rss, pmem: (p) => p.rss, rss: (p) => p.rss, vsz: (p) => p.vsz, start_time: (p) => p.start })[key];
    if (get) procs = [...procs].sort((a, b) => (desc ? get(b) - get(a) : get(a) - get(b)));
  }
  if (!fields) {
    if (style === 'bsd') fields = ['user', 'pid', '%cpu', '%mem', 'vsz', 'rss', 'tty_', 'stat', 'start_', 'time_', 'command'];
    else if (style === 'full') fields = ['uid_', 'pid', 'ppid', 'c_', 'stime_', 'tty', 'time', 'cmd'];
    else if (style === 'bsdall') fields = ['pid', 'tty', 'stat', 'time_', 'command'];
    else fields = ['pid', 'tty', 'time', 'comm_'];
  }
  /** @type {Record<string, [string, boolean, (p: Proc, now: number, memKb: number) => string]>} */
  const extra = {
    start_: ['START', true, (p) => fmt.hm(p.start)],
    tty_: ['TTY', false, (p) => p.tty],
    time_: ['TIME', true, (p) => psTime(((now - p.start) / 1000) * (p.cpu / 100))],
    uid_: ['UID', false, (p) => (p.user.length > 8 ? `${p.user.slice(0, 7)}+` : p.user)],
    c_: ['C', true, (p) => String(Math.round(p.cpu))],
    stime_: ['STIME', false, (p) => fmt.hm(p.start)],
    comm_: ['CMD', false, (p) => p.comm.slice(0, 15)],
  };
  /** @type {[string, boolean, (p: Proc, now: number, memKb: number) => string][]} */
  const defs = [];
  for (const f of fields) {
    const def = extra[f] ?? PS_FIELDS[f.toLowerCase()];
    if (!def) {
      io.err(`error: unknown user-defined format specifier "${f}"\n`);
      return 1;
    }
    defs.push(def);
  }
  const widths = { USER: 8, PID: 7, PPID: 7, '%CPU': 4, '%MEM': 4, VSZ: 6, RSS: 5, TT: 8, TTY: 8, STAT: 4, START: 5, TIME: 6, UID: 8, C: 2, STIME: 5 };
  const rows = [defs.map((d) => d[0]), ...procs.map((p) => defs.map((d) => d[2](p, now, memKb)))];
  const out = rows.map((row, r) =>
    row
      .map((cell, i) => {
        const [head, right] = /** @type {[string, boolean, unknown]} */ (defs[i]);
        const min = /** @type {Record<string, number>} */ (widths)[head] ?? 0;
        const width = Math.max(min, ...rows.map((x) => (i === row.length - 1 ? 0 : (x[i] ?? '').length)));
        if (i === row.length - 1) return cell;
        return right ? cell.padStart(width) : cell.padEnd(width);
      })
      .join(' ')
      .replace(/\s+$/, r === 0 ? '' : ''),
  );
  io.out(joinLines(noHeaders ? out.slice(1) : out));
  return 0;
}

async function top(/** @type {string[]} */ args, /** @type {Io} */ io, /** @type {Session} */ sh) {
  let batch = false;
  let iterations = Infinity;
  let delayS = 3;
  for (let i = 0; i < args.length; i++) {
    const a = /** @type {string} */ (args[i]);
    const m = /^-([bcHiSw]*)([nd])?(.*)$/.exec(a);
    if (!m || !a.startsWith('-')) {
      io.err(`top: unknown option '${a}'\n`);
      return 1;
    }
    if ((m[1] ?? '').includes('b')) batch = true;
    if (m[2]) {
      const v = m[3] || args[++i] || '';
      if (m[2] === 'n') iterations = Number(v);
      else delayS = Number(v);
    }
  }
  if (!batch) {
    io.err('top: failed tty get\n');
    return 1;
  }
  for (let n = 0; n < iterations; n++) {
    if (n > 0) await delay(delayS * 1000, io.signal);
    const { live, now } = await sh.guest(io.signal);
    const procs = live.processes(sessionInfo(sh, io));
    const m = live.memory(sessionInfo(sh, io));
    const blocked = live.blockedAt(now);
    const running = procs.filter((p) => p.stat.startsWith('R')).length;
    const [us, sy, id, wa] = blocked ? [0.0, 0.3, 0.0, 99.7] : [1.6, 0.8, 97.4, 0.0];
    const mib = (/** @type {number} */ kb) => (kb / 1024).toFixed(1).padStart(8);
    const out = [
      `top - ${uptimeLine(live).trim()}`,
      `Tasks: ${String(procs.length + 160).padStart(3)} total, ${String(running).padStart(3)} running, ${String(procs.length + 160 - running - blocked).padStart(3)} sleeping,   0 stopped,   0 zombie`,
      `%Cpu(s): ${us.toFixed(1).padStart(4)} us, ${sy.toFixed(1).padStart(4)} sy,  0.0 ni, ${id.toFixed(1).padStart(4)} id, ${wa.toFixed(1).padStart(4)} wa,  0.0 hi,  0.0 si,  0.0 st`,
      `MiB Mem : ${mib(m.total)} total, ${mib(m.free)} free, ${mib(m.used)} used, ${mib(m.buffers + m.cache)} buff/cache`,
      `MiB Swap:      0.0 total,      0.0 free,      0.0 used. ${mib(m.available)} avail Mem`,
      '',
      '    PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND',
    ];
    const sorted = [...procs].sort((a, b) => b.cpu - a.cpu || a.pid - b.pid);
    for (const p of sorted) {
      const cpuS = ((now - p.start) / 1000) * (p.cpu / 100);
      const time = `${Math.floor(cpuS / 60)}:${p2(Math.floor(cpuS % 60))}.${p2(Math.floor((cpuS * 100) % 100))}`;
      const user = p.user.length > 8 ? `${p.user.slice(0, 7)}+` : p.user;
      out.push(
        `${String(p.pid).padStart(7)} ${user.padEnd(9)}${p.comm.startsWith('kworker') || p.cmd.startsWith('[') ? ' 20   0' : ' 20   0'} ${String(p.vsz).padStart(7)} ${String(p.rss).padStart(6)} ${String(Math.round(p.rss / 3)).padStart(6)} ${p.stat[0]} ${p.cpu.toFixed(1).padStart(5)} ${((p.rss / live.memKb) * 100).toFixed(1).padStart(5)} ${time.padStart(9)} ${p.comm.slice(0, 15)}`,
      );
    }
    io.out(`${out.join('\n')}\n${n + 1 < iterations ? '\n' : ''}`);
  }
  return 0;
}

// ---- entry points ------------------------------------------------------------------------------

/**
 * Answer one SSH command as the simulated devvm would. Output goes to the sinks as it is
 * produced; resolves with the exit status (124 when the command's `timeout` ended it).
 * @param {string} commandLine  the SSH command, usually `timeout --kill-after=5 N sh -c '…'`
 * @param {{ vmDir: string, scenario: string, inspect?: boolean, sshClient?: string,
 *   out?: (s: string) => void, err?: (s: string) => void, signal?: AbortSignal }} opts
 */
export async function answer(commandLine, opts) {
  if (!SCENARIOS.includes(opts.scenario)) throw new Error(`${ME}: unknown scenario '${opts.scenario}' (known: ${SCENARIOS.join(', ')})`);
  const session = new Session(opts);
  const innermost = /sh -c '((?:[^']|'\\'')*)'\s*$/.exec(commandLine);
  session.argv = innermost ? (innermost[1] ?? '').replaceAll(`'\\''`, `'`).split(/\s+/).filter(Boolean) : commandLine.split(/\s+/);
  const io = { stdin: '', out: opts.out ?? (() => {}), err: opts.err ?? (() => {}), signal: opts.signal ?? new AbortController().signal, root: false };
  const w = session.world();
  if (w.live && !w.wedged) {
    const state = readDevvmState(opts.vmDir);
    const logins = state?.boots.at(-1)?.logins ?? 0;
    session.pid = 1420 + ((logins * 7) % 20_000);
    const [ip, port] = (opts.sshClient ?? '').split(' ');
    session.log([{ prio: 6, ident: 'sshd', pid: session.pid, msg: `Accepted publickey for ${ACCOUNT.name} from ${ip || '127.0.0.1'} port ${port || '0'} ssh2: ED25519`, unit: 'ssh.service' }]);
    updateDevvmState(opts.vmDir, opts.scenario, (st) => {
      const boot = st.boots.at(-1);
      if (!boot) return false;
      boot.logins++;
      return true;
    });
  }
  try {
    return await session.runLine(commandLine, io);
  } catch (error) {
    if (error instanceof ExitRequest) return error.code;
    if (error instanceof Aborted) return 124;
    throw error;
  }
}

/** Collect an answer's output (tests). */
export async function answerText(/** @type {string} */ commandLine, /** @type {Parameters<typeof answer>[1]} */ opts) {
  let stdout = '';
  let stderr = '';
  const code = await answer(commandLine, { ...opts, out: (s) => (stdout += s), err: (s) => (stderr += s) });
  return { code, stdout, stderr };
}

async function main(/** @type {string[]} */ argv) {
  const [vmDir, scenario, ...flags] = argv;
  if (!vmDir || !scenario || !SCENARIOS.includes(scenario) || flags.some((f) => f !== '--inspect')) {
    process.stderr.write(`usage: sim-devvm.mjs <vmStateDir> <${SCENARIOS.join('|')}> [--inspect]   (command in SSH_ORIGINAL_COMMAND)\n`);
    return 2;
  }
  const command = process.env.SSH_ORIGINAL_COMMAND;
  if (command === undefined || command.trim() === '') {
    process.stderr.write(`${ME}: the lab devvm answers commands only; interactive shells ${NOT_SIMULATED}\n`);
    return 1;
  }
  // The session ends when sshd does (a hung command must not outlive its connection).
  const ctl = new AbortController();
  const parent = process.ppid;
  const watch = setInterval(() => {
    if (process.ppid !== parent) ctl.abort();
  }, 1000);
  watch.unref();
  process.stdout.on('error', () => ctl.abort());
  try {
    return await answer(command, {
      vmDir: path.resolve(vmDir),
      scenario,
      inspect: flags.includes('--inspect'),
      sshClient: process.env.SSH_CLIENT ?? '',
      out: (s) => void process.stdout.write(s),
      err: (s) => void process.stderr.write(s),
      signal: ctl.signal,
    });
  } finally {
    clearInterval(watch);
  }
}

const invokedDirectly = (() => {
  try {
    return !!process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(SIM_DEVVM_SCRIPT);
  } catch {
    return false;
  }
})();
if (invokedDirectly) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      process.stderr.write(`${ME}: internal error: ${error instanceof Error ? error.stack : String(error)}\n`);
      process.exitCode = 70;
    },
  );
}
