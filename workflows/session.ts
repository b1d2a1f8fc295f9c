/**
 * The breakglass session: one durable workflow per incident. Everything that touches the devvm
 * or the PVE host is an activity, scheduled from one queue so that work is serialised, and
 * every mutating verb is preceded by a forensics capture whose result is in history before the
 * verb is scheduled.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  TimeoutFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  currentUpdateInfo,
  isCancellation,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { createActivities } from '../activities/index.js';
import {
  DEFAULT_COMMAND_TIMEOUT_SECONDS,
  MAX_COMMAND_LENGTH,
  MAX_COMMAND_TIMEOUT_SECONDS,
  MAX_MESSAGE_LENGTH,
  MAX_REASON_LENGTH,
  REQUEST_KEY_PATTERN,
  approvalUpdate,
  cancelRequestSignal,
  endSessionSignal,
  operatorMessageUpdate,
  pauseSignal,
  requestCommandUpdate,
  requestVerbSignal,
  requestVerbUpdate,
  resumeSignal,
  setPolicyUpdate,
  stateQuery,
  transcriptQuery,
  type CommandRequestInput,
  type RequestAccepted,
  type VerbRequestInput,
} from './messages.js';
import { approvalRule } from './policy.js';
import { PVE_VERBS, isMutatingVerb, type MutatingVerb, type VmState } from './pve-types.js';
import { LAST_VERB, OPERATOR, OUTCOME, TARGET } from './search-attributes.js';
import type {
  Actor,
  AgentState,
  CarriedState,
  CommandItem,
  Outcome,
  PendingApproval,
  SessionInput,
  SessionPolicy,
  SessionState,
  SessionTiming,
  TokenUsage,
  TranscriptEntry,
  VerbItem,
  WorkItem,
} from './session-types.js';

type Activities = ReturnType<typeof createActivities>;

/** Error types the activities raise for failures that repeating cannot fix. */
const NON_RETRYABLE = ['host_key_mismatch', 'auth_failed', 'verb_rejected', 'conflict', 'verb_failed', 'outcome_unknown', 'host_config', 'protocol'];
/** Activity failures after which a mutating verb may or may not have run on the host. */
const UNKNOWN_OUTCOME_KINDS = new Set(['timeout', 'unreachable', 'in_progress', 'outcome_unknown', 'protocol']);
const TRANSCRIPT_PAGE_LIMIT = 200;
/**
 * A page's size cap, in JSON characters: forensics (~130 KiB each) and outputs add up, and a
 * query answer past gRPC's 4 MB message limit would break catch-up, the postmortem and every
 * agent turn. Always at least one entry (each is capped on its own).
 */
const TRANSCRIPT_PAGE_BYTES = 1024 * 1024;
const DEVVM_WAIT_SECONDS = 180;

// Read-only verbs: a few quick retries.
const reads = proxyActivities<Activities>({
  startToCloseTimeout: '90s',
  heartbeatTimeout: '20s',
  retry: { initialInterval: '1s', maximumInterval: '10s', maximumAttempts: 4, nonRetryableErrorTypes: NON_RETRYABLE },
});
// Mutating verbs: retried safely because every attempt carries the same host request id, so a
// retry re-attaches to the host's journal instead of acting again. The heartbeat timeout is
// what notices a dead worker.
const mutations = proxyActivities<Activities>({
  startToCloseTimeout: '6m',
  heartbeatTimeout: '20s',
  retry: { initialInterval: '2s', maximumInterval: '15s', maximumAttempts: 6, nonRetryableErrorTypes: NON_RETRYABLE },
});
// Devvm commands are not idempotent in general: run at most once, cancellable.
const commands = proxyActivities<Activities>({
  startToCloseTimeout: `${MAX_COMMAND_TIMEOUT_SECONDS + 30}s`,
  heartbeatTimeout: '10s',
  retry: { maximumAttempts: 1 },
});

/** Clamps an optional number into [min, max]; undefined (or not a number) stays undefined. */
function clampOptional(value: number | undefined, min: number, max: number): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? Math.min(Math.max(value, min), max) : undefined;
}

/**
 * Activity option overrides from SessionInput.timing, merged over the proxies' defaults by
 * executeWithOptions. Without timing they are empty: the defaults above apply unchanged.
 */
function timingOverrides(timing: SessionTiming | undefined) {
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
const agent = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '60s', maximumAttempts: 6, nonRetryableErrorTypes: ['agent_auth', 'agent_bad_request', 'agent_cancelled'] },
});

// Webhook notifications: best effort, never awaited by anything that matters.
const notifications = proxyActivities<Activities>({ startToCloseTimeout: '20s', retry: { maximumAttempts: 3, initialInterval: '2s' } });

interface FailureInfo {
  kind: string;
  message: string;
  detail?: unknown;
}

function describeFailure(error: unknown): FailureInfo {
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
function validateRequestKey(key: string | undefined): void {
  if (key === undefined) return;
  if (!REQUEST_KEY_PATTERN.test(key)) throw new Error('requestKey: 1-40 letters, digits, "_" or "-"');
  if (key.startsWith('t-') || key.startsWith('a-') || /^r\d+(-|$)/.test(key) || /^u[A-Za-z0-9]{20,}$/.test(key)) {
    throw new Error('requestKey: "t-…", "a-…", "r<number>" and "u<update id>" are reserved for keys the session makes');
  }
}

function describeItem(item: WorkItem): string {
  return item.kind === 'verb' ? item.verb : `devvm: ${item.command}`;
}

function operatorName(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '' || value.length > 200) throw new Error('operator: required (1-200 characters)');
  return value.trim();
}

function reasonText(value: unknown, field = 'reason'): string {
  if (value === undefined) return '';
  if (typeof value !== 'string' || value.length > MAX_REASON_LENGTH) throw new Error(`${field}: at most ${MAX_REASON_LENGTH} characters`);
  return value.trim();
}

/** Host request ids: [A-Za-z][A-Za-z0-9._-]{7,127}, stable across retries and `workflow reset`. */
export function hostRequestId(workflowId: string, key: string, suffix: string): string {
  const safe = workflowId.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80);
  return `${/^[A-Za-z]/.test(safe) ? '' : 'w'}${safe}.${key}${suffix}`;
}

export async function breakglassSession(input: SessionInput): Promise<Outcome> {
  const info = workflowInfo();
  const tuned = timingOverrides(input.timing);
  const carried: CarriedState | undefined = input.continued;
  const entries: TranscriptEntry[] = [];
  let nextSeq = carried?.nextSeq ?? 1;
  const firstSeq = nextSeq;
  let nextRequestNumber = carried?.nextRequestNumber ?? 1;
  let policy: SessionPolicy = carried?.policy ?? input.policy;
  let paused = carried?.paused ?? false;
  let pauseReason = carried?.pauseReason ?? '';
  let vm: VmState | null = carried?.vm ?? null;
  let vmCheckedAt: number | null = carried?.vmCheckedAt ?? null;
  let devvmReachable: boolean | null = carried?.devvmReachable ?? null;
  let lastVerb = carried?.lastVerb ?? '';
  let lastMutationOk: boolean | null = carried?.lastMutationOk ?? null;
  const pendingApprovals = new Map<string, PendingApproval>((carried?.pendingApprovals ?? []).map((p) => [p.approvalId, p]));
  const queue: WorkItem[] = [...(carried?.queue ?? [])];
  // Keys seen in this session: a repeated key is acknowledged but never queued twice.
  const usedKeys = new Set<string>(carried?.usedKeys ?? []);
  // The agent's tool calls since the operator's last message; carried across runs.
  let toolCallsUsed = carried?.toolCallsUsed ?? 0;
  const agentState: AgentState = carried?.agent ?? {
    enabled: input.agent?.enabled ?? false,
    reason: input.agent?.reason ?? 'no agent configured: manual console',
    pending: false,
    turns: 0,
    awaiting: [],
  };
  const awaiting = new Set<string>(agentState.awaiting);
  let agentThinking = false;
  const tokens: TokenUsage = carried?.tokens ?? { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0 };
  let costUsd = carried?.costUsd ?? 0;
  const startedAt = carried?.startedAt ?? Date.now();
  let running: { item: WorkItem; since: number } | null = null;
  let endRequested: { operator: string; reason: string } | null = null;
  let cancelledBy: { operator: string; reason: string } | null = null;
  let outcome: Outcome | null = null;

  // Fire and forget: a dead webhook must not hold up a breakglass session. The returned promise
  // is awaited only when the session closes (a closed workflow abandons its activities).
  const notify = (event: Parameters<Activities['notify']>[0]): Promise<void> => {
    if (!input.notify) return Promise.resolve();
    return notifications.notify.executeWithOptions({ summary: `notify: ${event.kind}` }, [event]).catch(() => undefined);
  };

  const record = (entry: TranscriptEntry extends infer E ? (E extends TranscriptEntry ? Omit<E, 'seq' | 'at'> : never) : never) => {
    const full = { ...entry, seq: nextSeq++, at: Date.now() } as TranscriptEntry;
    entries.push(full);
    return full;
  };

  const refreshDetails = () => {
    const lines = [
      `**VM ${input.target.vmid}** (${input.target.devvm}): ${vm ? `${vm.status}${vm.qmpstatus ? ` / ${vm.qmpstatus}` : ''}, pid ${vm.pid ?? '-'}${vm.pending.present ? ', pending config staged' : ''}${vm.lock ? `, locked (${vm.lock})` : ''}` : 'not checked yet'}`,
      `devvm SSH: ${devvmReachable === null ? 'not checked' : devvmReachable ? 'answering' : 'not answering'}`,
      `last verb: ${lastVerb || '-'}${paused ? ` · **paused**: ${pauseReason}` : ''}`,
      ...[...pendingApprovals.values()].map((p) => `**waiting for approval** ${p.approvalId}: ${describeItem(p.item)} (${p.approvals.length}/${p.required})`),
    ];
    setCurrentDetails(lines.join('\n'));
  };

  const setVm = (next: VmState) => {
    vm = next;
    vmCheckedAt = Date.now();
    refreshDetails();
  };

  const pause = (operator: string, reason: string) => {
    if (paused) return;
    paused = true;
    pauseReason = reason;
    record({ type: 'paused', operator, reason });
    refreshDetails();
  };

  // A request's key names it on the PVE host (its request ids derive from it), so it must be
  // the same when the request is re-applied after `temporal workflow reset` (the host journal
  // then replays instead of acting again) and new for a genuinely new request. An Update's id
  // has both properties; a Signal (the CLI's way) has no id and gets the next number — CLI
  // callers who reset without re-applying should pass their own requestKey.
  const newKey = (requested: string | undefined): string => {
    if (requested !== undefined) return requested;
    const updateId = currentUpdateInfo()?.id;
    // Patched: histories recorded before this rule keep numbering their requests.
    if (updateId && patched('request-keys-from-update-ids')) return `u${updateId.replace(/[^A-Za-z0-9]/g, '').slice(0, 38)}`;
    // A keyless signal (read-only verbs only, see below): numbered within this run, so a number
    // used before a reset never names a new request after it.
    if (patched('signal-keys-per-run')) return `r${nextRequestNumber++}-${info.runId.replace(/[^A-Za-z0-9]/g, '').slice(0, 12)}`;
    return `r${nextRequestNumber++}`;
  };

  // An approval is consent for now, not for later: a pending one lapses after the expiry.
  const approvalExpiryMs = Math.max(input.approvalExpiryMinutes ?? 15, 0.05) * 60_000;
  const expiredApprovals = new Set<string>();
  // Bumped when an approval is asked for: the main loop then re-arms its expiry timer.
  let approvalsAsked = 0;
  const nextExpiryInMs = (): number | undefined => {
    const due = [...pendingApprovals.values()].map((p) => p.requestedAt + approvalExpiryMs - Date.now());
    return due.length ? Math.max(Math.min(...due), 1) : undefined;
  };
  const expireApprovals = () => {
    const lapsed = [...pendingApprovals.values()].filter((pending) => Date.now() - pending.requestedAt >= approvalExpiryMs);
    if (lapsed.length === 0) return;
    for (const pending of lapsed) {
      pendingApprovals.delete(pending.approvalId);
      expiredApprovals.add(pending.approvalId);
      const minutes = Math.round((approvalExpiryMs / 60_000) * 10) / 10;
      record({
        type: 'skipped',
        key: pending.item.key,
        what: describeItem(pending.item),
        why: `approval ${pending.approvalId} expired: not approved within ${minutes} min (${pending.approvals.length} of ${pending.required}); not run — ask again if it is still wanted`,
      });
      // The agent hears of it as the answer to its call; the requester by notification.
      if (awaiting.delete(pending.item.key)) agentState.pending = true;
      const requester = pending.item.requestedBy.kind === 'operator' ? pending.item.requestedBy.name : pending.item.requestedBy.kind;
      void notify({ kind: 'approval-expired', sessionId: info.workflowId, approvalId: pending.approvalId, what: describeItem(pending.item), requester, minutes });
    }
    refreshDetails();
  };

  const admit = (item: WorkItem): RequestAccepted => {
    usedKeys.add(item.key);
    record({ type: 'request', item });
    const rule = approvalRule(item, policy);
    const required = Math.max(0, rule.required - item.approvedBy.length);
    if (required === 0) {
      queue.push(item);
      refreshDetails();
      return { key: item.key, approvalId: null };
    }
    const approvalId = `a-${item.key}`;
    pendingApprovals.set(approvalId, { approvalId, item, requestedAt: Date.now(), required: rule.required, approvals: [], why: rule.why });
    approvalsAsked++;
    record({ type: 'approval-needed', approvalId, item, why: rule.why, required: rule.required });
    void notify({ kind: 'approval-needed', sessionId: info.workflowId, approvalId, what: describeItem(item), why: rule.why });
    refreshDetails();
    return { key: item.key, approvalId };
  };

  // The first entry is recorded before any handler is registered: Temporal delivers buffered
  // signals and updates the moment their handler is set.
  if (carried) {
    record({ type: 'session-continued', previousRunId: carried.previousRunId, firstSeq });
  } else {
    upsertSearchAttributes([
      { key: TARGET, value: input.target.devvm },
      { key: OPERATOR, value: input.operator },
      { key: OUTCOME, value: 'open' },
    ]);
    record({ type: 'session-started', operator: input.operator, description: input.description, target: input.target, policy: input.policy });
    void notify({ kind: 'session-started', sessionId: info.workflowId, operator: input.operator, description: input.description });
  }
  refreshDetails();

  // ------------------------------------------------------------------ message validation
  const validateVerbRequest = (request: VerbRequestInput) => {
    if (!request || typeof request !== 'object') throw new Error('body: expected { verb, reason, operator }');
    if (!(PVE_VERBS as readonly string[]).includes(request.verb)) throw new Error(`verb: must be one of ${PVE_VERBS.join(', ')}`);
    operatorName(request.operator);
    reasonText(request.reason);
    validateRequestKey(request.requestKey);
    if (endRequested || outcome) throw new Error('session: already ending');
  };

  const validateCommandRequest = (request: CommandRequestInput) => {
    if (!request || typeof request !== 'object') throw new Error('body: expected { command, timeoutSeconds?, operator }');
    if (typeof request.command !== 'string' || request.command.trim() === '') throw new Error('command: must not be empty');
    if (request.command.length > MAX_COMMAND_LENGTH) throw new Error(`command: at most ${MAX_COMMAND_LENGTH} characters`);
    if (request.command.includes('\0')) throw new Error('command: must not contain NUL bytes');
    const timeout = request.timeoutSeconds ?? DEFAULT_COMMAND_TIMEOUT_SECONDS;
    if (!Number.isInteger(timeout) || timeout < 1 || timeout > MAX_COMMAND_TIMEOUT_SECONDS) {
      throw new Error(`timeoutSeconds: a whole number from 1 to ${MAX_COMMAND_TIMEOUT_SECONDS}`);
    }
    operatorName(request.operator);
    validateRequestKey(request.requestKey);
    if (endRequested || outcome) throw new Error('session: already ending');
  };

  const acceptVerb = (request: VerbRequestInput): RequestAccepted => {
    const key = newKey(request.requestKey);
    if (usedKeys.has(key)) {
      const waiting = [...pendingApprovals.values()].find((p) => p.item.key === key);
      return { key, approvalId: waiting?.approvalId ?? null };
    }
    const operator: Actor = { kind: 'operator', name: operatorName(request.operator) };
    return admit({ kind: 'verb', key, verb: request.verb, reason: reasonText(request.reason), requestedBy: operator, approvedBy: [] });
  };

  // ------------------------------------------------------------------------- handlers
  setHandler(stateQuery, (): SessionState => ({
    workflowId: info.workflowId,
    runId: info.runId,
    target: input.target,
    operator: input.operator,
    description: input.description,
    startedAt,
    policy,
    paused,
    pauseReason,
    ended: outcome !== null,
    outcome,
    vm,
    vmCheckedAt,
    devvmReachable,
    lastVerb,
    running,
    queue: [...queue],
    pendingApprovals: [...pendingApprovals.values()],
    budget: { toolCallsUsed, toolCallsPerMessage: policy.toolCallsPerMessage, tokens, costUsd },
    agent: { enabled: agentState.enabled, reason: agentState.reason, thinking: agentThinking, turns: agentState.turns, awaiting: [...awaiting] },
    transcript: { firstSeq, nextSeq, previousRunId: carried?.previousRunId ?? null },
  }));

  setHandler(transcriptQuery, (page) => {
    const cursor = Math.max(page?.cursor ?? firstSeq, firstSeq);
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
    return {
      entries: slice,
      more: slice.length < newer.length,
      nextCursor: last ? last.seq + 1 : cursor,
      firstSeq,
      previousRunId: carried?.previousRunId ?? null,
    };
  });

  setHandler(
    operatorMessageUpdate,
    (message) => {
      const entry = record({ type: 'operator-message', operator: operatorName(message.operator), text: message.text.trim() });
      if (agentState.enabled) {
        // A new message from a person resets the agent's tool-call budget.
        agentState.pending = true;
        toolCallsUsed = 0;
      }
      return { seq: entry.seq };
    },
    {
      validator: (message) => {
        if (!message || typeof message.text !== 'string' || message.text.trim() === '') throw new Error('text: must not be empty');
        if (message.text.length > MAX_MESSAGE_LENGTH) throw new Error(`text: at most ${MAX_MESSAGE_LENGTH} characters`);
        operatorName(message.operator);
      },
    },
  );

  setHandler(requestVerbUpdate, acceptVerb, { validator: validateVerbRequest });

  // Signals cannot be rejected, so a bad one from the CLI is recorded as a failed request.
  setHandler(requestVerbSignal, (request) => {
    try {
      validateVerbRequest(request);
      // A signal has no id: re-applied after a reset it would be a new request (a second cycle),
      // and numbered it could be answered with an older request's result. A mutating one must name itself.
      if (request.requestKey === undefined && isMutatingVerb(request.verb) && patched('keyless-mutating-signals-refused')) {
        throw new Error(
          `requestKey: required for ${request.verb} by signal (a signal carries no id, so a reset could run it twice): add e.g. "requestKey":"cli-${request.verb}-1", or use the console or its API`,
        );
      }
    } catch (error) {
      record({ type: 'skipped', key: '-', what: String(request?.verb ?? 'request'), why: `rejected signal: ${(error as Error).message}` });
      return;
    }
    acceptVerb(request);
  });

  setHandler(
    requestCommandUpdate,
    (request) => {
      const key = newKey(request.requestKey);
      if (usedKeys.has(key)) return { key, approvalId: null };
      const item: CommandItem = {
        kind: 'command',
        key,
        command: request.command,
        timeoutSeconds: request.timeoutSeconds ?? DEFAULT_COMMAND_TIMEOUT_SECONDS,
        requestedBy: { kind: 'operator', name: operatorName(request.operator) },
        approvedBy: [],
      };
      return admit(item);
    },
    { validator: validateCommandRequest },
  );

  setHandler(
    approvalUpdate,
    (decision) => {
      // The validator vouched for the id when the update was accepted; replay skips validators.
      const pending = pendingApprovals.get(decision.approvalId);
      if (!pending) return { approvalId: decision.approvalId, decision: decision.decision, executed: false };
      const operator = operatorName(decision.operator);
      record({ type: 'approval', approvalId: pending.approvalId, decision: decision.decision, operator, reason: reasonText(decision.reason) });
      if (decision.decision === 'deny') {
        pendingApprovals.delete(pending.approvalId);
        record({ type: 'skipped', key: pending.item.key, what: describeItem(pending.item), why: `denied by ${operator}` });
        awaiting.delete(pending.item.key);
        refreshDetails();
        return { approvalId: pending.approvalId, decision: 'deny', executed: false };
      }
      pending.approvals.push(operator);
      if (pending.approvals.length < pending.required) {
        refreshDetails();
        return { approvalId: pending.approvalId, decision: 'approve', executed: false };
      }
      pendingApprovals.delete(pending.approvalId);
      queue.push({ ...pending.item, approvedBy: [...pending.approvals] });
      refreshDetails();
      return { approvalId: pending.approvalId, decision: 'approve', executed: true };
    },
    {
      // Runs before anything reaches history: a stale or unknown approval id is refused here.
      validator: (decision) => {
        if (!decision || typeof decision !== 'object') throw new Error('body: expected { approvalId, decision, operator }');
        const pending = pendingApprovals.get(decision.approvalId);
        if (!pending && expiredApprovals.has(decision.approvalId)) throw new Error(`approvalId: "${decision.approvalId}" expired unapproved; the request must be made again`);
        if (!pending) throw new Error(`approvalId: no pending approval "${String(decision.approvalId)}" (already decided or never requested)`);
        if (decision.decision !== 'approve' && decision.decision !== 'deny') throw new Error('decision: must be "approve" or "deny"');
        const operator = operatorName(decision.operator);
        reasonText(decision.reason);
        if (decision.decision === 'approve') {
          const requester = pending.item.requestedBy.kind === 'operator' ? pending.item.requestedBy.name : null;
          if (operator === requester) throw new Error('operator: the requester cannot approve their own request');
          if (pending.approvals.includes(operator)) throw new Error('operator: has already approved this request');
        }
      },
    },
  );

  setHandler(
    setPolicyUpdate,
    (change) => {
      policy = { ...policy, ...change.policy };
      record({ type: 'policy-changed', operator: operatorName(change.operator), policy });
      refreshDetails();
      return policy;
    },
    {
      validator: (change) => {
        operatorName(change?.operator);
        const next = change.policy ?? {};
        if (next.mutatingVerbs !== undefined && !['autonomous', 'approve', 'two-person'].includes(next.mutatingVerbs)) {
          throw new Error('policy.mutatingVerbs: one of autonomous, approve, two-person');
        }
        if (next.devvmCommands !== undefined && !['allowlist', 'autonomous'].includes(next.devvmCommands)) {
          throw new Error('policy.devvmCommands: one of allowlist, autonomous');
        }
        if (next.toolCallsPerMessage !== undefined && (!Number.isInteger(next.toolCallsPerMessage) || next.toolCallsPerMessage < 1 || next.toolCallsPerMessage > 200)) {
          throw new Error('policy.toolCallsPerMessage: a whole number from 1 to 200');
        }
      },
    },
  );

  setHandler(pauseSignal, (action) => pause(String(action?.operator ?? 'unknown'), String(action?.reason ?? 'paused by operator')));
  setHandler(resumeSignal, (action) => {
    if (!paused) return;
    paused = false;
    pauseReason = '';
    record({ type: 'resumed', operator: String(action?.operator ?? 'unknown') });
    refreshDetails();
  });
  setHandler(cancelRequestSignal, (action) => {
    if (cancelledBy || outcome) return;
    cancelledBy = { operator: String(action?.operator ?? 'unknown'), reason: String(action?.reason ?? '') };
    record({ type: 'cancel-requested', operator: cancelledBy.operator, reason: cancelledBy.reason });
  });
  setHandler(endSessionSignal, (action) => {
    endRequested ??= { operator: String(action?.operator ?? 'unknown'), reason: String(action?.reason ?? '') };
  });

  // ------------------------------------------------------------------------- the work
  const requestId = (item: WorkItem, suffix: string) => hostRequestId(info.workflowId, item.key, suffix);

  const checkStatus = async (item: WorkItem, summary: string) => {
    const result = await reads.pveStatus.executeWithOptions({ ...tuned.reads, summary }, []);
    setVm(result.vm);
    record({ type: 'status', key: item.key, result });
    return result;
  };

  const captureForensics = async (item: WorkItem, trigger: string) => {
    const result = await reads.pveForensics.executeWithOptions(
      { ...tuned.reads, startToCloseTimeout: '3m', summary: trigger === 'on request' ? 'forensics' : `forensics before ${trigger}` },
      [{ requestId: requestId(item, '.f'), trigger }],
    );
    record({ type: 'forensics', key: item.key, trigger, result });
    return result;
  };

  const runMutation = async (item: VerbItem, verb: MutatingVerb) => {
    // Invariant 1: forensics completes, and is in history, before the verb is scheduled.
    try {
      await captureForensics(item, verb);
    } catch (error) {
      if (isCancellation(error)) throw error;
      const failure = describeFailure(error);
      record({ type: 'skipped', key: item.key, what: verb, why: `forensics failed (${failure.message}); the verb was not run` });
      return;
    }
    if (CancellationScope.current().consideredCancelled) {
      record({ type: 'skipped', key: item.key, what: verb, why: 'session cancelled before the verb started' });
      return;
    }
    lastVerb = verb;
    upsertSearchAttributes([{ key: LAST_VERB, value: verb }]);
    // A mutation in flight is never abandoned: cancellation waits for its real outcome.
    await CancellationScope.nonCancellable(async () => {
      try {
        const result = await mutations.pveMutation.executeWithOptions(
          { ...tuned.mutations, summary: `${verb} VM ${input.target.vmid}` },
          [{ verb, requestId: requestId(item, '.m') }],
        );
        lastMutationOk = result.ok;
        setVm(result.after);
        record({ type: 'verb-result', key: item.key, result });
        void notify({
          kind: 'verb',
          sessionId: info.workflowId,
          verb,
          outcome: result.ok ? 'succeeded' : 'failed',
          detail: `pid ${result.oldPid ?? '-'} → ${result.newPid ?? '-'}${result.replayed ? ' (from the host journal)' : ''}`,
        });
      } catch (error) {
        const failure = describeFailure(error);
        if (UNKNOWN_OUTCOME_KINDS.has(failure.kind)) {
          // Invariant 4: never repeat blindly. Look, record, and hand over to the operator.
          lastMutationOk = null;
          const status = await checkStatus(item, `status after unknown ${verb}`).then(
            (result) => result.vm,
            () => null,
          );
          record({ type: 'outcome-unknown', key: item.key, verb, message: failure.message, status });
          void notify({ kind: 'verb', sessionId: info.workflowId, verb, outcome: 'unknown', detail: failure.message });
          pause('system', `the outcome of ${verb} is unknown: check the VM state, then decide`);
          return;
        }
        lastMutationOk = false;
        record({ type: 'verb-failed', key: item.key, verb, kind: failure.kind, message: failure.message, ...(failure.detail !== undefined ? { detail: failure.detail } : {}) });
        void notify({ kind: 'verb', sessionId: info.workflowId, verb, outcome: 'failed', detail: failure.message });
        await checkStatus(item, `status after failed ${verb}`).catch(() => undefined);
        return;
      }
      if (verb === 'stop') return;
      const started = Date.now();
      let wait;
      try {
        wait = await mutations.waitForDevvm.executeWithOptions(
          // Retried only when it was stopped (a worker shutdown): its answers are results, not errors.
          { ...tuned.heartbeat, startToCloseTimeout: `${DEVVM_WAIT_SECONDS + 30}s`, retry: { maximumAttempts: 3, initialInterval: '1s' }, summary: `wait for devvm SSH after ${verb}` },
          [{ deadlineSeconds: DEVVM_WAIT_SECONDS }],
        );
      } catch (error) {
        if (isCancellation(error)) throw error;
        // No verdict: the devvm's state stays unknown rather than "not answering".
        record({ type: 'skipped', key: item.key, what: 'wait for the devvm', why: `no verdict: ${describeFailure(error).message}` });
        refreshDetails();
        return;
      }
      devvmReachable = wait.reachable;
      record({ type: 'devvm-wait', key: item.key, reachable: wait.reachable, waitedMs: Date.now() - started, attempts: wait.attempts });
      refreshDetails();
    });
  };

  const runCommand = async (item: CommandItem) => {
    try {
      const result = await commands.devvmCommand.executeWithOptions(
        { ...tuned.heartbeat, startToCloseTimeout: `${item.timeoutSeconds + 30}s`, summary: `devvm: ${item.command.slice(0, 80)}` },
        [{ command: item.command, timeoutSeconds: item.timeoutSeconds }],
      );
      devvmReachable = true;
      record({ type: 'command-result', key: item.key, result });
    } catch (error) {
      if (isCancellation(error)) {
        // The worker asks the devvm to stop it by its run name; whether that took, only the worker's
        // log and the devvm know: say what may be true.
        record({
          type: 'skipped',
          key: item.key,
          what: describeItem(item),
          why: `abandoned when the session was cancelled: the devvm was asked to stop it; if it could not be, it may still be running until its own time limit (${item.timeoutSeconds} s from its start)`,
        });
        throw error;
      }
      const failure = describeFailure(error);
      if (failure.kind === 'timeout' || failure.kind === 'unreachable') devvmReachable = false;
      record({ type: 'command-failed', key: item.key, command: item.command, kind: failure.kind, message: failure.message });
    }
    refreshDetails();
  };

  const execute = async (item: WorkItem) => {
    running = { item, since: Date.now() };
    try {
      if (item.kind === 'command') return await runCommand(item);
      if (isMutatingVerb(item.verb)) return await runMutation(item, item.verb);
      try {
        if (item.verb === 'status') await checkStatus(item, `status VM ${input.target.vmid}`);
        else await captureForensics(item, 'on request');
      } catch (error) {
        if (isCancellation(error)) throw error;
        const failure = describeFailure(error);
        record({ type: 'verb-failed', key: item.key, verb: item.verb, kind: failure.kind, message: failure.message });
      }
    } finally {
      running = null;
      awaiting.delete(item.key);
      refreshDetails();
    }
  };

  // ------------------------------------------------------------------------- the agent
  const agentReady = () => agentState.enabled && agentState.pending && awaiting.size === 0 && queue.length === 0;

  const runAgent = async () => {
    agentState.pending = false;
    agentState.turns += 1;
    agentThinking = true;
    refreshDetails();
    let outcome;
    try {
      outcome = await agent.agentTurn.executeWithOptions({ summary: `agent turn ${agentState.turns}` }, [{ workflowId: info.workflowId, throughSeq: nextSeq - 1 }]);
    } catch (error) {
      if (isCancellation(error)) throw error;
      const failure = describeFailure(error);
      if (failure.kind === 'agent_auth') {
        agentState.enabled = false;
        agentState.reason = failure.message;
        record({ type: 'agent-disabled', reason: failure.message });
      } else {
        record({ type: 'agent-error', kind: failure.kind, message: failure.message });
      }
      return;
    } finally {
      agentThinking = false;
    }
    // Keys from the session's own state (the turn, the call's place in it), not the model's
    // tool-use ids: a reset that calls the model again gets new ids, but the same turn names
    // the same host requests, so the host journal answers with the first run's result (or
    // refuses another verb under that name) instead of acting twice.
    // (Histories from before keep the activity's key, derived from the tool-use id.)
    const keyed = patched('agent-keys-from-turns');
    const keyOf = new Map<string, string>(keyed ? outcome.toolCalls.map((call, index) => [call.id, `t-${agentState.turns}-${index}`]) : []);
    record({
      type: 'agent-message',
      turn: `${agentState.turns}`,
      text: outcome.text,
      toolCalls: keyed ? outcome.toolCalls.map((call) => ({ ...call, key: keyOf.get(call.id) })) : outcome.toolCalls,
      usage: outcome.usage,
    });
    tokens.inputTokens += outcome.usage.inputTokens;
    tokens.outputTokens += outcome.usage.outputTokens;
    tokens.cacheReadTokens += outcome.usage.cacheReadTokens;
    tokens.cacheWriteTokens += outcome.usage.cacheWriteTokens;
    costUsd += outcome.costUsd ?? 0;
    for (const refusal of outcome.refused) record({ type: 'agent-tool-error', toolUseId: refusal.toolUseId, message: refusal.message });
    let exhausted = false;
    // Every tool call takes the operator's path: same policy, same queue, same record.
    for (const accepted of outcome.accepted) {
      const call = { ...accepted, key: keyOf.get(accepted.toolUseId) ?? accepted.key };
      if (usedKeys.has(call.key)) continue;
      if (toolCallsUsed >= policy.toolCallsPerMessage) {
        exhausted = true;
        record({ type: 'agent-tool-error', toolUseId: call.toolUseId, message: `tool-call budget of ${policy.toolCallsPerMessage} per operator message used up: not run; the operator has been asked` });
        continue;
      }
      toolCallsUsed += 1;
      awaiting.add(call.key);
      const agentActor: Actor = { kind: 'agent' };
      admit(
        call.request.kind === 'command'
          ? { kind: 'command', key: call.key, command: call.request.command, timeoutSeconds: call.request.timeoutSeconds, requestedBy: agentActor, approvedBy: [] }
          : { kind: 'verb', key: call.key, verb: call.request.verb, reason: call.request.reason, requestedBy: agentActor, approvedBy: [] },
      );
    }
    if (exhausted) {
      pause('system', `the agent used its ${policy.toolCallsPerMessage} tool calls for this message: resume to let it continue`);
      toolCallsUsed = 0;
    }
    // The model asked for tools: it speaks again once their results are in.
    if (outcome.stopReason === 'tool_use' || outcome.refused.length > 0 || exhausted) agentState.pending = true;
    refreshDetails();
  };

  const carry = (): CarriedState => ({
    previousRunId: info.runId,
    nextSeq,
    nextRequestNumber,
    paused,
    pauseReason,
    policy,
    vm,
    vmCheckedAt,
    devvmReachable,
    lastVerb,
    lastMutationOk,
    pendingApprovals: [...pendingApprovals.values()],
    queue: [...queue],
    usedKeys: [...usedKeys],
    toolCallsUsed,
    startedAt,
    agent: { ...agentState, awaiting: [...awaiting] },
    tokens,
    costUsd,
  });

  // ---------------------------------------------------------------------- main loop

  // Patched: histories recorded before approvals expired have no timers for them.
  const approvalsExpire = patched('approval-expiry');
  try {
    for (;;) {
      const asked = approvalsAsked;
      const ready = () =>
        endRequested !== null || (!paused && (queue.length > 0 || agentReady())) || workflowInfo().continueAsNewSuggested || (approvalsExpire && approvalsAsked !== asked);
      const expiresIn = approvalsExpire ? nextExpiryInMs() : undefined;
      if (expiresIn === undefined) await condition(ready);
      else await condition(ready, expiresIn);
      if (approvalsExpire) expireApprovals();
      if (endRequested) break;
      if (workflowInfo().continueAsNewSuggested && running === null) {
        // Handlers must finish first so an acknowledged update is never lost across runs.
        await condition(allHandlersFinished);
        await continueAsNew<typeof breakglassSession>({ ...input, continued: carry() });
      }
      if (paused) continue;
      const item = queue.shift();
      if (item) await execute(item);
      else if (agentReady()) await runAgent();
    }
  } catch (error) {
    if (!isCancellation(error)) throw error;
    outcome = 'cancelled';
    for (const item of queue.splice(0)) {
      record({ type: 'skipped', key: item.key, what: describeItem(item), why: 'session cancelled' });
    }
    // Set by the cancelRequested signal (the console); a bare `temporal workflow cancel` has no name.
    const by = cancelledBy as { operator: string; reason: string } | null;
    record({ type: 'session-ended', outcome, operator: by?.operator ?? 'temporal', reason: by?.reason || 'workflow cancelled' });
    upsertSearchAttributes([{ key: OUTCOME, value: outcome }]);
    refreshDetails();
    // Outside the cancelled scope, and awaited: scheduled in it, the notification never left.
    await CancellationScope.nonCancellable(() => notify({ kind: 'session-ended', sessionId: info.workflowId, outcome: 'cancelled' }));
    throw error;
  }

  const ending = endRequested as { operator: string; reason: string };
  for (const item of queue.splice(0)) {
    record({ type: 'skipped', key: item.key, what: describeItem(item), why: 'session ended' });
  }
  outcome = lastMutationOk === true && devvmReachable === true ? 'recovered' : 'ended';
  record({ type: 'session-ended', outcome, operator: ending.operator, reason: ending.reason });
  upsertSearchAttributes([{ key: OUTCOME, value: outcome }]);
  refreshDetails();
  await notify({ kind: 'session-ended', sessionId: info.workflowId, outcome });
  await condition(allHandlersFinished);
  return outcome;
}
