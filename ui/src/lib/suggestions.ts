/**
 * What the evidence suggests, in words an operator can accept with one tap: reasons for a
 * mutating verb (prefilled, always editable) and the next sensible action for the session's
 * first screen. Pure functions of the session state and its entries, so they are tested in Node.
 */
import { ioVerdictOf } from '../../../workflows/pve-types.js';
import { MAX_REASON_LENGTH } from './limits.js';
import type { ForensicsResult, PveVerb } from '../../../workflows/pve-types.js';
import type { SessionState, TranscriptEntry as Entry } from '../../../workflows/session-types.js';

interface Evidence {
  session: SessionState;
  forensics: { at: number; result: ForensicsResult } | null;
}

const clip = (text: string, max: number) => (text.length <= max ? text : `${text.slice(0, max - 1).trimEnd()}…`);

/**
 * Reasons for `verb`, strongest evidence first: the latest forensics verdict, what the last look
 * said, devvm reachability, then the problem as reported. Never empty for a mutating verb.
 */
export function suggestedReasons(verb: PveVerb, { session, forensics }: Evidence): string[] {
  const reasons: string[] = [];
  const vm = session.vm;
  const summary = forensics?.result.summary;
  if (summary) {
    const verdict = ioVerdictOf(summary);
    if (verdict === 'frozen') reasons.push(summary.qmpAnswered ? 'disk I/O frozen while QMP answers (forensics)' : 'disk I/O frozen and QMP silent (forensics)');
    else if (!summary.qmpAnswered) reasons.push('QMP did not answer during forensics: QEMU is wedged');
  }
  if (vm?.qmp === 'silent') reasons.push('QMP silent at the last look: qm status could not reach QEMU');
  if (session.devvmReachable === false) reasons.push('devvm SSH not answering');
  if (vm?.pending.present && (verb === 'cycle' || verb === 'stop')) {
    reasons.push(`apply the pending config (${vm.pending.lines.length} staged ${vm.pending.lines.length === 1 ? 'line' : 'lines'})`);
  }
  if (verb === 'start' && vm?.status === 'stopped') reasons.push(`VM ${session.target.vmid} is stopped`);
  const description = session.description.replace(/\s+/g, ' ').trim();
  if (description) reasons.push(clip(`reported: ${description}`, MAX_REASON_LENGTH));
  return [...new Set(reasons)];
}

export type NextStepTarget = 'approvals' | 'verb' | 'message' | 'none';

export interface NextStep {
  /** One sentence: what is going on and what to do. */
  text: string;
  tone: 'ok' | 'warn' | 'danger' | 'muted';
  /** The control the suggestion points at (the page turns it into a button). */
  target: NextStepTarget;
  verb?: PveVerb;
}

/** The next sensible action, judged in order of urgency. */
export function nextStep({ session, forensics }: Evidence, agentConfigured: boolean): NextStep {
  const vm = session.vm;
  const vmid = session.target.vmid;
  if (session.ended) return { text: 'The session has ended: the postmortem has the whole record.', tone: 'muted', target: 'none' };
  const waiting = session.pendingApprovals.length;
  if (waiting > 0) {
    return { text: `${waiting} ${waiting === 1 ? 'request waits' : 'requests wait'} for approval.`, tone: 'warn', target: 'approvals' };
  }
  if (session.running?.item.kind === 'verb' && session.running.item.verb !== 'status') {
    return { text: `Running ${session.running.item.verb} on VM ${vmid}: the result appears below.`, tone: 'muted', target: 'none' };
  }
  if (!vm) return { text: `Looking at VM ${vmid} on the PVE host…`, tone: 'muted', target: 'none' };
  if (vm.status === 'stopped') return { text: `VM ${vmid} is stopped: start it.`, tone: 'warn', target: 'verb', verb: 'start' };
  const summary = forensics?.result.summary;
  if (summary && ioVerdictOf(summary) === 'frozen') {
    return { text: 'Disk I/O is frozen inside QEMU: a reset would hang on the same process. Cycle it.', tone: 'danger', target: 'verb', verb: 'cycle' };
  }
  if (vm.qmp === 'silent' || (summary && !summary.qmpAnswered)) {
    return { text: 'QMP does not answer: QEMU itself is wedged. Cycle it (forensics runs first).', tone: 'danger', target: 'verb', verb: 'cycle' };
  }
  if (session.devvmReachable === false && !summary) {
    return { text: 'The devvm does not answer SSH: capture forensics to see whether QEMU or the guest is stuck.', tone: 'warn', target: 'verb', verb: 'forensics' };
  }
  if (session.agent.enabled && (session.agent.thinking || session.agent.awaiting.length > 0)) {
    return { text: 'The agent is investigating: its steps appear below. You can act at any time.', tone: 'muted', target: 'none' };
  }
  if (agentConfigured && session.agent.enabled) return { text: 'Ask the agent, or run a verb.', tone: 'muted', target: 'message' };
  return { text: 'No agent in this session: capture forensics, then decide.', tone: 'muted', target: 'verb', verb: 'forensics' };
}

/** The agent's latest words (its verdict when it has one), for the first screen. */
export function latestAgentWords(entries: Entry[]): { at: number; text: string } | null {
  for (let i = entries.length - 1; i >= 0; i--) {
    const entry = entries[i]!;
    if (entry.type === 'agent-message' && entry.text.trim()) return { at: entry.at, text: entry.text.trim() };
  }
  return null;
}
