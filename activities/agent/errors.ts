/**
 * Typed agent (Messages API) errors, and their conversion to Temporal failures.
 *
 * Who backs off: Temporal, not the SDK. runAgentTurn defaults the SDK's own retries to 0, so
 * every failed call surfaces here and the activity throws `toApplicationFailure(error)`:
 * each attempt is then visible in the workflow history, a worker crash during a backoff costs
 * nothing, the live-output side channel (keyed by attempt) drops a failed attempt's partial
 * text, and retries are not multiplied (SDK retries inside Temporal retries). A server's
 * `retry-after` / `retry-after-ms` reaches Temporal as the failure's `nextRetryDelay`.
 */
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from '@anthropic-ai/sdk';
import { ApplicationFailure } from '@temporalio/activity';
import { redact } from './redact.js';

export type AgentErrorKind = 'auth' | 'rate_limited' | 'overloaded' | 'server' | 'bad_request' | 'timeout' | 'network' | 'cancelled';

const RETRYABLE: Record<AgentErrorKind, boolean> = {
  // An invalid or revoked key does not heal by itself: the session falls back to manual mode.
  auth: false,
  rate_limited: true,
  overloaded: true,
  server: true,
  // The same request will be refused again (malformed, too large, unknown model).
  bad_request: false,
  timeout: true,
  network: true,
  // The activity was cancelled: nothing to retry.
  cancelled: false,
};

/** Temporal failure type of each kind (`agent_auth`, …): distinct from the SSH layer's kinds. */
export function agentFailureType(kind: AgentErrorKind): string {
  return `agent_${kind}`;
}

/** Failure types a workflow retry policy should list as non-retryable (also marked on the failure). */
export const NON_RETRYABLE_AGENT_FAILURES: readonly string[] = (Object.keys(RETRYABLE) as AgentErrorKind[])
  .filter((kind) => !RETRYABLE[kind])
  .map(agentFailureType);

export class AgentError extends Error {
  readonly kind: AgentErrorKind;
  readonly retryable: boolean;
  /** How long the API asked us to wait before the next call, when it said so. */
  readonly retryAfterMs: number | null;
  /** HTTP status, when the error came from an HTTP response. */
  readonly status: number | null;
  /** The API's request id, for support tickets. */
  readonly requestId: string | null;

  constructor(kind: AgentErrorKind, message: string, extra: { retryAfterMs?: number | null; status?: number | null; requestId?: string | null } = {}) {
    // Invariant 10: no secret ever travels in an error message.
    super(redact(message));
    this.name = 'AgentError';
    this.kind = kind;
    this.retryable = RETRYABLE[kind];
    this.retryAfterMs = extra.retryAfterMs ?? null;
    this.status = extra.status ?? null;
    this.requestId = extra.requestId ?? null;
  }
}

export function isAgentError(error: unknown, kind?: AgentErrorKind): error is AgentError {
  return error instanceof AgentError && (kind === undefined || error.kind === kind);
}

/** Longest wait we take from a header; beyond it the retry policy's own backoff applies. */
const MAX_RETRY_AFTER_MS = 10 * 60_000;

/**
 * Reads `retry-after-ms` (milliseconds) or `retry-after` (seconds, or an HTTP date).
 * Returns null when absent, unparseable, not positive or absurdly long.
 */
export function parseRetryAfter(headers: Headers | null | undefined, now = Date.now()): number | null {
  if (!headers) return null;
  let ms: number | null = null;
  const millis = headers.get('retry-after-ms');
  if (millis !== null && millis.trim() !== '' && Number.isFinite(Number(millis))) ms = Number(millis);
  if (ms === null) {
    const value = headers.get('retry-after');
    if (value !== null && value.trim() !== '') {
      if (Number.isFinite(Number(value))) ms = Number(value) * 1000;
      else {
        const date = Date.parse(value);
        if (!Number.isNaN(date)) ms = date - now;
      }
    }
  }
  if (ms === null || !(ms > 0) || ms > MAX_RETRY_AFTER_MS) return null;
  return Math.ceil(ms);
}

function kindOfStatus(status: number): AgentErrorKind {
  if (status === 401 || status === 403) return 'auth';
  if (status === 429) return 'rate_limited';
  if (status === 529) return 'overloaded';
  if (status === 408 || status === 504) return 'timeout';
  if (status === 409 || status >= 500) return 'server';
  return 'bad_request';
}

/** For errors that arrive inside a 200 stream (`event: error`), which carry a type, not a status. */
function kindOfType(type: string | null | undefined): AgentErrorKind {
  switch (type) {
    case 'authentication_error':
    case 'permission_error':
    case 'billing_error':
      return 'auth';
    case 'rate_limit_error':
      return 'rate_limited';
    case 'overloaded_error':
      return 'overloaded';
    case 'timeout_error':
      return 'timeout';
    case 'invalid_request_error':
    case 'not_found_error':
      return 'bad_request';
    default:
      return 'server';
  }
}

const ADVICE: Partial<Record<AgentErrorKind, string>> = {
  auth: 'the Anthropic API refused the API key; the agent is disabled for this session, the manual console keeps working',
  rate_limited: 'rate limited by the Anthropic API',
  overloaded: 'the Anthropic API is overloaded',
  server: 'the Anthropic API failed',
  bad_request: 'the Anthropic API refused the request',
};

/**
 * Classifies anything runAgentTurn can throw. `context.timedOut` / `context.cancelled` say
 * that our own deadline or the caller's signal aborted the call.
 */
export function toAgentError(error: unknown, context: { timedOut?: boolean; cancelled?: boolean } = {}): AgentError {
  if (error instanceof AgentError) return error;
  if (context.timedOut) return new AgentError('timeout', 'the model call exceeded its deadline');
  if (error instanceof APIUserAbortError || context.cancelled) return new AgentError('cancelled', 'the model call was cancelled');
  if (error instanceof APIConnectionTimeoutError) return new AgentError('timeout', 'the model call timed out');
  if (error instanceof APIConnectionError) {
    const cause = (error as { cause?: unknown }).cause;
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    return new AgentError('network', `cannot reach the Anthropic API${detail}`);
  }
  if (error instanceof APIError) {
    const status = typeof error.status === 'number' ? error.status : null;
    const kind = status !== null ? kindOfStatus(status) : kindOfType(error.type);
    const apiMessage = error.apiMessage ?? error.message;
    const where = status !== null ? ` (HTTP ${status}${error.type ? ` ${error.type}` : ''})` : error.type ? ` (${error.type} during the stream)` : '';
    return new AgentError(kind, `${ADVICE[kind] ?? 'model call failed'}${where}: ${apiMessage}`, {
      status,
      retryAfterMs: parseRetryAfter(error.headers ?? null),
      requestId: error.requestID ?? null,
    });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new AgentError('network', `model call failed: ${message}`);
}

/**
 * The Temporal failure an agent-turn activity should throw: type `agent_<kind>`, non-retryable
 * for auth / bad_request / cancelled, `nextRetryDelay` from the server's retry-after.
 */
export function toApplicationFailure(error: unknown): ApplicationFailure {
  const agentError = toAgentError(error);
  return ApplicationFailure.create({
    type: agentFailureType(agentError.kind),
    message: agentError.message,
    nonRetryable: !agentError.retryable,
    ...(agentError.retryable && agentError.retryAfterMs !== null ? { nextRetryDelay: agentError.retryAfterMs } : {}),
    details: [{ kind: agentError.kind, status: agentError.status, retryAfterMs: agentError.retryAfterMs, requestId: agentError.requestId }],
  });
}
