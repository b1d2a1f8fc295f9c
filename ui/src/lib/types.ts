/**
 * The console's view of the API. Shapes owned by the workflow come from ../workflows as types
 * only (nothing from the workflow sandbox is bundled); the rest mirrors server/app.ts.
 */
import type { SessionState, TranscriptEntry, TranscriptPage } from '../../../workflows/session-types.js';

export type { SessionState, TranscriptPage };
export type { Actor, DevvmCommandRecord, Unverified, PendingApproval, SessionPolicy, TokenUsage, WorkItem, MutationPolicy, CommandPolicy } from '../../../workflows/session-types.js';
export type {
  BlockDelta,
  CapturedSection,
  ForensicsResult,
  ForensicsSummary,
  HaRequest,
  IoVerdict,
  LockHolder,
  MutationResult,
  Pressure,
  PveVerb,
  QemuThread,
  StatusResult,
  Survivor,
  VerbCheck,
  VmState,
} from '../../../workflows/pve-types.js';

export type AgentMode = 'live' | 'demo' | 'off';

export interface AgentInfo {
  mode: AgentMode;
  reason: string;
}

/** `GET /api/me` */
export interface Me {
  operator: string;
  authMode: string;
  temporalUiUrl: string | null;
  namespace: string;
  agent: AgentInfo;
}

/** One row of `GET /api/sessions` (Temporal visibility): the server's own type. */
export type { SessionSummary } from '../../../server/sessions';
export type { ListFilter, ListOutcome, ListSince } from '../../../server/session-search';

/** A live chunk on the SSE stream: token deltas and command output, not durable. */
export type { LiveChunk } from '../../../server/live-bus';

/**
 * Every transcript entry, as the workflow records it (agent entries included: agent-message,
 * agent-tool-error, agent-error, agent-disabled). Types the console does not know yet are
 * still drawn, as raw data.
 */
export type Entry = TranscriptEntry;
export type { LeaseHolder } from '../../../workflows/target-lease.js';

export type EntryOf<T extends Entry['type']> = Extract<Entry, { type: T }>;

export type SessionAction = 'pause' | 'resume' | 'end' | 'cancel';
