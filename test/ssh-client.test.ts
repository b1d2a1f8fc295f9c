// The ssh2 client side against real OpenSSH sshd on loopback: pinned host keys (known_hosts,
// hashed known_hosts, SHA256 fingerprints), typed errors, and every deadline (handshake,
// keepalive, whole call) when the server is gone, refuses, or hangs (SIGSTOP).
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OutputCap, capText } from '../activities/output-cap.js';
import { pveForensics } from '../activities/pve/verbs.js';
import { runSshCommand, type SshTarget } from '../activities/ssh/connection.js';
import { HostKeyMismatchError, SshError } from '../activities/ssh/errors.js';
import { fingerprint, pinnedFingerprints } from '../activities/ssh/host-keys.js';
import { fingerprintOf, generateKeyPair, type KeyPair } from '../lab/keys.js';
import { freePort } from '../lab/sshd.js';
import { startPveFixture, startShellHost, timed, type PveFixture, type ShellHost } from './helpers/fixtures.js';

const run = promisify(execFile);

async function failure(promise: Promise<unknown>): Promise<SshError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SshError) return error;
    throw error;
  }
  throw new Error('expected an SshError, but the call succeeded');
}

/** The base64 key blob of an OpenSSH public key line. */
const keyBlob = (publicKey: string) => publicKey.split(' ')[1]!;

describe('host key pinning against a real sshd', { concurrent: true }, () => {
  let shell: ShellHost;
  let other: KeyPair;
  let otherFingerprint: string;
  beforeAll(async () => {
    shell = await startShellHost('ssh-pins');
    other = await generateKeyPair(shell.dir, 'other_host_key');
    otherFingerprint = await fingerprintOf(`${other.privateKeyPath}.pub`);
  });
  afterAll(async () => {
    await shell?.stop();
  });

  const withPins = (pins: SshTarget['pins']): SshTarget => ({ ...shell.target, pins });
  const echo = (target: SshTarget) => runSshCommand(target, { command: 'echo pinned-ok', deadlineMs: 10_000 });

  it('when the plain known_hosts line of this host is pinned, then the command runs', async () => {
    const output = await echo(withPins({ knownHosts: shell.sshd.knownHostsLine }));
    expect(output).toMatchObject({ exitCode: 0, stdout: { text: 'pinned-ok\n' } });
  });

  it("when another key's SHA256 fingerprint is pinned, then HostKeyMismatchError shows both fingerprints, is not retryable, and nothing runs", async () => {
    const canary = join(shell.dir, 'canary');
    const error = await failure(runSshCommand(withPins({ fingerprints: [otherFingerprint] }), { command: `touch ${canary}`, deadlineMs: 10_000 }));
    expect(error).toBeInstanceOf(HostKeyMismatchError);
    expect(error).toMatchObject({ kind: 'host_key_mismatch', retryable: false, expected: [otherFingerprint], presented: shell.sshd.hostKeyFingerprint });
    expect(error.message).toContain(otherFingerprint);
    expect(error.message).toContain(shell.sshd.hostKeyFingerprint);
    expect(existsSync(canary)).toBe(false);
  });

  it('when known_hosts pins another key for this host and port, then the key is refused as a mismatch', async () => {
    const line = `[127.0.0.1]:${shell.sshd.port} ssh-ed25519 ${keyBlob(other.publicKey)}`;
    const error = await failure(echo(withPins({ knownHosts: line })));
    expect(error).toMatchObject({ kind: 'host_key_mismatch', expected: [otherFingerprint], presented: shell.sshd.hostKeyFingerprint });
  });

  it('when known_hosts only knows this key for another port or host, then nothing is pinned and the key is refused', async () => {
    const blob = keyBlob(readFileSync(join(shell.dir, 'sshd', 'ssh_host_ed25519_key.pub'), 'utf8'));
    const lines = [`[127.0.0.1]:${shell.sshd.port + 1} ssh-ed25519 ${blob}`, `127.0.0.1 ssh-ed25519 ${blob}`, `[localhost]:${shell.sshd.port} ssh-ed25519 ${blob}`].join('\n');
    const error = await failure(echo(withPins({ knownHosts: lines })));
    expect(error).toMatchObject({ kind: 'host_key_mismatch', expected: [] });
    expect(error.message).toContain('pinned (none)');
    // Never accept-any: no pins at all is the same refusal.
    expect(await failure(echo(withPins({})))).toMatchObject({ kind: 'host_key_mismatch', retryable: false });
  });

  it('when the known_hosts comes from ssh-keyscan and is hashed with ssh-keygen -H, then the key is recognised (and only for this port)', async () => {
    const file = join(shell.dir, 'known_hosts_hashed');
    const { stdout: scanned } = await run('ssh-keyscan', ['-t', 'ed25519', '-p', String(shell.sshd.port), '127.0.0.1']);
    await writeFile(file, scanned);
    await run('ssh-keygen', ['-H', '-f', file]);
    const hashed = await readFile(file, 'utf8');
    const line = hashed.split('\n').find((l) => l.trim() && !l.startsWith('#'))!;
    expect(line).toMatch(/^\|1\|[A-Za-z0-9+/=]+\|[A-Za-z0-9+/=]+ ssh-ed25519 /);
    expect(hashed).not.toContain('127.0.0.1');

    expect(pinnedFingerprints({ knownHosts: hashed }, '127.0.0.1', shell.sshd.port)).toEqual([shell.sshd.hostKeyFingerprint]);
    expect(pinnedFingerprints({ knownHosts: hashed }, '127.0.0.1', shell.sshd.port + 1)).toEqual([]);
    const output = await echo(withPins({ knownHosts: hashed }));
    expect(output.stdout.text).toBe('pinned-ok\n');
  });

  it("when this host's SHA256 fingerprint (as ssh-keygen -l prints it) is pinned, then the command runs", async () => {
    const printed = await fingerprintOf(join(shell.dir, 'sshd', 'ssh_host_ed25519_key.pub'));
    expect(printed).toBe(shell.sshd.hostKeyFingerprint);
    const output = await echo(withPins({ fingerprints: [printed] }));
    expect(output.exitCode).toBe(0);
  });

  it('when known_hosts marks the pinned key @revoked, then it is withdrawn and the host is refused', async () => {
    const revoked = `@revoked [127.0.0.1]:${shell.sshd.port} ${shell.sshd.knownHostsLine.split(' ').slice(1).join(' ')}`;
    const error = await failure(echo(withPins({ knownHosts: `${shell.sshd.knownHostsLine}\n${revoked}`, fingerprints: [shell.sshd.hostKeyFingerprint] })));
    expect(error).toMatchObject({ kind: 'host_key_mismatch', expected: [] });
  });
});

describe('typed errors, each within its deadline', { concurrent: true }, () => {
  let shell: ShellHost;
  beforeAll(async () => {
    shell = await startShellHost('ssh-errors');
  });
  afterAll(async () => {
    await shell?.stop();
  });

  it('when the client key is not authorized, then auth_failed, not retryable, at once', async () => {
    const stranger = await generateKeyPair(shell.dir, 'stranger');
    const call = await timed(() => runSshCommand({ ...shell.target, privateKey: readFileSync(stranger.privateKeyPath) }, { command: 'true', deadlineMs: 10_000 }));
    expect(call.error).toBeInstanceOf(SshError);
    expect(call.error).toMatchObject({ kind: 'auth_failed', retryable: false });
    expect(call.ms).toBeLessThan(3_000);
  });

  it('when the private key cannot be parsed, then a typed auth_failed (not retryable) that does not echo the key', async () => {
    const secret = 'not-a-key-but-secret-material';
    const error = await failure(runSshCommand({ ...shell.target, privateKey: secret }, { command: 'true', deadlineMs: 10_000 }));
    expect(error).toMatchObject({ kind: 'auth_failed', retryable: false });
    expect(error.message).not.toContain(secret);
  });

  it('when nothing listens on the port, then unreachable (retryable) at once', async () => {
    const port = await freePort();
    const call = await timed(() => runSshCommand({ ...shell.target, port }, { command: 'true', deadlineMs: 10_000 }));
    expect(call.error).toMatchObject({ kind: 'unreachable', retryable: true });
    expect((call.error as SshError).message).toContain('ECONNREFUSED');
    expect(call.ms).toBeLessThan(1_000);
  });

  it('when the command outlives the call deadline, then timeout (retryable) at the deadline', async () => {
    const call = await timed(() => runSshCommand(shell.target, { command: 'sleep 20', deadlineMs: 1_500 }));
    expect(call.error).toMatchObject({ kind: 'timeout', retryable: true });
    expect((call.error as SshError).message).toContain('did not finish within 1500 ms');
    expect(call.ms).toBeGreaterThanOrEqual(1_450);
    expect(call.ms).toBeLessThan(2_500);
  });

  it('when the caller aborts, then the call ends at once as a timeout', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const call = await timed(() => runSshCommand(shell.target, { command: 'sleep 20', deadlineMs: 30_000, signal: controller.signal }));
    expect(call.error).toMatchObject({ kind: 'timeout' });
    expect((call.error as SshError).message).toContain('cancelled');
    expect(call.ms).toBeLessThan(1_500);
  });
});

// Runs beside the other blocks, but its own tests one at a time: they freeze a shared sshd.
describe('a SIGSTOPped sshd', { concurrent: true }, () => {
  let shell: ShellHost;
  beforeAll(async () => {
    shell = await startShellHost('ssh-frozen');
  });
  afterAll(async () => {
    shell?.sshd.thaw();
    await shell?.stop();
  });

  it.sequential('when sshd is frozen before the connection, then timeout within readyTimeout (plus margin)', async () => {
    shell.sshd.freeze();
    try {
      const call = await timed(() => runSshCommand({ ...shell.target, readyTimeoutMs: 1_500 }, { command: 'true', deadlineMs: 30_000 }));
      expect(call.error).toMatchObject({ kind: 'timeout', retryable: true });
      expect(call.ms).toBeGreaterThanOrEqual(1_400);
      expect(call.ms).toBeLessThan(3_000);
    } finally {
      shell.sshd.thaw();
    }
    // Thawed, it serves again.
    expect((await runSshCommand(shell.target, { command: 'echo back', deadlineMs: 10_000 })).stdout.text).toBe('back\n');
  });

  it.sequential('when sshd is frozen after the command started, then keepalive ends the call as a timeout long before the deadline', async () => {
    let frozenAt = 0;
    const call = await timed(() =>
      runSshCommand(
        { ...shell.target, keepaliveIntervalMs: 500 },
        {
          command: 'echo started; sleep 30',
          deadlineMs: 30_000,
          onOutput: () => {
            if (frozenAt) return;
            frozenAt = Date.now();
            shell.sshd.freeze();
          },
        },
      ),
    );
    shell.sshd.thaw();
    expect(frozenAt).toBeGreaterThan(0);
    expect(call.error).toMatchObject({ kind: 'timeout', retryable: true });
    expect((call.error as SshError).message).toContain('Keepalive');
    // Three unanswered probes at 500 ms, plus a little.
    expect(Date.now() - frozenAt).toBeLessThan(4 * 500 + 1_500);
  });

  it.sequential('when sshd is frozen mid-call and keepalive is off, then the call deadline still ends it', async () => {
    let frozen = false;
    const call = await timed(() =>
      runSshCommand(
        { ...shell.target, keepaliveIntervalMs: 0 },
        {
          command: 'echo started; sleep 30',
          deadlineMs: 3_000,
          onOutput: () => {
            if (!frozen) shell.sshd.freeze();
            frozen = true;
          },
        },
      ),
    );
    shell.sshd.thaw();
    expect(frozen).toBe(true);
    expect(call.error).toMatchObject({ kind: 'timeout' });
    expect((call.error as SshError).message).toContain('did not finish within 3000 ms');
    expect(call.ms).toBeGreaterThanOrEqual(2_950);
    expect(call.ms).toBeLessThan(4_500);
  });
});

describe('a SIGSTOPped sshd in front of the PVE dispatcher', { concurrent: true }, () => {
  let fx: PveFixture;
  beforeAll(async () => {
    fx = await startPveFixture('ssh-frozen-pve');
  });
  afterAll(async () => {
    fx?.host.sshd.thaw();
    await fx?.stop();
  });

  it('when sshd freezes during forensics, then the client times out within the keepalive bound, and the capture completes on the host for the same request id', async () => {
    const target = { ...fx.target, keepaliveIntervalMs: 500 };
    const pending = timed(() => pveForensics(target, { requestId: 'frozen-forensics-1', deadlineMs: 60_000 }));
    await fx.waitForLog(/event=forensics-start verb=forensics request=frozen-forensics-1/);
    fx.host.sshd.freeze();
    const frozenAt = Date.now();
    const call = await pending;
    expect(call.error).toMatchObject({ kind: 'timeout', retryable: true });
    expect(Date.now() - frozenAt).toBeLessThan(4 * 500 + 1_500);

    // The verb ran detached on the host: it finished while sshd was frozen.
    await fx.waitForLog(/event=verb-done verb=forensics request=frozen-forensics-1 exit=0/);
    fx.host.sshd.thaw();
    const replay = await pveForensics(fx.target, { requestId: 'frozen-forensics-1', deadlineMs: 60_000 });
    expect(replay).toMatchObject({ replayed: true, summary: { qmpAnswered: true } });
    expect(fx.qmStarted('status').length).toBeGreaterThan(0);
  });
});

// ------------------------------------------------------------------------------------- units

describe('OutputCap (head + tail with the dropped byte count)', () => {
  it('when the output fits, then it is kept whole and not marked truncated', () => {
    const cap = new OutputCap(4, 4);
    cap.push(Buffer.from('abc'));
    cap.push(Buffer.from('defgh'));
    expect(cap.result()).toEqual({ text: 'abcdefgh', totalBytes: 8, droppedBytes: 0, truncated: false });
  });

  it('when the output is larger, then head and tail are kept and the middle is counted as dropped', () => {
    const cap = new OutputCap(3, 2);
    for (const chunk of ['ab', 'cdef', 'ghij', 'k']) cap.push(Buffer.from(chunk));
    expect(cap.result()).toEqual({ text: 'abc\n… [6 bytes dropped] …\njk', totalBytes: 11, droppedBytes: 6, truncated: true });
  });

  it('when there is no tail budget, then only the head is kept', () => {
    expect(capText('0123456789', 4, 0)).toEqual({ text: '0123\n… [6 bytes dropped] …\n', totalBytes: 10, droppedBytes: 6, truncated: true });
  });

  it('when the same bytes arrive in any chunking, then the result is the same head, tail and count (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 64 }), fc.array(fc.integer({ min: 1, max: 50 }), { maxLength: 40 }), (bytes, head, tail, sizes) => {
        const cap = new OutputCap(head, tail);
        let at = 0;
        for (const size of sizes) {
          cap.push(Buffer.from(bytes.subarray(at, at + size)));
          at += size;
        }
        cap.push(Buffer.from(bytes.subarray(at)));
        const result = cap.result();
        const total = bytes.length;
        const dropped = Math.max(0, total - head - tail);
        expect(result.totalBytes).toBe(total);
        expect(result.droppedBytes).toBe(dropped);
        expect(result.truncated).toBe(dropped > 0);
        const all = Buffer.from(bytes);
        const expected = dropped > 0
          ? `${all.subarray(0, head).toString('utf8')}\n… [${dropped} bytes dropped] …\n${all.subarray(total - tail).toString('utf8')}`
          : `${all.subarray(0, Math.min(head, total)).toString('utf8')}${all.subarray(Math.min(head, total)).toString('utf8')}`;
        expect(result.text).toBe(expected);
      }),
      { numRuns: 300 },
    );
  });
});

describe('pinnedFingerprints (known_hosts parsing)', () => {
  const keyA = Buffer.from('key-a-blob');
  const keyB = Buffer.from('key-b-blob');
  const lineFor = (hosts: string, key: Buffer) => `${hosts} ssh-ed25519 ${key.toString('base64')}`;

  it('when the port is 22, then bare host names and [host]:22 match, other ports do not', () => {
    const knownHosts = [lineFor('pve.example', keyA), lineFor('[pve.example]:22', keyB), lineFor('[pve.example]:2222', Buffer.from('x'))].join('\n');
    expect(pinnedFingerprints({ knownHosts }, 'pve.example', 22).sort()).toEqual([fingerprint(keyA), fingerprint(keyB)].sort());
  });

  it('when the port is not 22, then only [host]:port matches', () => {
    const knownHosts = [lineFor('pve.example', keyA), lineFor('[pve.example]:2222', keyB)].join('\n');
    expect(pinnedFingerprints({ knownHosts }, 'pve.example', 2222)).toEqual([fingerprint(keyB)]);
  });

  it('when lines have comma-separated hosts, comments, blank lines and extra fields, then they are read as OpenSSH does', () => {
    const knownHosts = ['# a comment', '', `  ${lineFor('other,pve.example,10.0.0.2', keyA)} trailing-comment`, lineFor('unrelated', keyB)].join('\n');
    expect(pinnedFingerprints({ knownHosts }, '10.0.0.2', 22)).toEqual([fingerprint(keyA)]);
    expect(pinnedFingerprints({ knownHosts }, 'nowhere', 22)).toEqual([]);
  });

  it('when a line is @cert-authority, then it pins nothing; when @revoked, then it withdraws the key', () => {
    const knownHosts = [`@cert-authority ${lineFor('pve.example', keyA)}`, lineFor('pve.example', keyB), `@revoked ${lineFor('pve.example', keyB)}`].join('\n');
    expect(pinnedFingerprints({ knownHosts }, 'pve.example', 22)).toEqual([]);
  });

  it('when fingerprints and known_hosts pin the same key, then it appears once', () => {
    expect(pinnedFingerprints({ knownHosts: lineFor('h', keyA), fingerprints: [fingerprint(keyA)] }, 'h', 22)).toEqual([fingerprint(keyA)]);
  });

  it('when fingerprint() hashes a key blob, then it matches what ssh-keygen prints', async () => {
    const shell = await startShellHost('ssh-fp');
    try {
      const blob = Buffer.from(keyBlob(shell.sshd.knownHostsLine.split(' ').slice(1).join(' ')), 'base64');
      expect(fingerprint(blob)).toBe(shell.sshd.hostKeyFingerprint);
    } finally {
      await shell.stop();
    }
  });
});
