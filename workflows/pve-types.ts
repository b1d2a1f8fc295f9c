/**
 * The PVE verbs and their results, shared by activities, the workflow, the server and the UI
 * (which import them with `import type`). Pure data: safe inside the workflow sandbox.
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
  qmpstatus: string;
  pid: number | null;
  uptimeSeconds: number | null;
  lock: string;
  pending: { present: boolean; lines: string[] };
  error?: string;
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
  device: string;
  readBytes: number;
  writeBytes: number;
  readOps: number;
  writeOps: number;
  /** No counter moved between the two samples. */
  frozen: boolean;
}

export interface ForensicsSummary {
  qmpAnswered: boolean;
  qmpStatus: string | null;
  /** true: every device's counters were frozen between samples; null: no two samples. */
  ioFrozen: boolean | null;
  blockDeltas: BlockDelta[];
  guestAgentAnswered: boolean;
  qemuProcessState: string | null;
  timedOutSections: string[];
  failedSections: string[];
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
  /** cycle: `qm pending` was non-empty before and is empty after. */
  pendingApplied?: boolean;
  /** reset: the QEMU pid stayed the same (a warm reset reuses the process). */
  pidUnchanged?: boolean;
  /** reset: pending config existed and a reset does not apply it. */
  pendingUnapplied?: boolean;
  /** reset: QEMU acknowledged system_reset (which is all `qm reset` exiting 0 means). */
  acknowledged?: boolean;
  /** reset: whether QMP still answered a moment after the acknowledged reset. */
  qmpAfterReset?: 'answers' | 'silent';
  /** Why the host judged the verb failed when no step did (e.g. QMP silent after a reset). */
  reason?: string;
  warning?: string;
  qemuSurvived?: boolean;
  survivor?: { pid: number; state: string; note: string };
  /** cycle: the phase that failed (stop, start, confirm-new-pid). */
  failedAt?: string | null;
}

export type PveResult = StatusResult | ForensicsResult | MutationResult;
