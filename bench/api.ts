/**
 * The console's HTTP API as a script would use it (bearer tokens, keep-alive connections).
 * The API rate-limits mutating requests (120 per minute per key); the bench measures latency,
 * not the limiter, so requests rotate over several operators' tokens and several loopback
 * source addresses (127.0.0.2, …): the limiter keys on the client address when it runs before
 * authentication (see the bench report), and the whole of 127.0.0.0/8 is loopback on Linux.
 */
import { Agent, request as httpRequest } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { SessionState, TranscriptEntry, TranscriptPage } from '../workflows/session-types.js';
import { SseClient } from './sse.js';

export interface Timed<T> {
  ms: number;
  /** performance.now() when the response body had arrived. */
  at: number;
  body: T;
}

/** Distinct loopback source addresses requests rotate over. */
const SOURCE_ADDRESSES = Array.from({ length: 32 }, (_, index) => `127.0.0.${index + 2}`);

export class ConsoleApi {
  private next = 0;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });
  private readonly url: URL;

  constructor(
    readonly base: string,
    private readonly tokens: readonly string[],
  ) {
    if (tokens.length === 0) throw new Error('ConsoleApi: at least one token');
    this.url = new URL(base);
  }

  private rotate(): { token: string; localAddress: string } {
    const index = this.next++;
    return { token: this.tokens[index % this.tokens.length] as string, localAddress: SOURCE_ADDRESSES[index % SOURCE_ADDRESSES.length] as string };
  }

  headers(): Record<string, string> {
    return { authorization: `Bearer ${this.rotate().token}` };
  }

  request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<Timed<T>> {
    const { token, localAddress } = this.rotate();
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const outgoing = httpRequest(
        {
          host: this.url.hostname,
          port: this.url.port,
          path,
          method,
          agent: this.agent,
          localAddress,
          timeout: 120_000,
          headers: { authorization: `Bearer ${token}`, ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}) },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('error', reject);
          response.on('end', () => {
            const at = performance.now();
            const text = Buffer.concat(chunks).toString('utf8');
            if (response.statusCode !== 200) return reject(new Error(`${method} ${path}: HTTP ${response.statusCode}: ${text.slice(0, 300)}`));
            try {
              resolve({ ms: at - started, at, body: JSON.parse(text) as T });
            } catch (error) {
              reject(error as Error);
            }
          });
        },
      );
      outgoing.on('timeout', () => outgoing.destroy(new Error(`${method} ${path}: no answer within 120 s`)));
      outgoing.on('error', reject);
      outgoing.end(payload ?? undefined);
    });
  }

  close(): void {
    this.agent.destroy();
  }

  async createSession(description: string): Promise<string> {
    return (await this.request<{ id: string }>('POST', '/api/sessions', { description })).body.id;
  }

  verb(id: string, verb: string, reason = 'bench') {
    return this.request<{ key: string; approvalId: string | null }>('POST', `/api/sessions/${id}/verbs`, { verb, reason });
  }

  command(id: string, command: string, timeoutSeconds = 15) {
    return this.request<{ key: string; approvalId: string | null }>('POST', `/api/sessions/${id}/commands`, { command, timeoutSeconds });
  }

  message(id: string, text: string) {
    return this.request<{ seq: number }>('POST', `/api/sessions/${id}/messages`, { text });
  }

  session(id: string) {
    return this.request<{ state: SessionState; transcript: TranscriptPage }>('GET', `/api/sessions/${id}`);
  }

  transcript(id: string, cursor: number, limit = 200) {
    return this.request<TranscriptPage>('GET', `/api/sessions/${id}/transcript?cursor=${cursor}&limit=${limit}`);
  }

  async end(id: string): Promise<void> {
    await this.request('POST', `/api/sessions/${id}/end`, { reason: 'bench done' }).catch(() => undefined);
  }

  /** Opens the session's event stream and waits for the first state snapshot (subscribed). */
  async events(id: string, from?: number): Promise<SseClient> {
    const sse = new SseClient(`${this.base}/api/sessions/${id}/events${from ? `?from=${from}` : ''}`, this.headers());
    await sse.open();
    await sse.waitFor((event) => event.event === 'state', 30_000);
    return sse;
  }
}

/** Waits for the transcript entry that ends work item `key` (any of `types`), failing on an error entry. */
export async function waitForItem(sse: SseClient, key: string, types: readonly string[], from: number, timeoutMs: number): Promise<{ entry: TranscriptEntry; at: number; wall: number }> {
  const failures = ['verb-failed', 'command-failed', 'outcome-unknown', 'skipped'];
  const event = await sse.waitFor((candidate) => {
    const entry = SseClient.entry(candidate);
    return entry !== null && entry.key === key && (types.includes(String(entry.type)) || failures.includes(String(entry.type)));
  }, timeoutMs, from);
  const entry = SseClient.entry(event) as unknown as TranscriptEntry;
  if (failures.includes(entry.type)) throw new Error(`work item ${key} ended with ${entry.type}: ${JSON.stringify(entry).slice(0, 300)}`);
  return { entry, at: event.at, wall: event.wall };
}
