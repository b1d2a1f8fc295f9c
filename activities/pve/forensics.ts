import { capText } from '../output-cap.js';
import type { BlockDelta, CapturedSection, ForensicsSummary } from '../../workflows/pve-types.js';

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

export const FIRST_QMP_SECTION = 'qmp query-status query-block query-blockstats';
export const SECOND_QMP_SECTION = 'qmp query-blockstats (second sample)';

/** QMP replies (`return` values) in order, skipping the greeting, events and errors. */
function qmpReturns(output: string): unknown[] {
  const replies: unknown[] = [];
  for (const line of output.split('\n')) {
    try {
      const message = JSON.parse(line) as Record<string, unknown>;
      if ('return' in message) replies.push(message.return);
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

function blockCounters(reply: unknown): Map<string, Counters> {
  const byDevice = new Map<string, Counters>();
  if (!Array.isArray(reply)) return byDevice;
  for (const entry of reply as { device?: string; qdev?: string; stats?: Counters }[]) {
    const device = entry.device || entry.qdev;
    if (device && entry.stats) byDevice.set(device, entry.stats);
  }
  return byDevice;
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

/** Reads the evidence that matters at 3 a.m. out of the raw sections. */
export function summarizeForensics(sections: RawSection[]): ForensicsSummary {
  const byName = new Map(sections.map((section) => [section.name, section]));
  const firstQmp = byName.get(FIRST_QMP_SECTION);
  const secondQmp = byName.get(SECOND_QMP_SECTION);
  // Replies: qmp_capabilities, query-status, query-block, query-blockstats.
  const first = firstQmp ? qmpReturns(firstQmp.output) : [];
  const second = secondQmp ? qmpReturns(secondQmp.output) : [];
  const status = first[1] as { status?: string } | undefined;
  const deltas = first.length >= 4 && second.length >= 2 ? blockDeltas(blockCounters(first[3]), blockCounters(second[1])) : [];
  const processSection = byName.get('qemu process')?.output ?? '';
  const state = /^State:\s*(.+)$/m.exec(processSection);
  return {
    qmpAnswered: first.length >= 2,
    qmpStatus: status?.status ?? null,
    ioFrozen: deltas.length > 0 ? deltas.every((delta) => delta.frozen) : null,
    blockDeltas: deltas,
    guestAgentAnswered: byName.get('guest agent ping')?.exit === 0,
    qemuProcessState: state?.[1]?.trim() ?? null,
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
