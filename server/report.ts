/**
 * The postmortem: a Markdown document built from the session's transcript alone, so it is the
 * same whoever downloads it, whenever.
 */
import type { SessionState, TranscriptEntry } from '../workflows/session-types.js';

const time = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
const code = (text: string) => '```\n' + text.replace(/```/g, '`\u200b``') + '\n```';
const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();

function line(entry: TranscriptEntry): string | null {
  switch (entry.type) {
    case 'session-started':
      return `session opened by **${entry.operator}**: ${oneLine(entry.description)}`;
    case 'session-continued':
      return `session continued in a new run (history compaction)`;
    case 'operator-message':
      return `**${entry.operator}**: ${oneLine(entry.text)}`;
    case 'request': {
      const who = entry.item.requestedBy.kind === 'operator' ? entry.item.requestedBy.name : entry.item.requestedBy.kind;
      return entry.item.kind === 'verb'
        ? `${who} requested **${entry.item.verb}**${entry.item.reason ? ` — ${oneLine(entry.item.reason)}` : ''}`
        : `${who} requested devvm command \`${oneLine(entry.item.command)}\``;
    }
    case 'approval-needed':
      return `approval needed (${entry.approvalId}): ${entry.why}`;
    case 'approval':
      return `**${entry.operator}** ${entry.decision === 'approve' ? 'approved' : 'denied'} ${entry.approvalId}${entry.reason ? ` — ${oneLine(entry.reason)}` : ''}`;
    case 'status':
      return `status: ${entry.result.vm.status}${entry.result.vm.qmpstatus ? `/${entry.result.vm.qmpstatus}` : ''}, pid ${entry.result.vm.pid ?? '-'}${entry.result.vm.pending.present ? ', pending config staged' : ''}`;
    case 'forensics': {
      const s = entry.result.summary;
      return `forensics (${entry.trigger === 'on request' ? 'on request' : `before ${entry.trigger}`}) sha256 \`${entry.result.forensics.sha256}\` at ${entry.result.forensics.path}: QMP ${s.qmpAnswered ? `answered (${s.qmpStatus})` : 'silent'}, I/O ${s.ioFrozen === null ? 'not sampled' : s.ioFrozen ? '**frozen**' : 'moving'}${s.timedOutSections.length ? `, timed out: ${s.timedOutSections.join(', ')}` : ''}`;
    }
    case 'verb-result': {
      const r = entry.result;
      const pids = r.verb === 'cycle' || r.verb === 'start' || r.verb === 'reset' ? `, pid ${r.oldPid ?? '-'} → ${r.newPid ?? '-'}` : '';
      const extra = r.verb === 'cycle' ? `, pending config ${r.pendingApplied ? 'applied' : 'not applied'}` : r.verb === 'reset' && r.pendingUnapplied ? ', pending config NOT applied (a reset never applies it)' : '';
      return `**${r.verb}** ${r.ok ? 'succeeded' : 'FAILED'}${r.replayed ? ' (result collected from the host journal)' : ''}${pids}${extra}`;
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
      return `devvm \`${oneLine(entry.result.command)}\` → exit ${entry.result.exitCode ?? entry.result.exitSignal ?? '?'}${entry.result.timedOut ? ' (timed out)' : ''} in ${entry.result.durationMs} ms`;
    case 'command-failed':
      return `devvm \`${oneLine(entry.command)}\` failed (${entry.kind}): ${oneLine(entry.message)}`;
    case 'paused':
      return `paused by ${entry.operator}: ${oneLine(entry.reason)}`;
    case 'resumed':
      return `resumed by ${entry.operator}`;
    case 'policy-changed':
      return `${entry.operator} set policy: mutating verbs ${entry.policy.mutatingVerbs}, devvm commands ${entry.policy.devvmCommands}`;
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
  out.push('', '## Problem reported', '', state.description, '', '## Timeline', '');
  for (const entry of entries) {
    const text = line(entry);
    if (text) out.push(`- ${time(entry.at)} — ${text}`);
  }
  const operators = entries.filter((e) => ['operator-message', 'approval', 'paused', 'resumed', 'policy-changed', 'cancel-requested'].includes(e.type) || (e.type === 'request' && e.item.requestedBy.kind === 'operator'));
  out.push('', '## Operator actions', '');
  for (const entry of operators) out.push(`- ${time(entry.at)} — ${line(entry)}`);
  out.push('', '## Forensics', '');
  for (const entry of entries) {
    if (entry.type !== 'forensics') continue;
    out.push(`### ${time(entry.at)} — ${entry.trigger === 'on request' ? 'on request' : `before ${entry.trigger}`}`, '');
    out.push(`sha256 \`${entry.result.forensics.sha256}\`, saved on the PVE host at \`${entry.result.forensics.path}\`.`, '');
    for (const delta of entry.result.summary.blockDeltas) {
      out.push(`- ${delta.device}: +${delta.writeBytes} bytes written, +${delta.readBytes} read between samples${delta.frozen ? ' — **frozen**' : ''}`);
    }
    for (const section of entry.result.sections) {
      out.push(`- ${section.name}: exit ${section.exit}${section.timedOut ? ' **timed out**' : ''}, ${section.durationMs} ms`);
    }
    out.push('');
  }
  out.push('## Devvm commands', '');
  for (const entry of entries) {
    if (entry.type !== 'command-result') continue;
    out.push(`### \`${oneLine(entry.result.command)}\` → exit ${entry.result.exitCode ?? entry.result.exitSignal}`, '', code(entry.result.stdout + (entry.result.stderr ? `\n[stderr]\n${entry.result.stderr}` : '')), '');
  }
  return out.join('\n') + '\n';
}
