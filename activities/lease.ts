/**
 * The target's mutation lease, from the worker's side: the lease workflow's id names the PVE
 * host the dispatcher answers on and the VM, so sessions of every deployment that reach the same
 * VM share one lease. Taken with update-with-start (atomic, whoever comes first).
 */
import { createHash } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { WithStartWorkflowOperation, WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import type { SshTarget } from './ssh/connection.js';
import { acquireLeaseUpdate, settleLeaseUpdate, type LeaseAnswer, type LeaseHolder, type LeaseRequest, type targetLease } from '../workflows/target-lease.js';

export function leaseWorkflowId(pve: Pick<SshTarget, 'host' | 'port'>, vmid: number): string {
  const host = createHash('sha256').update(`${pve.host}:${pve.port}`).digest('hex').slice(0, 16);
  return `bg-lease-${host}-${vmid}`;
}

export async function acquireTargetLease(pve: SshTarget, vmid: number, request: LeaseRequest): Promise<LeaseAnswer> {
  const context = Context.current();
  const start = new WithStartWorkflowOperation<typeof targetLease>('targetLease', {
    workflowId: leaseWorkflowId(pve, vmid),
    taskQueue: context.info.taskQueue,
    workflowIdConflictPolicy: 'USE_EXISTING',
    args: [],
  });
  // A lease workflow that ends just as the update reaches it fails the update: the activity's
  // retry then starts a fresh one.
  return context.client.workflow.executeUpdateWithStart(acquireLeaseUpdate, { args: [request], startWorkflowOperation: start });
}

export async function settleTargetLease(pve: SshTarget, vmid: number, request: { sessionId: string; holdSeconds: number }): Promise<LeaseHolder | null> {
  const handle = Context.current().client.workflow.getHandle(leaseWorkflowId(pve, vmid));
  try {
    return await handle.executeUpdate(settleLeaseUpdate, { args: [request] });
  } catch (error) {
    // Nobody holds it any more (it lapsed and the workflow ended): nothing to settle.
    if (error instanceof WorkflowNotFoundError || (error instanceof WorkflowUpdateFailedError && /completed/i.test(error.message))) return null;
    throw error;
  }
}

/** Whether a session's workflow is still running (a lease holder that ended holds nothing). */
export async function sessionIsOpen(workflowId: string): Promise<boolean> {
  try {
    const description = await Context.current().client.workflow.getHandle(workflowId).describe();
    return description.status.name === 'RUNNING';
  } catch (error) {
    if (error instanceof WorkflowNotFoundError) return false;
    throw error;
  }
}
