/**
 * The transcript entries the agent reads, as minimal shapes. The session's `TranscriptEntry`
 * (workflows/session-types.ts) is assignable to {@link AgentTranscriptEntry}: every type it has
 * is listed here with the fields the conversation builder uses (a compile-time check lives in
 * test/agent-conversation.test.ts, so a new entry type there fails type-checking until it is
 * given a shape here). Unknown types met at run time are ignored.
 *
 * Two entries are new and owned by the agent; the workflow records them exactly as defined:
 * `agent-message` (one per model turn) and `agent-tool-error` (a tool call that was refused
 * before anything ran, e.g. malformed input).
 */
import type { BlockDelta, CapturedSection, ForensicsSummary, HaRequest, LockHolder, Survivor, VerbCheck, VmState } from '../../workflows/pve-types.js';

/** Token counts of one model turn (Messages API `usage`, camel-cased). */
export interface AgentUsage {
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
}

/**
 * One tool call as the model made it. `input` is the parsed JSON object; when the model's
 * JSON could not be parsed it is the raw string (validateToolCall then reports it).
 */
export interface AgentToolCall {
  id: string;
  name: string;
  input: unknown;
  /** The work-item key its result carries (absent in older sessions: toolKey(id)). */
  key?: string;
}

/** A new transcript entry: the text and tool calls of one model turn. */
export interface AgentMessageEntry {
  type: 'agent-message';
  /** The turn's id (e.g. the activity id): unique per session, for the UI and the record. */
  turn: string;
  text: string;
  toolCalls: AgentToolCall[];
  usage: AgentUsage;
}

/** A new transcript entry: a tool call refused before anything ran; the model gets the message. */
export interface AgentToolErrorEntry {
  type: 'agent-tool-error';
  toolUseId: string;
  message: string;
}

export type AgentActor = { kind: 'operator'; name: string } | { kind: 'agent' } | { kind: 'system' };

export type AgentWorkItem =
  | { kind: 'verb'; key: string; verb: string; reason: string; requestedBy: AgentActor }
  | { kind: 'command'; key: string; command: string; timeoutSeconds: number; requestedBy: AgentActor };

export interface AgentCommandRecord {
  command: string;
  exitCode: number | null;
  exitSignal?: string | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  droppedBytes: number;
  durationMs: number;
}

export interface AgentForensicsResult {
  summary: ForensicsSummary;
  sections: CapturedSection[];
  capturedAt?: string;
  replayed?: boolean;
}

export interface AgentMutationResult {
  verb: string;
  ok: boolean;
  before: VmState;
  after: VmState;
  oldPid: number | null;
  newPid: number | null;
  replayed?: boolean;
  steps?: { name: string; exit: number; timedOut: boolean; durationMs: number; output: string }[];
  pendingApplied?: boolean;
  pidUnchanged?: boolean;
  pendingUnapplied?: boolean;
  acknowledged?: boolean;
  qmpAfterReset?: 'answers' | 'silent';
  checks?: VerbCheck[];
  ha?: HaRequest;
  reason?: string;
  warning?: string;
  qemuSurvived?: boolean;
  survivors?: Survivor[];
  lockHolder?: LockHolder;
  overruleShutdown?: boolean;
  overruledTasks?: string[];
  failedAt?: string | null;
}

interface Seq {
  seq: number;
  at?: number;
}

export type AgentTranscriptEntry = Seq &
  (
    | AgentMessageEntry
    | AgentToolErrorEntry
    | { type: 'session-started'; operator: string; description: string; target: { devvm: string; vmid: number } }
    | { type: 'session-continued'; previousRunId: string; firstSeq: number }
    | { type: 'operator-message'; operator: string; text: string; unverified?: { identity: string; why: string } }
    | { type: 'request'; item: AgentWorkItem }
    | { type: 'approval-needed'; approvalId: string; item: AgentWorkItem; why: string; required?: number }
    | { type: 'approval'; approvalId: string; decision: 'approve' | 'deny'; operator: string; reason?: string }
    | { type: 'status'; key: string; result: { vm: VmState } }
    | { type: 'forensics'; key: string; trigger: string; result: AgentForensicsResult }
    | { type: 'verb-result'; key: string; result: AgentMutationResult }
    | { type: 'verb-failed'; key: string; verb: string; kind: string; message: string }
    | { type: 'skipped'; key: string; what: string; why: string }
    | { type: 'outcome-unknown'; key: string; verb: string; message: string; status: VmState | null }
    | { type: 'devvm-wait'; key: string; reachable: boolean; waitedMs: number; attempts?: number }
    | { type: 'command-result'; key: string; result: AgentCommandRecord }
    | { type: 'command-failed'; key: string; command: string; kind: string; message: string }
    | { type: 'paused'; operator: string; reason: string }
    | { type: 'resumed'; operator: string }
    | { type: 'policy-changed'; operator: string; policy: { mutatingVerbs: string; devvmCommands: string; toolCallsPerMessage: number }; proposedBy?: string }
    | { type: 'policy-proposed'; operator: string; policy: { mutatingVerbs: string; devvmCommands: string; toolCallsPerMessage: number } }
    | { type: 'session-ended'; outcome: string; operator: string; reason: string }
    | { type: 'agent-error'; kind: string; message: string }
    | { type: 'agent-disabled'; reason: string }
    | { type: 'cancel-requested'; operator: string; reason: string }
    | { type: 'lease'; event: 'took-over' | 'taken-over'; sessionId: string; operator: string; verb: string; reason: string }
  );

export type AgentTranscriptEntryType = AgentTranscriptEntry['type'];

export type { BlockDelta, CapturedSection, ForensicsSummary, VmState };
