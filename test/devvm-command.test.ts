// Commands on the devvm: a real sshd whose authorized key has NO forced command (a real shell,
// as on the real devvm). Exit codes, separate stdout/stderr, head + tail capping, live output,
// the remote time limit enforced on the devvm itself, and input validation.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_COMMAND_LENGTH, MAX_TIMEOUT_SECONDS, endedByRemoteTimeout, runDevvmCommand, shellQuote, wrapWithTimeout } from '../activities/devvm/command.js';
import type { SshTarget } from '../activities/ssh/connection.js';
import { SshError } from '../activities/ssh/errors.js';
import { generateKeyPair } from '../lab/keys.js';
import { freePort } from '../lab/sshd.js';
import { processesWithArg, removeDir, startShellHost, tempDir, timed, waitFor, type ShellHost } from './helpers/fixtures.js';

// Independent commands on one devvm stand-in: they run side by side.
describe('devvm commands over a real shell', { concurrent: true }, () => {
  let devvm: ShellHost;
  beforeAll(async () => {
    devvm = await startShellHost('devvm');
  });
  afterAll(async () => {
    await devvm?.stop();
  });

  it('when the command succeeds, then exit code 0 with stdout and stderr kept apart', async () => {
    const result = await runDevvmCommand(devvm.target, 'echo out-1; echo err-1 >&2; echo out-2', { timeoutSeconds: 10 });
    expect(result).toMatchObject({ exitCode: 0, exitSignal: null, timedOut: false });
    expect(result.stdout).toEqual({ text: 'out-1\nout-2\n', totalBytes: 12, droppedBytes: 0, truncated: false });
    expect(result.stderr).toEqual({ text: 'err-1\n', totalBytes: 6, droppedBytes: 0, truncated: false });
    expect(result.durationMs).toBeGreaterThan(0);
    expect(result.command).toBe('echo out-1; echo err-1 >&2; echo out-2');
  });

  it('when the command fails, then its exit code is the result, not an error', async () => {
    expect(await runDevvmCommand(devvm.target, 'exit 3', { timeoutSeconds: 10 })).toMatchObject({ exitCode: 3, timedOut: false });
    const missing = await runDevvmCommand(devvm.target, 'no-such-command-xyz', { timeoutSeconds: 10 });
    expect(missing.exitCode).toBe(127);
    expect(missing.stderr.text).toContain('not found');
  });

  it('when the command has quotes, variables and pipes, then the shell on the devvm sees it exactly', async () => {
    const command = `printf '%s|' "it's" "$((6 * 7))" 'a"b' | tr '|' '\\n'; echo "$0" >&2`;
    const result = await runDevvmCommand(devvm.target, command, { timeoutSeconds: 10 });
    expect(result.stdout.text).toBe(`it's\n42\na"b\n`);
    expect(result.stderr.text).toBe('sh\n');
    expect(wrapWithTimeout(command, 7)).toBe(`timeout --kill-after=5 7 sh -c ${shellQuote(command)}`);
    // A named run: the shell's $0, which the cancel path finds it by.
    expect(wrapWithTimeout(command, 7, 'bg-run-w1-7-1')).toBe(`timeout --kill-after=5 7 sh -c ${shellQuote(command)} bg-run-w1-7-1`);
  });

  it('when the command reads stdin, then it gets end-of-file at once instead of waiting for the deadline', async () => {
    const call = await timed(() => runDevvmCommand(devvm.target, 'cat; echo after-cat', { timeoutSeconds: 20 }));
    expect(call.value).toMatchObject({ exitCode: 0, stdout: { text: 'after-cat\n' } });
    expect(call.ms).toBeLessThan(5_000);
  });

  it('when the output is larger than the cap, then head and tail are kept with the dropped byte count and the truncated flag', async () => {
    // 1..20000, one per line: 108894 bytes.
    const result = await runDevvmCommand(devvm.target, 'seq 1 20000; seq 1 3 >&2', { timeoutSeconds: 20, headBytes: 1000, tailBytes: 500 });
    const full = Array.from({ length: 20_000 }, (_, i) => `${i + 1}\n`).join('');
    expect(result.exitCode).toBe(0);
    expect(result.stdout.totalBytes).toBe(Buffer.byteLength(full));
    expect(result.stdout.droppedBytes).toBe(Buffer.byteLength(full) - 1500);
    expect(result.stdout.truncated).toBe(true);
    expect(result.stdout.text).toBe(`${full.slice(0, 1000)}\n… [${Buffer.byteLength(full) - 1500} bytes dropped] …\n${full.slice(-500)}`);
    expect(result.stderr).toEqual({ text: '1\n2\n3\n', totalBytes: 6, droppedBytes: 0, truncated: false });
  });

  it('when the command prints over time, then onOutput receives each chunk live, tagged by stream', async () => {
    const seen: { stream: string; text: string; at: number }[] = [];
    const started = Date.now();
    const result = await runDevvmCommand(devvm.target, 'echo first; sleep 1.5; echo oops >&2; echo last', {
      timeoutSeconds: 10,
      onOutput: (stream, chunk) => seen.push({ stream, text: chunk.toString('utf8'), at: Date.now() }),
    });
    const finished = started + result.durationMs;
    expect(seen.filter((s) => s.stream === 'stdout').map((s) => s.text).join('')).toBe('first\nlast\n');
    expect(seen.filter((s) => s.stream === 'stderr').map((s) => s.text).join('')).toBe('oops\n');
    // "first" arrived while the command was still sleeping, not with the final result.
    const first = seen.find((s) => s.text.includes('first'))!;
    expect(finished - first.at).toBeGreaterThan(1_000);
  });

  it('when the command outlives its timeout, then the devvm itself stops it: timedOut with exit 124, within the timeout plus a small margin', async () => {
    const marker = `bg-devvm-timeout-${process.pid}-${Date.now()}`;
    const call = await timed(() => runDevvmCommand(devvm.target, `sleep 30; echo ${marker}`, { timeoutSeconds: 1 }));
    expect(call.value).toMatchObject({ exitCode: 124, timedOut: true });
    expect(call.value!.stdout.text).toBe('');
    expect(call.ms).toBeGreaterThanOrEqual(950);
    expect(call.ms).toBeLessThan(3_500);
    // Nothing of it is left running on the devvm.
    await waitFor('the timed-out command to be gone', () => (processesWithArg(marker).length === 0 ? true : undefined), 3_000);
  });

  it('when the command ignores SIGTERM, then it is killed after the grace period and still reported as timedOut', async () => {
    const call = await timed(() => runDevvmCommand(devvm.target, "trap '' TERM; sleep 30", { timeoutSeconds: 1 }));
    expect(call.value).toMatchObject({ timedOut: true });
    // timeout's SIGKILL reaches its own process group: exit 137, or the session ends by KILL.
    const { exitCode, exitSignal } = call.value!;
    expect(exitCode === 137 || (exitCode === null && exitSignal === 'SIGKILL'), `exit ${exitCode} signal ${exitSignal}`).toBe(true);
    // 1 s limit + 5 s kill-after.
    expect(call.ms).toBeGreaterThanOrEqual(5_500);
    expect(call.ms).toBeLessThan(9_000);
  });

  it('when the call is aborted, then it ends at once as a typed timeout', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const call = await timed(() => runDevvmCommand(devvm.target, 'sleep 20', { timeoutSeconds: 30, signal: controller.signal }));
    expect(call.error).toBeInstanceOf(SshError);
    expect(call.error).toMatchObject({ kind: 'timeout' });
    expect(call.ms).toBeLessThan(2_000);
  });
});

describe('devvm command validation (before any connection)', () => {
  // A port nothing listens on: a validation error must come before any attempt to connect.
  let dir: string;
  let unreachable: SshTarget;
  beforeAll(async () => {
    dir = await tempDir('devvm-validation');
    const key = await generateKeyPair(dir, 'client');
    unreachable = { host: '127.0.0.1', port: await freePort(), username: 'nobody', privateKey: readFileSync(key.privateKeyPath), pins: { fingerprints: [] } };
  });
  afterAll(async () => {
    await removeDir(dir);
  });

  const invalid: [string, string, number, RegExp][] = [
    ['an empty command', '', 10, /^command: must not be empty$/],
    ['a blank command', '  \n\t ', 10, /^command: must not be empty$/],
    ['a command that is too long', 'x'.repeat(MAX_COMMAND_LENGTH + 1), 10, new RegExp(`^command: longer than ${MAX_COMMAND_LENGTH} characters$`)],
    ['a NUL byte', 'echo a\0b', 10, /^command: contains a NUL byte$/],
    ['a zero timeout', 'true', 0, /^timeoutSeconds: /],
    ['a fractional timeout', 'true', 1.5, /^timeoutSeconds: /],
    ['a negative timeout', 'true', -5, /^timeoutSeconds: /],
    ['a timeout over the maximum', 'true', MAX_TIMEOUT_SECONDS + 1, new RegExp(`^timeoutSeconds: must be a whole number from 1 to ${MAX_TIMEOUT_SECONDS}$`)],
    ['a NaN timeout', 'true', Number.NaN, /^timeoutSeconds: /],
  ];

  it.each(invalid)('when given %s, then it fails as verb_rejected naming the field, without connecting', async (_label, command, timeoutSeconds, message) => {
    const error = await runDevvmCommand(unreachable, command, { timeoutSeconds }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SshError);
    expect(error).toMatchObject({ kind: 'verb_rejected', retryable: false });
    expect((error as SshError).message).toMatch(message);
  });

  it('when the command is exactly at the length limit, then it is accepted (and only then does the connection fail)', async () => {
    const error = await runDevvmCommand(unreachable, `#${'x'.repeat(MAX_COMMAND_LENGTH - 1)}`, { timeoutSeconds: 1 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ kind: 'unreachable' });
  });
});

describe('endedByRemoteTimeout', () => {
  it('when the session ends by exit 124 or 137, then it was the remote timeout', () => {
    expect(endedByRemoteTimeout(124, null, 1_000, 1)).toBe(true);
    expect(endedByRemoteTimeout(137, null, 6_000, 1)).toBe(true);
  });

  it('when the session ends by SIGKILL, then only at or after the limit is it the timeout (an early KILL is something else)', () => {
    expect(endedByRemoteTimeout(null, 'SIGKILL', 6_100, 1)).toBe(true);
    expect(endedByRemoteTimeout(null, 'SIGKILL', 400, 1)).toBe(false);
    expect(endedByRemoteTimeout(null, 'SIGTERM', 6_100, 1)).toBe(false);
    expect(endedByRemoteTimeout(0, null, 6_100, 1)).toBe(false);
  });
});
