/**
 * A small Server-Sent Events client over fetch, for the console's /events stream. Every event
 * is stamped the moment its bytes are read (monotonic and wall clock), so latencies are
 * measured at the client, as a browser would see them.
 */
import { performance } from 'node:perf_hooks';

export interface SseEvent {
  event: string;
  id: string | null;
  data: string;
  /** performance.now() when the event's last byte was read. */
  at: number;
  /** Date.now() at the same moment (for comparison with timestamps taken elsewhere). */
  wall: number;
}

interface Waiter {
  from: number;
  match: (event: SseEvent) => boolean;
  resolve: (event: SseEvent) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

export class SseClient {
  readonly events: SseEvent[] = [];
  private readonly controller = new AbortController();
  private readonly waiters = new Set<Waiter>();
  private failure: Error | null = null;
  private done: Promise<void> = Promise.resolve();

  constructor(
    private readonly url: string,
    private readonly headers: Record<string, string>,
  ) {}

  /** Opens the stream; resolves once the response headers arrived (status 200). */
  async open(): Promise<void> {
    const response = await fetch(this.url, { headers: { accept: 'text/event-stream', ...this.headers }, signal: this.controller.signal });
    if (response.status !== 200 || !response.body) {
      const text = await response.text().catch(() => '');
      throw new Error(`SSE ${this.url}: HTTP ${response.status} ${text.slice(0, 200)}`);
    }
    const reader = response.body.getReader();
    this.done = this.pump(reader);
  }

  /** Index of the next event to arrive: pass it to waitFor to ignore what came before. */
  mark(): number {
    return this.events.length;
  }

  /** The first event at index >= from that matches, waiting up to timeoutMs for it. */
  waitFor(match: (event: SseEvent) => boolean, timeoutMs: number, from = 0): Promise<SseEvent> {
    for (let i = from; i < this.events.length; i++) {
      const event = this.events[i] as SseEvent;
      if (match(event)) return Promise.resolve(event);
    }
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        from,
        match,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(new Error(`SSE: no matching event within ${timeoutMs} ms (${this.events.length} events so far)`));
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** Transcript entries as parsed objects (event `entry`). */
  static entry(event: SseEvent): Record<string, unknown> | null {
    if (event.event !== 'entry') return null;
    try {
      return JSON.parse(event.data) as Record<string, unknown>;
    } catch {
      return null;
    }
  }

  async close(): Promise<void> {
    this.controller.abort();
    await this.done.catch(() => undefined);
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error('SSE closed'));
    }
    this.waiters.clear();
  }

  private async pump(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const at = performance.now();
        const wall = Date.now();
        buffer += decoder.decode(value, { stream: true });
        let end = buffer.indexOf('\n\n');
        while (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          this.parse(block, at, wall);
          end = buffer.indexOf('\n\n');
        }
      }
      this.fail(new Error('SSE stream ended'));
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private parse(block: string, at: number, wall: number): void {
    let event = 'message';
    let id: string | null = null;
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') id = value;
    }
    if (data.length === 0) return; // comments, heartbeats and `retry:` only
    const parsed: SseEvent = { event, id, data: data.join('\n'), at, wall };
    const index = this.events.push(parsed) - 1;
    for (const waiter of [...this.waiters]) {
      if (index >= waiter.from && waiter.match(parsed)) {
        clearTimeout(waiter.timer);
        this.waiters.delete(waiter);
        waiter.resolve(parsed);
      }
    }
  }

  private fail(error: Error): void {
    this.failure = error;
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.waiters.clear();
  }
}
