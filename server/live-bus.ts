/**
 * The live side channel: token deltas and devvm command output while they happen, keyed by
 * session and activity attempt. Not durable by design — the final text lands in history once.
 * A newer attempt of the same activity supersedes (and discards) an older attempt's output.
 */
import { EventEmitter } from 'node:events';

export interface LiveChunk {
  sessionId: string;
  /** `<activityId>#<attempt>`: the console drops chunks of an attempt once a newer one starts. */
  stream: string;
  kind: 'text' | 'stdout' | 'stderr';
  text: string;
}

export class LiveBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(chunk: LiveChunk): void {
    this.emitter.emit(chunk.sessionId, chunk);
  }

  subscribe(sessionId: string, listener: (chunk: LiveChunk) => void): () => void {
    this.emitter.on(sessionId, listener);
    return () => this.emitter.off(sessionId, listener);
  }
}
