/**
 * The target's mutation lease: one workflow per VM (its id names the PVE host and the vmid),
 * so that two sessions on one wedged devvm never interleave verbs. Temporal's workflow-id
 * uniqueness makes taking it atomic (update-with-start); the workflow ends when nobody holds it.
 *
 * A session takes the lease before a mutating verb's forensics ("in flight") and, once the
 * verb's outcome is known, keeps it for a hold time so that a second session does not cycle the
 * VM again a minute later without knowing. Another session is refused with the holder's name; it
 * may take over explicitly while the holder is not in flight, and the holder is told.
 */
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  defineUpdate,
  getExternalWorkflowHandle,
  log,
  proxyActivities,
  setHandler,
  setWorkflowOptions,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from './session-rules.js';

const checks = proxyActivities<Activities>({ startToCloseTimeout: '15s', retry: { maximumAttempts: 3, initialInterval: '1s' } });

export interface LeaseHolder {
  sessionId: string;
  operator: string;
  verb: string;
  /** When this session took the lease (ms). */
  since: number;
  /** `in-flight`: a verb is running; `holding`: its outcome is known, held until `until`. */
  state: 'in-flight' | 'holding';
  until: number;
}

export interface LeaseRequest {
  sessionId: string;
  operator: string;
  verb: string;
  /** How long an in-flight lease lasts if the holder never settles it (a terminated session). */
  inFlightSeconds: number;
  /** Explicit take-over from another session's hold, with the operator's reason. */
  takeOver?: { reason: string };
}

export type LeaseAnswer = { granted: true; previous: LeaseHolder | null } | { granted: false; holder: LeaseHolder; why: string };

export interface LeaseTakenOver {
  bySessionId: string;
  operator: string;
  verb: string;
  reason: string;
}

export const acquireLeaseUpdate = defineUpdate<LeaseAnswer, [LeaseRequest]>('acquireLease');
/** After the outcome: hold for `holdSeconds` (0 releases). Only the holder's settle counts. */
export const settleLeaseUpdate = defineUpdate<LeaseHolder | null, [{ sessionId: string; holdSeconds: number }]>('settleLease');
export const leaseHolderQuery = defineQuery<LeaseHolder | null>('leaseHolder');
/** Sent to the session whose hold another session took over. */
export const leaseTakenOverSignal = defineSignal<[LeaseTakenOver]>('leaseTakenOver');

const clock = (ms: number) => new Date(ms).toISOString().slice(11, 16);

export function describeHolder(holder: LeaseHolder): string {
  return holder.state === 'in-flight'
    ? `session ${holder.sessionId} (${holder.operator}) is running ${holder.verb} on it now`
    : `session ${holder.sessionId} (${holder.operator}) ran ${holder.verb} at ${clock(holder.since)} UTC and holds it until ${clock(holder.until)} UTC`;
}

export async function targetLease(carried?: LeaseHolder | null): Promise<void> {
  let holder: LeaseHolder | null = carried ?? null;
  let changes = 0;
  const live = () => (holder !== null && holder.until > Date.now() ? holder : null);

  setHandler(leaseHolderQuery, () => live());

  // A holder that ended without letting go (terminated, or reset away from its verb) holds nothing.
  const holderEnded = async (current: LeaseHolder) => {
    const open = await checks.sessionIsOpen(current.sessionId).catch(() => true);
    if (!open && live() === current) {
      log.info('lease holder ended without releasing it', { holder: current.sessionId });
      holder = null;
      changes++;
    }
    return !open;
  };

  setHandler(acquireLeaseUpdate, async (request): Promise<LeaseAnswer> => {
    const grant = (previous: LeaseHolder | null): LeaseAnswer => {
      const now = Date.now();
      holder = { sessionId: request.sessionId, operator: request.operator, verb: request.verb, since: now, state: 'in-flight', until: now + request.inFlightSeconds * 1000 };
      changes++;
      return { granted: true, previous };
    };
    for (;;) {
      const current = live();
      if (current === null || current.sessionId === request.sessionId) return grant(null);
      if (await holderEnded(current)) continue;
      // Another request may have changed hands while the holder was asked about.
      if (live() !== current) continue;
      if (!request.takeOver) return { granted: false, holder: current, why: describeHolder(current) };
      if (current.state === 'in-flight') return { granted: false, holder: current, why: `${describeHolder(current)}; a take-over waits until that verb has finished` };
      log.info('lease taken over', { from: current.sessionId, to: request.sessionId, operator: request.operator });
      const answer = grant(current);
      await getExternalWorkflowHandle(current.sessionId)
        .signal(leaseTakenOverSignal, { bySessionId: request.sessionId, operator: request.operator, verb: request.verb, reason: request.takeOver.reason })
        .catch(() => undefined); // The previous session may have ended: the lease is still taken over.
      return answer;
    }
  });

  setHandler(settleLeaseUpdate, ({ sessionId, holdSeconds }) => {
    if (holder === null || holder.sessionId !== sessionId) return live();
    holder = holdSeconds > 0 ? { ...holder, state: 'holding', until: Date.now() + holdSeconds * 1000 } : null;
    changes++;
    return live();
  });

  // The first request arrives with the start (update-with-start); then live until nobody holds it.
  await condition(() => holder !== null, '1 minute');
  for (;;) {
    while (live() !== null) {
      const seen = changes;
      await condition(() => changes !== seen, Math.max(1, (holder as LeaseHolder).until - Date.now()));
      if (workflowInfo().continueAsNewSuggested) {
        await condition(allHandlersFinished);
        await continueAsNew<typeof targetLease>(live());
      }
    }
    // A request that arrived while the lease was lapsing is granted before the workflow ends.
    await condition(allHandlersFinished);
    if (live() === null) return;
  }
}

// With worker versioning, sessions stay on the build that started them, but a lease must not: a
// held lease pinned to a build with no worker left would never release the VM. It is short and
// guarded by patched() like everything else, so it moves to the current build. (Only on a
// versioned worker: an unversioned one may not name a behaviour at all.)
setWorkflowOptions(() => (workflowInfo().currentDeploymentVersion?.deploymentName ? { versioningBehavior: 'AUTO_UPGRADE' } : {}), targetLease);
