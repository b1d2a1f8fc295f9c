/**
 * What the session's parts (message handlers, the steps, the agent turn) may see and change of its state.
 * The session function owns the state; it hands its parts this view, with accessors for the
 * values that change (workflows/session.ts).
 */
import type { WorkflowInfo } from '@temporalio/workflow';
import type { RequestAccepted } from './messages.js';
import type { VmState } from './pve-types.js';
import type { Activities, timingOverrides } from './session-rules.js';
import type { AgentState, Outcome, PendingApproval, SessionInput, SessionPolicy, TokenUsage, TranscriptEntry, WorkItem } from './session-types.js';

/** A transcript entry as the session records it (it adds seq and at). */
export type NewEntry = TranscriptEntry extends infer E ? (E extends TranscriptEntry ? Omit<E, 'seq' | 'at'> : never) : never;

export interface SessionScope {
  readonly info: WorkflowInfo;
  readonly input: SessionInput;
  readonly tuned: ReturnType<typeof timingOverrides>;
  readonly nextSeq: number;
  readonly outcome: Outcome | null;
  endRequested: { operator: string; reason: string } | null;
  cancelledBy: { operator: string; reason: string } | null;
  policy: SessionPolicy;
  paused: boolean;
  pauseReason: string;
  toolCallsUsed: number;
  agentThinking: boolean;
  costUsd: number;
  lastVerb: string;
  lastMutationOk: boolean | null;
  devvmReachable: boolean | null;
  running: { item: WorkItem; since: number } | null;
  leaseTaken: boolean;
  policyProposal: { operator: string; policy: SessionPolicy } | null;
  readonly usedKeys: Set<string>;
  /** Operator messages by update id, so a retry in a later run is answered, not recorded twice. */
  readonly messageUpdates: Map<string, number>;
  /** Uses an attestation's nonce: false when it was used before (a replayed signature). */
  useAttestation(nonce: string, issuedAt: number): boolean;
  readonly pendingApprovals: Map<string, PendingApproval>;
  readonly expiredApprovals: Set<string>;
  readonly agentState: AgentState;
  readonly awaiting: Set<string>;
  readonly queue: WorkItem[];
  readonly tokens: TokenUsage;
  record(entry: NewEntry): TranscriptEntry;
  notify(event: Parameters<Activities['notify']>[0]): Promise<void>;
  setVm(next: VmState): void;
  refreshDetails(): void;
  pause(operator: string, reason: string): void;
  newKey(requested: string | undefined): string;
  admit(item: WorkItem): RequestAccepted;
  /** Queues an admitted item; an operator's mutation stops a devvm command in flight. */
  enqueue(item: WorkItem): void;
  /** Stops the devvm command in flight (set while one runs). */
  stopCommand: ((why: string) => void) | null;
}
