/**
 * The session's messages from people and tools: validation and the Update/Signal handlers that
 * admit requests, record approvals, policy changes, pauses, and the end or cancel of a session.
 * They work on the session's state through its scope (workflows/session.ts).
 */
import { ApplicationFailure, currentUpdateInfo, patched, setHandler } from '@temporalio/workflow';
import {
  DEFAULT_COMMAND_TIMEOUT_SECONDS,
  MAX_COMMAND_LENGTH,
  MAX_COMMAND_TIMEOUT_SECONDS,
  MAX_MESSAGE_LENGTH,
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
  type Attestation,
  type CommandRequestInput,
  type RequestAccepted,
  type VerbRequestInput,
} from './messages.js';
import { loosens, samePolicy } from './policy.js';
import { PVE_VERBS, isMutatingVerb } from './pve-types.js';
import { attestations, callers, describeItem, operatorName, reasonText, validateRequestKey } from './session-rules.js';
import type { SessionScope } from './session-scope.js';
import { leaseTakenOverSignal } from './target-lease.js';
import type { Actor, CommandItem, Unverified } from './session-types.js';

/** The update ids of recent operator messages, carried across runs (the oldest forgotten first). */
const REMEMBERED_MESSAGES = 500;
function rememberMessage(seen: Map<string, number>, updateId: string, seq: number): void {
  seen.set(updateId, seq);
  for (const oldest of seen.keys()) {
    if (seen.size <= REMEMBERED_MESSAGES) break;
    seen.delete(oldest);
  }
}

export function registerMessageHandlers(s: SessionScope): void {
  /**
   * Whether the console vouched for a message's operator (server/attestation.ts): resolves to
   * undefined when it did, else to why not and the sender's Temporal identity. Null for
   * histories recorded before the check, which believed every name; the caller then goes on
   * without waiting, exactly as those histories did.
   */
  const vouch = (messageName: string, message: { attestation?: { nonce?: unknown; issuedAt?: unknown } }): Promise<Unverified | undefined> | null => {
    if (!patched('verified-operators')) return null;
    const updateId = currentUpdateInfo()?.id;
    return (async () => {
      const verdict = await attestations
        .checkOperatorAttestation({ sessionId: s.info.workflowId, messageName, message })
        .catch((error: Error) => ({ ok: false as const, why: `the attestation could not be checked (${error.message})` }));
      const { nonce, issuedAt } = message.attestation ?? {};
      if (verdict.ok && typeof nonce === 'string' && typeof issuedAt === 'number' && s.useAttestation(nonce, issuedAt)) return undefined;
      const why = verdict.ok ? 'its attestation was used before (a replayed message)' : verdict.why;
      const identity = await callers
        .temporalCaller({ workflowId: s.info.workflowId, runId: s.info.runId, ...(updateId ? { updateId } : { signalName: messageName, message }) })
        .catch(() => '(could not be read from history)');
      return { identity, why };
    })();
  };
  const asOperator = (name: string, unverified: Unverified | undefined): Actor => ({ kind: 'operator', name, ...(unverified ? { unverified } : {}) });
  const answerRepeat = (key: string): RequestAccepted => {
    const waiting = [...s.pendingApprovals.values()].find((p) => p.item.key === key);
    return { key, approvalId: waiting?.approvalId ?? null };
  };
  /**
   * Requests whose sender is being checked, by key, until they are admitted. A request and its
   * approval can arrive together (Temporal re-applies both after a reset): the approval waits for
   * its request instead of finding nothing to approve.
   */
  const admitting = new Map<string, Promise<RequestAccepted>>();
  const admitOnce = async (key: string, messageName: string, request: { operator: string; attestation?: Attestation }, admit: (by: Actor) => RequestAccepted): Promise<RequestAccepted> => {
    const inFlight = admitting.get(key);
    if (inFlight) return inFlight;
    if (s.usedKeys.has(key)) return answerRepeat(key);
    const checking = vouch(messageName, request);
    if (!checking) return admit(asOperator(operatorName(request.operator), undefined));
    const admitted = checking.then((unverified) => {
      admitting.delete(key);
      if (s.usedKeys.has(key)) return answerRepeat(key);
      if (s.endRequested || s.outcome) throw ApplicationFailure.nonRetryable('session: already ending', 'session_ending');
      return admit(asOperator(operatorName(request.operator), unverified));
    });
    admitting.set(key, admitted);
    return admitted;
  };
  /** The request an approval id names, when it is still being admitted. */
  const admittingFor = (approvalId: unknown) => (typeof approvalId === 'string' && approvalId.startsWith('a-') ? admitting.get(approvalId.slice(2)) : undefined);
  // ------------------------------------------------------------------ message validation
  const validateVerbRequest = (request: VerbRequestInput) => {
    if (!request || typeof request !== 'object') throw new Error('body: expected { verb, reason, operator }');
    if (!(PVE_VERBS as readonly string[]).includes(request.verb)) throw new Error(`verb: must be one of ${PVE_VERBS.join(', ')}`);
    operatorName(request.operator);
    reasonText(request.reason);
    validateRequestKey(request.requestKey);
    if (request.takeOver !== undefined && typeof request.takeOver !== 'boolean') throw new Error('takeOver: must be true or false');
    if (request.takeOver === true && !isMutatingVerb(request.verb)) throw new Error(`takeOver: only for a mutating verb (${request.verb} needs no lease)`);
    if (s.endRequested || s.outcome) throw new Error('session: already ending');
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
    if (s.endRequested || s.outcome) throw new Error('session: already ending');
  };

  const acceptVerb = (request: VerbRequestInput, messageName: string): Promise<RequestAccepted> => {
    const key = s.newKey(request.requestKey);
    return admitOnce(key, messageName, request, (requestedBy) =>
      s.admit({ kind: 'verb', key, verb: request.verb, reason: reasonText(request.reason), requestedBy, approvedBy: [], ...(request.takeOver === true ? { takeOver: true as const } : {}) }),
    );
  };


  setHandler(
    operatorMessageUpdate,
    async (message) => {
      // Temporal drops a repeated update id within a run only: a client's retry that lands in the
      // next run (after a continue-as-new) gets the first answer instead of a second message.
      const updateId = currentUpdateInfo()?.id;
      const once = updateId !== undefined && patched('message-once-across-runs');
      const earlier = once ? s.messageUpdates.get(updateId) : undefined;
      if (earlier !== undefined) return { seq: earlier };
      const checking = vouch('operatorMessage', message);
      const unverified = checking ? await checking : undefined;
      const entry = s.record({ type: 'operator-message', operator: operatorName(message.operator), text: message.text.trim(), ...(unverified ? { unverified } : {}) });
      if (once) rememberMessage(s.messageUpdates, updateId, entry.seq);
      if (s.agentState.enabled) {
        // A new message from a person resets the agent's tool-call budget.
        s.agentState.pending = true;
        s.toolCallsUsed = 0;
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

  setHandler(requestVerbUpdate, (request) => acceptVerb(request, 'verb'), { validator: validateVerbRequest });

  // Signals cannot be rejected, so a bad one from the CLI is recorded as a failed request.
  setHandler(requestVerbSignal, async (request) => {
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
      s.record({ type: 'skipped', key: '-', what: String(request?.verb ?? 'request'), why: `rejected signal: ${(error as Error).message}` });
      return;
    }
    await acceptVerb(request, 'requestVerb').catch((error: Error) => {
      s.record({ type: 'skipped', key: '-', what: request.verb, why: `rejected signal: ${error.message}` });
    });
  });

  setHandler(
    requestCommandUpdate,
    (request) => {
      const key = s.newKey(request.requestKey);
      return admitOnce(key, 'command', request, (requestedBy) => {
        const item: CommandItem = { kind: 'command', key, command: request.command, timeoutSeconds: request.timeoutSeconds ?? DEFAULT_COMMAND_TIMEOUT_SECONDS, requestedBy, approvedBy: [] };
        return s.admit(item);
      });
    },
    { validator: validateCommandRequest },
  );

  setHandler(
    approvalUpdate,
    async (decision) => {
      const notExecuted = { approvalId: decision.approvalId, decision: decision.decision, executed: false };
      const arriving = admittingFor(decision.approvalId);
      if (arriving) await arriving.catch(() => undefined);
      if (!s.pendingApprovals.has(decision.approvalId)) return notExecuted;
      const checking = vouch('approval', decision);
      const unverified = checking ? await checking : undefined;
      // The validator vouched for the id when the update was accepted (replay skips validators),
      // but another decision may have landed while this one was being checked.
      const pending = s.pendingApprovals.get(decision.approvalId);
      if (!pending) return notExecuted;
      const operator = operatorName(decision.operator);
      if (unverified) {
        // A decision nobody can vouch for is kept in the record and counts for nothing.
        s.record({ type: 'approval', approvalId: pending.approvalId, decision: decision.decision, operator, reason: reasonText(decision.reason), unverified });
        return notExecuted;
      }
      if (decision.decision === 'approve') {
        const requester = pending.item.requestedBy.kind === 'operator' ? pending.item.requestedBy.name : null;
        if (operator === requester) throw ApplicationFailure.nonRetryable('operator: the requester cannot approve their own request', 'self_approval');
        if (pending.approvals.includes(operator)) return notExecuted;
      }
      s.record({ type: 'approval', approvalId: pending.approvalId, decision: decision.decision, operator, reason: reasonText(decision.reason) });
      if (decision.decision === 'deny') {
        s.pendingApprovals.delete(pending.approvalId);
        s.record({ type: 'skipped', key: pending.item.key, what: describeItem(pending.item), why: `denied by ${operator}` });
        s.awaiting.delete(pending.item.key);
        s.refreshDetails();
        return { approvalId: pending.approvalId, decision: 'deny', executed: false };
      }
      pending.approvals.push(operator);
      if (pending.approvals.length < pending.required) {
        s.refreshDetails();
        return { approvalId: pending.approvalId, decision: 'approve', executed: false };
      }
      s.pendingApprovals.delete(pending.approvalId);
      s.enqueue({ ...pending.item, approvedBy: [...pending.approvals] });
      s.refreshDetails();
      return { approvalId: pending.approvalId, decision: 'approve', executed: true };
    },
    {
      // Runs before anything reaches history: a stale or unknown approval id is refused here.
      validator: (decision) => {
        if (!decision || typeof decision !== 'object') throw new Error('body: expected { approvalId, decision, operator }');
        const pending = s.pendingApprovals.get(decision.approvalId);
        if (!pending && s.expiredApprovals.has(decision.approvalId)) throw new Error(`approvalId: "${decision.approvalId}" expired unapproved; the request must be made again`);
        // A request still being admitted (it arrived with this approval): the handler waits for it.
        const arriving = !pending && admittingFor(decision.approvalId) !== undefined;
        if (!pending && !arriving) throw new Error(`approvalId: no pending approval "${String(decision.approvalId)}" (already decided or never requested)`);
        if (decision.decision !== 'approve' && decision.decision !== 'deny') throw new Error('decision: must be "approve" or "deny"');
        const operator = operatorName(decision.operator);
        reasonText(decision.reason);
        if (pending && decision.decision === 'approve') {
          const requester = pending.item.requestedBy.kind === 'operator' ? pending.item.requestedBy.name : null;
          if (operator === requester) throw new Error('operator: the requester cannot approve their own request');
          if (pending.approvals.includes(operator)) throw new Error('operator: has already approved this request');
        }
      },
    },
  );

  setHandler(
    setPolicyUpdate,
    async (change) => {
      const checking = vouch('policy', change);
      const unverified = checking ? await checking : undefined;
      const operator = operatorName(change.operator);
      const next = { ...s.policy, ...change.policy };
      if (unverified) {
        // Fewer eyes only on an authenticated operator's word; more eyes from anyone at once.
        if (loosens(s.policy, next)) {
          s.record({ type: 'skipped', key: '-', what: `policy change by ${operator}`, why: `unverified (${unverified.why}; Temporal identity ${unverified.identity}): only an operator the console authenticated can loosen the policy` });
          return s.policy;
        }
        s.policy = next;
        s.record({ type: 'policy-changed', operator, policy: s.policy, unverified });
        s.refreshDetails();
        return s.policy;
      }
      let proposedBy: string | undefined;
      // Under two-person, fewer eyes takes two people too: one proposes, another (same change) agrees.
      if (s.policy.mutatingVerbs === 'two-person' && loosens(s.policy, next) && patched('two-person-loosening')) {
        const proposal = s.policyProposal;
        const agreed = proposal !== null && samePolicy(proposal.policy, next);
        if (!agreed || proposal.operator === operator) {
          // A repeat by the proposer changes nothing; a new or different proposal is recorded.
          if (!agreed) {
            s.policyProposal = { operator, policy: next };
            s.record({ type: 'policy-proposed', operator, policy: next });
            s.refreshDetails();
          }
          return s.policy;
        }
        proposedBy = proposal.operator;
      }
      s.policyProposal = null;
      s.policy = next;
      s.record({ type: 'policy-changed', operator, policy: s.policy, ...(proposedBy ? { proposedBy } : {}) });
      s.refreshDetails();
      return s.policy;
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

  setHandler(pauseSignal, (action) => s.pause(String(action?.operator ?? 'unknown'), String(action?.reason ?? 'paused by operator')));
  setHandler(resumeSignal, (action) => {
    if (!s.paused) return;
    s.paused = false;
    s.pauseReason = '';
    s.record({ type: 'resumed', operator: String(action?.operator ?? 'unknown') });
    s.refreshDetails();
  });
  setHandler(cancelRequestSignal, (action) => {
    if (s.cancelledBy || s.outcome) return;
    s.cancelledBy = { operator: String(action?.operator ?? 'unknown'), reason: String(action?.reason ?? '') };
    s.record({ type: 'cancel-requested', operator: s.cancelledBy.operator, reason: s.cancelledBy.reason });
  });
  setHandler(endSessionSignal, (action) => {
    s.endRequested ??= { operator: String(action?.operator ?? 'unknown'), reason: String(action?.reason ?? '') };
  });
  // From the VM's lease workflow: another session took over this session's hold on the VM.
  setHandler(leaseTakenOverSignal, (taken) => {
    if (s.outcome) return;
    const entry = { sessionId: String(taken.bySessionId), operator: String(taken.operator), verb: String(taken.verb), reason: String(taken.reason) };
    s.record({ type: 'lease', event: 'taken-over', ...entry });
    void s.notify({ kind: 'lease-taken-over', sessionId: s.info.workflowId, bySessionId: entry.sessionId, operator: entry.operator, verb: entry.verb, reason: entry.reason });
  });
}
