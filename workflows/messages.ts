/**
 * Every message a session understands, defined once: the server imports these definitions, and
 * the README shows the matching `temporal` / `tctl` commands.
 *
 * Signals are what the CLIs can send (tctl cannot send Updates), so pause/resume/end and a verb
 * request exist as Signals. The console uses Updates where it needs a validated, acknowledged
 * answer: a validator rejects bad input before it reaches history.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { PveVerb } from './pve-types.js';
import type { SessionPolicy, SessionState, TranscriptPage } from './session-types.js';

export const MAX_MESSAGE_LENGTH = 8_000;
export const MAX_REASON_LENGTH = 500;
export const MAX_COMMAND_LENGTH = 4_096;
export const MAX_COMMAND_TIMEOUT_SECONDS = 600;
export const DEFAULT_COMMAND_TIMEOUT_SECONDS = 30;
export const REQUEST_KEY_PATTERN = /^[A-Za-z0-9_-]{1,40}$/;
/** How long the console's signature on a message is good for (server/attestation.ts). */
export const ATTESTATION_TTL_MS = 5 * 60 * 1000;

/**
 * The console's signature over an operator message: without a valid one, the message's
 * `operator` is only a claim, recorded as unverified (server/attestation.ts).
 */
export interface Attestation {
  /** Format version: a future format is never mistaken for this one. */
  v: 1;
  issuedAt: number;
  nonce: string;
  mac: string;
}

export interface OperatorMessageInput {
  attestation?: Attestation;
  text: string;
  operator: string;
}

export interface VerbRequestInput {
  attestation?: Attestation;
  verb: PveVerb;
  reason: string;
  operator: string;
  /** Optional client-chosen key; repeating it never runs the verb twice. */
  requestKey?: string;
  /** Take the VM's mutation lease over from another session's hold (explicit, recorded in both). */
  takeOver?: boolean;
}

export interface CommandRequestInput {
  attestation?: Attestation;
  command: string;
  timeoutSeconds?: number;
  operator: string;
  requestKey?: string;
}

export interface ApprovalInput {
  attestation?: Attestation;
  approvalId: string;
  decision: 'approve' | 'deny';
  operator: string;
  reason?: string;
}

export interface OperatorActionInput {
  operator: string;
  reason?: string;
}

export interface PolicyInput {
  attestation?: Attestation;
  operator: string;
  policy: Partial<SessionPolicy>;
}

/** What a request update answers: its key, and whether it now waits for approval. */
export interface RequestAccepted {
  key: string;
  approvalId: string | null;
}

export const operatorMessageUpdate = defineUpdate<{ seq: number }, [OperatorMessageInput]>('operatorMessage');
export const requestVerbUpdate = defineUpdate<RequestAccepted, [VerbRequestInput]>('verb');
export const requestCommandUpdate = defineUpdate<RequestAccepted, [CommandRequestInput]>('command');
export const approvalUpdate = defineUpdate<{ approvalId: string; decision: string; executed: boolean }, [ApprovalInput]>('approval');
export const setPolicyUpdate = defineUpdate<SessionPolicy, [PolicyInput]>('policy');

export const requestVerbSignal = defineSignal<[VerbRequestInput]>('requestVerb');
export const pauseSignal = defineSignal<[OperatorActionInput]>('pause');
export const resumeSignal = defineSignal<[OperatorActionInput]>('resume');
export const endSessionSignal = defineSignal<[OperatorActionInput]>('endSession');
/** Sent by the console just before it cancels the workflow, so the record names who did it. */
export const cancelRequestSignal = defineSignal<[OperatorActionInput]>('cancelRequested');

export const stateQuery = defineQuery<SessionState>('state');
export const transcriptQuery = defineQuery<TranscriptPage, [{ cursor?: number; limit?: number }?]>('transcript');
/**
 * State and a transcript page in one query: two queries sent to one workflow at once are
 * answered one after the other, the second up to ~2 s late (measured on the dev server).
 */
export const viewQuery = defineQuery<{ state: SessionState; transcript: TranscriptPage }, [{ cursor?: number; limit?: number }?]>('view');
