/**
 * 5. History growth and loading a long session.
 *
 * Bulk steps are operator messages sent as the console sends them (the `operatorMessage`
 * update), straight through the Temporal client: a thousand of them through the API would run
 * into its per-operator rate limit, and each is the same update either way. A second, shorter
 * series uses `status` verb requests through the API (an update, an activity and its result).
 * History size is Temporal's own accounting (describe → historySizeBytes), summed over every
 * run of the session (the workflow continues-as-new when Temporal suggests it).
 */
import { performance } from 'node:perf_hooks';
import type { Client } from '@temporalio/client';
import proto from '@temporalio/proto';
import { Sessions } from '../server/sessions.js';
import { operatorMessageUpdate, stateQuery } from '../workflows/messages.js';
import { DEFAULT_POLICY } from '../workflows/session-types.js';
import { waitForItem } from './api.js';
import type { Context } from './measure-console.js';
import { SseClient } from './sse.js';

export interface HistoryPoint {
  steps: number;
  bytes: number;
  events: number;
  runs: number;
}

export interface HistoryResult {
  messages: HistoryPoint[];
  verbs: HistoryPoint[];
  /** Seconds to send the bulk steps (for the record). */
  bulkSeconds: number;
  load: {
    /** GET /api/sessions/:id + SSE catch-up (the UI's way in). */
    consoleView: number[];
    /** The same queries through server/sessions.ts in-process. */
    directView: number[];
    viewEntries: number;
    /** GET /api/sessions/:id + every /transcript page of every run. */
    consolePaging: number[];
    /** The same queries through server/sessions.ts in-process. */
    directFull: number[];
    entries: number;
    runs: number;
    /** Each /transcript request of the last full load: where it started, what it returned, how long it took. */
    pages: { cursor: number; entries: number; ms: number }[];
  };
}

/** Bytes and events of every run of a workflow id (visibility lists closed runs). */
export async function historyOf(client: Client, id: string): Promise<Omit<HistoryPoint, 'steps'>> {
  const runIds = new Set<string>();
  runIds.add((await client.workflow.getHandle(id).describe()).runId);
  for await (const execution of client.workflow.list({ query: `WorkflowId = '${id}'` })) runIds.add(execution.runId);
  let bytes = 0;
  let events = 0;
  for (const runId of runIds) {
    const handle = client.workflow.getHandle(id, runId);
    const description = await handle.describe();
    events += description.historyLength;
    if (description.historySize !== undefined) bytes += description.historySize;
    else bytes += proto.temporal.api.history.v1.History.encode(await handle.fetchHistory()).finish().length;
  }
  return { bytes, events, runs: runIds.size };
}

/** One operator message; a retry only when the update raced a continue-as-new (never accepted). */
async function sendMessage(handle: ReturnType<Client['workflow']['getHandle']>, step: number): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await handle.executeUpdate(operatorMessageUpdate, { args: [{ text: `bench step ${step}: still looking at the devvm`, operator: 'bench-1' }] });
      return;
    } catch (error) {
      if (attempt >= 5 || !/complet|abort|not found/i.test((error as Error).message)) throw error;
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
}

async function waitUntilQueryable(client: Client, id: string): Promise<void> {
  const until = Date.now() + 60_000;
  for (;;) {
    try {
      await client.workflow.getHandle(id).query(stateQuery);
      return;
    } catch (error) {
      if (Date.now() > until) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The console loading a session the way the UI does: GET /api/sessions/:id, then SSE from its cursor until the newest entry. */
async function consoleView(ctx: Context, id: string): Promise<number> {
  const started = performance.now();
  const view = await ctx.api.session(id);
  const newest = view.body.state.transcript.nextSeq - 1;
  const page = view.body.transcript;
  if (page.entries.some((entry) => entry.seq === newest)) return performance.now() - started;
  const sse = new SseClient(`${ctx.api.base}/api/sessions/${id}/events?from=${page.nextCursor ?? 1}`, ctx.api.headers());
  try {
    await sse.open();
    const last = await sse.waitFor((event) => SseClient.entry(event)?.seq === newest, 120_000);
    return last.at - started;
  } finally {
    await sse.close();
  }
}

/**
 * What the UI's way in reads, with the server's own query code (server/sessions.ts) called
 * in-process: state and the first page together, then pages from its cursor to the newest
 * entry (as the SSE catch-up does). The same Temporal queries, without HTTP, auth or JSON.
 */
async function directView(sessions: Sessions, id: string): Promise<{ ms: number; entries: number }> {
  const started = performance.now();
  const [state, first] = await Promise.all([sessions.state(id), sessions.transcript(id, undefined, 200)]);
  const newest = state.transcript.nextSeq - 1;
  let entries = first.entries.length;
  let last = first.entries.at(-1)?.seq ?? 0;
  while (last < newest) {
    const page = await sessions.transcript(id, last + 1, 200);
    const end = page.entries.at(-1);
    if (!end) break;
    entries += page.entries.length;
    last = end.seq;
  }
  return { ms: performance.now() - started, entries };
}

/** The whole record the way the API pages it, with server/sessions.ts called in-process. */
async function directFull(sessions: Sessions, id: string): Promise<{ ms: number; entries: number }> {
  const started = performance.now();
  const [state] = await Promise.all([sessions.state(id), sessions.transcript(id, undefined, 200)]);
  const newest = state.transcript.nextSeq - 1;
  let cursor = 1;
  let entries = 0;
  while (cursor <= newest) {
    const page = await sessions.transcript(id, cursor, 200);
    const last = page.entries.at(-1);
    if (!last) break;
    entries += page.entries.length;
    cursor = last.seq + 1;
  }
  return { ms: performance.now() - started, entries };
}

/** GET /api/sessions/:id, then every transcript page through the API, earlier runs included. */
async function consolePaging(ctx: Context, id: string): Promise<{ ms: number; entries: number; pages: { cursor: number; entries: number; ms: number }[] }> {
  const started = performance.now();
  const view = await ctx.api.session(id);
  const newest = view.body.state.transcript.nextSeq - 1;
  const pages: { cursor: number; entries: number; ms: number }[] = [];
  let cursor = 1;
  let entries = 0;
  while (cursor <= newest) {
    const response = await ctx.api.transcript(id, cursor, 200);
    const page = response.body;
    pages.push({ cursor, entries: page.entries.length, ms: Math.round(response.ms) });
    const last = page.entries[page.entries.length - 1];
    if (!last) break;
    entries += page.entries.length;
    cursor = last.seq + 1;
  }
  return { ms: performance.now() - started, entries, pages };
}

export async function measureHistory(
  ctx: Context,
  checkpoints: number[],
  verbCheckpoints: number[],
  loadReps: number,
  fullLoadReps: number,
  budgetLeftS: () => number,
): Promise<HistoryResult> {
  const { client } = ctx.lab;
  const result: HistoryResult = {
    messages: [],
    verbs: [],
    bulkSeconds: 0,
    load: { consoleView: [], directView: [], viewEntries: 0, consolePaging: [], directFull: [], entries: 0, runs: 0, pages: [] },
  };

  // Operator messages: the bulk series.
  const id = await ctx.api.createSession('bench: history (operator messages)');
  try {
    await waitUntilQueryable(client, id);
    result.messages.push({ steps: 0, ...(await historyOf(client, id)) });
    const handle = client.workflow.getHandle(id);
    const bulkStarted = performance.now();
    const last = Math.max(...checkpoints);
    for (let step = 1; step <= last; step++) {
      await sendMessage(handle, step);
      if (checkpoints.includes(step)) {
        result.messages.push({ steps: step, ...(await historyOf(client, id)) });
        ctx.log(`history: ${step} messages → ${result.messages.at(-1)?.bytes} B in ${result.messages.at(-1)?.runs} run(s)`);
      }
    }
    result.bulkSeconds = (performance.now() - bulkStarted) / 1000;

    // Opening it as the console UI does (cheap: the current run only), against the same
    // queries made by the server's own code in-process.
    const sessions = new Sessions(client, { taskQueue: 'bench-unused', target: { devvm: 'devvm', vmid: 102 }, policy: DEFAULT_POLICY, namespace: 'default' });
    for (let rep = 0; rep < loadReps + 1; rep++) {
      const view = await consoleView(ctx, id);
      const direct = await directView(sessions, id);
      if (rep === 0) continue; // warm-up
      result.load.consoleView.push(view);
      result.load.directView.push(direct.ms);
      result.load.viewEntries = direct.entries;
    }
    // The whole record, earlier runs included: each page of a closed run is a query the worker
    // answers by replaying that run, so these are slow and repeated less.
    for (let rep = 0; rep < fullLoadReps; rep++) {
      if (rep > 0 && budgetLeftS() < 60) break; // a slow machine: one load is still a figure
      const paging = await consolePaging(ctx, id);
      const direct = await directFull(sessions, id);
      // Seqs are contiguous from 1: every entry of every run must have come back.
      const expected = (await sessions.state(id)).transcript.nextSeq - 1;
      if (paging.entries !== expected || direct.entries !== expected) throw new Error(`the API paged ${paging.entries} entries, sessions.ts ${direct.entries}, the session holds ${expected}`);
      result.load.directFull.push(direct.ms);
      result.load.consolePaging.push(paging.ms);
      result.load.pages = paging.pages;
      result.load.entries = paging.entries;
    }
    result.load.runs = (await historyOf(client, id)).runs;
  } finally {
    await ctx.api.end(id);
  }

  // status verbs through the API: an update, an activity (SSH to the PVE host) and its result each.
  const verbs = await ctx.api.createSession('bench: history (status verbs)');
  const sse = await ctx.api.events(verbs);
  try {
    await waitUntilQueryable(client, verbs);
    result.verbs.push({ steps: 0, ...(await historyOf(client, verbs)) });
    const last = Math.max(...verbCheckpoints);
    for (let step = 1; step <= last; step++) {
      const from = sse.mark();
      const posted = await ctx.api.verb(verbs, 'status');
      await waitForItem(sse, posted.body.key, ['status'], from, 60_000);
      if (verbCheckpoints.includes(step)) result.verbs.push({ steps: step, ...(await historyOf(client, verbs)) });
    }
  } finally {
    await sse.close();
    await ctx.api.end(verbs);
  }
  return result;
}

/** Bytes per step beyond the empty session's history. */
export function marginalPerStep(points: HistoryPoint[]): { steps: number; perStep: number; totalPerStep: number; events: number; runs: number }[] {
  const base = points.find((point) => point.steps === 0);
  if (!base) return [];
  return points
    .filter((point) => point.steps > 0)
    .map((point) => ({ steps: point.steps, perStep: (point.bytes - base.bytes) / point.steps, totalPerStep: point.bytes / point.steps, events: point.events, runs: point.runs }));
}
