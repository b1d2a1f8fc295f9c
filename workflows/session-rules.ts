/**
 * The session's fixed rules, shared by its parts: which failures are final, the activity
 * proxies and their retry policies, input checks, and how request keys name host requests.
 */
import { ActivityFailure, ApplicationFailure, TimeoutFailure, proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { createActivities } from '../activities/index.js';
import { MAX_COMMAND_TIMEOUT_SECONDS, MAX_REASON_LENGTH, REQUEST_KEY_PATTERN } from './messages.js';
import type { SessionTiming, TranscriptEntry, TranscriptPage, WorkItem } from './session-types.js';

export type Activities = ReturnType<typeof createActivities>;

/** Error types the activities raise for failures that repeating cannot fix. */
export const NON_RETRYABLE = ['host_key_mismatch', 'auth_failed', 'verb_rejected', 'conflict', 'verb_failed', 'outcome_unknown', 'host_config', 'protocol'];
/** Activity failures after which a mutating verb may or may not have run on the host. */
export const UNKNOWN_OUTCOME_KINDS = new Set(['timeout', 'unreachable', 'in_progress', 'outcome_unknown', 'protocol']);
export const TRANSCRIPT_PAGE_LIMIT = 200;
/**
 * A page's size cap, in JSON characters: forensics (~130 KiB each) and outputs add up, and a
 * query answer past gRPC's 4 MB message limit would break catch-up, the postmortem and every
 * agent turn. Always at least one entry (each is capped on its own).
 */
export const TRANSCRIPT_PAGE_BYTES = 1024 * 1024;
export const DEVVM_WAIT_SECONDS = 180;

// Read-only verbs: a few quick retries.
export const reads = proxyActivities<Activities>({
  startToCloseTimeout: '90s',
  heartbeatTimeout: '20s',
  retry: { initialInterval: '1s', maximumInterval: '10s', maximumAttempts: 4, nonRetryableErrorTypes: NON_RETRYABLE },
});
// Mutating verbs: retried safely because every attempt carries the same host request id, so a
// retry re-attaches to the host's journal instead of acting again. The heartbeat timeout is
// what notices a dead worker.
export const mutations = proxyActivities<Activities>({
  startToCloseTimeout: '6m',
  heartbeatTimeout: '20s',
  retry: { initialInterval: '2s', maximumInterval: '15s', maximumAttempts: 6, nonRetryableErrorTypes: NON_RETRYABLE },
});
// The VM's mutation lease (workflows/target-lease.ts): quick, retried while the lease workflow
// changes hands; failing closed (the verb is not run) if it cannot be reached.
export const leases = proxyActivities<Activities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', maximumInterval: '5s', maximumAttempts: 8 },
});
/** An in-flight lease outlives any verb (stop grace, HA wait, start), then lapses on its own. */
export const LEASE_IN_FLIGHT_SECONDS = 30 * 60;
export const DEFAULT_LEASE_HOLD_MINUTES = 10;

// Devvm commands are not idempotent in general: run at most once, cancellable.
export const commands = proxyActivities<Activities>({
  startToCloseTimeout: `${MAX_COMMAND_TIMEOUT_SECONDS + 30}s`,
  heartbeatTimeout: '10s',
  retry: { maximumAttempts: 1 },
});

/** Clamps an optional number into [min, max]; undefined (or not a number) stays undefined. */
export function clampOptional(value: number | undefined, min: number, max: number): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? Math.min(Math.max(value, min), max) : undefined;
}

/**
 * Activity option overrides from SessionInput.timing, merged over the proxies' defaults by
 * executeWithOptions. Without timing they are empty: the defaults above apply unchanged.
 */
export function timingOverrides(timing: SessionTiming | undefined) {
  // Activities heartbeat every second: a timeout under 2 s would fail healthy attempts.
  const heartbeatSeconds = clampOptional(timing?.heartbeatTimeoutSeconds, 2, 600);
  const initialSeconds = clampOptional(timing?.retryInitialIntervalSeconds, 0.1, 60);
  const maximumSeconds = clampOptional(timing?.retryMaximumIntervalSeconds, 0.1, 600);
  const heartbeat = heartbeatSeconds === undefined ? {} : { heartbeatTimeout: heartbeatSeconds * 1000 };
  const retry = (defaults: { initial: number; maximum: number }) => {
    if (initialSeconds === undefined && maximumSeconds === undefined) return {};
    const maximum = maximumSeconds ?? Math.max(defaults.maximum, initialSeconds ?? 0);
    const initial = Math.min(initialSeconds ?? defaults.initial, maximum);
    return { retry: { initialInterval: initial * 1000, maximumInterval: maximum * 1000 } };
  };
  return {
    heartbeat,
    reads: { ...heartbeat, ...retry({ initial: 1, maximum: 10 }) },
    mutations: { ...heartbeat, ...retry({ initial: 2, maximum: 15 }) },
  };
}

// Agent turns: retried with backoff (a 429's retry-after arrives as the failure's next-retry
// delay); an invalid key or a malformed request is not retried. Cancellable.
export const agent = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '60s', maximumAttempts: 6, nonRetryableErrorTypes: ['agent_auth', 'agent_bad_request', 'agent_cancelled'] },
});

// Who sent an operator message: the console's signature is checked on this worker within the
// same workflow task (a local activity, no extra round trip); only a message without a valid one
// costs a history read for its sender's Temporal identity.
export const attestations = proxyLocalActivities<Activities>({ startToCloseTimeout: '5s', retry: { maximumAttempts: 3, initialInterval: '200ms' } });
export const callers = proxyActivities<Activities>({ startToCloseTimeout: '30s', retry: { maximumAttempts: 3, initialInterval: '1s' } });

// Webhook notifications: best effort, never awaited by anything that matters.
export const notifications = proxyActivities<Activities>({ startToCloseTimeout: '20s', retry: { maximumAttempts: 3, initialInterval: '2s' } });

export interface FailureInfo {
  kind: string;
  message: string;
  detail?: unknown;
}

export function describeFailure(error: unknown): FailureInfo {
  if (error instanceof ActivityFailure) {
    const cause = error.cause;
    if (cause instanceof ApplicationFailure) {
      return { kind: cause.type ?? 'error', message: cause.message, ...(cause.details?.[0] !== undefined ? { detail: cause.details[0] } : {}) };
    }
    if (cause instanceof TimeoutFailure) return { kind: 'timeout', message: `activity timed out (${cause.timeoutType})` };
    return { kind: 'error', message: cause?.message ?? error.message };
  }
  return { kind: 'error', message: error instanceof Error ? error.message : String(error) };
}

/** Client-chosen keys must not collide with the keys the session makes itself. */
export function validateRequestKey(key: string | undefined): void {
  if (key === undefined) return;
  if (!REQUEST_KEY_PATTERN.test(key)) throw new Error('requestKey: 1-40 letters, digits, "_" or "-"');
  if (key.startsWith('t-') || key.startsWith('a-') || /^r\d+(-|$)/.test(key) || /^u[A-Za-z0-9]{20,}$/.test(key)) {
    throw new Error('requestKey: "t-…", "a-…", "r<number>" and "u<update id>" are reserved for keys the session makes');
  }
}

export function describeItem(item: WorkItem): string {
  return item.kind === 'verb' ? item.verb : `devvm: ${item.command}`;
}

export function operatorName(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '' || value.length > 200) throw new Error('operator: required (1-200 characters)');
  return value.trim();
}

export function reasonText(value: unknown, field = 'reason'): string {
  if (value === undefined) return '';
  if (typeof value !== 'string' || value.length > MAX_REASON_LENGTH) throw new Error(`${field}: at most ${MAX_REASON_LENGTH} characters`);
  return value.trim();
}

/** Host request ids: [A-Za-z][A-Za-z0-9._-]{7,127}, stable across retries and `workflow reset`. */
/** The key of a request that names none, from its Update id (the console's Idempotency-Key path). */
export function keyFromUpdateId(updateId: string): string {
  return `u${updateId.replace(/[^A-Za-z0-9]/g, '').slice(0, 38)}`;
}

export function hostRequestId(workflowId: string, key: string, suffix: string): string {
  const safe = workflowId.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80);
  return `${/^[A-Za-z]/.test(safe) ? '' : 'w'}${safe}.${key}${suffix}`;
}

/**
 * A page of this run's entries from `cursor` on: at most `limit` entries and about
 * TRANSCRIPT_PAGE_BYTES (always at least one entry, so a page never stalls on a big one).
 */
export function transcriptPageOf(
  entries: readonly TranscriptEntry[],
  run: { firstSeq: number; previousRunId: string | null },
  page?: { cursor?: number; limit?: number },
): TranscriptPage {
  const cursor = Math.max(page?.cursor ?? run.firstSeq, run.firstSeq);
  const limit = Math.min(Math.max(page?.limit ?? 100, 1), TRANSCRIPT_PAGE_LIMIT);
  const newer = entries.filter((entry) => entry.seq >= cursor);
  const slice: TranscriptEntry[] = [];
  let bytes = 0;
  for (const entry of newer) {
    const size = JSON.stringify(entry).length;
    if (slice.length >= limit || (slice.length > 0 && bytes + size > TRANSCRIPT_PAGE_BYTES)) break;
    slice.push(entry);
    bytes += size;
  }
  const last = slice[slice.length - 1];
  return { entries: slice, more: slice.length < newer.length, nextCursor: last ? last.seq + 1 : cursor, ...run };
}
