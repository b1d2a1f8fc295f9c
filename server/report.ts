/**
 * The postmortem: a Markdown document built from the session's transcript alone, so it is the
 * same whoever downloads it, whenever.
 */
import { ioVerdictLine, ioVerdictOf, mutationOutcome, pendingLine, phaseWords, survivorsLine, verifiedLine, type ForensicsSummary } from '../workflows/pve-types.js';
import { mdBlock, mdCode, mdText } from '../workflows/markdown.js';
import type { SessionState, TranscriptEntry, Unverified } from '../workflows/session-types.js';

const time = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
// Every piece of text a person or a host wrote stays text (workflows/markdown.ts).
const oneLine = mdText;

/** "**I/O frozen (3 signs)**", "counters flat, no sign of a stall", "I/O moving", … */
function forensicsVerdict(summary: ForensicsSummary): string {
  const words = ioVerdictLine(summary);
  return ioVerdictOf(summary) === 'frozen' ? `**${words}**` : words;
}

type DevvmWait = Extract<TranscriptEntry, { type: 'devvm-wait' }>;

/** A name the console did not vouch for, said where it appears (server/attestation.ts). */
function unverified(note: Unverified | undefined): string {
  return note ? ` (unverified, counted for no one: sent straight through Temporal by ${mdCode(note.identity)}, ${oneLine(note.why)})` : '';
}

function line(entry: TranscriptEntry, devvmWaitOf: (key: string) => DevvmWait | undefined = () => undefined): string | null {
  switch (entry.type) {
    case 'session-started':
      return `session opened by **${entry.operator}**: ${oneLine(entry.description)}`;
    case 'session-continued':
      return `session continued in a new run (history compaction)`;
    case 'operator-message':
      return `**${entry.operator}**${unverified(entry.unverified)}: ${oneLine(entry.text)}`;
    case 'request': {
      const by = entry.item.requestedBy;
      const who = by.kind === 'operator' ? `${by.name}${unverified(by.unverified)}` : by.kind;
      return entry.item.kind === 'verb'
        ? `${who} requested **${entry.item.verb}**${entry.item.reason ? ` — ${oneLine(entry.item.reason)}` : ''}`
        : `${who} requested devvm command ${mdCode(entry.item.command)}`;
    }
    case 'approval-needed':
      return `approval needed (${entry.approvalId}): ${entry.why}`;
    case 'approval':
      return `**${entry.operator}**${unverified(entry.unverified)} ${entry.decision === 'approve' ? 'approved' : 'denied'} ${entry.approvalId}${entry.reason ? ` — ${oneLine(entry.reason)}` : ''}`;
    case 'status':
      return `status: ${entry.result.vm.status}${entry.result.vm.qmpstatus ? `/${entry.result.vm.qmpstatus}` : ''}, pid ${entry.result.vm.pid ?? '-'}${entry.result.vm.pending.present ? ', pending config staged' : ''}`;
    case 'forensics': {
      const s = entry.result.summary;
      return `forensics (${entry.trigger === 'on request' ? 'on request' : `before ${entry.trigger}`}) sha256 \`${entry.result.forensics.sha256}\` at ${entry.result.forensics.path}: QMP ${s.qmpAnswered ? `answered (${s.qmpStatus})` : 'silent'}, ${forensicsVerdict(s)}${s.timedOutSections.length ? `, timed out: ${s.timedOutSections.join(', ')}` : ''}`;
    }
    case 'verb-result': {
      const r = entry.result;
      const pids = r.verb === 'cycle' || r.verb === 'start' || r.verb === 'reset' ? `, pid ${r.oldPid ?? '-'} → ${r.newPid ?? '-'}` : '';
      const outcome = mutationOutcome(r);
      const facts = [
        pendingLine(r),
        r.verb === 'reset' && r.pendingUnapplied ? 'pending config NOT applied (a reset never applies it)' : '',
        verifiedLine(r),
        r.failedAt ? `failed at ${phaseWords(r.failedAt)}` : '',
        r.reason ? oneLine(r.reason) : '',
        r.overruledTasks?.length ? `qm stop aborted a running shutdown holding the VM's lock (${r.overruledTasks.join(', ')})` : '',
        r.lockHolder ? `lock held by pid ${r.lockHolder.pid}${r.lockHolder.task ? ` (task \`${r.lockHolder.task}\`)` : ''}` : '',
        r.qemuSurvived ? `**${survivorsLine(r.survivors, r.oldPid)}**` : '',
        r.warning ? `warning: ${oneLine(r.warning)}` : '',
      ].filter(Boolean);
      // The devvm answering afterwards is what confirms a reset, start or cycle.
      const wait = r.verb !== 'stop' && outcome !== 'failed' ? devvmWaitOf(entry.key) : undefined;
      const confirmed = wait ? (wait.reachable ? `confirmed: the devvm answered SSH after ${(wait.waitedMs / 1000).toFixed(1)} s` : `NOT confirmed: the devvm did not answer SSH within ${(wait.waitedMs / 1000).toFixed(0)} s`) : '';
      if (confirmed) facts.unshift(confirmed);
      const word =
        outcome === 'failed' ? 'FAILED' : wait && !wait.reachable ? 'done on the host, devvm silent' : outcome === 'done' && (r.verb !== 'reset' || wait) ? 'succeeded' : 'acknowledged by QEMU, not confirmed';
      return `**${r.verb}** ${word}${r.replayed ? ' (result collected from the host journal)' : ''}${pids}${facts.length ? ` — ${facts.join('; ')}` : ''}`;
    }
    case 'verb-failed':
      return `**${entry.verb} failed** (${entry.kind}): ${oneLine(entry.message)}`;
    case 'skipped':
      return `not run: ${entry.what} — ${entry.why}`;
    case 'outcome-unknown':
      return `**outcome of ${entry.verb} unknown**: ${oneLine(entry.message)}; VM then ${entry.status ? `${entry.status.status}, pid ${entry.status.pid ?? '-'}` : 'unreadable'}`;
    case 'devvm-wait':
      return entry.reachable ? `devvm answered SSH again after ${(entry.waitedMs / 1000).toFixed(1)} s` : `devvm did NOT answer SSH within ${(entry.waitedMs / 1000).toFixed(0)} s`;
    case 'command-result':
      return `devvm ${mdCode(entry.result.command)} → exit ${entry.result.exitCode ?? entry.result.exitSignal ?? '?'}${entry.result.timedOut ? ' (timed out)' : ''} in ${entry.result.durationMs} ms`;
    case 'command-failed':
      return `devvm ${mdCode(entry.command)} failed (${entry.kind}): ${oneLine(entry.message)}`;
    case 'paused':
      return `paused by ${entry.operator}: ${oneLine(entry.reason)}`;
    case 'resumed':
      return `resumed by ${entry.operator}`;
    case 'policy-changed':
      return `${entry.operator} set policy: mutating verbs ${entry.policy.mutatingVerbs}, devvm commands ${entry.policy.devvmCommands}${entry.proposedBy ? ` (proposed by ${entry.proposedBy})` : ''}${unverified(entry.unverified)}`;
    case 'policy-proposed':
      return `${entry.operator} proposed policy: mutating verbs ${entry.policy.mutatingVerbs}, devvm commands ${entry.policy.devvmCommands} (not in force until a second operator agrees)`;
    case 'lease':
      return entry.event === 'taken-over'
        ? `**${entry.operator}** (session ${entry.sessionId}) took the VM over to run ${entry.verb} — ${oneLine(entry.reason)}`
        : `**${entry.operator}** took the VM over from session ${entry.sessionId} to run ${entry.verb} — ${oneLine(entry.reason)}`;
    case 'cancel-requested':
      return `**${entry.operator}** cancelled the session${entry.reason ? ` — ${oneLine(entry.reason)}` : ''}`;
    case 'session-ended':
      return `session ended: **${entry.outcome}** (${entry.operator}${entry.reason ? `: ${oneLine(entry.reason)}` : ''})`;
    default:
      return null;
  }
}

export function postmortem(id: string, state: SessionState, entries: TranscriptEntry[], temporalUiUrl: string | null): string {
  const out: string[] = [];
  out.push(`# Breakglass postmortem: ${id}`, '');
  out.push(`- target: ${state.target.devvm} (VM ${state.target.vmid})`);
  out.push(`- opened by: ${state.operator} at ${time(state.startedAt)}`);
  out.push(`- outcome: ${state.outcome ?? 'still open'}`);
  if (temporalUiUrl) out.push(`- history: ${temporalUiUrl}/namespaces/default/workflows/${encodeURIComponent(id)}`);
  out.push('', '## Problem reported', '', mdBlock(state.description), '', '## Timeline', '');
  const waits = new Map(entries.filter((e): e is DevvmWait => e.type === 'devvm-wait').map((e) => [e.key, e]));
  for (const entry of entries) {
    const text = line(entry, (key) => waits.get(key));
    if (text) out.push(`- ${time(entry.at)} — ${text}`);
  }
  const operators = entries.filter((e) => ['operator-message', 'approval', 'paused', 'resumed', 'policy-changed', 'policy-proposed', 'cancel-requested'].includes(e.type) || (e.type === 'request' && e.item.requestedBy.kind === 'operator'));
  out.push('', '## Operator actions', '');
  for (const entry of operators) out.push(`- ${time(entry.at)} — ${line(entry)}`);
  out.push('', '## Forensics', '');
  for (const entry of entries) {
    if (entry.type !== 'forensics') continue;
    out.push(`### ${time(entry.at)} — ${entry.trigger === 'on request' ? 'on request' : `before ${entry.trigger}`}`, '');
    out.push(`sha256 \`${entry.result.forensics.sha256}\`, saved on the PVE host at \`${entry.result.forensics.path}\`.`, '');
    const summary = entry.result.summary;
    out.push(`Verdict: ${forensicsVerdict(summary)}.`, '');
    for (const sentence of summary.ioEvidence ?? []) out.push(`- ${oneLine(sentence)}`);
    for (const delta of summary.blockDeltas) {
      out.push(`- ${delta.device}: +${delta.writeBytes} bytes written, +${delta.readBytes} read between samples${delta.frozen ? ' — no counter moved' : ''}`);
    }
    if (summary.zombieLeader) out.push(`- QEMU's main thread ${summary.zombieLeader.pid} is a zombie while ${summary.zombieLeader.liveThreads} of its threads live`);
    if (summary.scopePids?.length) out.push(`- processes in the VM scope: ${summary.scopePids.join(' ')}`);
    if (summary.haManaged) out.push(`- HA-managed (requested state ${summary.haState ?? '?'})`);
    for (const line of summary.hungTaskLines ?? []) out.push(`- guest console: ${mdCode(line)}`);
    for (const section of entry.result.sections) {
      out.push(`- ${section.name}: exit ${section.exit}${section.timedOut ? ' **timed out**' : ''}, ${section.durationMs} ms`);
    }
    out.push('');
  }
  out.push('## Devvm commands', '');
  for (const entry of entries) {
    if (entry.type !== 'command-result') continue;
    out.push(`### ${mdCode(entry.result.command)} → exit ${entry.result.exitCode ?? entry.result.exitSignal}`, '', mdBlock(entry.result.stdout + (entry.result.stderr ? `\n[stderr]\n${entry.result.stderr}` : '')), '');
  }
  return out.join('\n') + '\n';
}
