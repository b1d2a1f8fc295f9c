/**
 * The session's Server-Sent Events. EventSource reconnects by itself and sends Last-Event-ID
 * (the last transcript seq), so the server resumes exactly there; if the browser gives up (the
 * server answered with an error status, e.g. after a restart), this module opens a new stream
 * from the last seq it saw, with backoff. Entries may still repeat around a reconnect: the
 * session store dedupes them by seq.
 */
import { api } from './api.js';
import type { Entry, LiveChunk, SessionState } from './types.js';

/** `ended`: the session closed; the server said so and nothing more will come. */
export type ConnectionStatus = 'connecting' | 'live' | 'reconnecting' | 'ended';

export interface StreamHandlers {
  entry(entry: Entry): void;
  state(state: SessionState): void;
  live(chunk: LiveChunk): void;
  status(status: ConnectionStatus): void;
  /** The browser gave up on the stream (an HTTP error); called before each manual retry. */
  broken?(): void;
}

export interface SessionStream {
  close(): void;
}

function parse<T>(event: Event): T | null {
  if (!(event instanceof MessageEvent) || typeof event.data !== 'string') return null;
  try {
    return JSON.parse(event.data) as T;
  } catch {
    return null;
  }
}

export function openSessionStream(id: string, fromSeq: number | null, handlers: StreamHandlers): SessionStream {
  let lastSeq = fromSeq !== null ? fromSeq - 1 : 0;
  let source: EventSource | null = null;
  let closed = false;
  let retryTimer: ReturnType<typeof setTimeout> | null = null;
  let backoffMs = 1_000;

  const connect = () => {
    if (closed) return;
    handlers.status('connecting');
    const current = new EventSource(api.eventsUrl(id, lastSeq >= 1 ? lastSeq + 1 : fromSeq));
    source = current;
    current.onopen = () => {
      backoffMs = 1_000;
      handlers.status('live');
    };
    current.addEventListener('entry', (event) => {
      const entry = parse<Entry>(event);
      if (!entry || typeof entry.seq !== 'number') return;
      if (entry.seq > lastSeq) lastSeq = entry.seq;
      handlers.entry(entry);
    });
    current.addEventListener('state', (event) => {
      const state = parse<SessionState>(event);
      if (state) handlers.state(state);
    });
    current.addEventListener('live', (event) => {
      const chunk = parse<LiveChunk>(event);
      if (chunk) handlers.live(chunk);
    });
    current.addEventListener('closed', () => {
      closed = true;
      window.removeEventListener('online', online);
      current.close();
      handlers.status('ended');
    });
    current.addEventListener('error', (event) => {
      if (closed || source !== current) return;
      // `event: error` sent by the server (it then ends the stream; the browser reconnects).
      if (parse<{ message?: string }>(event)) {
        handlers.status('reconnecting');
        return;
      }
      if (current.readyState === EventSource.CLOSED) {
        handlers.status('reconnecting');
        handlers.broken?.();
        scheduleRetry();
      } else {
        handlers.status('reconnecting');
      }
    });
  };

  const scheduleRetry = () => {
    if (closed || retryTimer) return;
    source?.close();
    retryTimer = setTimeout(() => {
      retryTimer = null;
      connect();
    }, backoffMs);
    backoffMs = Math.min(backoffMs * 2, 30_000);
  };

  // Back online (phone woke up, Wi-Fi returned): don't wait for the backoff.
  const online = () => {
    if (closed) return;
    if (!source || source.readyState === EventSource.CLOSED) {
      if (retryTimer) clearTimeout(retryTimer);
      retryTimer = null;
      backoffMs = 1_000;
      connect();
    }
  };
  window.addEventListener('online', online);

  connect();

  return {
    close() {
      closed = true;
      window.removeEventListener('online', online);
      if (retryTimer) clearTimeout(retryTimer);
      source?.close();
      source = null;
    },
  };
}
