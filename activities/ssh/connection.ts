import { Client, type ClientChannel, type ConnectConfig } from 'ssh2';
import { OutputCap, type CappedText } from '../output-cap.js';
import { HostKeyMismatchError, SshError } from './errors.js';
import { fingerprint, pinnedFingerprints, type PinnedHostKeys } from './host-keys.js';

export interface SshTarget {
  host: string;
  port: number;
  username: string;
  /** Private key contents (never a path: the caller reads secret files once, at start-up). */
  privateKey: Buffer | string;
  pins: PinnedHostKeys;
  /** Handshake deadline. */
  readyTimeoutMs?: number;
  /** Keepalive probe interval; three unanswered probes end the connection. */
  keepaliveIntervalMs?: number;
}

export interface RunOptions {
  command: string;
  /** Whole-call deadline: connect, run and collect. */
  deadlineMs: number;
  headBytes?: number;
  tailBytes?: number;
  /** Live output, as it arrives (before capping). */
  onOutput?: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
  signal?: AbortSignal;
}

export interface CommandOutput {
  exitCode: number | null;
  exitSignal: string | null;
  stdout: CappedText;
  stderr: CappedText;
  durationMs: number;
}

const DEFAULT_HEAD = 32 * 1024;
const DEFAULT_TAIL = 32 * 1024;

function describe(target: SshTarget): string {
  return `${target.username}@${target.host}:${target.port}`;
}

/** Maps ssh2/socket failures onto our typed errors. */
function classify(error: Error & { level?: string; code?: string }, target: SshTarget): SshError {
  const where = describe(target);
  if (error.level === 'client-authentication') {
    return new SshError('auth_failed', `authentication to ${where} failed: the key was not accepted`);
  }
  if (error.level === 'client-timeout') {
    return new SshError('timeout', `${where} did not answer in time (${error.message})`);
  }
  const code = error.code ?? '';
  if (['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'EPIPE'].includes(code)) {
    return new SshError('unreachable', `${where} is unreachable (${code})`);
  }
  return new SshError('unreachable', `connection to ${where} failed: ${error.message}`);
}

/**
 * Runs one command over a fresh SSH connection with a pinned host key and a hard deadline.
 * A non-zero exit is a result, not an error; errors are typed SshErrors.
 */
export function runSshCommand(target: SshTarget, options: RunOptions): Promise<CommandOutput> {
  const started = Date.now();
  const expected = pinnedFingerprints(target.pins, target.host, target.port);
  const stdout = new OutputCap(options.headBytes ?? DEFAULT_HEAD, options.tailBytes ?? DEFAULT_TAIL);
  const stderr = new OutputCap(options.headBytes ?? DEFAULT_HEAD, options.tailBytes ?? DEFAULT_TAIL);

  return new Promise<CommandOutput>((resolve, reject) => {
    const client = new Client();
    let settled = false;
    let mismatch: HostKeyMismatchError | undefined;
    let channel: ClientChannel | undefined;

    const finish = (error: SshError | undefined, output?: CommandOutput) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      options.signal?.removeEventListener('abort', onAbort);
      channel?.destroy();
      client.end();
      client.destroy();
      if (error) reject(error);
      else resolve(output as CommandOutput);
    };
    const deadline = setTimeout(
      () => finish(new SshError('timeout', `${describe(target)}: "${options.command}" did not finish within ${options.deadlineMs} ms`)),
      options.deadlineMs,
    );
    const onAbort = () => finish(new SshError('timeout', `${describe(target)}: call cancelled`));
    options.signal?.addEventListener('abort', onAbort, { once: true });

    client.on('error', (error: Error & { level?: string; code?: string }) => finish(mismatch ?? classify(error, target)));
    client.on('close', () => finish(mismatch ?? new SshError('unreachable', `${describe(target)} closed the connection before the command finished`)));
    client.on('ready', () => {
      client.exec(options.command, (error, stream) => {
        if (error) return finish(new SshError('protocol', `${describe(target)} refused to run the command: ${error.message}`));
        channel = stream;
        // Nobody types into these commands: EOF on stdin at once, so one that reads it (cat,
        // a prompt) ends instead of waiting for the deadline.
        stream.end();
        let exitCode: number | null = null;
        let exitSignal: string | null = null;
        stream.on('exit', (code: number | null, signalName?: string) => {
          exitCode = code;
          exitSignal = signalName ?? null;
        });
        stream.on('data', (chunk: Buffer) => {
          stdout.push(chunk);
          options.onOutput?.('stdout', chunk);
        });
        stream.stderr.on('data', (chunk: Buffer) => {
          stderr.push(chunk);
          options.onOutput?.('stderr', chunk);
        });
        stream.on('close', () =>
          finish(undefined, {
            exitCode,
            exitSignal,
            stdout: stdout.result(),
            stderr: stderr.result(),
            durationMs: Date.now() - started,
          }),
        );
      });
    });

    const config: ConnectConfig = {
      host: target.host,
      port: target.port,
      username: target.username,
      privateKey: target.privateKey,
      readyTimeout: Math.min(target.readyTimeoutMs ?? 10_000, options.deadlineMs),
      keepaliveInterval: target.keepaliveIntervalMs ?? 5_000,
      keepaliveCountMax: 3,
      hostVerifier: (key: Buffer) => {
        const presented = fingerprint(key);
        if (expected.includes(presented)) return true;
        mismatch = new HostKeyMismatchError(`${target.host}:${target.port}`, expected, presented);
        return false;
      },
    };
    try {
      client.connect(config);
    } catch (error) {
      // ssh2 throws synchronously for a private key it cannot parse. Its message names the
      // format problem, never the key material.
      finish(new SshError('auth_failed', `cannot authenticate to ${describe(target)}: ${(error as Error).message}`));
    }
  });
}
