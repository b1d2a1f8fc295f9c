import type { CappedText } from '../output-cap.js';
import { runSshCommand, type SshTarget } from '../ssh/connection.js';
import { SshError } from '../ssh/errors.js';

export const MAX_COMMAND_LENGTH = 4096;
export const MAX_TIMEOUT_SECONDS = 600;
/** Grace beyond the remote `timeout` before the client gives up on the connection itself. */
const CLIENT_GRACE_MS = 10_000;

export interface DevvmCommandOptions {
  timeoutSeconds: number;
  /**
   * Names the run on the devvm (the shell's $0): when the call is aborted (a cancelled session),
   * the command is stopped on the devvm by that name, not only let go.
   */
  runName?: string;
  onOutput?: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
  signal?: AbortSignal;
  headBytes?: number;
  tailBytes?: number;
}

export interface DevvmCommandResult {
  command: string;
  exitCode: number | null;
  exitSignal: string | null;
  /** The remote `timeout` ended the command (see endedByRemoteTimeout). */
  timedOut: boolean;
  stdout: CappedText;
  stderr: CappedText;
  durationMs: number;
}

export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * The remote time limit is enforced on the devvm itself with coreutils' timeout: closing the
 * SSH channel does not reliably stop a command that ignores SIGHUP.
 */
export function wrapWithTimeout(command: string, timeoutSeconds: number, runName?: string): string {
  return `timeout --kill-after=5 ${timeoutSeconds} sh -c ${shellQuote(command)}${runName ? ` ${runName}` : ''}`;
}

/** A run name the devvm's shell and `pkill -f` can both carry: bg-run- and safe characters only. */
export function devvmRunName(parts: string[]): string {
  return `bg-run-${parts.join('-').replace(/[^A-Za-z0-9-]/g, '_').slice(0, 100)}`;
}

/**
 * Stops a named run on the devvm: TERM to its `timeout` (which passes it on), KILL a moment
 * later for a command that ignores TERM. The pattern's first letter in brackets keeps pkill's
 * own shell from matching it.
 */
export async function stopDevvmRun(target: SshTarget, runName: string): Promise<boolean> {
  const pattern = `[${runName[0]}]${runName.slice(1)}`;
  const output = await runSshCommand(target, {
    command: `pkill -TERM -f ${shellQuote(pattern)}; found=$?; sleep 2; pkill -KILL -f ${shellQuote(pattern)}; exit $found`,
    deadlineMs: 10_000,
  });
  return output.exitCode === 0;
}

export function validateDevvmCommand(command: string, timeoutSeconds: number): void {
  if (command.trim() === '') throw new SshError('verb_rejected', 'command: must not be empty');
  if (command.length > MAX_COMMAND_LENGTH) throw new SshError('verb_rejected', `command: longer than ${MAX_COMMAND_LENGTH} characters`);
  if (command.includes('\0')) throw new SshError('verb_rejected', 'command: contains a NUL byte');
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1 || timeoutSeconds > MAX_TIMEOUT_SECONDS) {
    throw new SshError('verb_rejected', `timeoutSeconds: must be a whole number from 1 to ${MAX_TIMEOUT_SECONDS}`);
  }
}

/**
 * Whether the remote `timeout` ended the command: exit 124 after its SIGTERM, 137 after the
 * kill-after SIGKILL. When `timeout` is the session's own process (the login shell execs a
 * lone command), that SIGKILL goes to its whole process group, `timeout` included, and the
 * session ends by signal instead; only a KILL at or after the limit can be that one.
 */
export function endedByRemoteTimeout(exitCode: number | null, exitSignal: string | null, durationMs: number, timeoutSeconds: number): boolean {
  if (exitCode === 124 || exitCode === 137) return true;
  return exitCode === null && (exitSignal === 'SIGKILL' || exitSignal === 'KILL') && durationMs >= timeoutSeconds * 1000;
}

/** Runs an operator's or the agent's command on the devvm. A non-zero exit is a result. */
export async function runDevvmCommand(target: SshTarget, command: string, options: DevvmCommandOptions): Promise<DevvmCommandResult> {
  validateDevvmCommand(command, options.timeoutSeconds);
  const output = await runSshCommand(target, {
    command: wrapWithTimeout(command, options.timeoutSeconds, options.runName),
    deadlineMs: options.timeoutSeconds * 1000 + CLIENT_GRACE_MS,
    ...(options.headBytes !== undefined ? { headBytes: options.headBytes } : {}),
    ...(options.tailBytes !== undefined ? { tailBytes: options.tailBytes } : {}),
    ...(options.onOutput ? { onOutput: options.onOutput } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return {
    command,
    exitCode: output.exitCode,
    exitSignal: output.exitSignal,
    timedOut: endedByRemoteTimeout(output.exitCode, output.exitSignal, output.durationMs, options.timeoutSeconds),
    stdout: output.stdout,
    stderr: output.stderr,
    durationMs: output.durationMs,
  };
}
