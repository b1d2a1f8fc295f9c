// Shared fixtures for the SSH suites: temp dirs, keys, a real sshd standing in for the devvm
// (a real shell, no forced command) and a PVE host stand-in (real sshd + the real dispatcher
// over the lab's qm stand-in, VM 102 a real QEMU), plus the small polling and process helpers the
// suites need.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, type KeyPair } from '../../lab/keys.js';
import { readHostLog, startPveHost, type PveHost, type PveHostOptions } from '../../lab/pve-host.js';
import { setFault } from '../../lab/pve/lab-vm.mjs';
import { invocations, type Invocation } from '../../lab/pve/pve-node.mjs';
import { startSshd, type RunningSshd } from '../../lab/sshd.js';
import { runSshCommand, type CommandOutput, type SshTarget } from '../../activities/ssh/connection.js';

export const USER = userInfo().username;

export const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `bg-${prefix}-`));
}

export async function removeDir(dir: string): Promise<void> {
  // A stopping sshd may still write its last file as we remove the tree (ENOTEMPTY): retry.
  await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}

/** Polls until check returns a value (not undefined), or fails naming what it waited for. */
export async function waitFor<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await pause(25);
  }
}

/** Runs fn and returns how long it took to settle, with its value or its error. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const started = Date.now();
  try {
    const value = await fn();
    return { ms: Date.now() - started, value };
  } catch (error) {
    return { ms: Date.now() - started, error };
  }
}

/** Pids of live processes (zombies and this one excluded) with an argument containing text. */
export { pidsWithArg as processesWithArg } from '../../lab/processes.js';

// ------------------------------------------------------------------------- the devvm stand-in

export interface ShellHost {
  dir: string;
  sshd: RunningSshd;
  key: KeyPair;
  target: SshTarget;
  stop(): Promise<void>;
}

/** A real sshd whose authorized key has no forced command: a real shell, as on the devvm. */
export async function startShellHost(prefix: string, targetOverrides: Partial<SshTarget> = {}): Promise<ShellHost> {
  const dir = await tempDir(prefix);
  const key = await generateKeyPair(dir, 'client');
  const sshd = await startSshd({ dir: join(dir, 'sshd'), authorizedKeys: [key.publicKey] });
  return {
    dir,
    sshd,
    key,
    target: {
      host: '127.0.0.1',
      port: sshd.port,
      username: USER,
      privateKey: readFileSync(key.privateKeyPath),
      pins: { knownHosts: sshd.knownHostsLine },
      readyTimeoutMs: 5_000,
      keepaliveIntervalMs: 1_000,
      ...targetOverrides,
    },
    stop: async () => {
      await sshd.stop();
      await removeDir(dir);
    },
  };
}

// --------------------------------------------------------------------------- the PVE stand-in

export interface SshCli {
  child: ChildProcess;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

export interface PveFixture {
  dir: string;
  host: PveHost;
  key: KeyPair;
  target: SshTarget;
  /** One raw call of the forced command: exit code, stdout and stderr as the client sees them. */
  call(command: string, deadlineMs?: number): Promise<CommandOutput>;
  /** The OpenSSH client, with the host key pinned the same way. */
  sshCli(command: string, extraArgs?: string[]): SshCli;
  /** The qm stand-in's record of every call. */
  qmCalls(): Invocation[];
  /** qm calls of one verb that started (`stop`, `start`, …). */
  qmStarted(verb: string): Invocation[];
  log(): Promise<string[]>;
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Entries of the dispatcher's journal and forensics dirs (proof that nothing was recorded). */
  stateEntries(): string[];
  /** A fresh VM (new QEMU; the invocation log holds only the lab's own `qm start`) with the given pending config and faults. */
  resetVm(options?: { running?: boolean; pending?: Record<string, string>; faults?: string[] }): Promise<void>;
  stop(): Promise<void>;
}

export async function startPveFixture(prefix: string, options: Omit<PveHostOptions, 'dir' | 'clientPublicKey'> = {}): Promise<PveFixture> {
  const dir = await tempDir(prefix);
  const key = await generateKeyPair(dir, 'client');
  const host = await startPveHost({ dir, clientPublicKey: key.publicKey, ...options });
  const target = host.target(readFileSync(key.privateKeyPath), USER);
  const knownHostsFile = join(dir, 'known_hosts');
  await writeFile(knownHostsFile, `${host.sshd.knownHostsLine}\n`);
  const log = () => readHostLog(host);
  return {
    dir,
    host,
    key,
    target,
    call: (command, deadlineMs = 60_000) => runSshCommand(target, { command, deadlineMs }),
    sshCli(command, extraArgs = []) {
      const child = spawn(
        'ssh',
        [
          '-F', '/dev/null',
          '-i', key.privateKeyPath,
          '-p', String(host.sshd.port),
          '-o', 'BatchMode=yes',
          '-o', 'IdentitiesOnly=yes',
          '-o', 'StrictHostKeyChecking=yes',
          '-o', `UserKnownHostsFile=${knownHostsFile}`,
          '-o', 'LogLevel=ERROR',
          ...extraArgs,
          `${USER}@127.0.0.1`,
          command,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
        child.on('close', (code) => resolve({ code, stdout, stderr })),
      );
      return { child, done };
    },
    qmCalls: () => invocations(host.nodeRoot),
    qmStarted: (verb) => invocations(host.nodeRoot).filter((call) => call.started && call.argv[0] === verb),
    log,
    waitForLog: (pattern, timeoutMs = 15_000) =>
      waitFor(`host log line ${pattern}`, async () => (await log()).find((line) => pattern.test(line)), timeoutMs),
    stateEntries: () =>
      ['requests', 'forensics'].flatMap((sub) => {
        try {
          return readdirSync(join(host.stateDir, sub)).map((name) => `${sub}/${name}`);
        } catch {
          return [];
        }
      }),
    async resetVm({ running = true, pending = {}, faults = [] } = {}) {
      await host.recreateVm({ running, pending });
      for (const fault of faults) await setFault(host.nodeRoot, fault, true);
    },
    stop: async () => {
      await host.stop();
      await removeDir(dir);
    },
  };
}

/** Log lines as {event, verb, request, line}, in order. */
export function events(lines: string[]): { event: string; verb?: string; request?: string; line: string }[] {
  return lines.map((line) => ({
    event: /event=(\S+)/.exec(line)?.[1] ?? '',
    verb: /verb=(\S+)/.exec(line)?.[1],
    request: /request=(\S+)/.exec(line)?.[1],
    line,
  }));
}
