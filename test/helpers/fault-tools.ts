/**
 * Tools for the fault and CLI suites: a worker in its own process that can be SIGKILLed, a
 * watcher that acts on a PVE host log line the moment it is written, the lab qm's invocation
 * log, the real `temporal` / `tctl` binaries, and history helpers.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { invocations, type Invocation } from '../../lab/pve/pve-node.mjs';
import { REPO_ROOT, type PveHost } from '../../lab/pve-host.js';
import { toolPath } from '../../lab/temporal-dev.js';
import { transcriptQuery } from '../../workflows/messages.js';
import type { TranscriptEntry } from '../../workflows/session-types.js';
import { startSessionEnv, workflowBundle, type SessionEnv, type SessionEnvOptions } from './session-env.js';

export const WORKER_SCRIPT = join(REPO_ROOT, 'test/helpers/fault-worker-process.ts');

/** Fault tests: a dead worker is noticed in seconds, retries come quickly. */
export const FAST_TIMING = { heartbeatTimeoutSeconds: 4, retryInitialIntervalSeconds: 0.5, retryMaximumIntervalSeconds: 2 };

// ------------------------------------------------------------------------ worker processes

/** Writes the workflow bundle once, so each worker (re)start skips webpack. */
export async function writeBundleFile(dir: string): Promise<string> {
  const path = join(dir, 'workflow-bundle.js');
  writeFileSync(path, (await workflowBundle()).code);
  return path;
}

export interface WorkerProcess {
  child: ChildProcess;
  pid: number;
  /** SIGKILL, synchronously: no shutdown, no goodbye to the server. */
  killNow(): void;
  /** Resolves once the process is gone. */
  exited: Promise<void>;
  stop(): Promise<void>;
  output(): string;
}

/** Starts test/helpers/fault-worker-process.ts (node + tsx, no npx: the pid is the worker's own). */
export async function spawnWorkerProcess(env: SessionEnv, taskQueue: string, bundlePath: string, readyTimeoutMs = 30_000): Promise<WorkerProcess> {
  const settingsPath = join(env.dir, `worker-${taskQueue}.json`);
  writeFileSync(settingsPath, JSON.stringify(env.workerSettings(taskQueue)));
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER_SCRIPT, settingsPath, bundlePath], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker not ready within ${readyTimeoutMs} ms:\n${output}`)), readyTimeoutMs);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('worker ready')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`worker exited before it was ready:\n${output}`));
    });
  });
  const pid = child.pid as number;
  return {
    child,
    pid,
    exited,
    output: () => output,
    killNow: () => {
      if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL');
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A session env whose workers run as their own (killable) processes, all stopped at teardown. */
export interface FaultEnv {
  env: SessionEnv;
  workerFor(taskQueue: string): Promise<WorkerProcess>;
  teardown(): Promise<void>;
}

export async function startFaultEnv(options: SessionEnvOptions = {}): Promise<FaultEnv> {
  const env = await startSessionEnv(options);
  const bundlePath = await writeBundleFile(env.dir);
  const workers: WorkerProcess[] = [];
  return {
    env,
    workerFor: async (taskQueue) => {
      const worker = await spawnWorkerProcess(env, taskQueue, bundlePath);
      workers.push(worker);
      return worker;
    },
    teardown: async () => {
      for (const worker of workers) await worker.stop();
      await env.teardown();
    },
  };
}

// ---------------------------------------------------------------------------- the host log

export interface LogMatch {
  line: string;
  /** The whole log as it was right after the action ran. */
  logAfterAction: string[];
  /** The lab qm's invocations right after the action ran. */
  callsAfterAction: Invocation[];
}

/**
 * Runs `action` synchronously the moment a new line of the PVE host log matches `pattern`
 * (inotify, with a 10 ms poll as a fallback), then snapshots the log and the qm invocation log.
 * Only lines written after the call count.
 */
export function onHostLogLine(host: PveHost, pattern: RegExp, action: (line: string) => void, timeoutMs = 60_000): { matched: Promise<LogMatch>; cancel(): void } {
  const file = host.logFile;
  let offset = statSync(file).size;
  let partial = '';
  let done = false;
  let watcher: FSWatcher | undefined;
  let poll: NodeJS.Timeout | undefined;
  let timer: NodeJS.Timeout | undefined;
  const cleanup = () => {
    done = true;
    watcher?.close();
    clearInterval(poll);
    clearTimeout(timer);
  };
  const matched = new Promise<LogMatch>((resolve, reject) => {
    const check = () => {
      if (done) return;
      const size = statSync(file).size;
      if (size <= offset) return;
      const fd = openSync(file, 'r');
      const buffer = Buffer.alloc(size - offset);
      readSync(fd, buffer, 0, buffer.length, offset);
      closeSync(fd);
      offset = size;
      const text = partial + buffer.toString('utf8');
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!pattern.test(line)) continue;
        action(line);
        cleanup();
        resolve({ line, logAfterAction: readFileSync(file, 'utf8').split('\n').filter(Boolean), callsAfterAction: invocations(host.nodeRoot) });
        return;
      }
    };
    watcher = watch(file, check);
    poll = setInterval(check, 10);
    timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no host log line matched ${pattern} within ${timeoutMs} ms`));
    }, timeoutMs);
    check();
  });
  return { matched, cancel: cleanup };
}

export function hostLog(host: PveHost): string[] {
  return readFileSync(host.logFile, 'utf8').split('\n').filter(Boolean);
}

/** Escapes a host request id for use in a RegExp. */
export function re(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ------------------------------------------------------------------------- qm invocations

/**
 * Started qm calls (one per invocation) from index `from` of the invocation log on. The log
 * also holds the lab's own calls (the `qm start` that brought VM 102 up): tests count from an
 * index taken before the session acts.
 */
export function startedCalls(host: PveHost, from = 0): Invocation[] {
  return invocations(host.nodeRoot).slice(from).filter((call) => call.started);
}

export function mutatingVerbsRun(host: PveHost, from = 0): string[] {
  return startedCalls(host, from)
    .map((call) => call.argv[0] ?? '')
    .filter((verb) => ['reset', 'stop', 'start'].includes(verb));
}

export function invocationCount(host: PveHost): number {
  return invocations(host.nodeRoot).length;
}

/**
 * Drops the SSH connection that carries the dispatcher front process `frontPid` (the pid the
 * host log prints), by SIGKILLing the sshd processes above it: the client sees the connection
 * close mid-command while the detached run on the host goes on.
 */
export function dropSshConnectionOf(frontPid: number, listenerPid: number): number[] {
  const killed: number[] = [];
  let pid = parentOf(frontPid);
  while (pid !== null && pid > 1 && pid !== listenerPid) {
    const name = commOf(pid);
    if (!name?.startsWith('sshd')) break;
    killed.push(pid);
    pid = parentOf(pid);
  }
  for (const target of killed) process.kill(target, 'SIGKILL');
  return killed;
}

function statOf(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
}
function parentOf(pid: number): number | null {
  const stat = statOf(pid);
  return stat ? Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) : null;
}
function commOf(pid: number): string | null {
  const stat = statOf(pid);
  return stat ? stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) : null;
}

// ------------------------------------------------------------------------ the CLI binaries

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `temporal` or `tctl` binary against the env's dev server (namespace default). */
export function cli(env: { temporal: { address: string } }, tool: 'temporal' | 'tctl', args: string[], timeoutMs = 30_000): Promise<CliResult> {
  const address = env.temporal.address;
  const full = tool === 'temporal' ? [...args, '--address', address, '--namespace', 'default', '--color', 'never'] : ['--address', address, '--namespace', 'default', ...args];
  return new Promise((resolve) => {
    execFile(
      toolPath(tool),
      full,
      { timeout: timeoutMs, env: { ...process.env, TEMPORAL_CLI_ADDRESS: address, NO_COLOR: '1' } },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

/** Like cli(), but throws with the tool's own words when it fails. */
export async function cliOk(env: { temporal: { address: string } }, tool: 'temporal' | 'tctl', args: string[], timeoutMs?: number): Promise<string> {
  const result = await cli(env, tool, args, timeoutMs);
  if (result.code !== 0) throw new Error(`${tool} ${args.join(' ')} exited ${result.code}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

// ---------------------------------------------------------------------------- transcripts

export type Entry<T extends TranscriptEntry['type']> = Extract<TranscriptEntry, { type: T }>;

export function entriesOf<T extends TranscriptEntry['type']>(entries: TranscriptEntry[], type: T): Entry<T>[] {
  return entries.filter((entry): entry is Entry<T> => entry.type === type);
}

/** The transcript of one specific run (also a closed or continued-as-new one). */
export async function runTranscript(client: Client, workflowId: string, runId: string): Promise<TranscriptEntry[]> {
  const handle = client.workflow.getHandle(workflowId, runId);
  const entries: TranscriptEntry[] = [];
  let cursor: number | undefined;
  for (;;) {
    const page = await handle.query(transcriptQuery, { ...(cursor !== undefined ? { cursor } : {}), limit: 200 });
    entries.push(...page.entries);
    if (!page.more) return entries;
    cursor = page.nextCursor ?? undefined;
  }
}

/** Polls until `check` returns a value (not undefined) or the deadline passes. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string, intervalMs = 200): Promise<T> {
  const until = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < until) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${lastError ? ` (last error: ${String(lastError)})` : ''}`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
