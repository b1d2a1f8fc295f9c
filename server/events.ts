/**
 * Server-Sent Events for one session: transcript entries (id = transcript seq, so a reconnect
 * with Last-Event-ID resumes exactly), state snapshots when they change, live chunks (token
 * deltas, command output), and `closed` once the session has ended. Nothing is polled: one
 * watcher per watched session long-polls the workflow's history (Temporal tells it when events
 * arrive) and only then asks the workflow for what changed, for every subscriber at once. A
 * closed session is read once and kept by run id; nothing asks it again.
 */
import type { SessionState, TranscriptEntry } from '../workflows/session-types.js';
import type { LiveBus, LiveChunk } from './live-bus.js';
import type { HistoryPosition, Sessions } from './sessions.js';

export type SessionEvent =
  | { type: 'entry'; entry: TranscriptEntry }
  | { type: 'state'; state: SessionState }
  | { type: 'live'; chunk: LiveChunk }
  | { type: 'closed' };

type Subscriber = (event: SessionEvent) => void;

interface Watch {
  subscribers: Set<Subscriber>;
  nextSeq: number | null;
  lastState: string;
  unsubscribeLive: () => void;
  stop: AbortController;
}

/** A closed session as last read: its whole transcript and final state. */
interface ClosedSession {
  runId: string;
  entries: TranscriptEntry[];
  state: SessionState;
}

// Each holds a whole transcript (forensics documents included): a few are enough.
const CLOSED_KEPT = 8;
const RETRY_MS = 1_000;
const POSITIONS_KEPT = 256;

export class SessionEvents {
  private readonly watches = new Map<string, Watch>();
  /** Watchers under way: close() waits for them, so none is left retrying on a closed connection. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Closed sessions by id, oldest first (a small LRU). */
  private readonly closed = new Map<string, ClosedSession>();
  /** Where each session's history was last read: a new watch waits from there, not from the start. */
  private readonly positions = new Map<string, HistoryPosition>();
  /** Workflow queries this instance has made (the tests count them: none while nothing happens). */
  queries = 0;

  constructor(
    private readonly sessions: Sessions,
    private readonly live: LiveBus,
  ) {}

  /** Subscribes from transcript seq `fromSeq` (inclusive); returns the unsubscribe function. */
  async subscribe(id: string, fromSeq: number | undefined, subscriber: Subscriber): Promise<() => void> {
    const kept = await this.closedSession(id);
    if (kept) {
      for (const entry of kept.entries) if (entry.seq >= (fromSeq ?? 0)) subscriber({ type: 'entry', entry });
      subscriber({ type: 'state', state: kept.state });
      subscriber({ type: 'closed' });
      return () => undefined;
    }
    // Catch-up first, straight from the workflow, so this subscriber misses nothing.
    let cursor = fromSeq;
    for (;;) {
      this.queries++;
      const { state, transcript: page } = await this.sessions.view(id, cursor, 200);
      for (const entry of page.entries) subscriber({ type: 'entry', entry });
      cursor = page.nextCursor ?? cursor;
      if (!page.more) {
        subscriber({ type: 'state', state });
        break;
      }
    }

    let watch = this.watches.get(id);
    if (!watch) {
      const created: Watch = {
        subscribers: new Set(),
        nextSeq: cursor ?? null,
        lastState: '',
        unsubscribeLive: this.live.subscribe(id, (chunk) => this.broadcast(created, { type: 'live', chunk })),
        stop: new AbortController(),
      };
      this.watches.set(id, created);
      watch = created;
      this.track(this.follow(id, created));
    }
    // A subscriber that caught up beyond the shared cursor would see duplicates: filter them.
    const caughtUpTo = cursor ?? 0;
    const filtered: Subscriber = (event) => {
      if (event.type === 'entry' && event.entry.seq < caughtUpTo) return;
      subscriber(event);
    };
    watch.subscribers.add(filtered);
    return () => {
      const current = this.watches.get(id);
      if (!current) return;
      current.subscribers.delete(filtered);
      if (current.subscribers.size === 0) this.stopWatch(id, current);
    };
  }

  /** Stops every watch and resolves once no watcher is running (before the Temporal client closes). */
  async close(): Promise<void> {
    for (const [id, watch] of this.watches) this.stopWatch(id, watch);
    await Promise.all(this.inFlight);
  }

  private track(work: Promise<void>) {
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work));
  }

  private stopWatch(id: string, watch: Watch) {
    watch.stop.abort();
    watch.unsubscribeLive();
    if (this.watches.get(id) === watch) this.watches.delete(id);
  }

  private broadcast(watch: Watch, event: SessionEvent) {
    for (const subscriber of watch.subscribers) subscriber(event);
  }

  /** Waits on the history; reads the workflow only when it grew; ends with the session. */
  private async follow(id: string, watch: Watch) {
    let position: HistoryPosition | null = this.positions.get(id) ?? null;
    let failures = 0;
    while (!watch.stop.signal.aborted) {
      try {
        const news = await this.sessions.historyAfter(id, position, watch.stop.signal);
        position = news.ended === 'continued' ? null : news.position;
        this.remember(id, position);
        if (news.ended === 'closed') {
          // Best effort, once: every query of a closed run replays it on the worker, so a failure
          // here must not turn into a loop of replays. A later subscriber reads it afresh.
          await this.refresh(id, watch).catch(() => undefined);
          await this.keepClosed(id, news.position.runId).catch(() => undefined);
          this.broadcast(watch, { type: 'closed' });
          this.stopWatch(id, watch);
          return;
        }
        if (news.changed || news.ended) await this.refresh(id, watch);
        failures = 0;
      } catch {
        // Temporal briefly unreachable, or the watch was stopped: try again, backing off.
        if (watch.stop.signal.aborted) return;
        failures++;
        await new Promise((resolve) => setTimeout(resolve, Math.min(RETRY_MS * 2 ** (failures - 1), 30_000)));
      }
    }
  }

  private remember(id: string, position: HistoryPosition | null) {
    this.positions.delete(id);
    if (!position) return;
    this.positions.set(id, position);
    if (this.positions.size > POSITIONS_KEPT) this.positions.delete(this.positions.keys().next().value as string);
  }

  private async refresh(id: string, watch: Watch) {
    for (;;) {
      this.queries++;
      const { state, transcript: page } = await this.sessions.view(id, watch.nextSeq ?? undefined, 200);
      for (const entry of page.entries) this.broadcast(watch, { type: 'entry', entry });
      if (page.nextCursor !== null) watch.nextSeq = page.nextCursor;
      if (!page.more) {
        const fingerprint = JSON.stringify(state);
        if (fingerprint !== watch.lastState) {
          watch.lastState = fingerprint;
          this.broadcast(watch, { type: 'state', state });
        }
        return;
      }
    }
  }

  /** The session as kept when it has closed (one describe, no query), or null while it runs. */
  private async closedSession(id: string): Promise<ClosedSession | null> {
    const kept = this.closed.get(id);
    if (!kept) return null;
    const { runId, status } = await this.sessions.handle(id).describe();
    return runId === kept.runId && status.name !== 'RUNNING' ? kept : null;
  }

  private async keepClosed(id: string, runId: string) {
    this.queries++;
    // One after the other: two queries at once on one workflow are answered in turn anyway.
    const entries = await this.sessions.fullTranscript(id);
    const state = await this.sessions.state(id);
    this.closed.delete(id);
    this.closed.set(id, { runId, entries, state });
    if (this.closed.size > CLOSED_KEPT) this.closed.delete(this.closed.keys().next().value as string);
  }
}
