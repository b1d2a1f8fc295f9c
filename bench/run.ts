/**
 * `npm run bench`: the product against the lab on this machine, every figure next to a raw
 * baseline measured in the same run. Prints a Markdown table and writes
 * bench/results/latest.json. Bounded: each phase checks the time budget before it starts and a
 * watchdog stops the run (cleaning up) if it overruns.
 *
 * Environment:
 *   BENCH_SCALE     repetition multiplier (default 1; 0.2 for a quick look)
 *   BENCH_BUDGET_S  time budget in seconds (default 420); a phase that would not fit is
 *                   skipped, and the watchdog stops the run 60 s after the budget
 *   BENCH_OUT       JSON output path (default bench/results/latest.json)
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { startMessagesApi } from '../lab/messages-api/server.js';
import { ConsoleApi } from './api.js';
import { STANDIN_MODEL, startLab, type BenchLab } from './lab.js';
import { describeMachine, machineLines } from './machine.js';
import { inProcessLoop, loopScript, workflowLoop } from './measure-agent.js';
import { measureConcurrency, measureCycle, measureEvents, measureStatus, type Context } from './measure-console.js';
import { marginalPerStep, measureHistory } from './measure-history.js';
import { bareKernelBootMs, guestBootMs, labStartMs } from './measure-lab.js';
import { REPO_ROOT, RssSampler, startHello, startProduct, type Child } from './product.js';
import { markdownTable, scaled, summarize, type Row, type Series } from './stats.js';

const scale = Number(process.env.BENCH_SCALE ?? '1');
if (!Number.isFinite(scale) || scale <= 0 || scale > 10) throw new Error('BENCH_SCALE: a number in (0, 10]');
const budgetS = Number(process.env.BENCH_BUDGET_S ?? '420');
if (!Number.isFinite(budgetS) || budgetS < 30) throw new Error('BENCH_BUDGET_S: at least 30');
const outPath = resolve(process.env.BENCH_OUT ?? join(REPO_ROOT, 'bench/results/latest.json'));

/** Repetitions at BENCH_SCALE=1; each phase's entry is roughly what it costs on 2 busy cores. */
const plan = {
  helloReps: scaled(3, scale, 2),
  coldStarts: scaled(2, scale, 1),
  warmStarts: scaled(3, scale, 2),
  statusReps: scaled(20, scale, 3),
  cycleReps: scaled(4, scale, 2),
  eventReps: scaled(40, scale, 5),
  concurrentSessions: 20,
  concurrentSteps: scaled(5, scale, 2),
  singleSteps: scaled(20, scale, 3),
  // 10, 100 and 1,000 operator messages; a quick run stops lower.
  historyCheckpoints: [10, 100, Math.min(1000, scaled(1000, scale, 200))],
  verbCheckpoints: [10, scaled(30, scale, 20)],
  loadReps: scaled(5, scale, 2),
  fullLoadReps: scaled(2, scale, 1),
  agentSessions: scaled(2, scale, 1),
  agentSteps: scaled(15, scale, 5),
  guestBoots: scaled(3, scale, 2),
  labStarts: scaled(2, scale, 1),
};

const started = performance.now();
const elapsedS = () => (performance.now() - started) / 1000;
const log = (line: string) => process.stderr.write(`[bench ${elapsedS().toFixed(0).padStart(3)} s] ${line}\n`);

const rows: Row[] = [];
const errors: { phase: string; message: string }[] = [];
const skipped: string[] = [];
const raw: Record<string, unknown> = { plan, scale };
const cleanups: (() => Promise<void>)[] = [];
let finished = false;

const series = (what: string, samples: number[], unit: Series['unit'] = 'ms', count?: number): Series => ({ what, unit, samples, ...(count !== undefined ? { count } : {}) });

/** Runs a phase if the budget allows (`costS`: a rough estimate); records failures and goes on. */
async function phase(name: string, costS: number, work: () => Promise<void>): Promise<void> {
  const left = budgetS - elapsedS();
  if (left < costS) {
    skipped.push(`${name} (needs ~${Math.round(costS)} s, ${Math.max(0, Math.round(left))} s left in the budget)`);
    log(`skip ${name}: not enough budget left`);
    return;
  }
  log(`${name}…`);
  const phaseStarted = performance.now();
  try {
    await work();
    log(`${name}: done in ${((performance.now() - phaseStarted) / 1000).toFixed(1)} s`);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    errors.push({ phase: name, message });
    log(`${name} FAILED: ${message}`);
  }
}

/** "command-failed: activity timed out (HEARTBEAT)" from a failed step's error. */
function failureKind(message: string): string {
  const match = /ended with (\S+?):.*"message":"([^"]*)"/.exec(message);
  return match ? `${match[1]}: ${match[2]}` : message.slice(0, 120);
}

async function cleanup(): Promise<void> {
  for (const step of cleanups.splice(0).reverse()) await step().catch((error: unknown) => log(`cleanup: ${(error as Error).message}`));
}

async function report(machine: ReturnType<typeof describeMachine>): Promise<string> {
  const lines = [
    `### Benchmark (\`npm run bench\`, BENCH_SCALE=${scale}), ${new Date().toISOString().slice(0, 10)}`,
    '',
    ...machineLines(machine, loadavg()),
    `- whole run: ${elapsedS().toFixed(0)} s; every baseline was measured in the same run on the same machine, interleaved with its measurement where both are repeated`,
    '',
    markdownTable(rows),
  ];
  if (skipped.length) lines.push('', `Skipped (time budget): ${skipped.join('; ')}`);
  if (errors.length) lines.push('', 'Failed:', ...errors.map((error) => `- ${error.phase}: ${error.message}`));
  const text = lines.join('\n');
  await mkdir(dirname(outPath), { recursive: true });
  await writeFile(
    outPath,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        machine,
        loadAtEnd: loadavg(),
        durationSeconds: Math.round(elapsedS()),
        scale,
        budgetSeconds: budgetS,
        rows: rows.map((row) => ({
          ...row,
          measuredSummary: summarize(row.measured.samples),
          baselineSummary: row.baseline ? summarize(row.baseline.samples) : null,
        })),
        skipped,
        errors,
        raw,
        markdown: text,
      },
      null,
      2,
    )}\n`,
  );
  return text;
}

async function main(): Promise<void> {
  const machine = describeMachine();
  log(`scale ${scale}, budget ${budgetS} s, ${machine.cpus} CPUs, load ${machine.loadAtStart.join(' ')}`);

  // The watchdog: whatever happens, the run ends (and cleans up) shortly after its budget.
  const watchdog = setTimeout(() => {
    void (async () => {
      if (finished) return;
      finished = true;
      log('watchdog: over budget, stopping');
      errors.push({ phase: 'watchdog', message: `the run exceeded its budget of ${budgetS} s by 60 s and was stopped` });
      process.stdout.write(`${await report(machine).catch(() => '')}\n`);
      await cleanup();
      process.exit(2);
    })();
  }, (budgetS + 60) * 1000);
  watchdog.unref();

  const lab: BenchLab = await startLab(log);
  cleanups.push(() => lab.teardown());
  const labDir = lab.dir;

  // ------------------------------------------------------------------ 6. start-up and idle RSS
  const helloStart: number[] = [];
  const helloRss: number[] = [];
  const idleRss: number[] = [];
  const warmStart: number[] = [];
  const coldStart: number[] = [];
  const coldIdleRss: number[] = [];
  const taskQueue = `bench-${randomBytes(4).toString('hex')}`;
  const productConfig = (port: number) => lab.productConfig(taskQueue, port);
  const settledRss = async (child: Child) => {
    await new Promise((r) => setTimeout(r, 2_000));
    const samples: number[] = [];
    for (let i = 0; i < 5; i++) {
      samples.push(child.rssMiB());
      await new Promise((r) => setTimeout(r, 200));
    }
    return summarize(samples).median;
  };

  await phase('6. footprint: baseline process (node --import tsx, HTTP 200)', plan.helloReps * 3, async () => {
    for (let i = 0; i < plan.helloReps; i++) {
      const hello = await startHello(labDir, `hello-${i}`);
      helloStart.push(hello.startMs);
      helloRss.push(await settledRss(hello));
      await hello.stop();
    }
  });
  await phase('6. footprint: product start, bundling workflows at start (npm start)', plan.coldStarts * 12, async () => {
    for (let i = 0; i < plan.coldStarts; i++) {
      const product = await startProduct({ name: `cold-${i}`, config: productConfig, dir: labDir });
      coldStart.push(product.startMs);
      coldIdleRss.push(await settledRss(product));
      await product.stop();
    }
  });
  const holder: { product?: Child } = {};
  await phase('6. footprint: product start with the prebuilt bundle (the image)', plan.warmStarts * 7, async () => {
    for (let i = 0; i < plan.warmStarts; i++) {
      const product = await startProduct({ name: `warm-${i}`, config: productConfig, bundlePath: lab.bundlePath, dir: labDir });
      warmStart.push(product.startMs);
      idleRss.push(await settledRss(product));
      if (i === plan.warmStarts - 1) holder.product = product;
      else await product.stop();
    }
  });
  const product = holder.product;
  if (!product) throw new Error('the product did not start: nothing more to measure');
  cleanups.push(() => product.stop());
  const sampler = new RssSampler(product);
  sampler.start();
  cleanups.push(async () => sampler.stop());
  const api = new ConsoleApi(product.base, lab.tokens);
  cleanups.push(async () => api.close());
  const ctx: Context = { lab, api, log };

  // ------------------------------------------------------------------------------ 1. status
  let entryToSse: number[] = [];
  await phase('1. status through the console vs bare ssh', 10 + plan.statusReps * 2.5, async () => {
    sampler.setPhase('session');
    const status = await measureStatus(ctx, plan.statusReps);
    raw.status = status;
    entryToSse = status.entryToSse;
    rows.push({
      id: '1a',
      title: '`status` through the console: POST /verbs → SSE `status` entry',
      measured: series('console', status.console),
      baseline: series('`ssh -i key pve status` (OpenSSH, same key, pinned host key)', status.bare),
    });
    rows.push({
      id: '1b',
      title: '`status` through the console (as row 1) vs the activity\'s own SSH call alone',
      measured: series('console', status.console),
      baseline: series('`pveStatus()` over ssh2 in-process (what the activity runs), no API, Temporal or SSE', status.direct),
    });
  });

  // ------------------------------------------------------------------------------- 2. cycle
  await phase('2. cycle through the console vs bare ssh sequence', plan.cycleReps * 12, async () => {
    sampler.setPhase('session');
    const cycle = await measureCycle(ctx, plan.cycleReps);
    raw.cycle = cycle;
    rows.push({
      id: '2',
      title: 'full `cycle` through the console: forensics, stop/start, checks, devvm SSH wait → SSE `devvm-wait`',
      measured: series('console', cycle.console),
      baseline: series('`ssh pve forensics <id>` + `ssh pve cycle <id>` + `ssh devvm true`', cycle.bare),
    });
  });

  // ------------------------------------------------------------------------ 4. event latency
  await phase('4. event latency', 5 + plan.eventReps * 0.7, async () => {
    sampler.setPhase('session');
    const events = await measureEvents(ctx, plan.eventReps);
    raw.events = events;
    rows.push({
      id: '4a',
      title: 'event latency: step acknowledged (POST /messages answered) → its SSE entry',
      measured: series('console SSE', events.ackToSse),
      baseline: series('one transcript query straight to the workflow (Temporal client)', events.query),
    });
    if (entryToSse.length) {
      rows.push({
        id: '4b',
        title: 'event latency: entry recorded by the workflow (`entry.at`) → SSE, `status` steps of row 1a',
        measured: series('console SSE', entryToSse),
        baseline: series('one transcript query straight to the workflow (Temporal client)', events.query),
      });
    }
  });

  // ------------------------------------------------------------------------- 7. concurrency
  await phase('7. concurrency: 20 sessions at once', 20 + plan.singleSteps * 1.2 + plan.concurrentSteps * 8, async () => {
    sampler.setPhase('session');
    const concurrency = await measureConcurrency(ctx, plan.concurrentSessions, plan.concurrentSteps, plan.singleSteps, (name) => sampler.setPhase(name));
    sampler.setPhase('after');
    raw.concurrency = concurrency;
    const n = concurrency.sessions;
    const failed = concurrency.manyFailures.length;
    const failures = failed ? `; ${failed} of ${failed + concurrency.many.length} steps FAILED, not counted: ${[...new Set(concurrency.manyFailures.map(failureKind))].join('; ')}` : '';
    rows.push({
      id: '7a',
      title: `devvm command step (\`uname -s\`) through the console, ${n} sessions at once${failures}`,
      measured: series(`${n} sessions`, concurrency.many),
      baseline: series('the same step, one session', concurrency.single),
    });
    rows.push({
      id: '7b',
      title: `step overhead (step latency − the activity's own SSH time), ${n} sessions at once`,
      measured: series(`${n} sessions`, concurrency.manyOverhead),
      baseline: series('one session', concurrency.singleOverhead),
    });
    rows.push({
      id: '7c',
      title: `bare \`ssh devvm …\` step (no console), ${n} at once — the machine's own slowdown`,
      measured: series(`${n} at once`, concurrency.manyBare),
      baseline: series('one at a time', concurrency.singleBare),
    });
  });

  // ---------------------------------------------------------------------------------- 3. agent
  // A second product process whose sessions have the (demo) agent, while the first one idles.
  await phase('3. agent orchestration overhead per step', 20 + plan.agentSessions * plan.agentSteps * 2, async () => {
    sampler.setPhase('agent');
    const apiKey = `sk-bench-${randomBytes(12).toString('hex')}`;
    const messages = await startMessagesApi({ apiKey, script: loopScript(() => plan.agentSteps), chunkDelayMs: 0 });
    cleanups.push(() => messages.stop());
    const agentProduct = await startProduct({
      name: 'agent',
      config: (port) => lab.productConfig(`${taskQueue}-agent`, port),
      bundlePath: lab.bundlePath,
      dir: labDir,
      demoAgent: { baseURL: messages.url, apiKey },
    });
    cleanups.push(() => agentProduct.stop());
    const agentApi = new ConsoleApi(agentProduct.base, lab.tokens);
    cleanups.push(async () => agentApi.close());
    // The model settings the product derives from its config (server/start.ts agentSetup).
    const model = { apiKey, baseURL: messages.url, model: STANDIN_MODEL, maxTokens: 2048, timeoutMs: 120_000 };
    const workflow: number[] = [];
    const inProcess: number[] = [];
    for (let session = 0; session < plan.agentSessions; session++) {
      // Alternate which goes first, as elsewhere.
      const order = session % 2 === 0 ? ['workflow', 'in-process'] : ['in-process', 'workflow'];
      for (const which of order) {
        if (which === 'workflow') workflow.push(...(await workflowLoop(lab, agentApi, messages, plan.agentSteps)));
        else inProcess.push(...(await inProcessLoop(lab, model, messages, plan.agentSteps)));
      }
    }
    raw.agent = { workflow, inProcess };
    rows.push({
      id: '3',
      title: 'agent step (model turn + one read-only `devvm_command`) through the workflow, Messages API stand-in answering at once',
      measured: series('Temporal workflow + activities (product process)', workflow),
      baseline: series('the same loop in-process: runAgentTurn + runDevvmCommand + conversation builder, no Temporal', inProcess),
    });
    await agentProduct.stop();
  });

  // ----------------------------------------------------------------------------- 5. history
  // The minimum: the bulk steps, the verb series and one load of the whole record.
const historyCost = 20 + Math.max(...plan.historyCheckpoints) * 0.03 + Math.max(...plan.verbCheckpoints) * 1.5 + 30;
  await phase('5. history growth and loading a long session', historyCost, async () => {
    sampler.setPhase('history');
    const history = await measureHistory(ctx, plan.historyCheckpoints, plan.verbCheckpoints, plan.loadReps, plan.fullLoadReps, () => budgetS - elapsedS());
    sampler.setPhase('after');
    raw.history = history;
    const messages = marginalPerStep(history.messages);
    const first = messages[0];
    for (const point of messages) {
      rows.push({
        id: '5',
        title: `history bytes per step, ${point.steps} operator messages (${point.events} events, ${point.runs} run${point.runs > 1 ? 's' : ''}; ${Math.round(point.totalPerStep)} B/step with the session's start)`,
        measured: series('bytes/step', [point.perStep], 'B', point.steps),
        baseline: first ? series('the 10-step figure', [first.perStep], 'B', first.steps) : null,
        single: true,
      });
    }
    const verbs = marginalPerStep(history.verbs);
    const firstVerb = verbs[0];
    for (const point of verbs) {
      rows.push({
        id: '5',
        title: `history bytes per step, ${point.steps} \`status\` verb requests (${point.events} events; ${Math.round(point.totalPerStep)} B/step with the session's start)`,
        measured: series('bytes/step', [point.perStep], 'B', point.steps),
        baseline: firstVerb ? series('the 10-step figure', [firstVerb.perStep], 'B', firstVerb.steps) : null,
        single: true,
      });
    }
    const steps = Math.max(...plan.historyCheckpoints);
    const runs = `${history.load.runs} run${history.load.runs > 1 ? 's' : ''}`;
    rows.push({
      id: '5',
      title: `console opens the ${steps}-step session as the UI does: GET /api/sessions/:id, then SSE catch-up to the newest entry (current run: ${history.load.viewEntries} entries)`,
      measured: series('console', history.load.consoleView),
      baseline: series('the same queries via server/sessions.ts in-process (no HTTP, auth, JSON)', history.load.directView),
    });
    rows.push({
      id: '5',
      title: `console loads the whole ${steps}-step record (${history.load.entries} entries, ${runs}): GET /api/sessions/:id + every /transcript page`,
      measured: series('console', history.load.consolePaging),
      baseline: series('the same queries via server/sessions.ts in-process (no HTTP, auth, JSON)', history.load.directFull),
    });
  });

  sampler.stop();
  raw.rss = sampler.samples;
  const peak = product.peakRssMiB();
  await product.stop();

  const helloRssSeries = series('baseline process RSS, idle', helloRss, 'MiB');
  const helloStartSeries = series('baseline process: spawn → first HTTP 200', helloStart);
  if (idleRss.length) rows.push({ id: '6a', title: 'product RSS, idle (server + worker, one process)', measured: series('idle', idleRss, 'MiB'), baseline: helloRssSeries });
  const during = sampler.of('session');
  if (during.length) rows.push({ id: '6b', title: 'product RSS during single-session work (rows 1, 2, 4 and the single session of 7)', measured: series('sampled every 200 ms', during, 'MiB'), baseline: helloRssSeries });
  const concurrent = sampler.of('concurrent');
  if (concurrent.length) {
    rows.push({ id: '6c', title: `product RSS with ${plan.concurrentSessions} sessions at once (row 7a; peak VmHWM over the run ${peak.toFixed(0)} MiB)`, measured: series('sampled every 200 ms', concurrent, 'MiB'), baseline: helloRssSeries });
  }
  if (warmStart.length) rows.push({ id: '6d', title: 'product start → /readyz 200, prebuilt workflow bundle (as the image runs), Temporal already up', measured: series('product', warmStart), baseline: helloStartSeries });
  if (coldStart.length) {
    rows.push({
      id: '6e',
      title: `product start → /readyz 200, workflows bundled at start (as \`npm start\`; idle RSS then ${summarize(coldIdleRss).median.toFixed(0)} MiB)`,
      measured: series('product', coldStart),
      baseline: helloStartSeries,
    });
  }

  // ------------------------------------------------------------------ 8. the lab on real QEMU
  const guestBoot: number[] = [];
  const bareBoot: number[] = [];
  await phase('8. lab devvm: guest boot to sshd vs the bare kernel', plan.guestBoots * 20, async () => {
    for (let i = 0; i < plan.guestBoots; i++) {
      bareBoot.push(await bareKernelBootMs());
      guestBoot.push(await guestBootMs());
    }
    rows.push({
      id: '8a',
      title: 'lab devvm: `qm start` of the real guest → its sshd banner (budget ≤ 10 s under TCG)',
      measured: series('guest', guestBoot),
      baseline: series('the same kernel alone, same accelerator, to its no-root panic', bareBoot),
    });
  });
  await phase('8. npm start (lab, warm cache) to "lab is up"', plan.labStarts * 45, async () => {
    const starts: number[] = [];
    for (let i = 0; i < plan.labStarts; i++) starts.push(await labStartMs());
    rows.push({
      id: '8b',
      title: '`npm start` lab (tools cached, UI built, healthy scenario) → "lab is up" (budget ≤ 20 s)',
      measured: series('lab', starts),
      baseline: guestBoot.length ? series('row 8a: the guest boot alone', guestBoot) : null,
    });
  });

  rows.sort((a, b) => a.id.localeCompare(b.id, 'en', { numeric: true }));
  finished = true;
  clearTimeout(watchdog);
  const text = await report(machine);
  await cleanup();
  process.stdout.write(`${text}\n\nJSON: ${outPath}\n`);
  log(`done in ${elapsedS().toFixed(0)} s`);
  if (errors.length) process.exitCode = 1;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: cleaning up`);
    finished = true;
    void cleanup().finally(() => process.exit(130));
  });
}

main().catch(async (error: unknown) => {
  log(`fatal: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  finished = true;
  await cleanup();
  process.exit(1);
});
