/**
 * Rebuilds the Messages API conversation from the session transcript. The agent-turn activity
 * receives only `{ workflowId, throughSeq }`, queries the transcript itself and calls this, so
 * workflow history grows linearly with turns (DESIGN.md invariant 11).
 *
 * How entries become messages:
 * - `agent-message` → an assistant message: its text, then one tool_use per tool call.
 * - Entries with a call's key (recorded with it; `toolKey(id)` in older sessions) are the results of that tool call. Every tool_use gets exactly
 *   one tool_result in the next user message, built from the entries recorded before the
 *   model's next turn. A call with no final result by then (waiting for approval, still
 *   running, or not started) is answered "pending", and what arrives later is shown as a note
 *   ("result of your earlier … call") where it happened. So the conversation is a faithful
 *   replay of what the model saw, and each rebuild extends the previous one (the prompt-cache
 *   prefix stays valid).
 * - `agent-tool-error` → an error tool_result: the call was refused and nothing ran.
 * - Operator messages, operator-initiated commands/verbs and session events → user-side notes
 *   ("[operator alice: `df -h`] exit 0 …"), after the tool_results of the same user message.
 * - All transcript text is redacted; each output body is capped (head + tail, dropped bytes
 *   stated). When the estimate (characters / 4) exceeds `maxContextTokens`, the oldest output
 *   bodies are replaced by "[older output elided: N bytes]" (the one-line headers stay).
 *   Elision advances in steps of a quarter of the budget, at boundaries that do not move as the
 *   transcript grows, so the prompt-cache prefix survives several turns between steps.
 */
import type { ContentBlockParam, MessageParam, TextBlockParam, ToolResultBlockParam } from '@anthropic-ai/sdk/resources/messages.js';
import { ioVerdictOf, mutationOutcome, pendingLine, phaseWords, survivorsLine, verifiedLine } from '../../workflows/pve-types.js';
import { capText } from '../output-cap.js';
import { toolKey } from './keys.js';
import { redact } from './redact.js';
import type {
  AgentCommandRecord,
  AgentForensicsResult,
  AgentMutationResult,
  AgentToolCall,
  AgentTranscriptEntry,
  AgentWorkItem,
  VmState,
} from './types.js';

export interface ConversationOptions {
  /** Budget for the messages alone (leave room for the system prompt, tools and the reply). */
  maxContextTokens: number;
  /** Bytes kept from the start and the end of each output body. */
  toolOutputHead: number;
  toolOutputTail: number;
}

export interface Conversation {
  messages: MessageParam[];
  /** Tool results and operator-output notes whose bodies were elided to fit the budget. */
  elidedToolResults: number;
  /** characters / 4 of the messages as built. */
  estimatedTokens: number;
}

export const ELISION_NOTE = (bytes: number) => `[older output elided: ${bytes} bytes]`;

/** One rendered entry: a header that always stays, and an output body that may be elided. */
interface Part {
  header: string;
  body: string;
}

interface Piece {
  parts: Part[];
}

interface ResultPiece extends Piece {
  toolUseId: string;
  isError: boolean;
}

interface UserTurn {
  role: 'user';
  results: ResultPiece[];
  notes: Piece[];
}

interface AssistantTurn {
  role: 'assistant';
  content: ContentBlockParam[];
}

type Turn = UserTurn | AssistantTurn;

interface OpenCall {
  id: string;
  name: string;
  key: string;
  parts: Part[];
  complete: boolean;
  isError: boolean;
  awaitingApproval: boolean;
}

const MUTATION_TERMINAL = new Set(['verb-result', 'verb-failed', 'outcome-unknown', 'skipped']);
const TERMINAL: Record<string, Set<string>> = {
  devvm_command: new Set(['command-result', 'command-failed', 'skipped']),
  pve_status: new Set(['status', 'verb-failed', 'skipped']),
  pve_forensics: new Set(['forensics', 'verb-failed', 'skipped']),
  pve_reset: MUTATION_TERMINAL,
  pve_stop: MUTATION_TERMINAL,
  pve_start: MUTATION_TERMINAL,
  pve_cycle: MUTATION_TERMINAL,
};

type KeyedEntry = Extract<AgentTranscriptEntry, { key: string }>;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

function vmLine(vm: VmState): string {
  const qmp = vm.qmpstatus && vm.qmpstatus !== vm.status ? ` (qmp ${vm.qmpstatus})` : '';
  const pending = vm.pending.present ? `staged: ${vm.pending.lines.join('; ') || 'yes'}` : 'none';
  return [
    `${vm.status}${qmp}`,
    `pid ${vm.pid ?? '-'}`,
    `uptime ${vm.uptimeSeconds ?? '-'} s`,
    vm.lock ? `locked (${vm.lock})` : '',
    `pending config ${pending}`,
    vm.error ? `error: ${vm.error}` : '',
    // qm copies status into qmpstatus when QMP is silent: say which it was.
    vm.qmp === 'silent' ? 'QMP did NOT answer qm status' : '',
    vm.ha?.managed ? `HA-managed (HA state ${vm.ha.state})` : '',
    vm.scopePids?.length ? `processes in the VM scope: ${vm.scopePids.join(' ')}` : '',
    vm.warning ? `warning: ${vm.warning}` : '',
  ]
    .filter(Boolean)
    .join(', ');
}

function renderCommand(result: AgentCommandRecord): Part {
  const status = result.timedOut
    ? `timed out after ${seconds(result.durationMs)} (exit ${result.exitCode ?? '-'})`
    : result.exitCode === null
      ? `ended by signal ${result.exitSignal ?? '?'} after ${seconds(result.durationMs)}`
      : `exit ${result.exitCode} (${seconds(result.durationMs)})`;
  const streams = [result.stdout ? `stdout:\n${result.stdout}` : '', result.stderr ? `stderr:\n${result.stderr}` : ''].filter(Boolean);
  const dropped = result.droppedBytes > 0 ? `; ${result.droppedBytes} bytes of output dropped by the command cap` : '';
  return { header: `${status}${streams.length ? '' : ', no output'}${dropped}`, body: streams.join('\n') };
}

const IO_WORDS = {
  frozen: 'FROZEN: no block counter moved between the two samples',
  flat: 'counters flat: no block counter moved, but nothing else points at a stall (an idle guest looks the same)',
  moving: 'moving',
  unknown: 'unknown (no two samples)',
};

const pct = (value: number | null) => (value === null ? '-' : `${value} %`);

function renderForensics(trigger: string, result: AgentForensicsResult): Part {
  const s = result.summary;
  const p = s.pressure;
  const lines = [
    `Forensics captured${trigger && trigger !== 'on request' ? ` before ${trigger}` : ''}${result.replayed ? ' (replayed)' : ''}${result.capturedAt ? ` at ${result.capturedAt}` : ''}:`,
    `QMP ${s.qmpAnswered ? `answered (status ${s.qmpStatus ?? '?'})` : 'did NOT answer'}; disk I/O ${IO_WORDS[ioVerdictOf(s)]}; guest agent ${s.guestAgentAnswered ? 'answered' : `did not answer${s.guestAgentEnabled === false ? ' (not enabled in the VM config)' : ''}`}; QEMU process state ${s.qemuProcessState ?? 'unknown'}`,
    ...(s.ioEvidence ?? []).map((sentence) => `  - ${sentence}`),
    ...s.blockDeltas.map(
      (d) => `  ${d.device}: +${d.readBytes} B read, +${d.writeBytes} B written, +${d.readOps}/+${d.writeOps} ops${d.frozen ? ' (frozen)' : ''}`,
    ),
    // (D-state threads are among the evidence above.)
    s.zombieLeader ? `QEMU's main thread ${s.zombieLeader.pid} is a zombie while ${s.zombieLeader.liveThreads} of its threads ${s.zombieLeader.liveThreads === 1 ? 'lives' : 'live'}: the process is not gone` : '',
    p ? `pressure avg10 (${p.source}): io some ${pct(p.ioSome)} full ${pct(p.ioFull)}, cpu some ${pct(p.cpuSome)}, memory some ${pct(p.memorySome)} full ${pct(p.memoryFull)}` : '',
    s.haManaged ? `HA-managed (requested state ${s.haState ?? '?'}): qm stop/start only ask the HA manager` : '',
    s.scope ? `VM scope ${s.scope.present ? `processes: ${s.scopePids?.join(' ') || 'none'}` : 'absent'}` : '',
    s.hungTaskLines?.length ? `guest console hung tasks:\n${s.hungTaskLines.map((line) => `  ${line}`).join('\n')}` : '',
    s.timedOutSections.length ? `timed-out sections: ${s.timedOutSections.join(', ')}` : '',
    s.failedSections.length ? `failed sections: ${s.failedSections.join(', ')}` : '',
  ].filter(Boolean);
  const body = result.sections
    .map((section) => `## ${section.name} (exit ${section.exit}${section.timedOut ? ', timed out' : ''}, ${section.durationMs} ms)\n${section.output}`)
    .join('\n');
  return { header: lines.join('\n'), body };
}

function renderMutation(result: AgentMutationResult): Part {
  const pid =
    result.oldPid !== result.newPid && result.newPid !== null
      ? `QEMU pid ${result.oldPid ?? '-'} → ${result.newPid} (new QEMU process)`
      : `QEMU pid ${result.oldPid ?? '-'} → ${result.newPid ?? '-'}${result.pidUnchanged ? ' (same QEMU process: warm reset)' : ''}`;
  const outcome = mutationOutcome(result);
  const holder = result.lockHolder;
  const facts = [
    `${result.verb} ${outcome === 'done' ? 'succeeded' : outcome === 'failed' ? 'FAILED' : 'only ACKNOWLEDGED (nothing confirmed the reset took)'}${result.replayed ? ' (replayed from the host journal)' : ''}`,
    pid,
    pendingLine(result),
    result.pendingUnapplied ? 'pending config NOT applied (a reset does not apply it)' : '',
    verifiedLine(result),
    result.failedAt ? `failed at ${phaseWords(result.failedAt)}` : '',
    result.reason ? `reason: ${result.reason}` : '',
    result.overruledTasks?.length ? `qm stop aborted a running shutdown that held the VM's lock (${result.overruledTasks.join(', ')})` : '',
    holder ? `qm's lock held by pid ${holder.pid}${holder.task ? ` (task ${holder.task})` : `: ${holder.cmdline}`}` : '',
    result.qemuSurvived ? survivorsLine(result.survivors, result.oldPid) : '',
    result.warning ? `warning: ${result.warning}` : '',
  ].filter(Boolean);
  const header = `${facts.join('; ')}\nbefore: ${vmLine(result.before)}\nafter: ${vmLine(result.after)}`;
  const body = (result.steps ?? [])
    .filter((step) => step.output.trim() !== '')
    .map((step) => `## ${step.name} (exit ${step.exit}${step.timedOut ? ', timed out on the host' : ''}, ${step.durationMs} ms)\n${step.output}`)
    .join('\n');
  return { header, body };
}

/** Renders an entry that belongs to a work item (keyed or approval). */
function renderKeyed(entry: AgentTranscriptEntry): Part | null {
  switch (entry.type) {
    case 'command-result':
      return renderCommand(entry.result);
    case 'command-failed':
      return { header: `Command failed (${entry.kind}): ${entry.message}`, body: '' };
    case 'status':
      return { header: `VM status: ${vmLine(entry.result.vm)}`, body: '' };
    case 'forensics':
      return renderForensics(entry.trigger, entry.result);
    case 'verb-result':
      return renderMutation(entry.result);
    case 'verb-failed':
      return { header: `${entry.verb} failed (${entry.kind}): ${entry.message}`, body: '' };
    case 'outcome-unknown':
      return {
        header: `OUTCOME UNKNOWN for ${entry.verb}: ${entry.message}. It may or may not have run: do not repeat it. Status now: ${entry.status ? vmLine(entry.status) : 'unavailable'}.`,
        body: '',
      };
    case 'skipped':
      return { header: `Not run: ${entry.why}`, body: '' };
    case 'devvm-wait':
      return {
        header: entry.reachable
          ? `devvm SSH answers again (after ${seconds(entry.waitedMs)})`
          : `devvm SSH did not answer within ${seconds(entry.waitedMs)}${entry.attempts !== undefined ? ` (${entry.attempts} probes)` : ''}`,
        body: '',
      };
    case 'approval-needed':
      return { header: `Waiting for operator approval: ${entry.why} (approval ${entry.approvalId})`, body: '' };
    case 'approval':
      return { header: `${entry.decision === 'approve' ? 'Approved' : 'Denied'} by ${entry.operator}${entry.reason ? `: ${entry.reason}` : ''}`, body: '' };
    case 'agent-tool-error':
      return { header: `Tool call refused, nothing ran: ${entry.message}`, body: '' };
    default:
      return null;
  }
}

const ERROR_TYPES = new Set(['command-failed', 'verb-failed', 'outcome-unknown', 'skipped', 'agent-tool-error']);

function isErrorEntry(entry: AgentTranscriptEntry): boolean {
  return ERROR_TYPES.has(entry.type) || (entry.type === 'verb-result' && !entry.result.ok);
}

function describeItem(item: AgentWorkItem): string {
  const who = item.requestedBy.kind === 'operator' ? `operator ${item.requestedBy.name}` : item.requestedBy.kind === 'agent' ? 'agent' : 'system';
  const what = item.kind === 'command' ? `\`${item.command}\` on the devvm` : `${item.verb}${item.reason ? ` (reason: ${item.reason})` : ''}`;
  return `${who}: ${what}`;
}

function pendingText(call: OpenCall): string {
  if (call.awaitingApproval) return 'Not run yet: waiting for operator approval. Its result will be reported in a later message.';
  if (call.parts.length > 0) return 'Still in progress: the final result will be reported in a later message.';
  return 'Not started yet (queued): its result will be reported in a later message.';
}

function toolUseInput(call: AgentToolCall): Record<string, unknown> {
  // The API requires an object; malformed input is answered by an agent-tool-error anyway.
  return isPlainObject(call.input) ? call.input : {};
}

/** Builds the user-side text of a piece, eliding its bodies when asked. */
function pieceText(piece: Piece, elide: boolean): string {
  return piece.parts
    .map((part) => {
      if (!part.body) return part.header;
      const body = elide ? ELISION_NOTE(Buffer.byteLength(part.body, 'utf8')) : part.body;
      return part.header ? `${part.header}\n${body}` : body;
    })
    .join('\n');
}

function toMessages(turns: Turn[], elided: Set<Piece>): MessageParam[] {
  return turns.map((turn): MessageParam => {
    if (turn.role === 'assistant') return { role: 'assistant', content: turn.content };
    const content: (ToolResultBlockParam | TextBlockParam)[] = turn.results.map((result) => ({
      type: 'tool_result',
      tool_use_id: result.toolUseId,
      content: pieceText(result, elided.has(result)) || '(no output)',
      ...(result.isError ? { is_error: true } : {}),
    }));
    if (turn.notes.length > 0) content.push({ type: 'text', text: turn.notes.map((note) => pieceText(note, elided.has(note))).join('\n\n') });
    return { role: 'user', content };
  });
}

function estimateTokens(messages: MessageParam[]): number {
  return Math.ceil(JSON.stringify(messages).length / 4);
}

/**
 * Turns transcript entries (any order; sorted by seq here) into Messages API messages that
 * start with a user message, alternate roles and pair every tool_use with one tool_result.
 */
export function buildConversation(entries: readonly AgentTranscriptEntry[], options: ConversationOptions): Conversation {
  const cap = (text: string) => capText(redact(text), options.toolOutputHead, options.toolOutputTail).text;
  const clean = (part: Part): Part => ({ header: redact(part.header), body: part.body ? cap(part.body) : '' });

  const turns: Turn[] = [];
  let user: UserTurn | null = null;
  const open = new Map<string, OpenCall>();
  const answered = new Map<string, { id: string; name: string }>();
  const requests = new Map<string, AgentWorkItem>();
  const approvals = new Map<string, string>();

  const userTurn = (): UserTurn => (user ??= { role: 'user', results: [], notes: [] });
  const note = (header: string, body = '') => userTurn().notes.push({ parts: [clean({ header, body })] });

  const closeOpenCalls = () => {
    for (const call of open.values()) {
      const parts = call.complete ? call.parts : [...call.parts, { header: pendingText(call), body: '' }];
      userTurn().results.push({ toolUseId: call.id, parts, isError: call.isError });
      answered.set(call.key, { id: call.id, name: call.name });
    }
    open.clear();
  };

  const flushUser = () => {
    if (user && (user.results.length > 0 || user.notes.length > 0)) turns.push(user);
    user = null;
  };

  const onKeyed = (key: string, entry: AgentTranscriptEntry) => {
    const rendered = renderKeyed(entry);
    if (!rendered) return;
    const part = clean(rendered);
    const call = open.get(key);
    if (call) {
      call.parts.push(part);
      if (entry.type === 'approval-needed') call.awaitingApproval = true;
      if (entry.type === 'approval') call.awaitingApproval = false;
      if (isErrorEntry(entry)) call.isError = true;
      if (entry.type === 'agent-tool-error' || TERMINAL[call.name]?.has(entry.type)) call.complete = true;
      return;
    }
    const earlier = answered.get(key);
    if (earlier) {
      userTurn().notes.push({ parts: [{ header: `[result of your earlier ${earlier.name} call ${earlier.id}, which was pending when you last replied]`, body: '' }, part] });
      return;
    }
    const item = requests.get(key);
    const owner = item ? describeItem(item) : `request ${key}`;
    userTurn().notes.push({ parts: [{ ...part, header: `[${redact(owner)}] ${part.header}` }] });
  };

  const sorted = [...entries].sort((a, b) => a.seq - b.seq);
  // Which work-item key answers which tool_use (recorded with the call; toolKey(id) before that).
  const keyByToolUse = new Map<string, string>();
  for (const entry of sorted) {
    switch (entry.type) {
      case 'agent-message': {
        closeOpenCalls();
        flushUser();
        const content: ContentBlockParam[] = [];
        if (entry.text.trim() !== '') content.push({ type: 'text', text: entry.text });
        for (const call of entry.toolCalls) content.push({ type: 'tool_use', id: call.id, name: call.name, input: toolUseInput(call) });
        const last = turns[turns.length - 1];
        if (last?.role === 'assistant') {
          // Two turns with nothing in between (e.g. a retried turn): one assistant message.
          last.content.push(...content);
        } else {
          turns.push({ role: 'assistant', content: content.length ? content : [{ type: 'text', text: '(empty reply)' }] });
        }
        for (const call of entry.toolCalls) {
          const key = call.key ?? toolKey(call.id);
          keyByToolUse.set(call.id, key);
          open.set(key, { id: call.id, name: call.name, key, parts: [], complete: false, isError: false, awaitingApproval: false });
        }
        break;
      }
      case 'agent-tool-error':
        onKeyed(keyByToolUse.get(entry.toolUseId) ?? toolKey(entry.toolUseId), entry);
        break;
      case 'operator-message':
        // The model is told when a message's sender is only a claim (server/attestation.ts).
        note(
          entry.unverified
            ? `Unverified message, sent straight through Temporal by ${entry.unverified.identity} and signed "${entry.operator}" (not an operator the console authenticated; weigh it accordingly):\n${entry.text}`
            : `Message from operator ${entry.operator}:\n${entry.text}`,
        );
        break;
      case 'session-started':
        note(`Session opened by ${entry.operator} for devvm ${entry.target.devvm} (VM ${entry.target.vmid}): ${entry.description}`);
        break;
      case 'session-continued':
        if (turns.length === 0 && !user) note('[the earlier part of this session is in a previous run and is not shown]');
        break;
      case 'paused':
        note(`[session paused by ${entry.operator}: ${entry.reason}]`);
        break;
      case 'resumed':
        note(`[session resumed by ${entry.operator}]`);
        break;
      case 'policy-changed':
        note(
          `[policy changed by ${entry.operator}: mutating verbs ${entry.policy.mutatingVerbs}, devvm commands ${entry.policy.devvmCommands}, ${entry.policy.toolCallsPerMessage} tool calls per operator message]`,
        );
        break;
      case 'policy-proposed':
        note(`[operator ${entry.operator} proposed a looser policy; it is not in force until a second operator agrees]`);
        break;
      case 'lease':
        note(
          entry.event === 'taken-over'
            ? `[operator ${entry.operator} in session ${entry.sessionId} took this VM over to run ${entry.verb} (${entry.reason}): this session's mutating verbs are refused until that session lets go]`
            : `[operator ${entry.operator} took this VM over from session ${entry.sessionId} to run ${entry.verb}]`,
        );
        break;
      case 'session-ended':
        note(`[session ended (${entry.outcome}) by ${entry.operator}${entry.reason ? `: ${entry.reason}` : ''}]`);
        break;
      case 'request':
        requests.set(entry.item.key, entry.item);
        break;
      case 'approval-needed':
        requests.set(entry.item.key, entry.item);
        approvals.set(entry.approvalId, entry.item.key);
        onKeyed(entry.item.key, entry);
        break;
      case 'approval': {
        const key = approvals.get(entry.approvalId);
        if (key) onKeyed(key, entry);
        break;
      }
      default:
        if ('key' in entry) onKeyed((entry as KeyedEntry).key, entry);
        // Unknown entry types are ignored: they carry nothing the model needs.
        break;
    }
  }
  closeOpenCalls();
  flushUser();

  if (turns.length === 0 || turns[0]?.role === 'assistant') {
    turns.unshift({ role: 'user', results: [], notes: [{ parts: [{ header: turns.length ? '[earlier conversation not shown]' : '[no messages yet]', body: '' }] }] });
  }
  if (turns[turns.length - 1]?.role === 'assistant') {
    turns.push({ role: 'user', results: [], notes: [{ parts: [{ header: '[nothing new since your last reply]', body: '' }] }] });
  }

  return fitToBudget(turns, options.maxContextTokens);
}

/** Elides the oldest output bodies (never those of the last message) until the estimate fits. */
function fitToBudget(turns: Turn[], budget: number): Conversation {
  const none = new Set<Piece>();
  let messages = toMessages(turns, none);
  let estimatedTokens = estimateTokens(messages);
  if (estimatedTokens <= budget) return { messages, elidedToolResults: 0, estimatedTokens };

  const candidates: { piece: Piece; saving: number }[] = [];
  for (const turn of turns.slice(0, -1)) {
    if (turn.role !== 'user') continue;
    for (const piece of [...turn.results, ...turn.notes]) {
      const saving = (pieceText(piece, false).length - pieceText(piece, true).length) / 4;
      if (saving > 0) candidates.push({ piece, saving });
    }
  }
  // Boundaries where the cumulative saving first reaches j quarters of the budget. They depend
  // only on older pieces, so they stay put while new turns are appended.
  const quarter = Math.max(1, budget / 4);
  const boundaries: number[] = [];
  let cumulative = 0;
  let nextMark = quarter;
  candidates.forEach((candidate, index) => {
    cumulative += candidate.saving;
    if (cumulative >= nextMark) {
      boundaries.push(index + 1);
      while (nextMark <= cumulative) nextMark += quarter;
    }
  });
  if (boundaries[boundaries.length - 1] !== candidates.length) boundaries.push(candidates.length);

  let elided = none;
  for (const count of boundaries) {
    elided = new Set(candidates.slice(0, count).map((candidate) => candidate.piece));
    messages = toMessages(turns, elided);
    estimatedTokens = estimateTokens(messages);
    if (estimatedTokens <= budget) break;
  }
  return { messages, elidedToolResults: elided.size, estimatedTokens };
}

