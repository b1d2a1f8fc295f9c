import { capText } from '../output-cap.js';
import type { BlockDelta, CapturedSection, ForensicsSummary, IoVerdict, Pressure, QemuThread } from '../../workflows/pve-types.js';

/** Section as the host prints it. */
export interface RawSection {
  name: string;
  exit: number;
  timed_out: boolean;
  duration_ms: number;
  output: string;
}

const SECTION_HEAD = 6 * 1024;
const SECTION_TAIL = 6 * 1024;
const MAX_THREADS = 64;
const MAX_HUNG_TASK_LINES = 5;

export const FIRST_QMP_SECTION = 'qmp query-status query-block query-blockstats';
export const SECOND_QMP_SECTION = 'qmp query-blockstats (second sample)';
const QM_STATUS = 'qm status --verbose';
const QM_CONFIG = 'qm config';
const AGENT_PING = 'guest agent ping';
const QEMU_PROCESS = 'qemu process';
const VM_SCOPE = 'vm scope';
const HA_RESOURCE = 'ha resource';
const CONSOLE = 'guest console tail';

/**
 * QMP replies in order, skipping the greeting and events. An error reply keeps its place (as
 * null) so that the n-th reply stays the n-th command's.
 */
function qmpReturns(output: string): unknown[] {
  const replies: unknown[] = [];
  for (const line of output.split('\n')) {
    try {
      const message = JSON.parse(line) as Record<string, unknown>;
      if ('return' in message) replies.push(message.return);
      else if ('error' in message) replies.push(null);
    } catch {
      // not a JSON line (socat noise, truncated tail)
    }
  }
  return replies;
}

interface Counters {
  rd_bytes?: number;
  wr_bytes?: number;
  rd_operations?: number;
  wr_operations?: number;
}

interface BlockEntry {
  device?: string;
  qdev?: string;
  removable?: boolean;
  stats?: Counters;
}

/** With -blockdev (PVE 9) `device` is empty and the drive is known by its qdev. */
const driveName = (entry: BlockEntry) => entry.device || entry.qdev || '';

const entries = (reply: unknown): BlockEntry[] => (Array.isArray(reply) ? (reply as BlockEntry[]).filter((e) => e && typeof e === 'object') : []);

/** CD-ROMs and other removable drives (query-block): their counters never move and prove nothing. */
function removableDrives(queryBlock: unknown): Set<string> {
  return new Set(entries(queryBlock).filter((e) => e.removable === true).map(driveName).filter(Boolean));
}

function blockCounters(reply: unknown, ignore: Set<string>): Map<string, Counters> {
  const byDrive = new Map<string, Counters>();
  for (const entry of entries(reply)) {
    const name = driveName(entry);
    if (name && entry.stats && !ignore.has(name)) byDrive.set(name, entry.stats);
  }
  return byDrive;
}

export function blockDeltas(first: Map<string, Counters>, second: Map<string, Counters>): BlockDelta[] {
  const deltas: BlockDelta[] = [];
  for (const [device, before] of first) {
    const after = second.get(device);
    if (!after) continue;
    const delta = (key: keyof Counters) => (after[key] ?? 0) - (before[key] ?? 0);
    const readBytes = delta('rd_bytes');
    const writeBytes = delta('wr_bytes');
    const readOps = delta('rd_operations');
    const writeOps = delta('wr_operations');
    deltas.push({ device, readBytes, writeBytes, readOps, writeOps, frozen: readBytes === 0 && writeBytes === 0 && readOps === 0 && writeOps === 0 });
  }
  return deltas;
}

export interface QemuProcess {
  pid: number;
  inScope: boolean | null;
  /** The status file's State line, e.g. `Z (zombie)`. */
  state: string | null;
  threads: QemuThread[];
}

/**
 * The 'qemu process' section: one block per process (`== process PID (in scope: yes)`, its
 * /proc status, `== threads of PID` with TID STATE WCHAN COMM rows, stacks of D threads).
 * Captures from older hosts have only `== /proc/PID/status`.
 */
export function parseQemuProcesses(output: string): QemuProcess[] {
  const processes: QemuProcess[] = [];
  let current: QemuProcess | null = null;
  let part: 'status' | 'threads' | 'other' = 'other';
  const open = (pid: number, inScope: boolean | null) => {
    current = { pid, inScope, state: null, threads: [] };
    processes.push(current);
  };
  for (const line of output.split('\n')) {
    let match: RegExpExecArray | null;
    if ((match = /^== process (\d+)(?: \(in scope: (yes|no)\))?/.exec(line))) {
      open(Number(match[1]), match[2] === undefined ? null : match[2] === 'yes');
      part = 'other';
    } else if ((match = /^== \/proc\/(\d+)\/(\S+)/.exec(line))) {
      const pid = Number(match[1]);
      if ((current as QemuProcess | null)?.pid !== pid) open(pid, null);
      part = match[2] === 'status' ? 'status' : 'other';
    } else if (/^== threads of \d+/.test(line)) {
      part = 'threads';
    } else if (line.startsWith('== ')) {
      part = 'other';
    } else if (current && part === 'status' && (match = /^State:\s*(.+)$/.exec(line))) {
      (current as QemuProcess).state = (match[1] as string).trim();
    } else if (current && part === 'threads' && (match = /^\s*(\d+)\s+([A-Za-z])\S*\s+(\S+)\s?(.*)$/.exec(line))) {
      const wchan = match[3] as string;
      const process = current as QemuProcess;
      process.threads.push({ pid: process.pid, tid: Number(match[1]), state: match[2] as string, wchan: wchan === '-' || wchan === '0' ? '' : wchan, comm: (match[4] as string).trim() });
    }
  }
  return processes;
}

const PRESSURE_KEYS = { ioSome: 'io some', ioFull: 'io full', cpuSome: 'cpu some', cpuFull: 'cpu full', memorySome: 'memory some', memoryFull: 'memory full' } as const;
type PressureKey = keyof typeof PRESSURE_KEYS;

function pressureFrom(source: Pressure['source'], values: Map<string, number>): Pressure | null {
  if (values.size === 0) return null;
  const pressure = { source } as Pressure;
  for (const [key, name] of Object.entries(PRESSURE_KEYS) as [PressureKey, string][]) pressure[key] = values.get(name) ?? null;
  return pressure;
}

/** PVE 9's `pressureiofull: 1.23` lines in `qm status --verbose` (avg10 percentages). */
function qmStatusPressure(output: string): Pressure | null {
  const values = new Map<string, number>();
  for (const match of output.matchAll(/^pressure(io|cpu|memory)(some|full):\s*([0-9.]+)\s*$/gm)) values.set(`${match[1]} ${match[2]}`, Number(match[3]));
  return pressureFrom('qm status', values);
}

interface Scope {
  path: string;
  present: boolean;
  pids: number[];
  pressure: Pressure | null;
}

/** The 'vm scope' section: `scope: PATH [(absent)]`, `procs: …`, then `== io.pressure` etc. */
function parseScope(output: string): Scope | null {
  const head = /^scope:\s*(.+?)(\s+\(absent\))?\s*$/m.exec(output);
  if (!head) return null;
  const procs = /^procs:(.*)$/m.exec(output)?.[1] ?? '';
  const values = new Map<string, number>();
  let resource = '';
  for (const line of output.split('\n')) {
    const section = /^== (io|cpu|memory)\.pressure/.exec(line);
    if (section) resource = section[1] as string;
    else if (line.startsWith('== ')) resource = '';
    const kind = resource ? /^(some|full) avg10=([0-9.]+)/.exec(line) : null;
    if (kind) values.set(`${resource} ${kind[1]}`, Number(kind[2]));
  }
  return {
    path: head[1] as string,
    present: !head[2],
    pids: procs.split(/\s+/).filter((word) => /^\d+$/.test(word)).map(Number),
    pressure: pressureFrom('scope', values),
  };
}

/** qm config's `agent`: `1`, `enabled=1,fstrim_cloned_disks=1`, `0`… (its default key is enabled). */
function agentEnabled(config: string): boolean {
  const value = /^agent:\s*(.*)$/m.exec(config)?.[1];
  if (value === undefined) return false;
  for (const part of value.split(',')) {
    const [key, setting] = part.includes('=') ? part.split('=', 2) : ['enabled', part];
    if (key?.trim() === 'enabled') return /^(1|yes|on|true)$/i.test(setting?.trim() ?? '');
  }
  return false;
}

function parseHa(section: RawSection | undefined): { managed: boolean | null; state: string | null } {
  if (!section) return { managed: null, state: null };
  if (/not HA-managed/i.test(section.output)) return { managed: false, state: null };
  if (/^\s*vm:\s*\d+/m.test(section.output)) return { managed: true, state: /^\s+state\s+(\S+)/m.exec(section.output)?.[1] ?? null };
  return { managed: null, state: null };
}

const firstLine = (text: string) => text.trim().split('\n')[0]?.slice(0, 160) ?? '';
const plural = (count: number, word: string) => `${count} ${word}${count === 1 ? '' : 's'}`;
const percent = (value: number) => `${value} %`;

export interface SummaryOptions {
  /** Seconds between the two block-stat samples (the document's `blockstats_interval_s`). */
  intervalSeconds?: number;
}

/** Reads the evidence that matters at 3 a.m. out of the raw sections. */
export function summarizeForensics(sections: RawSection[], options: SummaryOptions = {}): ForensicsSummary {
  const byName = new Map(sections.map((section) => [section.name, section]));
  const output = (name: string) => byName.get(name)?.output ?? '';
  const firstQmp = byName.get(FIRST_QMP_SECTION);
  const secondQmp = byName.get(SECOND_QMP_SECTION);
  // Replies: qmp_capabilities, query-status, query-block, query-blockstats.
  const first = firstQmp ? qmpReturns(firstQmp.output) : [];
  const second = secondQmp ? qmpReturns(secondQmp.output) : [];
  const status = first[1] as { status?: string } | null | undefined;
  const sampled = first.length >= 4 && second.length >= 2;
  const deltas = sampled ? blockDeltas(blockCounters(first[3], removableDrives(first[2])), blockCounters(second[1], new Set())) : [];

  const processes = parseQemuProcesses(output(QEMU_PROCESS));
  const allThreads = processes.flatMap((process) => process.threads);
  const dThreads = allThreads.filter((thread) => thread.state === 'D');
  const zombie = processes.find((process) => /^Z/.test(process.state ?? '') && process.threads.some((thread) => thread.state !== 'Z'));
  const scope = byName.has(VM_SCOPE) ? parseScope(output(VM_SCOPE)) : null;
  const qmPressure = qmStatusPressure(output(QM_STATUS));
  const ha = parseHa(byName.get(HA_RESOURCE));
  const configSection = byName.get(QM_CONFIG);
  const agentOn = configSection && configSection.exit === 0 ? agentEnabled(configSection.output) : null;
  const ping = byName.get(AGENT_PING);
  const hung = output(CONSOLE)
    .split('\n')
    .filter((line) => /\btask \S.* blocked for more than \d+ seconds/.test(line))
    .map((line) => line.trim().slice(0, 200))
    .slice(-MAX_HUNG_TASK_LINES);

  // Signs of a stall besides flat counters: each one is a sentence a person can check.
  const signs: string[] = [];
  if (dThreads.length > 0) {
    const named = dThreads.slice(0, 4).map((t) => `${t.tid} ${t.comm || '?'}${t.wchan ? ` in ${t.wchan}` : ''}`);
    signs.push(`${plural(dThreads.length, 'QEMU thread')} in D state (waiting uninterruptibly in the kernel): ${named.join(', ')}${dThreads.length > 4 ? ', …' : ''}`);
  } else if (allThreads.length === 0 && /^D/.test(processes[0]?.state ?? '')) {
    signs.push(`the QEMU process ${processes[0]?.pid} is in D state (${processes[0]?.state})`);
  }
  if (agentOn && ping && (ping.timed_out || ping.exit !== 0)) {
    signs.push(`the guest agent is enabled in the VM config, yet its ping ${ping.timed_out ? `timed out after ${(ping.duration_ms / 1000).toFixed(0)} s` : `failed: ${firstLine(ping.output) || `exit ${ping.exit}`}`}`);
  }
  if (hung.length > 0) signs.push(`the guest kernel reports hung tasks: ${hung[hung.length - 1]}${hung.length > 1 ? ` (and ${hung.length - 1} more)` : ''}`);
  if ((qmPressure?.ioFull ?? 0) > 0) signs.push(`PVE reports I/O pressure: full avg10 ${percent(qmPressure?.ioFull as number)} (all of QEMU's tasks stalled on I/O that share of the time)`);
  else if ((scope?.pressure?.ioFull ?? 0) > 0) signs.push(`the VM scope's io.pressure: full avg10 ${percent(scope?.pressure?.ioFull as number)} (all of QEMU's tasks stalled on I/O that share of the time)`);

  const span = options.intervalSeconds ? `in ${options.intervalSeconds} s` : 'between the two samples';
  let verdict: IoVerdict;
  let lead: string;
  if (!sampled) {
    verdict = 'unknown';
    lead = first.length < 2 ? 'QMP did not answer: no block counters to compare' : 'QMP did not give two block-stat samples';
  } else if (deltas.length === 0) {
    verdict = 'unknown';
    lead = 'no disk to compare: only removable drives, or no drive in both samples';
  } else if (deltas.some((delta) => !delta.frozen)) {
    verdict = 'moving';
    const moved = deltas.filter((delta) => !delta.frozen);
    lead = `block counters moved ${span} on ${moved.map((d) => `${d.device} (+${d.readOps} reads, +${d.writeOps} writes)`).join(', ')}`;
  } else if (signs.length > 0) {
    verdict = 'frozen';
    lead = `no block counter moved ${span} on ${deltas.map((d) => d.device).join(', ')}`;
  } else {
    verdict = 'flat';
    lead = `no block counter moved ${span}, and nothing else points at a stall: an idle guest looks the same`;
  }

  return {
    qmpAnswered: first.length >= 2,
    qmpStatus: status?.status ?? null,
    ioFrozen: verdict === 'unknown' ? null : verdict === 'frozen',
    ioVerdict: verdict,
    ioEvidence: [lead, ...signs],
    stallSigns: signs,
    blockDeltas: deltas,
    guestAgentAnswered: ping?.exit === 0 && !ping.timed_out,
    guestAgentEnabled: agentOn,
    qemuProcessState: processes[0]?.state ?? null,
    threads: allThreads.slice(0, MAX_THREADS),
    dStateThreads: dThreads.length,
    zombieLeader: zombie ? { pid: zombie.pid, liveThreads: zombie.threads.filter((thread) => thread.state !== 'Z').length } : null,
    scope: scope ? { path: scope.path, present: scope.present } : null,
    scopePids: scope?.pids ?? [],
    pressure: qmPressure ?? scope?.pressure ?? null,
    haManaged: ha.managed,
    haState: ha.state,
    runningQemu: /^running-qemu:\s*(\S+)/m.exec(output(QM_STATUS))?.[1] ?? null,
    hungTaskLines: hung,
    timedOutSections: sections.filter((section) => section.timed_out).map((section) => section.name),
    failedSections: sections.filter((section) => !section.timed_out && section.exit !== 0).map((section) => section.name),
  };
}

export function capSections(sections: RawSection[]): CapturedSection[] {
  return sections.map((section) => {
    const capped = capText(section.output, SECTION_HEAD, SECTION_TAIL);
    return {
      name: section.name,
      exit: section.exit,
      timedOut: section.timed_out,
      durationMs: section.duration_ms,
      output: capped.text,
      droppedBytes: capped.droppedBytes,
    };
  });
}
