/**
 * The breakglass session: one durable workflow per incident. Everything that touches the devvm
 * or the PVE host is an activity, scheduled from one queue so that work is serialised, and
 * every mutating verb is preceded by a forensics capture whose result is in history before the
 * verb is scheduled.
 */
import {
  CancellationScope,
  allHandlersFinished,
  condition,
  continueAsNew,
  currentUpdateInfo,
  isCancellation,
  patched,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import {
  ATTESTATION_TTL_MS,
  stateQuery,
  transcriptQuery,
  viewQuery,
  type RequestAccepted,
} from './messages.js';
import { mdText } from './markdown.js';
import { approvalRule } from './policy.js';
import { runAgentTurn } from './session-agent.js';
import { executeItem, settleLease } from './session-steps.js';
import { registerMessageHandlers } from './session-handlers.js';
import {
  transcriptPageOf,
  describeItem,
  keyFromUpdateId,
  notifications,
  timingOverrides,
  type Activities,
} from './session-rules.js';
import type { SessionScope } from './session-scope.js';
import { isMutatingVerb, type VmState } from './pve-types.js';
import { OPERATOR, OUTCOME, TARGET, VM_STATE, vmStateWord } from './search-attributes.js';
import type {
  AgentState,
  CarriedState,
  Outcome,
  PendingApproval,
  SessionInput,
  SessionPolicy,
  SessionState,
  TokenUsage,
  TranscriptEntry,
  TranscriptPage,
  WorkItem,
} from './session-types.js';

export { hostRequestId, keyFromUpdateId } from './session-rules.js';

/** The key of the status a session opened from the console runs at once. */
export const OPENING_LOOK_KEY = 'open-look';

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
  const messageUpdates = new Map<string, number>(carried?.messageUpdates ?? []);
  // Attestation nonces, kept until their signature would have expired anyway.
  const usedAttestations = new Map<string, number>(carried?.usedAttestations ?? []);
  const useAttestation = (nonce: string, issuedAt: number): boolean => {
    const now = Date.now();
    for (const [used, until] of usedAttestations) if (until < now) usedAttestations.delete(used);
    if (usedAttestations.has(nonce)) return false;
    usedAttestations.set(nonce, issuedAt + 2 * ATTESTATION_TTL_MS);
    return true;
  };
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
  let leaseTaken = carried?.leaseTaken ?? false;
  let policyProposal = carried?.policyProposal ?? null;
  let endRequested: { operator: string; reason: string } | null = null;
  let cancelledBy: { operator: string; reason: string } | null = carried?.cancelledBy ?? null;
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
      `**VM ${input.target.vmid}** (${mdText(input.target.devvm)}): ${vm ? `${vm.status}${vm.qmpstatus ? ` / ${vm.qmpstatus}` : ''}, pid ${vm.pid ?? '-'}${vm.pending.present ? ', pending config staged' : ''}${vm.lock ? `, locked (${vm.lock})` : ''}` : 'not checked yet'}`,
      `devvm SSH: ${devvmReachable === null ? 'not checked' : devvmReachable ? 'answering' : 'not answering'}`,
      `last verb: ${lastVerb || '-'}${paused ? ` · **paused**: ${mdText(pauseReason)}` : ''}`,
      ...[...pendingApprovals.values()].map((p) => `**waiting for approval** ${p.approvalId}: ${mdText(describeItem(p.item))} (${p.approvals.length}/${p.required})`),
    ];
    setCurrentDetails(lines.join('\n'));
  };

  // The session list shows the VM at the last look (an upsert only when it changed).
  let listedVmState = info.typedSearchAttributes.get(VM_STATE) ?? '';
  const setVm = (next: VmState) => {
    vm = next;
    vmCheckedAt = Date.now();
    refreshDetails();
    const word = vmStateWord(next);
    if (word !== listedVmState && patched('vm-state-attribute')) {
      listedVmState = word;
      upsertSearchAttributes([{ key: VM_STATE, value: word }]);
    }
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
    if (updateId && patched('request-keys-from-update-ids')) return keyFromUpdateId(updateId);
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

  // An operator who asks for a mutation wants it now: a devvm command in flight (on a stalled
  // devvm it may hang to its time limit) is stopped rather than waited for — when the mutation is
  // next in line and the session is not paused (otherwise stopping it would gain nothing).
  let stopCommand: ((why: string) => void) | null = null;
  const enqueue = (item: WorkItem) => {
    queue.push(item);
    const byOperator = item.requestedBy.kind === 'operator' && !item.requestedBy.unverified;
    const nextInLine = queue.length === 1 && !paused;
    if (item.kind === 'verb' && isMutatingVerb(item.verb) && byOperator && nextInLine && stopCommand && patched('operator-mutation-stops-command')) {
      stopCommand(`${item.requestedBy.kind === 'operator' ? item.requestedBy.name : ''} asked for ${item.verb}`);
    }
  };

  const admit = (item: WorkItem): RequestAccepted => {
    usedKeys.add(item.key);
    record({ type: 'request', item });
    const rule = approvalRule(item, policy, { argumentAllowlist: patched('argument-allowlist') });
    const required = Math.max(0, rule.required - item.approvedBy.length);
    if (required === 0) {
      enqueue(item);
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
    if (input.opening?.lookFirst) admit({ kind: 'verb', key: OPENING_LOOK_KEY, verb: 'status', reason: 'first look when the session opened', requestedBy: { kind: 'system' }, approvedBy: [] });
    // The problem as reported is the agent's first message: nobody has to write it twice.
    if (input.opening?.agentOnDescription && agentState.enabled) agentState.pending = true;
  }
  refreshDetails();

  // ------------------------------------------------------------------------- handlers
  const stateNow = (): SessionState => ({
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
  });
  setHandler(stateQuery, stateNow);

  const transcriptPage = (page?: { cursor?: number; limit?: number }): TranscriptPage =>
    transcriptPageOf(entries, { firstSeq, previousRunId: carried?.previousRunId ?? null }, page);
  setHandler(transcriptQuery, transcriptPage);
  setHandler(viewQuery, (page) => ({ state: stateNow(), transcript: transcriptPage(page) }));

  // The session's parts see its state through this view; the message handlers change it
  // (requests, approvals, policy, pause, end, cancel).
  const scope: SessionScope = {
    info,
    input,
    tuned,
    get nextSeq() {
      return nextSeq;
    },
    get outcome() {
      return outcome;
    },
    get endRequested() {
      return endRequested;
    },
    set endRequested(value) {
      endRequested = value;
    },
    get cancelledBy() {
      return cancelledBy;
    },
    set cancelledBy(value) {
      cancelledBy = value;
    },
    get policy() {
      return policy;
    },
    set policy(value) {
      policy = value;
    },
    get paused() {
      return paused;
    },
    set paused(value) {
      paused = value;
    },
    get pauseReason() {
      return pauseReason;
    },
    set pauseReason(value) {
      pauseReason = value;
    },
    get toolCallsUsed() {
      return toolCallsUsed;
    },
    set toolCallsUsed(value) {
      toolCallsUsed = value;
    },
    get agentThinking() {
      return agentThinking;
    },
    set agentThinking(value) {
      agentThinking = value;
    },
    get costUsd() {
      return costUsd;
    },
    set costUsd(value) {
      costUsd = value;
    },
    get lastVerb() {
      return lastVerb;
    },
    set lastVerb(value) {
      lastVerb = value;
    },
    get lastMutationOk() {
      return lastMutationOk;
    },
    set lastMutationOk(value) {
      lastMutationOk = value;
    },
    get devvmReachable() {
      return devvmReachable;
    },
    set devvmReachable(value) {
      devvmReachable = value;
    },
    get running() {
      return running;
    },
    set running(value) {
      running = value;
    },
    get policyProposal() {
      return policyProposal;
    },
    set policyProposal(value) {
      policyProposal = value;
    },
    get leaseTaken() {
      return leaseTaken;
    },
    set leaseTaken(value) {
      leaseTaken = value;
    },
    usedKeys,
    messageUpdates,
    useAttestation,
    pendingApprovals,
    expiredApprovals,
    agentState,
    awaiting,
    queue,
    tokens,
    record,
    notify,
    setVm,
    refreshDetails,
    pause,
    newKey,
    admit,
    enqueue,
    get stopCommand() {
      return stopCommand;
    },
    set stopCommand(value) {
      stopCommand = value;
    },
  };
  registerMessageHandlers(scope);

  const execute = (item: WorkItem) => executeItem(scope, item);

  // ------------------------------------------------------------------------- the agent
  const agentReady = () => agentState.enabled && agentState.pending && awaiting.size === 0 && queue.length === 0;

  const runAgent = () => runAgentTurn(scope);
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
    leaseTaken,
    ...(cancelledBy ? { cancelledBy } : {}),
    ...(policyProposal ? { policyProposal } : {}),
    ...(messageUpdates.size > 0 ? { messageUpdates: [...messageUpdates] } : {}),
    ...(usedAttestations.size > 0 ? { usedAttestations: [...usedAttestations] } : {}),
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
    await CancellationScope.nonCancellable(async () => {
      if (leaseTaken) await settleLease(scope, 0);
      await notify({ kind: 'session-ended', sessionId: info.workflowId, outcome: 'cancelled' });
    });
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
  // A session that ends frees the VM for the next one at once.
  if (leaseTaken) await settleLease(scope, 0);
  await notify({ kind: 'session-ended', sessionId: info.workflowId, outcome });
  await condition(allHandlersFinished);
  return outcome;
}
