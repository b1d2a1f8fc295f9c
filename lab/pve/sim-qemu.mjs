// @ts-check
// The simulated QEMU process of a simulated VM: `node sim-qemu.mjs --state DIR`, spawned
// detached by sim-vm.mjs. It prints nothing; it serves QMP on DIR/qmp.sock to one client at a
// time, as QEMU's monitor does, and keeps block counters that grow like a busy guest's disk.
// Faults are read from DIR/state.json as they are needed, so tests can flip them live:
//   io_stall    counters freeze, QMP still answers (the 2026-06-11 incident)
//   qmp_silent  connections are accepted, nothing is ever sent
//   dstate      SIGTERM is ignored (SIGKILL still works: we cannot simulate its loss)
// It exits by itself when DIR disappears or state.json names another pid, so nothing leaks.

import fs from 'node:fs';
import net from 'node:net';
import { qmpSocketPath, readState } from './sim-vm.mjs';

const dir = (() => {
  const at = process.argv.indexOf('--state');
  const value = at >= 0 ? process.argv[at + 1] : undefined;
  if (value) return value;
  process.stderr.write('usage: sim-qemu.mjs --state DIR\n');
  return process.exit(2);
})();

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 5, "minor": 1, "major": 8}, "package": "pve-qemu-kvm_8.1.5-1"}, "capabilities": []}}\r\n';

/** Current faults; none when state.json is unreadable (the liveness check handles that). */
function faults() {
  try {
    return readState(dir).faults;
  } catch {
    return [];
  }
}

// The disk as this QEMU was started with it (pending config is applied before spawn).
const bootConfig = readState(dir).config;
const disk = /^([^:,]+):([^,]+)(?:,.*)?$/.exec(bootConfig.scsi0 ?? '') ?? [];
const diskFile = `/dev/pve/${disk[2] ?? 'vm-disk-0'}`;
const sizeMatch = /(?:^|,)size=(\d+)([KMGT]?)/.exec(bootConfig.scsi0 ?? '');
const diskBytes = sizeMatch ? Number(sizeMatch[1]) * 1024 ** ' KMGT'.indexOf(sizeMatch[2] || ' ') : 0;

// ---- block counters ----------------------------------------------------------------------

const stats = {
  rd_bytes: 1_873_412_096,
  wr_bytes: 4_402_618_368,
  rd_operations: 61_204,
  wr_operations: 233_871,
  flush_operations: 18_022,
  rd_total_time_ns: 41_118_000_000,
  wr_total_time_ns: 97_540_000_000,
  flush_total_time_ns: 12_004_000_000,
  rd_merged: 0,
  wr_merged: 0,
  wr_highest_offset: 187_904_819_200,
};
let lastIo = process.hrtime.bigint();

// Every 100 ms a healthy guest writes ~4 MB/s and reads a little; a stalled one does nothing.
// The fault check and the increment happen in one synchronous step, so once setFault() has
// renamed state.json into place no later tick can move the counters.
setInterval(() => {
  if (faults().includes('io_stall')) return;
  stats.wr_operations += 50;
  stats.wr_bytes += 50 * 8192;
  stats.wr_total_time_ns += 50 * 180_000;
  stats.rd_operations += 10;
  stats.rd_bytes += 10 * 16_384;
  stats.rd_total_time_ns += 10 * 120_000;
  stats.flush_operations += 2;
  stats.flush_total_time_ns += 2 * 400_000;
  lastIo = process.hrtime.bigint();
}, 100);

// ---- liveness ------------------------------------------------------------------------------

// First check after 500 ms: the spawner records our pid in state.json right after spawn.
setInterval(() => {
  let pid;
  try {
    pid = readState(dir).pid;
  } catch (err) {
    if (/** @type {NodeJS.ErrnoException} */ (err).code === 'ENOENT') process.exit(0);
    return;
  }
  if (pid !== process.pid) process.exit(0); // stale: the VM was stopped or another QEMU runs
}, 500);

process.on('SIGTERM', () => {
  if (!faults().includes('dstate')) process.exit(0);
});

// ---- QMP -----------------------------------------------------------------------------------

/**
 * Serialise like QEMU does: ", " and ": " separators.
 * @param {unknown} value
 * @returns {string}
 */
function qemuJson(value) {
  if (Array.isArray(value)) return `[${value.map(qemuJson).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${qemuJson(v)}`).join(', ')}}`;
  }
  return JSON.stringify(value);
}

const error = (/** @type {string} */ cls, /** @type {string} */ desc) => ({ error: { class: cls, desc } });

function queryBlock() {
  return [
    {
      'io-status': 'ok',
      device: 'drive-scsi0',
      locked: false,
      removable: false,
      inserted: {
        'node-name': '#block143',
        file: diskFile,
        ro: false,
        drv: 'raw',
        encrypted: false,
        detect_zeroes: 'on',
        backing_file_depth: 0,
        cache: { 'no-flush': false, direct: true, writeback: true },
        image: { 'virtual-size': diskBytes, filename: diskFile, format: 'raw', 'actual-size': 0 },
      },
      qdev: 'scsi0',
      type: 'unknown',
    },
  ];
}

function queryBlockstats() {
  return [
    {
      device: 'drive-scsi0',
      'node-name': '#block143',
      qdev: 'scsi0',
      stats: {
        ...stats,
        unmap_operations: 0,
        unmap_bytes: 0,
        unmap_merged: 0,
        unmap_total_time_ns: 0,
        // Grows without bound while I/O is stalled: 87 minutes of it in the incident.
        idle_time_ns: Number(process.hrtime.bigint() - lastIo),
        failed_rd_operations: 0,
        failed_wr_operations: 0,
        failed_flush_operations: 0,
        invalid_rd_operations: 0,
        invalid_wr_operations: 0,
        invalid_flush_operations: 0,
        account_invalid: true,
        account_failed: true,
        timed_stats: [],
      },
    },
  ];
}

/**
 * One QMP session. QEMU refuses every command until capabilities are negotiated.
 * @param {net.Socket} sock
 */
function serve(sock) {
  let negotiated = false;
  let buffered = '';
  const silent = () => faults().includes('qmp_silent');
  if (!silent()) sock.write(GREETING);
  sock.setEncoding('utf8');
  sock.on('data', (/** @type {string} */ chunk) => {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (!line || silent()) continue;
      sock.write(`${qemuJson(answer(line))}\r\n`);
    }
  });

  /** @param {string} line */
  function answer(line) {
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch {
      return error('GenericError', 'JSON parse error, invalid keyword');
    }
    if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) return error('GenericError', 'QMP input must be a JSON object');
    if (typeof cmd.execute !== 'string') return error('GenericError', "QMP input lacks member 'execute'");
    const reply = (/** @type {object} */ r) => (cmd.id === undefined ? r : { ...r, id: cmd.id });
    if (!negotiated) {
      if (cmd.execute !== 'qmp_capabilities') return reply(error('CommandNotFound', "Expecting capabilities negotiation with 'qmp_capabilities'"));
      negotiated = true;
      return reply({ return: {} });
    }
    switch (cmd.execute) {
      case 'qmp_capabilities':
        return reply(error('CommandNotFound', 'Capabilities negotiation is already complete, command ignored'));
      case 'query-status':
        return reply({ return: { status: 'running', singlestep: false, running: true } });
      case 'query-block':
        return reply({ return: queryBlock() });
      case 'query-blockstats':
        return reply({ return: queryBlockstats() });
      default:
        return reply(error('CommandNotFound', `The command ${cmd.execute} has not been found`));
    }
  }
}

// One monitor client at a time: later connections wait, unread, until the current one closes.
/** @type {net.Socket | null} */
let active = null;
/** @type {net.Socket[]} */
const waiting = [];

function next() {
  active = null;
  let sock;
  while ((sock = waiting.shift())) {
    if (sock.destroyed) continue;
    activate(sock);
    return;
  }
}

function activate(/** @type {net.Socket} */ sock) {
  active = sock;
  sock.on('close', next);
  serve(sock);
}

const sockPath = qmpSocketPath(dir);
fs.rmSync(sockPath, { force: true });
net
  .createServer((sock) => {
    sock.on('error', () => sock.destroy()); // a client vanishing is not our problem
    if (active) waiting.push(sock);
    else activate(sock);
  })
  .listen(sockPath);
