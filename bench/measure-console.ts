/**
 * Measurements through the console's HTTP API, each interleaved with its raw baseline so both
 * see the same machine load:
 *   1. status: POST /verbs {status} until the SSE `status` entry arrives vs `ssh … status`;
 *   2. cycle: POST /verbs {cycle} until the SSE `devvm-wait` entry vs `ssh … forensics`,
 *      `ssh … cycle`, `ssh devvm true`;
 *   4. event latency: an acknowledged step (POST /messages answered) until its SSE entry vs a
 *      direct transcript query round trip through the Temporal client;
 *   7. concurrency: a devvm command step in 1 session vs in 20 sessions at once (and the bare
 *      `ssh devvm …` at the same concurrency).
 */
import { performance } from 'node:perf_hooks';
import { wrapWithTimeout } from '../activities/devvm/command.js';
import { pveStatus } from '../activities/pve/verbs.js';
import { transcriptQuery } from '../workflows/messages.js';
import type { TranscriptEntry } from '../workflows/session-types.js';
import { waitForItem, type ConsoleApi } from './api.js';
import type { BenchLab } from './lab.js';
import { runSsh, runSshOk } from './ssh-cli.js';
import { SseClient } from './sse.js';

export interface Context {
  lab: BenchLab;
  api: ConsoleApi;
  log: (line: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let requestCounter = 0;
/** Host request ids: a letter first, 8-128 of [A-Za-z0-9._-]; unique per call. */
const hostRequestId = (suffix: string) => `bench${process.pid}x${Date.now().toString(36)}x${++requestCounter}${suffix}`;

/** Runs every task once, rotating which goes first (so none always runs on a warmer machine). */
async function interleaved(rep: number, ...tasks: (() => Promise<void>)[]): Promise<void> {
  for (let i = 0; i < tasks.length; i++) await (tasks[(rep + i) % tasks.length] as () => Promise<void>)();
}

async function withSession<T>(ctx: Context, description: string, work: (id: string, sse: SseClient) => Promise<T>): Promise<T> {
  const id = await ctx.api.createSession(description);
  const sse = await ctx.api.events(id);
  try {
    return await work(id, sse);
  } finally {
    await sse.close();
    await ctx.api.end(id);
  }
}

// ------------------------------------------------------------------------------ 1. status

export interface StatusResult {
  console: number[];
  bare: number[];
  /** The activity's own call (pveStatus over ssh2), made in-process: the console minus orchestration. */
  direct: number[];
  /** POST answered (the request is in the workflow's history). */
  ack: number[];
  /** SSE arrival (wall clock) minus the entry's own `at` (workflow time of the record). */
  entryToSse: number[];
}

export async function measureStatus(ctx: Context, reps: number, warmup = 2): Promise<StatusResult> {
  const result: StatusResult = { console: [], bare: [], direct: [], ack: [], entryToSse: [] };
  await withSession(ctx, 'bench: status', async (id, sse) => {
    for (let rep = 0; rep < warmup + reps; rep++) {
      const keep = rep >= warmup;
      await interleaved(
        rep,
        async () => {
          const from = sse.mark();
          const started = performance.now();
          const posted = await ctx.api.verb(id, 'status');
          const done = await waitForItem(sse, posted.body.key, ['status'], from, 60_000);
          if (!keep) return;
          result.console.push(done.at - started);
          result.ack.push(posted.at - started);
          result.entryToSse.push(done.wall - done.entry.at);
        },
        async () => {
          const run = await runSshOk(ctx.lab.pveSsh, 'status');
          if (!/"ok":true/.test(run.stdout)) throw new Error(`bare status: ${run.stdout.slice(0, 200)}`);
          if (keep) result.bare.push(run.ms);
        },
        async () => {
          const started = performance.now();
          await pveStatus(ctx.lab.pveTarget, { deadlineMs: 30_000 });
          if (keep) result.direct.push(performance.now() - started);
        },
      );
    }
  });
  return result;
}

// ------------------------------------------------------------------------------- 2. cycle

export interface CycleResult {
  console: number[];
  bare: number[];
}

export async function measureCycle(ctx: Context, reps: number): Promise<CycleResult> {
  const result: CycleResult = { console: [], bare: [] };
  await withSession(ctx, 'bench: cycle', async (id, sse) => {
    for (let rep = 0; rep < reps; rep++) {
      await interleaved(
        rep,
        async () => {
          const from = sse.mark();
          const started = performance.now();
          const posted = await ctx.api.verb(id, 'cycle');
          const done = await waitForItem(sse, posted.body.key, ['devvm-wait'], from, 180_000);
          const elapsed = done.at - started;
          const entries = sse.events.slice(from).map((event) => SseClient.entry(event)).filter((entry) => entry?.key === posted.body.key) as unknown as TranscriptEntry[];
          const verb = entries.find((entry) => entry.type === 'verb-result');
          if (!verb || verb.type !== 'verb-result' || !verb.result.ok) throw new Error(`console cycle did not succeed: ${JSON.stringify(verb ?? entries.map((e) => e.type))}`);
          if (!entries.some((entry) => entry.type === 'forensics')) throw new Error('console cycle: no forensics entry');
          if (done.entry.type !== 'devvm-wait' || !done.entry.reachable) throw new Error('console cycle: devvm not reachable afterwards');
          result.console.push(elapsed);
        },
        async () => {
          const started = performance.now();
          await runSshOk(ctx.lab.pveSsh, `forensics ${hostRequestId('f')}`, 180_000);
          const cycle = await runSshOk(ctx.lab.pveSsh, `cycle ${hostRequestId('m')}`, 300_000);
          if (!/"ok":true/.test(cycle.stdout)) throw new Error(`bare cycle: ${cycle.stdout.slice(0, 200)}`);
          await runSshOk(ctx.lab.devvmSsh, 'true');
          result.bare.push(performance.now() - started);
        },
      );
    }
  });
  return result;
}

// ------------------------------------------------------------------------ 4. event latency

export interface EventResult {
  /** POST /messages answered → its SSE entry arrived. */
  ackToSse: number[];
  /** A transcript query round trip straight to the workflow (Temporal client). */
  query: number[];
}

export async function measureEvents(ctx: Context, reps: number): Promise<EventResult> {
  const result: EventResult = { ackToSse: [], query: [] };
  await withSession(ctx, 'bench: events', async (id, sse) => {
    const handle = ctx.lab.client.workflow.getHandle(id);
    for (let rep = 0; rep < reps + 1; rep++) {
      // A random phase against the server's poll timer, as real steps have.
      await sleep(Math.random() * 300);
      const from = sse.mark();
      const posted = await ctx.api.message(id, `bench event ${rep}`);
      const seq = posted.body.seq;
      const event = await sse.waitFor((candidate) => candidate.event === 'entry' && SseClient.entry(candidate)?.seq === seq, 30_000, from);
      const started = performance.now();
      const page = await handle.query(transcriptQuery, { cursor: seq, limit: 1 });
      const queryMs = performance.now() - started;
      if (page.entries[0]?.seq !== seq) throw new Error(`direct query did not return entry ${seq}`);
      if (rep === 0) continue; // warm-up
      result.ackToSse.push(event.at - posted.at);
      result.query.push(queryMs);
    }
  });
  return result;
}

// ------------------------------------------------------------------------- 7. concurrency

export interface ConcurrencyResult {
  single: number[];
  /** Step latency minus the activity's own SSH time (command-result durationMs): orchestration. */
  singleOverhead: number[];
  singleBare: number[];
  many: number[];
  manyOverhead: number[];
  manyBare: number[];
  /** Steps of the concurrent run that did not complete (they are not in the latency figures). */
  manyFailures: string[];
  sessions: number;
}

const STEP_COMMAND = 'uname -s';
const STEP_TIMEOUT_S = 15;

async function consoleStep(ctx: Context, id: string, sse: SseClient): Promise<{ ms: number; overhead: number }> {
  const from = sse.mark();
  const started = performance.now();
  const posted = await ctx.api.command(id, STEP_COMMAND, STEP_TIMEOUT_S);
  const done = await waitForItem(sse, posted.body.key, ['command-result'], from, 120_000);
  if (done.entry.type !== 'command-result' || done.entry.result.exitCode !== 0) throw new Error(`console step: ${JSON.stringify(done.entry).slice(0, 200)}`);
  const ms = done.at - started;
  return { ms, overhead: ms - done.entry.result.durationMs };
}

async function bareStep(ctx: Context): Promise<number> {
  // The same remote command line the product sends (timeout wrapper included).
  const run = await runSsh(ctx.lab.devvmSsh, wrapWithTimeout(STEP_COMMAND, STEP_TIMEOUT_S));
  if (run.code !== 0) throw new Error(`bare step: exit ${run.code}: ${run.stderr.slice(0, 200)}`);
  return run.ms;
}

export async function measureConcurrency(ctx: Context, sessions: number, steps: number, singleReps: number, onPhase: (phase: string) => void): Promise<ConcurrencyResult> {
  const result: ConcurrencyResult = { single: [], singleOverhead: [], singleBare: [], many: [], manyOverhead: [], manyBare: [], manyFailures: [], sessions };
  await withSession(ctx, 'bench: one session', async (id, sse) => {
    for (let rep = 0; rep < singleReps + 1; rep++) {
      await interleaved(
        rep,
        async () => {
          const step = await consoleStep(ctx, id, sse);
          if (rep === 0) return;
          result.single.push(step.ms);
          result.singleOverhead.push(step.overhead);
        },
        async () => {
          const ms = await bareStep(ctx);
          if (rep > 0) result.singleBare.push(ms);
        },
      );
    }
  });

  const opened: { id: string; sse: SseClient }[] = [];
  try {
    for (let i = 0; i < sessions; i++) {
      const id = await ctx.api.createSession(`bench: concurrent ${i + 1}`);
      opened.push({ id, sse: await ctx.api.events(id) });
    }
    onPhase('concurrent');
    await Promise.all(
      opened.map(async ({ id, sse }) => {
        for (let n = 0; n < steps; n++) {
          // Under load a step may fail (e.g. an activity heartbeat timeout): count it, go on.
          const step = await consoleStep(ctx, id, sse).catch((error: unknown) => {
            result.manyFailures.push(error instanceof Error ? error.message : String(error));
            return null;
          });
          if (!step) continue;
          result.many.push(step.ms);
          result.manyOverhead.push(step.overhead);
        }
      }),
    );
    onPhase('concurrent-bare');
    await Promise.all(
      opened.map(async () => {
        for (let step = 0; step < steps; step++) result.manyBare.push(await bareStep(ctx));
      }),
    );
  } finally {
    for (const { id, sse } of opened) {
      await sse.close();
      await ctx.api.end(id);
    }
  }
  return result;
}
