/**
 * One open session in this tab: its state, its transcript (deduped by seq, so a reconnect or a
 * second catch-up never doubles an entry), the live buffers (streaming agent text and command
 * output) and the operator's actions. Pages create one, components read it.
 */
import { api, newRequestKey } from './api.js';
import { openSessionStream, type ConnectionStatus, type SessionStream } from './events.js';
import { attempt, notify } from './toast.svelte.js';
import type { Entry, LiveChunk, PveVerb, SessionAction, SessionPolicy, SessionState } from './types.js';

/** Partial output of one activity attempt, shown until its final transcript entry arrives. */
export interface LiveBuffer {
  activityId: string;
  attempt: number;
  text: string;
  stdout: string;
  stderr: string;
  /** Characters trimmed from the head of an over-long live buffer. */
  trimmed: number;
  startedAt: number;
  updatedAt: number;
}

const LIVE_CAP = 200_000;
/** A live buffer that saw nothing for this long has finished; its final entry is what counts. */
const LIVE_IDLE_MS = 5_000;

function splitStream(stream: string): { activityId: string; attempt: number } {
  const hash = stream.lastIndexOf('#');
  if (hash < 0) return { activityId: stream, attempt: 1 };
  const attempt = Number(stream.slice(hash + 1));
  return { activityId: stream.slice(0, hash), attempt: Number.isFinite(attempt) ? attempt : 1 };
}

const normalise = (text: string) => text.replace(/\s+/g, ' ').trim();

/** Does the final text begin the way the live text did? (Agent text and command stdout.) */
function continues(finalText: string, liveText: string): boolean {
  const live = normalise(liveText).slice(0, 80);
  return live !== '' && normalise(finalText).startsWith(live);
}

export class SessionStore {
  state = $state.raw<SessionState | null>(null);
  entries = $state.raw<Entry[]>([]);
  live = $state.raw<LiveBuffer[]>([]);
  connection = $state<ConnectionStatus>('connecting');
  loading = $state(true);
  loadError = $state<string | null>(null);
  loadingEarlier = $state(false);

  readonly id: string;
  #seqs = new Set<number>();
  #attempts = new Map<string, number>();
  #stream: SessionStream | null = null;
  #stopped = false;

  constructor(id: string) {
    this.id = id;
  }

  /** Seq of the oldest entry held; > 1 means earlier entries can be loaded. */
  get earliestSeq(): number | null {
    return this.entries[0]?.seq ?? null;
  }

  async start(): Promise<void> {
    this.loading = true;
    this.loadError = null;
    try {
      const { state, transcript } = await api.session(this.id);
      if (this.#stopped) return;
      this.state = state;
      this.addEntries(transcript.entries);
      this.#stream = openSessionStream(this.id, transcript.nextCursor, {
        entry: (entry) => this.addEntries([entry]),
        state: (next) => {
          this.state = next;
        },
        live: (chunk) => this.addLive(chunk),
        status: (status) => {
          this.connection = status;
        },
        // Lost the stream to an HTTP error: a 401 here flips the console to its login form.
        broken: () => void api.me().catch(() => undefined),
      });
    } catch (error) {
      this.loadError = error instanceof Error ? error.message : String(error);
    } finally {
      this.loading = false;
    }
  }

  stop(): void {
    this.#stopped = true;
    this.#stream?.close();
    this.#stream = null;
  }

  async loadEarlier(): Promise<void> {
    const earliest = this.earliestSeq;
    if (earliest === null || earliest <= 1 || this.loadingEarlier) return;
    this.loadingEarlier = true;
    // Up to 100 entries before the earliest shown, in as many pages as their size needs (a page
    // is also capped in bytes), so no gap is left between them.
    let cursor = Math.max(1, earliest - 100);
    while (cursor < earliest) {
      const from = cursor;
      const page = await attempt('loading earlier entries', () => api.transcript(this.id, from, earliest - from));
      if (!page || page.entries.length === 0) break;
      this.addEntries(page.entries.filter((entry) => entry.seq < earliest));
      cursor = page.nextCursor ?? earliest;
    }
    this.loadingEarlier = false;
  }

  addEntries(incoming: Entry[]): void {
    const fresh = incoming.filter((entry) => typeof entry?.seq === 'number' && !this.#seqs.has(entry.seq));
    if (fresh.length === 0) return;
    for (const entry of fresh) this.#seqs.add(entry.seq);
    const last = this.entries[this.entries.length - 1];
    const sorted = fresh.every((entry, index) => index === 0 || (fresh[index - 1] as Entry).seq < entry.seq);
    this.entries =
      sorted && (!last || (fresh[0] as Entry).seq > last.seq) ? [...this.entries, ...fresh] : [...this.entries, ...fresh].sort((a, b) => a.seq - b.seq);
    for (const entry of fresh) this.#settleLive(entry);
  }

  addLive(chunk: LiveChunk): void {
    if (chunk.text === '') return;
    const { activityId, attempt: attemptNo } = splitStream(chunk.stream);
    const newest = this.#attempts.get(activityId) ?? 0;
    if (attemptNo < newest) return; // an older attempt's late output: superseded
    this.#attempts.set(activityId, attemptNo);
    const now = Date.now();
    const existing = this.live.find((buffer) => buffer.activityId === activityId);
    // A newer attempt of the same activity discards the older attempt's partial output.
    const base: LiveBuffer =
      existing && existing.attempt === attemptNo ? existing : { activityId, attempt: attemptNo, text: '', stdout: '', stderr: '', trimmed: 0, startedAt: now, updatedAt: now };
    const next: LiveBuffer = { ...base, updatedAt: now };
    const field = chunk.kind === 'text' ? 'text' : chunk.kind;
    let value = next[field] + chunk.text;
    if (value.length > LIVE_CAP) {
      next.trimmed += value.length - LIVE_CAP;
      value = value.slice(value.length - LIVE_CAP);
    }
    next[field] = value;
    this.live = existing ? this.live.map((buffer) => (buffer === existing ? next : buffer)) : [...this.live, next];
  }

  /** The final entry has landed: the live buffer it came from is no longer needed. */
  #settleLive(entry: Entry): void {
    if (this.live.length === 0) return;
    const now = Date.now();
    const idle = (buffer: LiveBuffer) => now - buffer.updatedAt > LIVE_IDLE_MS;
    if (entry.type === 'agent-message') {
      const text = entry.text ?? '';
      const turn = String(entry.turn);
      this.live = this.live.filter((buffer) => !(buffer.activityId === turn || (buffer.text !== '' && (continues(text, buffer.text) || idle(buffer)))));
    } else if (entry.type === 'command-result' || entry.type === 'command-failed') {
      const outputs = this.live.filter((buffer) => buffer.stdout !== '' || buffer.stderr !== '');
      if (outputs.length === 0) return;
      const result = entry.type === 'command-result' ? entry.result : null;
      const done = outputs.filter(
        (buffer) =>
          idle(buffer) ||
          (result !== null && (continues(result.stdout, buffer.stdout) || continues(result.stderr, buffer.stderr))) ||
          // Commands run one at a time: with several buffers, the oldest one just finished.
          (outputs.length > 1 && buffer === outputs[0]) ||
          entry.type === 'command-failed',
      );
      this.live = this.live.filter((buffer) => !done.includes(buffer));
    } else if (entry.type === 'session-ended') {
      this.live = [];
    }
  }

  // ------------------------------------------------------------------ operator actions
  // Each returns true when the server accepted it; failures go to the one toast path.

  async sendMessage(text: string): Promise<boolean> {
    const result = await attempt('message not sent', () => api.message(this.id, text));
    return result !== undefined;
  }

  async requestVerb(verb: PveVerb, reason: string, requestKey = newRequestKey('v'), takeOver = false): Promise<boolean> {
    const result = await attempt(`${verb} not requested`, () => api.verb(this.id, verb, reason, requestKey, takeOver));
    if (!result) return false;
    notify(result.approvalId ? `${verb} (${result.key}) waits for approval` : `${verb} queued (${result.key})`, 'success');
    return true;
  }

  async runCommand(command: string, timeoutSeconds: number, requestKey = newRequestKey('c')): Promise<boolean> {
    const result = await attempt('command not queued', () => api.command(this.id, command, timeoutSeconds, requestKey));
    if (!result) return false;
    notify(result.approvalId ? `command (${result.key}) waits for approval` : `command queued (${result.key})`, 'success');
    return true;
  }

  async decide(approvalId: string, decision: 'approve' | 'deny', reason: string): Promise<boolean> {
    const result = await attempt(`${decision} failed`, () => api.approval(this.id, approvalId, decision, reason.trim() || undefined));
    if (!result) return false;
    notify(decision === 'deny' ? `denied ${approvalId}` : result.executed ? `approved ${approvalId}: running` : `approved ${approvalId}: waiting for another operator`, 'success');
    return true;
  }

  async act(action: SessionAction, reason = ''): Promise<boolean> {
    const result = await attempt(`${action} failed`, () => api.action(this.id, action, reason.trim() || undefined));
    if (!result) return false;
    notify(`${action} sent`, 'success');
    return true;
  }

  async setPolicy(policy: Partial<SessionPolicy>): Promise<boolean> {
    const result = await attempt('policy not changed', () => api.policy(this.id, policy));
    if (!result) return false;
    notify('policy changed', 'success');
    return true;
  }
}
