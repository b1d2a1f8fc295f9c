import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../server/app.js';
import { createAuthenticator } from '../server/auth.js';
import { loadConfig, type Config } from '../server/config.js';
import { SessionEvents } from '../server/events.js';
import { LiveBus } from '../server/live-bus.js';
import { Sessions } from '../server/sessions.js';
import { OPENING_LOOK_KEY } from '../workflows/session.js';
import { DEFAULT_POLICY, type TranscriptEntry } from '../workflows/session-types.js';
import { startSessionEnv, uniqueQueue, type SessionEnv } from './helpers/session-env.js';
import { expectOrdered } from './helpers/order.js';

const ALICE = 'alice-token-0123456789abcdef';
const BOB = 'bob-token-0123456789abcdefgh';
const sha = (text: string) => createHash('sha256').update(text).digest('hex');

const endpoints = {
  devvm: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
  pve: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
};

let env: SessionEnv;
let queue: string;
const apps: FastifyInstance[] = [];

async function serve(auth: Record<string, unknown>, configEnv: Record<string, string> = {}, mutationRateLimit?: number, logLines?: string[]): Promise<{ base: string; config: Config; events: SessionEvents }> {
  const config = loadConfig({ env: configEnv, file: { ...endpoints, auth } });
  const sessions = new Sessions(env.client, { taskQueue: queue, target: { devvm: 'devvm', vmid: 102 }, policy: DEFAULT_POLICY, namespace: 'default' });
  const events = new SessionEvents(sessions, new LiveBus());
  const app = await buildApp({
    sessions,
    events,
    auth: createAuthenticator(config),
    readiness: async () => ({ temporal: true, worker: true }),
    temporalUiUrl: 'http://127.0.0.1:8233',
    namespace: 'default',
    agent: { mode: 'off', reason: 'test' },
    heartbeatMs: 500,
    ...(mutationRateLimit ? { mutationRateLimit } : {}),
    ...(logLines ? { logger: { level: 'info', stream: { write: (line: string) => logLines.push(line) } } } : {}),
  });
  apps.push(app);
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  return { base, config, events };
}

const json = (token: string | null, body?: unknown, method = 'POST'): RequestInit => ({
  method,
  headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
  ...(body === undefined ? {} : { body: JSON.stringify(body) }),
});

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('condition not met in time');
}

async function entries(base: string, id: string): Promise<TranscriptEntry[]> {
  const response = await fetch(`${base}/api/sessions/${id}/transcript?limit=200`, { headers: { authorization: `Bearer ${ALICE}` } });
  return ((await response.json()) as { entries: TranscriptEntry[] }).entries;
}

beforeAll(async () => {
  env = await startSessionEnv();
  queue = uniqueQueue('api');
  await env.startWorker(queue);
}, 120_000);

afterAll(async () => {
  for (const app of apps) await app.close();
  await env?.teardown();
});

describe('HTTP API with token auth', () => {
  let base: string;
  let events: SessionEvents;
  beforeAll(async () => {
    ({ base, events } = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }, { operator: 'bob', sha256: sha(BOB) }] }));
  });

  it('when probed, then /healthz and /readyz answer and every response carries a strict CSP', async () => {
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(health.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(health.headers.get('x-frame-options')).toBe('DENY');
    expect((await (await fetch(`${base}/readyz`)).json()) as object).toMatchObject({ ready: true });
  });

  it('when a session is opened, then it answers at once and the session looks at the VM by itself (a status the operator did not ask for)', async () => {
    const started = Date.now();
    const response = await fetch(`${base}/api/sessions`, json(ALICE, { description: 'ssh to the devvm hangs' }));
    const answeredAt = Date.now();
    expect(response.status).toBe(200);
    const { id } = (await response.json()) as { id: string };
    const all = await until(async () => {
      const got = await entries(base, id);
      return got.some((e) => e.type === 'status') ? got : undefined;
    });
    const request = all.find((e) => e.type === 'request') as { item: { key: string; verb: string; requestedBy: { kind: string } } };
    expect(request.item).toMatchObject({ key: OPENING_LOOK_KEY, verb: 'status', requestedBy: { kind: 'system' } });
    // Answered when the session started, not when its status came back.
    const status = all.find((e) => e.type === 'status') as { at: number };
    expect(answeredAt).toBeLessThan(status.at);
    console.log(`api: POST /api/sessions answered in ${answeredAt - started} ms; the first status was recorded ${status.at - started} ms after the request`);
  });

  it('when the list is filtered by outcome, operator, time or searched by words or id, then visibility narrows it; each row shows the VM at the last look', async () => {
    const marker = `zq${Date.now().toString(36)}`;
    const open = async (token: string, description: string) =>
      ((await (await fetch(`${base}/api/sessions`, json(token, { description }))).json()) as { id: string }).id;
    const first = await open(ALICE, `Builds stuck ${marker} since 03:10, disk full?`);
    const second = await open(BOB, `SSH hangs ${marker}`);
    const list = async (query: string) => {
      const response = await fetch(`${base}/api/sessions?${query}`, { headers: { authorization: `Bearer ${ALICE}` } });
      expect(response.status, query).toBe(200);
      return ((await response.json()) as { sessions: { id: string; vmState: string | null; status: string }[] }).sessions;
    };
    const ids = async (query: string) => (await list(query)).map((row) => row.id).filter((id) => id === first || id === second).sort();
    const both = [first, second].sort();
    // Visibility is eventually consistent: wait until both are listed with their first look.
    await until(async () => {
      const rows = (await list(`q=${marker}`)).filter((row) => row.vmState !== null);
      return rows.length === 2 ? rows : undefined;
    });
    expect((await list(`q=${marker}`)).map((row) => row.vmState)).toEqual(['running', 'running']);
    expect(await ids(`q=${encodeURIComponent(`STUCK ${marker}`)}`)).toEqual([first]);
    expect(await ids(`q=${encodeURIComponent(`stuck hangs ${marker}`)}`)).toEqual([]);
    expect(await ids(`q=${first.split('-').at(-1)}`)).toEqual([first]);
    expect(await ids(`q=${first}`)).toEqual([first]);
    expect(await ids(`q=${marker}&operator=bob`)).toEqual([second]);
    expect(await ids(`q=${marker}&since=1h&outcome=open`)).toEqual(both);

    await fetch(`${base}/api/sessions/${second}/end`, json(BOB, {}));
    await until(async () => ((await ids(`q=${marker}&outcome=ended`)).length === 1 ? true : undefined));
    expect(await ids(`q=${marker}&outcome=ended`)).toEqual([second]);
    expect(await ids(`q=${marker}&outcome=open`)).toEqual([first]);
    // Open sessions first, whatever their age.
    const rows = await list(`q=${marker}`);
    expect(rows.map((row) => row.id)).toEqual([first, second]);

    const bad: [string, RegExp][] = [
      ['outcome=bogus', /outcome/],
      ['since=2h', /since/],
      [`operator=${encodeURIComponent("bob' OR WorkflowId != '")}`, /operator/],
      ['q=' + 'x'.repeat(201), /q/],
      ['sort=asc', /additional/],
    ];
    for (const [query, pattern] of bad) {
      const response = await fetch(`${base}/api/sessions?${query}`, { headers: { authorization: `Bearer ${ALICE}` } });
      expect(response.status, query).toBe(400);
      expect(((await response.json()) as { message: string }).message, query).toMatch(pattern);
    }
  }, 60_000);

  it('when unauthenticated or with a wrong token, then 401 names the problem', async () => {
    const anonymous = await fetch(`${base}/api/sessions`);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toMatchObject({ error: 'unauthenticated' });
    const wrong = await fetch(`${base}/api/sessions`, { headers: { authorization: 'Bearer not-a-real-token-123456' } });
    expect(wrong.status).toBe(401);
  });

  it('when a POST is retried with the same Idempotency-Key, then it answers as the first time and nothing happens twice; another key or operator is a new request', async () => {
    const post = (token: string, path: string, body: unknown, key?: string) =>
      fetch(`${base}${path}`, { ...json(token, body), headers: { ...(json(token, body).headers as Record<string, string>), ...(key ? { 'idempotency-key': key } : {}) } });
    const opened = await Promise.all([1, 2].map(async () => ((await (await post(ALICE, '/api/sessions', { description: 'retried open' }, 'open-once-0001')).json()) as { id: string }).id));
    expect(opened[0]).toBe(opened[1]);
    const id = opened[0]!;
    const other = ((await (await post(ALICE, '/api/sessions', { description: 'another open' }, 'open-once-0002')).json()) as { id: string }).id;
    expect(other).not.toBe(id);

    const first = (await (await post(ALICE, `/api/sessions/${id}/verbs`, { verb: 'status', reason: 'retried' }, 'verb-once-0001')).json()) as { key: string };
    const again = (await (await post(ALICE, `/api/sessions/${id}/verbs`, { verb: 'status', reason: 'retried' }, 'verb-once-0001')).json()) as { key: string };
    expect(again.key).toBe(first.key);
    const bobs = (await (await post(BOB, `/api/sessions/${id}/verbs`, { verb: 'status', reason: 'same key, other operator' }, 'verb-once-0001')).json()) as { key: string };
    expect(bobs.key).not.toBe(first.key);
    const all = await until(async () => {
      const got = await entries(base, id);
      return got.filter((e) => e.type === 'status').length >= 3 ? got : undefined;
    });
    // The session's own first look, then the two requests (the repeat is not a third).
    expect(all.filter((e) => e.type === 'request').map((e) => (e as { item: { key: string } }).item.key)).toEqual([OPENING_LOOK_KEY, first.key, bobs.key]);

    const bad = await post(ALICE, `/api/sessions/${id}/verbs`, { verb: 'status', reason: 'x' }, 'no spaces allowed');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toMatch(/idempotency-key/);
    const docs = (await (await fetch(`${base}/api/docs`, { headers: { authorization: `Bearer ${ALICE}` } })).json()) as { paths: Record<string, Record<string, { parameters?: { name: string; in: string }[] }>> };
    expect(docs.paths['/api/sessions/{id}/verbs']?.post?.parameters?.some((p) => p.name === 'idempotency-key' && p.in === 'header')).toBe(true);
  });

  it('when a body gives a key twice (the last would win), then 400 names it and nothing is requested', async () => {
    const { id } = (await (await fetch(`${base}/api/sessions`, json(ALICE, { description: 'duplicate keys' }))).json()) as { id: string };
    for (const body of ['{"verb":"status","verb":"cycle","reason":"x"}', '{"verb":"status","reason":"x","\\u0076erb":"cycle"}']) {
      const response = await fetch(`${base}/api/sessions/${id}/verbs`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${ALICE}` }, body });
      expect(response.status, body).toBe(400);
      expect(((await response.json()) as { message: string }).message).toBe('body: the key "verb" is given twice');
    }
    // Only the session's own first look was requested.
    expect((await entries(base, id)).filter((e) => e.type === 'request' && (e as { item: { key: string } }).item.key !== OPENING_LOOK_KEY)).toEqual([]);
    await fetch(`${base}/api/sessions/${id}/end`, json(ALICE, {}));
  });

  it('when a body is bad, then 400 names the field', async () => {
    const cases: [string, unknown, RegExp][] = [
      ['/api/sessions', {}, /description/],
      ['/api/sessions', { description: 'x', extra: 1 }, /additional/],
    ];
    for (const [path, body, pattern] of cases) {
      const response = await fetch(`${base}${path}`, json(ALICE, body));
      expect(response.status, path).toBe(400);
      const error = (await response.json()) as { error: string; message: string };
      expect(error.error).toBe('bad_request');
      expect(error.message).toMatch(pattern);
    }
  });

  it('when an operator drives a session, then every route does its job and records who acted', async () => {
    const created = await fetch(`${base}/api/sessions`, json(ALICE, { description: 'devvm does not answer ssh' }));
    expect(created.status).toBe(200);
    const { id } = (await created.json()) as { id: string };
    expect(id).toMatch(/^bg-\d{8}-\d{4}-[a-z2-9]{4}$/);

    const badVerb = await fetch(`${base}/api/sessions/${id}/verbs`, json(ALICE, { verb: 'reboot', reason: 'x' }));
    expect(badVerb.status).toBe(400);
    expect(((await badVerb.json()) as { message: string }).message).toMatch(/verb/);
    const badCommand = await fetch(`${base}/api/sessions/${id}/commands`, json(ALICE, { command: 'uptime', timeoutSeconds: 0 }));
    expect(badCommand.status).toBe(400);
    expect(((await badCommand.json()) as { message: string }).message).toMatch(/timeoutSeconds/);

    const message = await fetch(`${base}/api/sessions/${id}/messages`, json(ALICE, { text: 'what is wrong?' }));
    expect(message.status).toBe(200);
    const status = await fetch(`${base}/api/sessions/${id}/verbs`, json(ALICE, { verb: 'status', reason: 'look first' }));
    expect(await status.json()).toMatchObject({ approvalId: null });
    const command = await fetch(`${base}/api/sessions/${id}/commands`, json(ALICE, { command: 'echo api-was-here; exit 3', timeoutSeconds: 10 }));
    expect(command.status).toBe(200);
    const done = await until(async () => {
      const all = await entries(base, id);
      return all.some((e) => e.type === 'command-result') && all.some((e) => e.type === 'status') ? all : undefined;
    });
    const result = done.find((e): e is Extract<TranscriptEntry, { type: 'command-result' }> => e.type === 'command-result')!;
    expect(result.result.exitCode).toBe(3);
    expect(result.result.stdout).toContain('api-was-here');
    expect(done.find((e) => e.type === 'operator-message')).toMatchObject({ operator: 'alice' });

    // Two-person policy: alice's cycle waits for bob.
    const policy = await fetch(`${base}/api/sessions/${id}/policy`, json(ALICE, { mutatingVerbs: 'two-person' }, 'PUT'));
    expect(policy.status).toBe(200);
    const cycle = (await (await fetch(`${base}/api/sessions/${id}/verbs`, json(ALICE, { verb: 'cycle', reason: 'I/O stalled' }))).json()) as { approvalId: string };
    expect(cycle.approvalId).toBeTruthy();
    const selfApprove = await fetch(`${base}/api/sessions/${id}/approvals/${cycle.approvalId}`, json(ALICE, { decision: 'approve' }));
    expect(selfApprove.status).toBe(422);
    expect(((await selfApprove.json()) as { message: string }).message).toMatch(/operator/);
    const unknown = await fetch(`${base}/api/sessions/${id}/approvals/a-nope`, json(BOB, { decision: 'approve' }));
    expect(unknown.status).toBe(422);
    expect(((await unknown.json()) as { message: string }).message).toMatch(/approvalId/);
    const approve = await fetch(`${base}/api/sessions/${id}/approvals/${cycle.approvalId}`, json(BOB, { decision: 'approve', reason: 'agreed' }));
    expect(approve.status).toBe(200);
    const afterCycle = await until(async () => {
      const all = await entries(base, id);
      return all.some((e) => e.type === 'devvm-wait') ? all : undefined;
    }, 60_000);
    expect(afterCycle.find((e) => e.type === 'approval')).toMatchObject({ operator: 'bob', decision: 'approve' });
    const types = afterCycle.map((e) => e.type);
    expectOrdered({ forensics: types.lastIndexOf('forensics'), 'verb-result': types.indexOf('verb-result') });

    const view = (await (await fetch(`${base}/api/sessions/${id}`, { headers: { authorization: `Bearer ${BOB}` } })).json()) as { state: { lastVerb: string; vm: { pid: number } } };
    expect(view.state.lastVerb).toBe('cycle');

    expect((await fetch(`${base}/api/sessions/${id}/pause`, json(BOB, { reason: 'hands off' }))).status).toBe(200);
    expect((await fetch(`${base}/api/sessions/${id}/resume`, json(BOB, {}))).status).toBe(200);

    const report = await fetch(`${base}/api/sessions/${id}/report`, { headers: { authorization: `Bearer ${ALICE}` } });
    expect(report.status).toBe(200);
    expect(report.headers.get('content-type')).toContain('text/markdown');
    const markdown = await report.text();
    const forensics = afterCycle.find((e): e is Extract<TranscriptEntry, { type: 'forensics' }> => e.type === 'forensics')!;
    expect(markdown).toContain(forensics.result.forensics.sha256);
    expect(markdown).toMatch(/cycle\*\* succeeded.*pid \d+ → \d+/);
    expect(markdown).toContain('bob** approved');
    expect(markdown).toMatch(/exit 3/);

    const list = (await (await fetch(`${base}/api/sessions`, { headers: { authorization: `Bearer ${ALICE}` } })).json()) as { sessions: { id: string }[] };
    expect(list.sessions.map((s) => s.id)).toContain(id);

    expect((await fetch(`${base}/api/sessions/${id}/end`, json(ALICE, { reason: 'fixed' }))).status).toBe(200);
    expect((await fetch(`${base}/api/sessions/bg-nope/pause`, json(ALICE, {}))).status).toBe(404);
  });

  it('when a client listens to events, then entries stream with ids and Last-Event-ID resumes without gaps', async () => {
    const { id } = (await (await fetch(`${base}/api/sessions`, json(ALICE, { description: 'events' }))).json()) as { id: string };
    const read = async (headers: Record<string, string>, wanted: (text: string) => boolean) => {
      const controller = new AbortController();
      const response = await fetch(`${base}/api/sessions/${id}/events`, { headers: { authorization: `Bearer ${ALICE}`, ...headers }, signal: controller.signal });
      expect(response.headers.get('content-type')).toContain('text/event-stream');
      const reader = response.body!.getReader();
      let text = '';
      const deadline = Date.now() + 20_000;
      while (!wanted(text) && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      controller.abort();
      return text;
    };
    const ids = (text: string) => [...text.matchAll(/^id: (\d+)\nevent: entry$/gm)].map((match) => Number(match[1]));
    await fetch(`${base}/api/sessions/${id}/messages`, json(ALICE, { text: 'first' }));
    const first = await read({}, (text) => text.includes('"first"') && text.includes('event: state'));
    // Every entry so far (the opening, its first look, the message), numbered from 1 without gaps.
    expect(ids(first)).toEqual(ids(first).map((_, i) => i + 1));
    const firstId = Number(/^id: (\d+)\nevent: entry\ndata: .*"first"/m.exec(first)?.[1]);
    expect(firstId).toBeGreaterThan(1);
    await fetch(`${base}/api/sessions/${id}/messages`, json(ALICE, { text: 'second' }));
    const resumed = await read({ 'last-event-id': String(firstId) }, (text) => text.includes('"second"'));
    expect(resumed).not.toContain('"first"');
    // Resumed right after the last id seen: nothing before it again, nothing after it missed.
    expect(ids(resumed)[0]).toBe(firstId + 1);
    expect(ids(resumed)).toEqual(ids(resumed).map((_, i) => firstId + 1 + i));
    expect(resumed).toMatch(/^id: \d+\nevent: entry\ndata: .*"second"/m);
    await fetch(`${base}/api/sessions/${id}/end`, json(ALICE, {}));
  });

  it('when a watched session is idle, then nothing asks the workflow; an entry still arrives at once; when it ends the stream says closed, and a closed session is served without a query', async () => {
    const { id } = (await (await fetch(`${base}/api/sessions`, json(ALICE, { description: 'pushed events' }))).json()) as { id: string };
    await until(async () => ((await entries(base, id)).some((e) => e.type === 'status') ? true : undefined));
    const controller = new AbortController();
    const response = await fetch(`${base}/api/sessions/${id}/events`, { headers: { authorization: `Bearer ${ALICE}` }, signal: controller.signal });
    const reader = response.body!.getReader();
    let text = '';
    let ended = false;
    const readUntil = async (wanted: (t: string) => boolean, ms: number) => {
      const deadline = Date.now() + ms;
      while (!wanted(text) && !ended && Date.now() < deadline) {
        const next = await Promise.race([reader.read(), new Promise<null>((r) => setTimeout(() => r(null), Math.max(1, deadline - Date.now())))]);
        if (next === null) break;
        if (next.done) ended = true;
        else text += new TextDecoder().decode(next.value);
      }
      return wanted(text);
    };
    expect(await readUntil((t) => t.includes('event: state'), 10_000)).toBe(true);
    // The watcher's first read of the history (from the start) is followed by one look at the
    // workflow; after that, idle: it waits on Temporal's history long poll, no query for 3 s.
    let settled = -1;
    while (settled !== events.queries) {
      settled = events.queries;
      await new Promise((r) => setTimeout(r, 1_000));
    }
    const idleFrom = events.queries;
    await new Promise((r) => setTimeout(r, 3_000));
    expect(events.queries - idleFrom).toBe(0);
    const sent = Date.now();
    await fetch(`${base}/api/sessions/${id}/messages`, json(ALICE, { text: 'pushed, not polled' }));
    expect(await readUntil((t) => t.includes('pushed, not polled'), 10_000)).toBe(true);
    console.log(`api: an entry reached the SSE client ${Date.now() - sent} ms after the POST, with ${events.queries - idleFrom} queries`);
    expect(events.queries - idleFrom).toBeLessThanOrEqual(4);

    await fetch(`${base}/api/sessions/${id}/end`, json(ALICE, {}));
    expect(await readUntil((t) => t.includes('event: closed'), 15_000)).toBe(true);
    expect(await readUntil(() => false, 3_000)).toBe(false);
    expect(ended).toBe(true);
    controller.abort();

    // Read again: from memory (its run id checked with a describe), no query, closed at once.
    const before = events.queries;
    const again = await fetch(`${base}/api/sessions/${id}/events`, { headers: { authorization: `Bearer ${ALICE}` } });
    const all = await again.text();
    expect(all).toContain('pushed, not polled');
    expect(all).toContain('event: closed');
    expect(events.queries).toBe(before);
  }, 60_000);

  it('when an operator cancels a session, then the record names them and the session closes cancelled', async () => {
    const { id } = (await (await fetch(`${base}/api/sessions`, json(ALICE, { description: 'wrong VM' }))).json()) as { id: string };
    expect((await fetch(`${base}/api/sessions/${id}/cancel`, json(BOB, { reason: 'opened by mistake' }))).status).toBe(200);
    const closed = await until(async () => {
      const all = await entries(base, id);
      return all.some((e) => e.type === 'session-ended') ? all : undefined;
    });
    expect(closed.find((e) => e.type === 'cancel-requested')).toMatchObject({ operator: 'bob', reason: 'opened by mistake' });
    expect(closed.find((e) => e.type === 'session-ended')).toMatchObject({ outcome: 'cancelled', operator: 'bob' });
  });

  it('when the OpenAPI document is fetched, then it needs a login and lists the routes', async () => {
    expect((await fetch(`${base}/api/docs`)).status).toBe(401);
    const docs = (await (await fetch(`${base}/api/docs`, { headers: { authorization: `Bearer ${ALICE}` } })).json()) as { openapi: string; paths: Record<string, unknown> };
    expect(docs.openapi).toMatch(/^3\./);
    expect(Object.keys(docs.paths)).toEqual(expect.arrayContaining(['/api/sessions', '/api/sessions/{id}/verbs', '/api/sessions/{id}/events', '/api/sessions/{id}/approvals/{approvalId}']));
  });
});

describe('login', () => {
  it('when the token is too short, too long or has other characters, then the answer is a sentence for a person, not a schema path', async () => {
    const { base } = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }] });
    for (const token of ['labtok123', 'x'.repeat(300), 'has spaces in the middle of it']) {
      const answer = await fetch(`${base}/api/login`, json(null, { token }));
      expect(answer.status).toBe(401);
      const body = (await answer.json()) as { message: string };
      expect(body.message).toBe('token: not valid (a breakglass token is 16 to 256 letters, digits and . _ ~ + / = -; paste it whole)');
      expect(body.message).not.toMatch(/body\/|must NOT/);
    }
    // Pasted with a trailing newline: still the operator's token.
    expect((await fetch(`${base}/api/login`, json(null, { token: `${ALICE}\n` }))).status).toBe(200);
  });
});

describe('cookie sessions and CSRF', () => {
  it('when a cookie-authenticated POST comes cross-site, then it is refused; same-origin is accepted', async () => {
    const { base } = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }] });
    const login = await fetch(`${base}/api/login`, json(null, { token: ALICE }));
    expect(login.status).toBe(200);
    const cookie = login.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly; SameSite=Strict/);
    // On loopback (the lab) plain HTTP works; reached by any other name, the cookie is Secure
    // even when TLS ends at a proxy in front.
    expect(cookie).not.toMatch(/Secure/);
    const remote = await new Promise<string>((resolve, reject) => {
      const request = httpRequest(`${base}/api/login`, { method: 'POST', headers: { host: 'breakglass.example.com', 'content-type': 'application/json' } }, (response) => resolve(String(response.headers['set-cookie'])));
      request.on('error', reject);
      request.end(JSON.stringify({ token: ALICE }));
    });
    expect(remote).toMatch(/; Secure/);
    const jar = cookie.split(';')[0]!;
    const origin = base;
    const post = (headers: Record<string, string>) =>
      fetch(`${base}/api/sessions`, { method: 'POST', headers: { 'content-type': 'application/json', cookie: jar, ...headers }, body: JSON.stringify({ description: 'csrf' }) });
    expect((await post({ origin: 'https://evil.example' })).status).toBe(403);
    expect((await post({ origin, 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await post({})).status).toBe(403);
    const ok = await post({ origin, 'sec-fetch-site': 'same-origin' });
    expect(ok.status).toBe(200);
    const { id } = (await ok.json()) as { id: string };
    await fetch(`${base}/api/sessions/${id}/end`, json(ALICE, {}));
    expect((await fetch(`${base}/api/me`, { headers: { cookie: jar } })).status).toBe(200);
    expect((await fetch(`${base}/api/me`, { headers: { cookie: 'breakglass_session=forged.signature' } })).status).toBe(401);
  });

  it('when the operator logs out, then that cookie stops working at once (not 12 hours later), and a new login works', async () => {
    const { base } = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }] });
    const cookieOf = async () => (await fetch(`${base}/api/login`, json(null, { token: ALICE }))).headers.get('set-cookie')!.split(';')[0]!;
    const jar = await cookieOf();
    const me = (cookie: string) => fetch(`${base}/api/me`, { headers: { cookie } });
    expect((await me(jar)).status).toBe(200);
    const out = await fetch(`${base}/api/logout`, { method: 'POST', headers: { cookie: jar } });
    expect(out.headers.get('set-cookie')).toMatch(/Max-Age=0/);
    const after = await me(jar);
    expect(after.status).toBe(401);
    expect(((await after.json()) as { message: string }).message).toContain('logged out');
    expect((await me(await cookieOf())).status).toBe(200);
  });

  it('when someone guesses tokens at the login, then after 10 attempts a minute from one address it is refused with 429', async () => {
    const { base } = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }] });
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await fetch(`${base}/api/login`, json(null, { token: `guess-${String(i).padStart(12, '0')}` }))).status);
    expect(statuses.slice(0, 10)).toEqual(Array(10).fill(401));
    expect(statuses.slice(10)).toEqual([429, 429]);
    // Even the right token waits out the window: guessing gains nothing.
    const right = await fetch(`${base}/api/login`, json(null, { token: ALICE }));
    expect(right.status).toBe(429);
    expect(((await right.json()) as { error: string }).error).toBe('rate_limited');
  });
});

describe('logs', () => {
  it('when an operator acts on a session, then a JSON log line names the session and the operator, and no token', async () => {
    const lines: string[] = [];
    const { base } = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }] }, {}, undefined, lines);
    await fetch(`${base}/api/sessions/bg-20261124-0000-abcd/pause`, json(ALICE, {}));
    const api = lines.map((line) => JSON.parse(line) as Record<string, unknown>).find((line) => line.msg === 'api');
    expect(api).toMatchObject({ session: 'bg-20261124-0000-abcd', operator: 'alice', method: 'POST', route: '/api/sessions/:id/pause' });
    expect(lines.join('\n')).not.toContain(ALICE);
  });
});

describe('rate limits', () => {
  it('when one operator floods mutating routes, then they get 429 while another operator from the same address is unaffected', async () => {
    const { base } = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }, { operator: 'bob', sha256: sha(BOB) }] }, {}, 3);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await fetch(`${base}/api/sessions/bg-none/pause`, json(ALICE, {}))).status);
    expect(statuses.slice(0, 3)).not.toContain(429);
    expect(statuses[3]).toBe(429);
    expect((await fetch(`${base}/api/sessions/bg-none/pause`, json(BOB, {}))).status).not.toBe(429);
  });
});

describe('proxy auth', () => {
  const SECRET = 'proxy-shared-secret-api-test-0123456789';
  let dir: string;
  let secretFile: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bg-api-proxy-'));
    secretFile = join(dir, 'secret');
    await writeFile(secretFile, `${SECRET}\n`);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));
  const proxyAuth = (trustedCidrs: string[]) => ({ mode: 'proxy', proxy: { trustedCidrs, secretFile }, operators: ['alice'] });

  it('when the identity header comes from an untrusted address, then 401 even with the right secret; an operator off the allowlist gets 403', async () => {
    const untrusted = await serve(proxyAuth(['10.0.0.0/8']));
    const forged = await fetch(`${untrusted.base}/api/me`, { headers: { 'x-forwarded-user': 'alice', 'x-breakglass-proxy-secret': SECRET } });
    expect(forged.status).toBe(401);
    expect(((await forged.json()) as { message: string }).message).toMatch(/proxy/);

    const trusted = await serve(proxyAuth(['127.0.0.1/32']));
    const me = await fetch(`${trusted.base}/api/me`, { headers: { 'x-forwarded-user': 'alice', 'x-breakglass-proxy-secret': SECRET } });
    expect(me.status).toBe(200);
    expect(await me.json()).toMatchObject({ operator: 'alice', authMode: 'proxy' });
    expect((await fetch(`${trusted.base}/api/me`, { headers: { 'x-forwarded-user': 'mallory', 'x-breakglass-proxy-secret': SECRET } })).status).toBe(403);
    expect((await fetch(`${trusted.base}/api/me`, { headers: { 'x-breakglass-proxy-secret': SECRET } })).status).toBe(401);
  });

  it("when the trusted address sends no secret or a wrong one, then 401 naming the header; the secret appears in no response and no log line", async () => {
    const logLines: string[] = [];
    const { base } = await serve(proxyAuth(['127.0.0.1/32']), {}, undefined, logLines);
    const seen: string[] = [];
    const ask = async (headers: Record<string, string>, path = '/api/me') => {
      const response = await fetch(`${base}${path}`, { headers });
      const body = await response.text();
      seen.push(body, JSON.stringify([...response.headers]));
      return { status: response.status, body };
    };
    for (const secret of [undefined, '', 'wrong', SECRET.slice(0, -1), `${SECRET}x`, SECRET.toUpperCase(), `${SECRET}, ${SECRET}`]) {
      const refused = await ask({ 'x-forwarded-user': 'alice', ...(secret === undefined ? {} : { 'x-breakglass-proxy-secret': secret }) });
      expect({ status: refused.status, body: JSON.parse(refused.body) as unknown }, JSON.stringify(secret)).toEqual({
        status: 401,
        body: { error: 'unauthenticated', message: "x-breakglass-proxy-secret: the proxy's shared secret is missing or wrong" },
      });
    }
    // The secret is the proxy's credential, not a client's: as a bearer token it is nothing.
    expect((await ask({ authorization: `Bearer ${SECRET}` })).status).toBe(401);
    expect((await ask({ 'x-forwarded-user': 'alice', 'x-breakglass-proxy-secret': SECRET })).status).toBe(200);
    expect((await ask({ 'x-forwarded-user': 'alice', 'x-breakglass-proxy-secret': SECRET }, '/api/sessions')).status).toBe(200);
    expect(logLines.length).toBeGreaterThan(0);
    for (const text of [...seen, ...logLines]) expect(text).not.toContain(SECRET);
  });
});

describe('lab auth', () => {
  it('when the lab token is used from loopback, then the operator is the lab operator', async () => {
    const labToken = 'fixed-lab-token-for-scripts-42';
    const { base } = await serve({ mode: 'lab' }, { BREAKGLASS_LAB_TOKEN: labToken });
    const me = await fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${labToken}` } });
    expect(await me.json()).toMatchObject({ operator: 'lab-operator', authMode: 'lab' });
    expect((await fetch(`${base}/api/me`, { headers: { authorization: 'Bearer wrong-lab-token-000000' } })).status).toBe(401);
  });

  it('when lab auth is configured on a non-loopback address, then the config is refused naming the key', () => {
    expect(() => loadConfig({ env: {}, file: { ...endpoints, listen: { host: '0.0.0.0' }, auth: { mode: 'lab' } } })).toThrow(/auth\.mode/);
  });
});
