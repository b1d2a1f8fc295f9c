/** Words for transcript entries: who did it, what it was, and a one-line summary to announce. */
import { agentName } from './auth.svelte.js';
import { duration } from './format.js';
import { ioVerdictLine, mutationOutcome, verifiedLine } from '../../../workflows/pve-types.js';
import type { Actor, AgentMode, Entry, ForensicsResult, LeaseHolder, Unverified, WorkItem } from './types.js';

export function actorName(actor: Actor, agentMode: AgentMode | undefined): string {
  if (actor.kind === 'operator') return actor.unverified ? `${actor.name} (unverified)` : actor.name;
  if (actor.kind === 'agent') return agentName(agentMode);
  return 'system';
}

/** Why a name did not count: the console did not vouch for it (server/attestation.ts). */
export function unverifiedNote(unverified: Unverified): string {
  return `unverified, counts for no one: sent straight through Temporal by ${unverified.identity} (${unverified.why})`;
}

export function describeItem(item: WorkItem): string {
  return item.kind === 'verb' ? `${item.verb}${item.reason ? ` — ${item.reason}` : ''}` : `devvm: ${item.command}`;
}

/** A short sentence for the screen-reader announcer (never the whole output). */
export function summarizeEntry(entry: Entry, agentMode: AgentMode | undefined): string {
  switch (entry.type) {
    case 'session-started':
      return `Session opened by ${entry.operator}`;
    case 'session-continued':
      return 'Session history continued in a new run';
    case 'operator-message':
      return `${entry.operator}${entry.unverified ? ' (unverified)' : ''} wrote: ${entry.text.slice(0, 140)}`;
    case 'agent-message':
      return `${agentName(agentMode)}: ${entry.text.slice(0, 140)}`;
    case 'agent-tool-error':
      return `Agent tool error: ${entry.message}`;
    case 'agent-error':
      return `Agent error (${entry.kind}): ${entry.message}`;
    case 'agent-disabled':
      return `Agent unavailable: ${entry.reason}`;
    case 'request':
      return `Requested by ${actorName(entry.item.requestedBy, agentMode)}: ${describeItem(entry.item)}`;
    case 'approval-needed':
      return `Approval needed: ${describeItem(entry.item)}`;
    case 'approval':
      return `${entry.operator} ${entry.decision === 'approve' ? 'approved' : 'denied'} ${entry.approvalId}${entry.unverified ? ` (${unverifiedNote(entry.unverified)})` : ''}`;
    case 'status': {
      const vm = entry.result.vm;
      return `VM status: ${vm.status}, QMP ${vm.qmp === 'silent' ? 'silent' : vm.qmpstatus || 'unknown'}${vm.ha?.managed ? ', HA-managed' : ''}${vm.warning ? `. ${vm.warning}` : ''}`;
    }
    case 'forensics':
      return `Forensics captured: ${ioVerdictLine(entry.result.summary)}`;
    case 'verb-result': {
      const r = entry.result;
      const outcome = mutationOutcome(r);
      const verified = verifiedLine(r);
      return `${r.verb} ${outcome === 'done' ? 'finished' : outcome}: pid ${r.oldPid ?? '–'} → ${r.newPid ?? '–'}${verified ? `; ${verified}` : ''}`;
    }
    case 'verb-failed':
      return `${entry.verb} failed: ${entry.message}`;
    case 'skipped':
      return `Skipped ${entry.what}: ${entry.why}`;
    case 'outcome-unknown':
      return `Outcome of ${entry.verb} unknown: ${entry.message}`;
    case 'devvm-wait':
      return `devvm SSH ${entry.reachable ? 'answering' : 'not answering'} after ${duration(entry.waitedMs)}`;
    case 'command-result':
      return `Command finished with exit ${entry.result.exitCode ?? entry.result.exitSignal ?? 'unknown'}: ${entry.result.command}`;
    case 'command-failed':
      return `Command failed: ${entry.message}`;
    case 'paused':
      return `Paused by ${entry.operator}`;
    case 'resumed':
      return `Resumed by ${entry.operator}`;
    case 'policy-changed':
      return `Policy changed by ${entry.operator}${entry.unverified ? ' (unverified)' : ''}`;
    case 'policy-proposed':
      return `${entry.operator} proposes a looser policy: a second operator must agree`;
    case 'session-ended':
      return `Session ended: ${entry.outcome}`;
    case 'cancel-requested':
      return `Cancelled by ${entry.operator}`;
    case 'lease':
      return entry.event === 'taken-over' ? `Session ${entry.sessionId} took the VM over` : `Took the VM over from session ${entry.sessionId}`;
    default:
      return `New entry: ${(entry as { type?: string }).type ?? 'unknown'}`;
  }
}

/**
 * The session that holds the VM's mutation lease, as this session last heard it: from a verb
 * refused for the lease, until this session runs a verb (or takes over) after it.
 */
export function leasedBy(entries: Entry[]): LeaseHolder | null {
  for (let index = entries.length - 1; index >= 0; index--) {
    const entry = entries[index] as Entry;
    if (entry.type === 'verb-result' || (entry.type === 'lease' && entry.event === 'took-over')) return null;
    if (entry.type === 'skipped' && entry.lease) return entry.lease.until > Date.now() ? entry.lease : null;
  }
  return null;
}

/**
 * The latest forensics in the transcript (the VM panel shows whether I/O was moving), or null
 * when a verb changed the VM after it: a verdict from before a cycle says nothing about now.
 */
export function latestForensics(entries: Entry[]): { at: number; result: ForensicsResult } | null {
  for (let index = entries.length - 1; index >= 0; index--) {
    const entry = entries[index] as Entry;
    if (entry.type === 'verb-result' || entry.type === 'outcome-unknown') return null;
    if (entry.type === 'forensics') return { at: entry.at, result: entry.result };
  }
  return null;
}

export interface TokenTally {
  turns: number;
  /** Sums of every numeric usage field the agent reported (inputTokens, outputTokens, …). */
  totals: Record<string, number>;
}

export function tokenTally(entries: Entry[]): TokenTally {
  const totals: Record<string, number> = {};
  let turns = 0;
  for (const entry of entries) {
    if (entry.type !== 'agent-message') continue;
    turns++;
    const usage = entry.usage as unknown;
    if (!usage || typeof usage !== 'object') continue;
    for (const [key, value] of Object.entries(usage as Record<string, unknown>)) {
      if (typeof value === 'number' && Number.isFinite(value)) totals[key] = (totals[key] ?? 0) + value;
    }
  }
  return { turns, totals };
}
