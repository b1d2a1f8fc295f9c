/**
 * Operator attestation: how a session tells an operator the console authenticated from a name
 * anyone with Temporal access can type.
 *
 * The console's Temporal client signs each operator message it sends (an HMAC over the session
 * id, the message's name and its arguments, with a time and a nonce) with a key it shares with
 * the worker only (`identity.keyFile`). The session asks the worker to check the signature before
 * the message counts as that operator's; anything else is recorded as unverified and counts for
 * no one (workflows/policy.ts). The signature sits in history, but it names one session, one
 * message and one nonce, expires after ATTESTATION_TTL_MS, and the session uses each nonce once.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { WorkflowClientInterceptor } from '@temporalio/client';
import { ATTESTATION_TTL_MS, type Attestation } from '../workflows/messages.js';

/** The messages whose `operator` field must be vouched for, by Update or Signal name. */
export const ATTESTED_MESSAGES: ReadonlySet<string> = new Set(['operatorMessage', 'verb', 'command', 'approval', 'policy', 'requestVerb']);
/** Keys shorter than this are refused at start (config `identity.keyFile`). */
export const MIN_KEY_BYTES = 32;

export type AttestationVerdict = { ok: true } | { ok: false; why: string };

/** JSON with object keys sorted, so signer and checker hash the same bytes for the same value. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function mac(key: Buffer, sessionId: string, messageName: string, body: Record<string, unknown>, issuedAt: number, nonce: string): string {
  const signed = canonicalJson(['breakglass-attestation', 1, sessionId, messageName, body, issuedAt, nonce]);
  return createHmac('sha256', key).update(signed).digest('base64url');
}

function withoutAttestation(message: Record<string, unknown>): Record<string, unknown> {
  const { attestation: _attestation, ...body } = message;
  return body;
}

export function attest(key: Buffer, sessionId: string, messageName: string, message: Record<string, unknown>, now = Date.now()): Attestation {
  const nonce = randomBytes(16).toString('base64url');
  return { v: 1, issuedAt: now, nonce, mac: mac(key, sessionId, messageName, withoutAttestation(message), now, nonce) };
}

/** Whether `message` carries a valid, current attestation for this session and message name. */
export function checkAttestation(key: Buffer, sessionId: string, messageName: string, message: unknown, now = Date.now()): AttestationVerdict {
  if (!message || typeof message !== 'object') return { ok: false, why: 'not an object' };
  const attestation = (message as { attestation?: unknown }).attestation;
  if (attestation === undefined) return { ok: false, why: 'sent without the console' };
  const { v, issuedAt, nonce, mac: given } = attestation as Partial<Attestation>;
  if (v !== 1 || typeof issuedAt !== 'number' || typeof nonce !== 'string' || typeof given !== 'string') return { ok: false, why: 'malformed attestation' };
  const expected = Buffer.from(mac(key, sessionId, messageName, withoutAttestation(message as Record<string, unknown>), issuedAt, nonce));
  const actual = Buffer.from(given);
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) return { ok: false, why: 'attestation does not match this message' };
  if (Math.abs(now - issuedAt) > ATTESTATION_TTL_MS) return { ok: false, why: `attestation expired (issued ${new Date(issuedAt).toISOString()})` };
  return { ok: true };
}

/**
 * A client interceptor that signs every attested message the client sends. The console uses
 * it with the operator it authenticated in the arguments (server/session-routes.ts sets `operator` itself).
 */
export function attestingInterceptor(key: Buffer): WorkflowClientInterceptor {
  const signed = (sessionId: string, name: string, args: unknown[]): unknown[] => {
    const [first, ...rest] = args;
    if (!ATTESTED_MESSAGES.has(name) || !first || typeof first !== 'object') return args;
    const message = withoutAttestation(first as Record<string, unknown>);
    return [{ ...message, attestation: attest(key, sessionId, name, message) }, ...rest];
  };
  return {
    startUpdate: (input, next) => next({ ...input, args: signed(input.workflowExecution.workflowId, input.updateName, input.args) }),
    signal: (input, next) => next({ ...input, args: signed(input.workflowExecution.workflowId, input.signalName, input.args) }),
  };
}
