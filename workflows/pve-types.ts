/**
 * The PVE verbs and their results, shared by activities, the workflow, the server and the UI,
 * and the few words all of them use for a result (what was verified, the I/O verdict) so the
 * console, the postmortem and the agent say the same. Pure: safe inside the workflow sandbox.
 */
export const PVE_VERBS = ['status', 'forensics', 'reset', 'stop', 'start', 'cycle'] as const;
export type PveVerb = (typeof PVE_VERBS)[number];

export const MUTATING_VERBS = ['reset', 'stop', 'start', 'cycle'] as const;
export type MutatingVerb = (typeof MUTATING_VERBS)[number];

export function isMutatingVerb(verb: string): verb is MutatingVerb {
  return (MUTATING_VERBS as readonly string[]).includes(verb);
}

export interface VmState {
  /** `running`, `stopped`, or `unknown` when `qm status` itself failed. */
  status: string;
  /** Proves little alone: after 3 s of QMP silence real qm copies `status` into it. */
  qmpstatus: string;
  pid: number | null;
  uptimeSeconds: number | null;
  lock: string;
  pending: { present: boolean; lines: string[] };
  error?: string;
  /** Running VM: whether QMP answered `qm status --verbose`; null when not asked (stopped). */
  qmp?: 'answered' | 'silent' | null;
  /** The HA manager's view when the VM is HA-managed; null when it is not. */
  ha?: { managed: boolean; state: string } | null;
  /** Live processes in the VM's systemd scope (qemu.slice/<vmid>.scope). */
  scopePids?: number[];
  /** The host's cross-check disagreed with qm (e.g. "stopped", yet QEMU processes remain). */
  warning?: string;
}

export interface StatusResult {
  verb: 'status';
  vmid: number;
  at: string;
  vm: VmState;
}

export interface ForensicsRef {
  /** Where the full document is kept on the PVE host. */
  path: string;
  sha256: string;
  durationMs: number;
}

export interface CapturedSection {
  name: string;
  exit: number;
  timedOut: boolean;
  durationMs: number;
  /** Capped (head + tail); the full text stays in the host's saved document. */
  output: string;
  droppedBytes: number;
}

export interface BlockDelta {
  /** `device`, or `qdev` when `device` is empty (PVE 9 starts drives with -blockdev). */
  device: string;
  readBytes: number;
  writeBytes: number;
  readOps: number;
  writeOps: number;
  /** No counter moved between the two samples (an idle guest looks the same). */
  frozen: boolean;
}

/**
 * frozen: no counter moved on any disk AND something else points at a stall; flat: no counter
 * moved and nothing else does (an idle guest); moving: some counter moved; unknown: no samples.
 */
export type IoVerdict = 'frozen' | 'flat' | 'moving' | 'unknown';

/** One thread of a QEMU process (from /proc/PID/task/*). */
export interface QemuThread {
  pid: number;
  tid: number;
  /** One letter: R, S, D (uninterruptible, usually I/O), Z, T… */
  state: string;
  /** Kernel function the thread sleeps in; '' when none. */
  wchan: string;
  comm: string;
}

/** Pressure stall information, avg10 percentages. */
export interface Pressure {
  source: 'qm status' | 'scope';
  ioSome: number | null;
  ioFull: number | null;
  cpuSome: number | null;
  cpuFull: number | null;
  memorySome: number | null;
  memoryFull: number | null;
}

/**
 * What the forensics sections say, read on the worker. Fields marked optional are absent in
 * summaries recorded before the host reported them (older sessions still render).
 */
export interface ForensicsSummary {
  qmpAnswered: boolean;
  qmpStatus: string | null;
  /** true only for the 'frozen' verdict; false for 'flat'/'moving'; null for 'unknown'. */
  ioFrozen: boolean | null;
  ioVerdict?: IoVerdict;
  /** Human sentences behind the verdict: the counters first, then every sign of a stall. */
  ioEvidence?: string[];
  /** The signs of a stall alone (D threads, agent failing, hung tasks, I/O pressure). */
  stallSigns?: string[];
  /** Non-removable drives only: a CD-ROM never moves and proves nothing. */
  blockDeltas: BlockDelta[];
  guestAgentAnswered: boolean;
  /** `agent` in qm config enables it; null when the config was not read. */
  guestAgentEnabled?: boolean | null;
  /** State line of the QEMU process's status (the first process listed). */
  qemuProcessState: string | null;
  /** Threads of every QEMU process listed, capped at 64. */
  threads?: QemuThread[];
  /** All D-state threads counted (not capped). */
  dStateThreads?: number;
  /** The main thread is a zombie while other threads live: the process is not gone. */
  zombieLeader?: { pid: number; liveThreads: number } | null;
  /** The VM's scope: null when the section is missing. */
  scope?: { path: string; present: boolean } | null;
  scopePids?: number[];
  pressure?: Pressure | null;
  haManaged?: boolean | null;
  /** The HA resource's requested state (resources.cfg `state`). */
  haState?: string | null;
  /** `running-qemu` (PVE 9, only when QMP answered qm status). */
  runningQemu?: string | null;
  /** The guest kernel's "task … blocked for more than N seconds" lines (at most 5, newest). */
  hungTaskLines?: string[];
  timedOutSections: string[];
  failedSections: string[];
}

/** The verdict, also for summaries recorded before there was one. */
export function ioVerdictOf(summary: ForensicsSummary): IoVerdict {
  if (summary.ioVerdict) return summary.ioVerdict;
  return summary.ioFrozen === null ? 'unknown' : summary.ioFrozen ? 'frozen' : 'moving';
}

/** A few words for the verdict: "I/O frozen (3 signs)", "counters flat, no sign of a stall", … */
export function ioVerdictLine(summary: ForensicsSummary): string {
  const signs = summary.stallSigns?.length ?? 0;
  switch (ioVerdictOf(summary)) {
    case 'frozen':
      return signs ? `I/O frozen (${signs} ${signs === 1 ? 'sign' : 'signs'})` : 'I/O frozen (block counters did not move)';
    case 'flat':
      return 'counters flat, no sign of a stall';
    case 'moving':
      return 'I/O moving';
    default:
      return `I/O unknown (no two block-stat samples)${signs ? `, ${signs} ${signs === 1 ? 'sign' : 'signs'} of a stall` : ''}`;
  }
}

export interface ForensicsResult {
  verb: 'forensics';
  vmid: number;
  requestId: string;
  replayed: boolean;
  capturedAt: string;
  forensics: ForensicsRef;
  summary: ForensicsSummary;
  sections: CapturedSection[];
}

export interface VerbStep {
  name: string;
  exit: number;
  timedOut: boolean;
  durationMs: number;
  output: string;
}

/** One thing the host verified after (or before) a mutation, in order. */
export interface VerbCheck {
  check: string;
  ok: boolean;
  detail?: string;
}

/** A QEMU process still there after the verb: its main thread's state and every thread's. */
export interface Survivor {
  pid: number;
  /** e.g. `Z (zombie)`: a zombie leader with live threads still holds the disk open. */
  leaderState: string;
  inScope: boolean;
  threads: { tid: number; state: string; wchan: string; comm: string }[];
}

/** Who holds qm's lock file: a qm worker that outlived its front process, or a shutdown. */
export interface LockHolder {
  pid: number;
  /** The Proxmox task id (`UPID:node:…:qmstop:102:root@pam:`), when the holder is a task. */
  task: string | null;
  cmdline: string;
}

/** An HA-managed VM: qm only asked the HA manager; this is what it then saw. */
export interface HaRequest {
  managed: boolean;
  requested: string;
  observed: string;
  waitedS: number;
}

export interface MutationResult {
  verb: MutatingVerb;
  vmid: number;
  requestId: string;
  ok: boolean;
  /** The host returned the recorded result of an earlier run of this request id. */
  replayed: boolean;
  startedAt: string;
  finishedAt: string;
  /** The host's own pre-mutation capture (defence in depth beside the workflow's). */
  forensics: ForensicsRef | null;
  before: VmState;
  after: VmState;
  steps: VerbStep[];
  oldPid: number | null;
  newPid: number | null;
  /**
   * Pending config existed before and is gone after, whatever failed later: qm stop's cleanup
   * applies it even when the following start fails.
   */
  pendingApplied?: boolean;
  /** reset: the QEMU pid stayed the same (a warm reset reuses the process). */
  pidUnchanged?: boolean;
  /** reset: pending config existed and a reset does not apply it. */
  pendingUnapplied?: boolean;
  /** reset: QEMU acknowledged system_reset (which is all `qm reset` exiting 0 means). */
  acknowledged?: boolean;
  /** reset: whether QMP still answered a moment after the acknowledged reset. */
  qmpAfterReset?: 'answers' | 'silent';
  /** What the host verified, in order (e.g. "QMP answers after the reset"). */
  checks?: VerbCheck[];
  ha?: HaRequest;
  /** Why the host judged the verb failed when no step did (e.g. QMP silent after a reset). */
  reason?: string;
  warning?: string;
  qemuSurvived?: boolean;
  survivors?: Survivor[];
  lockHolder?: LockHolder;
  /** qm stop ran with --overrule-shutdown: a running `qm shutdown` (holding the lock) is aborted. */
  overruleShutdown?: boolean;
  /** The `qm shutdown` tasks (UPIDs) that qm stop aborted because they held the VM's lock. */
  overruledTasks?: string[];
  /** The phase that failed: precheck, stop, ha-wait, start, confirm-new-pid. */
  failedAt?: string | null;
}

export type PveResult = StatusResult | ForensicsResult | MutationResult;

const PHASES: Record<string, string> = { precheck: 'the precheck', stop: 'the stop', 'ha-wait': 'waiting for the HA manager', start: 'the start', 'confirm-new-pid': 'confirming a new QEMU process' };

/** `failedAt` in words: "waiting for the HA manager" rather than "ha-wait". */
export const phaseWords = (phase: string): string => PHASES[phase] ?? phase;

/** The fields the words below read (the agent's minimal transcript shape has them too). */
export type MutationFacts = Pick<MutationResult, 'ok' | 'acknowledged' | 'qmpAfterReset' | 'checks' | 'ha' | 'pendingApplied'> & { verb: string };

/**
 * done: the host verified it; acknowledged: a reset QEMU acknowledged, with nothing confirming
 * the reset took (`qm reset` exits 0 on the acknowledgement alone); failed.
 */
export function mutationOutcome(result: MutationFacts): 'done' | 'acknowledged' | 'failed' {
  if (!result.ok) return 'failed';
  const checks = result.checks ?? [];
  // Results recorded before the host said what it verified read as they did then.
  if (result.verb !== 'reset' || (checks.length === 0 && result.acknowledged === undefined)) return 'done';
  const confirmed = checks.length > 0 ? checks.some((c) => c.ok && !/acknowledg|exited 0/i.test(c.check)) && checks.every((c) => c.ok) : result.qmpAfterReset === 'answers';
  return confirmed ? 'done' : 'acknowledged';
}

const checkWords = (check: VerbCheck) => `${check.check}${check.detail ? ` (${check.detail})` : ''}`;

/**
 * What the host verified, in one sentence: "reset acknowledged by QEMU; QMP answered afterwards",
 * "stop requested from the HA manager; VM stopped after 3 s", "verified: …; NOT verified: …".
 */
export function verifiedLine(result: MutationFacts): string {
  const parts: string[] = [];
  const checks = result.checks ?? [];
  if (result.ha?.managed) {
    const asked = result.ha.requested === 'stopped' ? 'stop' : result.ha.requested === 'started' ? 'start' : result.ha.requested;
    parts.push(`${asked} requested from the HA manager`);
    // The checks say what came of it when there are any.
    if (checks.length === 0) parts.push(`VM ${result.ha.observed === result.ha.requested ? '' : 'still '}${result.ha.observed} after ${result.ha.waitedS} s`);
  }
  if (checks.length > 0) {
    const good = checks.filter((c) => c.ok).map(checkWords);
    const bad = checks.filter((c) => !c.ok).map(checkWords);
    if (good.length) parts.push(`verified: ${good.join(', ')}`);
    if (bad.length) parts.push(`NOT verified: ${bad.join(', ')}`);
  } else if (result.verb === 'reset' && result.acknowledged !== undefined) {
    parts.push(result.acknowledged ? 'reset acknowledged by QEMU' : 'QEMU did not acknowledge the reset');
    if (result.qmpAfterReset) parts.push(result.qmpAfterReset === 'answers' ? 'QMP answered afterwards' : 'QMP went silent afterwards');
  }
  return parts.join('; ');
}

/** `pendingApplied` in words (it holds even when a later step failed). */
export function pendingLine(result: MutationFacts): string {
  if (result.pendingApplied === undefined) return '';
  if (!result.pendingApplied) return result.verb === 'cycle' ? 'pending config not applied' : '';
  return result.ok ? 'pending config applied (staged before, gone after)' : "pending config applied by qm stop's cleanup, although a later step failed";
}

/** "leader Z (zombie), in the VM scope; live threads: 1240 D in refrigerator". */
export function survivorDetail(survivor: Survivor): string {
  const live = survivor.threads.filter((t) => !t.state.startsWith('Z'));
  const threads = live.slice(0, 4).map((t) => `${t.tid} ${t.state}${t.wchan ? ` in ${t.wchan}` : ''}`);
  const more = live.length > 4 ? ` and ${live.length - 4} more` : '';
  return `leader ${survivor.leaderState}${survivor.inScope ? ', in the VM scope' : ''}${threads.length ? `; live threads: ${threads.join(', ')}${more}` : ''}`;
}

/** "the QEMU process 1234 survived (leader …)", for one or several survivors. */
export function survivorsLine(survivors: Survivor[] | undefined, oldPid: number | null = null): string {
  const list = survivors ?? [];
  if (list.length === 0) return `the QEMU process${oldPid === null ? '' : ` ${oldPid}`} survived`;
  if (list.length === 1) return `the QEMU process ${list[0]?.pid} survived (${survivorDetail(list[0] as Survivor)})`;
  return `${list.length} QEMU processes survived: ${list.map((s) => `${s.pid} (${survivorDetail(s)})`).join('; ')}`;
}
