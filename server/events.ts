/**
 * Server-Sent Events for one session: transcript entries (id = transcript seq, so a reconnect
 * with Last-Event-ID resumes exactly), state snapshots when they change, and live chunks
 * (token deltas, command output). One poller per watched session feeds every subscriber, so
 * ten operators watching cost one query stream, not ten.
 */
import type { SessionState, TranscriptEntry } from '../workflows/session-types.js';
import type { LiveBus, LiveChunk } from './live-bus.js';
import type { Sessions } from './sessions.js';

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
  timer: NodeJS.Timeout | null;
  unsubscribeLive: () => void;
  polling: boolean;
}

export class SessionEvents {
  private readonly watches = new Map<string, Watch>();
  /** Polls under way: close() waits for them, so none is left retrying on a closed connection. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly sessions: Sessions,
    private readonly live: LiveBus,
    private readonly pollMs = 250,
  ) {}

  /** Subscribes from transcript seq `fromSeq` (inclusive); returns the unsubscribe function. */
  async subscribe(id: string, fromSeq: number | undefined, subscriber: Subscriber): Promise<() => void> {
    // Catch-up first, straight from the workflow, so this subscriber misses nothing.
    let cursor = fromSeq;
    for (;;) {
      const page = await this.sessions.transcript(id, cursor, 200);
      for (const entry of page.entries) subscriber({ type: 'entry', entry });
      if (!page.more) {
        cursor = page.nextCursor ?? cursor;
        break;
      }
      cursor = page.nextCursor ?? undefined;
    }
    subscriber({ type: 'state', state: await this.sessions.state(id) });

    let watch = this.watches.get(id);
    if (!watch) {
      const created: Watch = {
        subscribers: new Set(),
        nextSeq: cursor ?? null,
        lastState: '',
        timer: null,
        unsubscribeLive: this.live.subscribe(id, (chunk) => this.broadcast(created, { type: 'live', chunk })),
        polling: false,
      };
      created.timer = setInterval(() => this.track(this.poll(id, created)), this.pollMs);
      this.watches.set(id, created);
      watch = created;
      // A page that just loaded wants what changed since at once (a new session's first look).
      this.track(this.poll(id, created));
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

  /** Stops every watch and resolves once no poll is running (before the Temporal client closes). */
  async close(): Promise<void> {
    for (const [id, watch] of this.watches) this.stopWatch(id, watch);
    await Promise.all(this.inFlight);
  }

  private track(poll: Promise<void>) {
    this.inFlight.add(poll);
    void poll.finally(() => this.inFlight.delete(poll));
  }

  private stopWatch(id: string, watch: Watch) {
    if (watch.timer) clearInterval(watch.timer);
    watch.unsubscribeLive();
    this.watches.delete(id);
  }

  private broadcast(watch: Watch, event: SessionEvent) {
    for (const subscriber of watch.subscribers) subscriber(event);
  }

  private async poll(id: string, watch: Watch) {
    if (watch.polling) return;
    watch.polling = true;
    try {
      const { state, transcript: page } = await this.sessions.view(id, watch.nextSeq ?? undefined, 200);
      for (const entry of page.entries) this.broadcast(watch, { type: 'entry', entry });
      if (page.nextCursor !== null) watch.nextSeq = page.nextCursor;
      const fingerprint = JSON.stringify(state);
      if (fingerprint !== watch.lastState) {
        watch.lastState = fingerprint;
        this.broadcast(watch, { type: 'state', state });
      }
    } catch {
      // Temporal briefly unreachable or the run just continued-as-new: the next tick retries.
    } finally {
      watch.polling = false;
    }
  }
}
