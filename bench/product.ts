/**
 * Starting and watching a child process: the product (bench/product-process.ts) or the
 * footprint baseline (bench/hello-process.ts), both as `node --import tsx <file>` so the pid we
 * watch is the process doing the work. Start time is measured from spawn to the first 200 on
 * /readyz; memory is VmRSS from /proc/<pid>/status.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { freePort } from '../lab/sshd.js';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(HERE, '..');
const PRODUCT_PROCESS = join(HERE, 'product-process.ts');
const HELLO_PROCESS = join(HERE, 'hello-process.ts');

export interface Child {
  pid: number;
  base: string;
  /** Spawn to the first 200 from /readyz. */
  startMs: number;
  logPath: string;
  /** Resident set size now, in MiB (NaN once gone). */
  rssMiB(): number;
  /** Peak resident set size so far (VmHWM), in MiB. */
  peakRssMiB(): number;
  stop(): Promise<void>;
}

function statusField(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}

async function waitReady(child: ChildProcess, url: string, started: number, logPath: string, deadlineMs: number): Promise<number> {
  const until = started + deadlineMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`process exited (${child.exitCode ?? child.signalCode}) before ready:\n${tail(logPath)}`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (response.status === 200) return performance.now() - started;
    } catch {
      // not listening yet
    }
    if (performance.now() > until) throw new Error(`not ready within ${deadlineMs} ms:\n${tail(logPath)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function launch(name: string, script: string, args: string[], env: NodeJS.ProcessEnv, port: number, logDir: string, deadlineMs: number): Promise<Child> {
  const logPath = join(logDir, `${name}.log`);
  const fd = openSync(logPath, 'a');
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const pid = child.pid as number;
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const gone = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 15_000))]);
    if (!gone) {
      child.kill('SIGKILL');
      await exited;
    }
  };
  try {
    const startMs = await waitReady(child, `${base}/readyz`, started, logPath, deadlineMs);
    return { pid, base, startMs, logPath, rssMiB: () => statusField(pid, 'VmRSS'), peakRssMiB: () => statusField(pid, 'VmHWM'), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A clean environment: nothing from this shell (API keys, TEMPORAL_ADDRESS, …) leaks in. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'LANG']) if (process.env[name] !== undefined) env[name] = process.env[name];
  return env;
}

export interface ProductOptions {
  name: string;
  config: (port: number) => Record<string, unknown>;
  /** The prebuilt bundle (as the image runs); absent: webpack bundles at start (as `npm start`). */
  bundlePath?: string;
  demoAgent?: { baseURL: string; apiKey: string };
  dir: string;
}

export async function startProduct(options: ProductOptions): Promise<Child> {
  const port = await freePort();
  const specPath = join(options.dir, `${options.name}.spec.json`);
  await writeFile(specPath, JSON.stringify({ config: options.config(port), ...(options.demoAgent ? { demoAgent: options.demoAgent } : {}) }), { mode: 0o600 });
  const env = childEnv();
  if (options.bundlePath) env.BREAKGLASS_WORKFLOW_BUNDLE = options.bundlePath;
  return launch(options.name, PRODUCT_PROCESS, [specPath], env, port, options.dir, 180_000);
}

export async function startHello(dir: string, name: string): Promise<Child> {
  const port = await freePort();
  return launch(name, HELLO_PROCESS, [String(port)], childEnv(), port, dir, 60_000);
}

/** Samples a process's RSS on an interval, each sample tagged with the current phase. */
export class RssSampler {
  readonly samples: { phase: string; mib: number }[] = [];
  private phase = 'idle';
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly child: Child) {}

  start(intervalMs = 200): void {
    this.timer = setInterval(() => {
      const mib = this.child.rssMiB();
      if (Number.isFinite(mib)) this.samples.push({ phase: this.phase, mib });
    }, intervalMs);
  }

  setPhase(phase: string): void {
    this.phase = phase;
  }

  of(phase: string): number[] {
    return this.samples.filter((sample) => sample.phase === phase).map((sample) => sample.mib);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
