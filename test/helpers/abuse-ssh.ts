// Many forced-command calls over few SSH connections: each call is its own exec channel (a
// new session for sshd, so a new run of the forced command), several open at once on one
// connection. sshd's MaxSessions (10 by default) bounds the channels per connection.
import { Client } from 'ssh2';
import type { SshTarget } from '../../activities/ssh/connection.js';
import { fingerprint, pinnedFingerprints } from '../../activities/ssh/host-keys.js';

export interface ChannelResult {
  /** Exit status as sshd reported it; null when the channel closed without one. */
  code: number | null;
  stdout: string;
  stderr: string;
  /** Set when the channel could not be opened or the connection ended under it. */
  error?: string;
}

/** One pinned ssh2 connection that runs commands on separate exec channels. */
export class ChannelRunner {
  private constructor(
    private readonly client: Client,
    private closed: { reason: string } | null = null,
  ) {
    client.on('close', () => (this.closed ??= { reason: 'connection closed' }));
    client.on('error', (error) => (this.closed ??= { reason: `connection error: ${error.message}` }));
  }

  static open(target: SshTarget, timeoutMs = 10_000): Promise<ChannelRunner> {
    const expected = pinnedFingerprints(target.pins, target.host, target.port);
    return new Promise((resolve, reject) => {
      const client = new Client();
      const timer = setTimeout(() => {
        client.destroy();
        reject(new Error(`no SSH connection to ${target.host}:${target.port} within ${timeoutMs} ms`));
      }, timeoutMs);
      client.once('ready', () => {
        clearTimeout(timer);
        resolve(new ChannelRunner(client));
      });
      client.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      client.connect({
        host: target.host,
        port: target.port,
        username: target.username,
        privateKey: target.privateKey,
        readyTimeout: timeoutMs,
        hostVerifier: (key: Buffer) => expected.includes(fingerprint(key)),
      });
    });
  }

  get alive(): boolean {
    return this.closed === null;
  }

  /** One exec channel: stdin closed at once, stdout/stderr collected, bounded by timeoutMs. */
  exec(command: string, timeoutMs = 20_000): Promise<ChannelResult> {
    if (this.closed) return Promise.resolve({ code: null, stdout: '', stderr: '', error: this.closed.reason });
    return new Promise((resolve) => {
      let stdout = '';
      let stderr = '';
      let code: number | null = null;
      let settled = false;
      const finish = (error?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.client.removeListener('close', onClose);
        resolve({ code, stdout, stderr, ...(error ? { error } : {}) });
      };
      const onClose = () => finish(this.closed?.reason ?? 'connection closed');
      const timer = setTimeout(() => finish(`no exit within ${timeoutMs} ms`), timeoutMs);
      this.client.once('close', onClose);
      try {
        this.client.exec(command, (error, stream) => {
          if (error) return finish(`exec refused: ${error.message}`);
          stream.end();
          stream.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
          stream.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
          stream.on('exit', (exitCode: number | null) => (code = exitCode));
          stream.on('close', () => finish());
        });
      } catch (error) {
        finish(`exec threw: ${(error as Error).message}`);
      }
    });
  }

  close(): void {
    this.client.end();
    this.client.destroy();
  }
}

/** Runs items through fn with at most `limit` in flight, results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    for (let index = next++; index < items.length; index = next++) results[index] = await fn(items[index] as T, index);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}
