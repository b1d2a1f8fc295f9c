/**
 * Live output across processes: a worker running in its own Deployment pushes its chunks
 * (token deltas, command output) to the console's `/internal/live` in small batches, with a
 * shared token. Best effort by design: live output is a preview; history is the record.
 */
import type { LiveChunk } from './live-bus.js';

const FLUSH_MS = 100;
const MAX_BATCH = 200;

export function createLivePusher(baseUrl: string, token: string): { push(chunk: LiveChunk): void; close(): Promise<void> } {
  let batch: LiveChunk[] = [];
  let timer: NodeJS.Timeout | null = null;
  let inFlight: Promise<void> = Promise.resolve();
  const target = new URL('/internal/live', baseUrl).toString();

  const flush = () => {
    timer = null;
    const chunks = batch;
    batch = [];
    if (chunks.length === 0) return;
    inFlight = inFlight.then(() =>
      fetch(target, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ chunks }),
        signal: AbortSignal.timeout(5_000),
      }).then(
        () => undefined,
        () => undefined, // the console is restarting: this preview is lost, the record is not
      ),
    );
  };

  return {
    push(chunk) {
      batch.push(chunk);
      if (batch.length >= MAX_BATCH) flush();
      else timer ??= setTimeout(flush, FLUSH_MS);
    },
    async close() {
      if (timer) clearTimeout(timer);
      flush();
      await inFlight;
    },
  };
}
