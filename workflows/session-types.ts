/**
 * The session's data: its input, the requests it serialises, its transcript and the state its
 * queries return. Shared (as types) with the server and the UI.
 */
import type { ForensicsResult, MutationResult, PveVerb, StatusResult, VmState } from './pve-types.js';
import type { LeaseHolder } from './target-lease.js';

export type MutationPolicy = 'autonomous' | 'approve' | 'two-person';
/** `allowlist`: read-only devvm commands from the agent run on their own, others wait. */
export type CommandPolicy = 'allowlist' | 'autonomous';

export interface SessionPolicy {
  mutatingVerbs: MutationPolicy;
  devvmCommands: CommandPolicy;
  /** Agent tool calls allowed per operator message before the session pauses and asks. */
  toolCallsPerMessage: number;
}

export const DEFAULT_POLICY: SessionPolicy = {
  mutatingVerbs: 'autonomous',
  devvmCommands: 'allowlist',
  toolCallsPerMessage: 20,
};
export interface SessionTarget {
  /** How people name the devvm (display and search attribute). */
  devvm: string;
  vmid: number;
}

/**
 * Who asked. An operator's name counts only when the console vouched for it; a message sent
 * straight through Temporal names an operator it cannot prove, so it carries `unverified` (the
 * caller's Temporal identity and why) and counts for no one (workflows/policy.ts).
 */
export type Actor = { kind: 'operator'; name: string; unverified?: Unverified } | { kind: 'agent' } | { kind: 'system' };
export interface Unverified {
  /** The Temporal client identity that sent the message, as the server recorded it. */
  identity: string;
  why: string;
}

export type Outcome = 'recovered' | 'ended' | 'cancelled' | 'failed';

export interface VerbItem {
  kind: 'verb';
  /** Stable key of this request: the host's request ids derive from it (see hostRequestId). */
  key: string;
  verb: PveVerb;
  reason: string;
  requestedBy: Actor;
  approvedBy: string[];
  /** An operator's explicit take-over of another session's lease on the VM. */
  takeOver?: true;
}

export interface CommandItem {
  kind: 'command';
  key: string;
  command: string;
  timeoutSeconds: number;
  requestedBy: Actor;
  approvedBy: string[];
}

export type WorkItem = VerbItem | CommandItem;

export interface PendingApproval {
  approvalId: string;
  item: WorkItem;
  requestedAt: number;
  /** Distinct operators who must approve. */
  required: number;
  approvals: string[];
  why: string;
}

export interface DevvmCommandRecord {
  command: string;
  exitCode: number | null;
  exitSignal: string | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  droppedBytes: number;
  durationMs: number;
}

interface EntryBase {
  seq: number;
  at: number;
}

export type TranscriptEntry = EntryBase &
  (
    | { type: 'session-started'; operator: string; description: string; target: SessionTarget; policy: SessionPolicy }
    | { type: 'session-continued'; previousRunId: string; firstSeq: number }
    | { type: 'operator-message'; operator: string; text: string; unverified?: Unverified }
    | { type: 'request'; item: WorkItem }
    | { type: 'approval-needed'; approvalId: string; item: WorkItem; why: string; required: number }
    | { type: 'approval'; approvalId: string; decision: 'approve' | 'deny'; operator: string; reason: string; /** Recorded, not counted. */ unverified?: Unverified }
    | { type: 'status'; key: string; result: StatusResult }
    | { type: 'forensics'; key: string; trigger: string; result: ForensicsResult }
    | { type: 'verb-result'; key: string; result: MutationResult }
    | { type: 'verb-failed'; key: string; verb: PveVerb; kind: string; message: string; detail?: unknown }
    | { type: 'skipped'; key: string; what: string; why: string; lease?: LeaseHolder }
    | { type: 'lease'; event: 'took-over' | 'taken-over'; sessionId: string; operator: string; verb: string; reason: string }
    | { type: 'outcome-unknown'; key: string; verb: PveVerb; message: string; status: VmState | null }
    | { type: 'devvm-wait'; key: string; reachable: boolean; waitedMs: number; attempts: number }
    | { type: 'command-result'; key: string; result: DevvmCommandRecord }
    | { type: 'command-failed'; key: string; command: string; kind: string; message: string }
    | { type: 'paused'; operator: string; reason: string }
    | { type: 'resumed'; operator: string }
    | { type: 'policy-changed'; operator: string; policy: SessionPolicy; proposedBy?: string; /** A tightening only. */ unverified?: Unverified }
    | { type: 'policy-proposed'; operator: string; policy: SessionPolicy }
    | { type: 'session-ended'; outcome: Outcome; operator: string; reason: string }
    | { type: 'cancel-requested'; operator: string; reason: string }
    /** toolCalls[].key: the work-item key the call's result carries (absent in older histories: toolKey(id)). */
    | { type: 'agent-message'; turn: string; text: string; toolCalls: { id: string; name: string; input: unknown; key?: string }[]; usage: TokenUsage }
    | { type: 'agent-tool-error'; toolUseId: string; message: string }
    | { type: 'agent-error'; kind: string; message: string }
    | { type: 'agent-disabled'; reason: string }
  );

export interface TokenUsage {
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
}

export type TranscriptEntryType = TranscriptEntry['type'];

/** What a continued (continue-as-new) run needs from the previous one. */
export interface CarriedState {
  previousRunId: string;
  nextSeq: number;
  nextRequestNumber: number;
  paused: boolean;
  pauseReason: string;
  policy: SessionPolicy;
  vm: VmState | null;
  vmCheckedAt: number | null;
  devvmReachable: boolean | null;
  lastVerb: string;
  lastMutationOk: boolean | null;
  pendingApprovals: PendingApproval[];
  queue: WorkItem[];
  usedKeys: string[];
  toolCallsUsed: number;
  startedAt: number;
  agent: AgentState;
  tokens: TokenUsage;
  costUsd: number;
  /** This session has taken the VM's mutation lease (it releases it when it ends). */
  leaseTaken?: boolean;
  /** A loosening of a two-person policy, waiting for a second operator. */
  policyProposal?: { operator: string; policy: SessionPolicy } | null;
  /** Who asked to cancel (the console signals it just before cancelling): a run boundary in between must not lose the name. */
  cancelledBy?: { operator: string; reason: string } | null;
  /** Operator messages' update ids and their seq (see workflows/session-handlers.ts). */
  messageUpdates?: [string, number][];
  /** Attestation nonces used, with when each stops mattering (see workflows/session-handlers.ts). */
  usedAttestations?: [string, number][];
}

export interface AgentState {
  enabled: boolean;
  /** Why the agent is off (no key, invalid key) — shown in the console. */
  reason: string;
  /** A turn is due (an operator message arrived, or tool results came back). */
  pending: boolean;
  turns: number;
  /** Keys of the agent's tool calls that have no result yet. */
  awaiting: string[];
}

/**
 * How quickly the session notices a dead worker and retries. Omitted (the normal case): the
 * production values. Fault tests shorten them so a killed worker costs seconds, not 20 s.
 * Out-of-range values are clamped (see session.ts), never rejected.
 */
export interface SessionTiming {
  /** Heartbeat timeout of every activity (default 20 s for PVE verbs and the devvm wait, 10 s for devvm commands). */
  heartbeatTimeoutSeconds?: number;
  /** First retry interval of PVE verbs (default 1 s for reads, 2 s for mutations). */
  retryInitialIntervalSeconds?: number;
  /** Retry backoff cap of PVE verbs (default 10 s for reads, 15 s for mutations). */
  retryMaximumIntervalSeconds?: number;
}

export interface SessionInput {
  target: SessionTarget;
  operator: string;
  description: string;
  policy: SessionPolicy;
  /** Send webhook notifications (the deployment has a webhook configured). */
  notify?: boolean;
  /** A pending approval lapses after this many minutes (default 15); fractions for tests. */
  approvalExpiryMinutes?: number;
  /** After a mutating verb's outcome the session keeps the VM's lease this long (default 10; 0: only while the verb runs). */
  leaseHoldMinutes?: number;
  /** Whether this deployment has an agent (an API key); off: a manual console. */
  agent?: { enabled: boolean; reason: string };
  /**
   * How a session opened from the console begins: a read-only status at once (the VM panel is
   * filled before anyone asks) and, with an agent, the description as its first message. Absent
   * (scripts, sessions from before): the session waits for its first request.
   */
  opening?: { lookFirst: boolean; agentOnDescription: boolean };
  /** Optional; carried across continue-as-new with the rest of the input. */
  timing?: SessionTiming;
  continued?: CarriedState;
}

export interface SessionState {
  workflowId: string;
  runId: string;
  target: SessionTarget;
  operator: string;
  description: string;
  startedAt: number;
  policy: SessionPolicy;
  paused: boolean;
  pauseReason: string;
  ended: boolean;
  outcome: Outcome | null;
  vm: VmState | null;
  vmCheckedAt: number | null;
  devvmReachable: boolean | null;
  lastVerb: string;
  running: { item: WorkItem; since: number } | null;
  queue: WorkItem[];
  pendingApprovals: PendingApproval[];
  budget: { toolCallsUsed: number; toolCallsPerMessage: number; tokens: TokenUsage; costUsd: number };
  agent: { enabled: boolean; reason: string; thinking: boolean; turns: number; awaiting: string[] };
  transcript: { firstSeq: number; nextSeq: number; previousRunId: string | null };
}

export interface TranscriptPage {
  entries: TranscriptEntry[];
  /** Pass back as `cursor` to get the next page; null when there is nothing newer yet. */
  nextCursor: number | null;
  /** More entries follow in this run (the page was cut by its entry limit or its byte cap). */
  more: boolean;
  /** Entries before this seq live in earlier runs of the session (continue-as-new). */
  firstSeq: number;
  previousRunId: string | null;
}
