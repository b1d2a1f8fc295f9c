/**
 * The session's steps: how one admitted work item runs. Reads look and record; a mutating verb
 * captures forensics first (invariant 1), is never abandoned once started, and is never repeated
 * blindly when its outcome is unknown (invariant 4); a devvm command runs at most once.
 */
import { CancellationScope, isCancellation, patched, upsertSearchAttributes } from '@temporalio/workflow';
import { isMutatingVerb, type MutatingVerb } from './pve-types.js';
import { LAST_VERB } from './search-attributes.js';
import {
  DEFAULT_LEASE_HOLD_MINUTES,
  DEVVM_WAIT_SECONDS,
  LEASE_IN_FLIGHT_SECONDS,
  UNKNOWN_OUTCOME_KINDS,
  commands,
  describeFailure,
  describeItem,
  hostRequestId,
  leases,
  mutations,
  reads,
} from './session-rules.js';
import type { SessionScope } from './session-scope.js';
import type { Actor, CommandItem, VerbItem, WorkItem } from './session-types.js';

const requestId = (s: SessionScope, item: WorkItem, suffix: string) => hostRequestId(s.info.workflowId, item.key, suffix);

async function checkStatus(s: SessionScope, item: WorkItem, summary: string) {
  const result = await reads.pveStatus.executeWithOptions({ ...s.tuned.reads, summary }, []);
  s.setVm(result.vm);
  s.record({ type: 'status', key: item.key, result });
  return result;
}

async function captureForensics(s: SessionScope, item: WorkItem, trigger: string) {
  const result = await reads.pveForensics.executeWithOptions(
    { ...s.tuned.reads, startToCloseTimeout: '3m', summary: trigger === 'on request' ? 'forensics' : `forensics before ${trigger}` },
    [{ requestId: requestId(s, item, '.f'), trigger }],
  );
  s.record({ type: 'forensics', key: item.key, trigger, result });
  return result;
}

async function runMutation(s: SessionScope, item: VerbItem, verb: MutatingVerb) {
  // Histories from before the lease replay as they ran.
  if (!patched('target-lease')) return forensicsThenVerb(s, item, verb);
  if (!(await takeLease(s, item, verb))) return;
  try {
    await forensicsThenVerb(s, item, verb);
  } finally {
    await CancellationScope.nonCancellable(() => settleLease(s, (s.input.leaseHoldMinutes ?? DEFAULT_LEASE_HOLD_MINUTES) * 60));
  }
}

const actorName = (actor: Actor) => (actor.kind === 'operator' ? actor.name : actor.kind);

/** Takes the VM's mutation lease for this verb; refused (recorded, nothing run) while another session holds it. */
async function takeLease(s: SessionScope, item: VerbItem, verb: MutatingVerb): Promise<boolean> {
  const vmid = s.input.target.vmid;
  // Before asking: a cancel mid-request still releases whatever was granted.
  s.leaseTaken = true;
  let answer;
  try {
    answer = await leases.acquireTargetLease.executeWithOptions({ summary: `lease VM ${vmid} for ${verb}` }, [
      { vmid, sessionId: s.info.workflowId, operator: actorName(item.requestedBy), verb, inFlightSeconds: LEASE_IN_FLIGHT_SECONDS, ...(item.takeOver ? { takeOver: { reason: item.reason } } : {}) },
    ]);
  } catch (error) {
    if (isCancellation(error)) throw error;
    s.record({ type: 'skipped', key: item.key, what: verb, why: `the VM's mutation lease could not be taken (${describeFailure(error).message}); the verb was not run` });
    return false;
  }
  if (!answer.granted) {
    s.record({ type: 'skipped', key: item.key, what: verb, why: `VM ${vmid} is leased to another session: ${answer.why}. Join that session, or take over (explicit and recorded)`, lease: answer.holder });
    void s.notify({ kind: 'verb', sessionId: s.info.workflowId, verb, outcome: 'refused', detail: `not run: ${answer.why}` });
    return false;
  }
  if (answer.previous) {
    s.record({ type: 'lease', event: 'took-over', sessionId: answer.previous.sessionId, operator: actorName(item.requestedBy), verb, reason: item.reason });
  }
  return true;
}

/** After the outcome: keep the lease for the hold time (0 releases). Best effort: an unsettled lease lapses on its own. */
export async function settleLease(s: SessionScope, holdSeconds: number): Promise<void> {
  await leases.settleTargetLease
    // Quick, few attempts: a session's end must not wait minutes on a lease that lapses anyway.
    .executeWithOptions(
      { startToCloseTimeout: '15s', retry: { maximumAttempts: 3, initialInterval: '1s' }, summary: holdSeconds > 0 ? `hold VM ${s.input.target.vmid} for ${holdSeconds} s` : `release VM ${s.input.target.vmid}` },
      [{ vmid: s.input.target.vmid, sessionId: s.info.workflowId, holdSeconds }],
    )
    .catch(() => undefined);
}

async function forensicsThenVerb(s: SessionScope, item: VerbItem, verb: MutatingVerb) {
  // Invariant 1: forensics completes, and is in history, before the verb is scheduled.
  try {
    await captureForensics(s, item, verb);
  } catch (error) {
    if (isCancellation(error)) throw error;
    const failure = describeFailure(error);
    s.record({ type: 'skipped', key: item.key, what: verb, why: `forensics failed (${failure.message}); the verb was not run` });
    return;
  }
  if (CancellationScope.current().consideredCancelled) {
    s.record({ type: 'skipped', key: item.key, what: verb, why: 'session cancelled before the verb started' });
    return;
  }
  s.lastVerb = verb;
  upsertSearchAttributes([{ key: LAST_VERB, value: verb }]);
  // A mutation in flight is never abandoned: cancellation waits for its real outcome.
  await CancellationScope.nonCancellable(async () => {
    try {
      const result = await mutations.pveMutation.executeWithOptions(
        { ...s.tuned.mutations, summary: `${verb} VM ${s.input.target.vmid}` },
        [{ verb, requestId: requestId(s, item, '.m') }],
      );
      s.lastMutationOk = result.ok;
      s.setVm(result.after);
      s.record({ type: 'verb-result', key: item.key, result });
      void s.notify({
        kind: 'verb',
        sessionId: s.info.workflowId,
        verb,
        outcome: result.ok ? 'succeeded' : 'failed',
        detail: `pid ${result.oldPid ?? '-'} → ${result.newPid ?? '-'}${result.replayed ? ' (from the host journal)' : ''}`,
      });
    } catch (error) {
      const failure = describeFailure(error);
      if (UNKNOWN_OUTCOME_KINDS.has(failure.kind)) {
        // Invariant 4: never repeat blindly. Look, record, and hand over to the operator.
        s.lastMutationOk = null;
        const status = await checkStatus(s, item, `status after unknown ${verb}`).then(
          (result) => result.vm,
          () => null,
        );
        s.record({ type: 'outcome-unknown', key: item.key, verb, message: failure.message, status });
        void s.notify({ kind: 'verb', sessionId: s.info.workflowId, verb, outcome: 'unknown', detail: failure.message });
        s.pause('system', `the outcome of ${verb} is unknown: check the VM state, then decide`);
        return;
      }
      s.lastMutationOk = false;
      s.record({ type: 'verb-failed', key: item.key, verb, kind: failure.kind, message: failure.message, ...(failure.detail !== undefined ? { detail: failure.detail } : {}) });
      void s.notify({ kind: 'verb', sessionId: s.info.workflowId, verb, outcome: 'failed', detail: failure.message });
      await checkStatus(s, item, `status after failed ${verb}`).catch(() => undefined);
      return;
    }
    if (verb === 'stop') return;
    const started = Date.now();
    let wait;
    try {
      wait = await mutations.waitForDevvm.executeWithOptions(
        // Retried only when it was stopped (a worker shutdown): its answers are results, not errors.
        { ...s.tuned.heartbeat, startToCloseTimeout: `${DEVVM_WAIT_SECONDS + 30}s`, retry: { maximumAttempts: 3, initialInterval: '1s' }, summary: `wait for devvm SSH after ${verb}` },
        [{ deadlineSeconds: DEVVM_WAIT_SECONDS }],
      );
    } catch (error) {
      if (isCancellation(error)) throw error;
      // No verdict: the devvm's state stays unknown rather than "not answering".
      s.record({ type: 'skipped', key: item.key, what: 'wait for the devvm', why: `no verdict: ${describeFailure(error).message}` });
      s.refreshDetails();
      return;
    }
    s.devvmReachable = wait.reachable;
    s.record({ type: 'devvm-wait', key: item.key, reachable: wait.reachable, waitedMs: Date.now() - started, attempts: wait.attempts });
    s.refreshDetails();
  });
}

async function runCommand(s: SessionScope, item: CommandItem) {
  // Its own scope, so an operator's mutation can stop it without cancelling the session.
  const scope = new CancellationScope();
  let stoppedFor: string | null = null;
  s.stopCommand = (why) => {
    stoppedFor = why;
    scope.cancel();
  };
  try {
    const result = await scope.run(() =>
      commands.devvmCommand.executeWithOptions(
        { ...s.tuned.heartbeat, startToCloseTimeout: `${item.timeoutSeconds + 30}s`, summary: `devvm: ${item.command.slice(0, 80)}` },
        [{ command: item.command, timeoutSeconds: item.timeoutSeconds }],
      ),
    );
    s.devvmReachable = true;
    s.record({ type: 'command-result', key: item.key, result });
  } catch (error) {
    if (isCancellation(error) && stoppedFor !== null && !CancellationScope.current().consideredCancelled) {
      s.record({
        type: 'skipped',
        key: item.key,
        what: describeItem(item),
        why: `stopped because ${stoppedFor}: the devvm was asked to stop it; if it could not be, it may still be running until its own time limit (${item.timeoutSeconds} s from its start)`,
      });
    } else if (isCancellation(error)) {
      // The worker asks the devvm to stop it by its run name; whether that took, only the worker's
      // log and the devvm know: say what may be true.
      s.record({
        type: 'skipped',
        key: item.key,
        what: describeItem(item),
        why: `abandoned when the session was cancelled: the devvm was asked to stop it; if it could not be, it may still be running until its own time limit (${item.timeoutSeconds} s from its start)`,
      });
      throw error;
    } else {
      const failure = describeFailure(error);
      if (failure.kind === 'timeout' || failure.kind === 'unreachable') s.devvmReachable = false;
      s.record({ type: 'command-failed', key: item.key, command: item.command, kind: failure.kind, message: failure.message });
    }
  } finally {
    s.stopCommand = null;
  }
  s.refreshDetails();
}

export async function executeItem(s: SessionScope, item: WorkItem): Promise<void> {
  s.running = { item, since: Date.now() };
  try {
    if (item.kind === 'command') return await runCommand(s, item);
    if (isMutatingVerb(item.verb)) return await runMutation(s, item, item.verb);
    try {
      if (item.verb === 'status') await checkStatus(s, item, `status VM ${s.input.target.vmid}`);
      else await captureForensics(s, item, 'on request');
    } catch (error) {
      if (isCancellation(error)) throw error;
      const failure = describeFailure(error);
      s.record({ type: 'verb-failed', key: item.key, verb: item.verb, kind: failure.kind, message: failure.message });
    }
  } finally {
    s.running = null;
    s.awaiting.delete(item.key);
    s.refreshDetails();
  }
}
