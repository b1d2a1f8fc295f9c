// Abuse suite, part 2: generated requests against the HTTP API through its real port — bodies
// (prototype-pollution keys, type confusion, numbers as strings, arrays for objects, unicode,
// garbage, deep nesting, over the body limit), content types, headers, paths (traversal and
// over-long ids in :id and :approvalId), query strings on the transcript and events routes,
// and raw bytes that are not even HTTP.
//
// The bulk runs against the real app over a stand-in session layer that checks everything it
// is handed is in-schema (test/helpers/abuse-fakes.ts); a slice runs against the real stack
// (Temporal dev server, worker, real Sessions). Always: no 5xx, no crash (the server still
// answers /healthz), every error is JSON { error, message }, nothing out of schema accepted.
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../server/app.js';
import { createAuthenticator } from '../server/auth.js';
import { loadConfig } from '../server/config.js';
import { SessionEvents } from '../server/events.js';
import { LiveBus } from '../server/live-bus.js';
import { Sessions } from '../server/sessions.js';
import { REPO_ROOT } from '../lab/pve-host.js';
import { DEFAULT_POLICY } from '../workflows/session-types.js';
import { KNOWN_SESSION, serveFake, type FakeSessions } from './helpers/abuse-fakes.js';
import { closeAgent, send, sendRaw, type HttpAnswer, type HttpAsk, type RawAnswer } from './helpers/abuse-http.js';
import { scaled, scaledTimeout } from './helpers/abuse-scale.js';
import { mapLimit } from './helpers/abuse-ssh.js';
import { startSessionEnv, uniqueQueue, type SessionEnv } from './helpers/session-env.js';

const TOKEN = 'abuse-api-token-0123456789abcdef';
const sha = (text: string) => createHash('sha256').update(text).digest('hex');
const endpoints = {
  devvm: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
  pve: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
};
const tokenConfig = () => loadConfig({ env: {}, file: { ...endpoints, auth: { mode: 'token', tokens: [{ operator: 'alice', sha256: sha(TOKEN) }] } } });

/**
 * The built console (npm test builds it first), so static serving is fuzzed too. Served from a
 * snapshot: a concurrent `vite build` empties ui/dist while it runs.
 */
const UI_DIR = join(REPO_ROOT, 'ui/dist');
const UI_FILES = new Set<string>();
function snapshotUi(): string | undefined {
  if (!existsSync(join(UI_DIR, 'index.html'))) return undefined;
  const copy = mkdtempSync(join(tmpdir(), 'bg-abuse-ui-'));
  cpSync(UI_DIR, copy, { recursive: true });
  if (!existsSync(join(copy, 'index.html'))) return undefined;
  for (const entry of readdirSync(copy, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) UI_FILES.add(readFileSync(join(entry.parentPath, entry.name), 'utf8'));
  }
  return copy;
}

const BATCH = 16;
const FAKE_RUNS = scaled(125); // 2,000 generated requests against the fake session layer at scale 1
const REAL_RUNS = scaled(14); // 224 against the real stack at scale 1

// ------------------------------------------------------------------------------ counting

interface Tally {
  requests: number;
  raw: number;
  byClass: Record<string, number>;
  byStatus: Map<number, number>;
}
const tally = (): Tally => ({ requests: 0, raw: 0, byClass: { '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0, 'no answer': 0 }, byStatus: new Map() });
const fakeTally = tally();
const realTally = tally();
/** Bodies with a wrongly typed field that were accepted after ajv's type coercion. */
const typeCoerced: string[] = [];

function count(t: Tally, status: number | null): void {
  const key = status === null ? 'no answer' : `${Math.floor(status / 100)}xx`;
  t.byClass[key] = (t.byClass[key] ?? 0) + 1;
  if (status !== null) t.byStatus.set(status, (t.byStatus.get(status) ?? 0) + 1);
}

function report(name: string, t: Tally, extra: string[] = []): string {
  const statuses = [...t.byStatus.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}×${n}`).join(' ');
  const classes = Object.entries(t.byClass).map(([k, n]) => `${k} ${n}`).join(', ');
  return [`${name}: ${t.requests} requests (${t.raw} raw-socket)`, `  classes: ${classes}`, `  statuses: ${statuses}`, ...extra.map((line) => `  ${line}`)].join('\n');
}

// ---------------------------------------------------------------------------- generators

/** Percent-encodes every byte outside the unreserved set (works for lone surrogates too). */
const pct = (text: string) => [...Buffer.from(text, 'utf8')].map((b) => (/[A-Za-z0-9._~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('');

const segment = (known: string): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 12, arbitrary: fc.constant(known) },
    { weight: 2, arbitrary: fc.stringMatching(/^[A-Za-z0-9._-]{1,60}$/) },
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        '..', '.', '../..', '..%2F..%2Fetc%2Fpasswd', '%2e%2e', '%2e%2e%2f%2e%2e%2fetc%2fpasswd', '..%5c..%5cwindows', '%252e%252e%252f',
        '....%2F%2F', '%00', 'a%00b', '%0d%0aSet-Cookie:%20x=1', '~root', '%7e', '.git', '.env', 'bg-1%2F..%2F..', '%C0%AE%C0%AE%2F',
        '$(id)', '%60id%60', ';ls', '%3Cscript%3E', "'", '"', '*', '%20', '+', '%2B', '@', ':', '=', ',', '!', '&', '|',
      ),
    },
    { weight: 2, arbitrary: fc.stringMatching(/^[A-Za-z0-9]{101,400}$/) }, // over Fastify's param length
    { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{61,100}$/) }, // over the approval id limit
    { weight: 1, arbitrary: fc.integer({ min: 201, max: 3_000 }).map((n) => 'a'.repeat(n)) },
    { weight: 2, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).map(pct) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 16 }).map(pct) },
    { weight: 1, arbitrary: fc.constant('') },
  );

const ROUTES: [string, string][] = [
  ['POST', '/api/sessions'],
  ['GET', '/api/sessions'],
  ['GET', '/api/sessions/:id'],
  ['GET', '/api/sessions/:id/transcript'],
  ['POST', '/api/sessions/:id/messages'],
  ['POST', '/api/sessions/:id/verbs'],
  ['POST', '/api/sessions/:id/commands'],
  ['POST', '/api/sessions/:id/approvals/:approvalId'],
  ['POST', '/api/sessions/:id/pause'],
  ['POST', '/api/sessions/:id/resume'],
  ['POST', '/api/sessions/:id/end'],
  ['POST', '/api/sessions/:id/cancel'],
  ['PUT', '/api/sessions/:id/policy'],
  ['GET', '/api/sessions/:id/report'],
  ['GET', '/api/sessions/:id/events'],
  ['GET', '/api/me'],
  ['POST', '/api/login'],
  ['POST', '/api/logout'],
  ['GET', '/healthz'],
  ['GET', '/readyz'],
  ['GET', '/api/docs'],
  ['GET', '/api/../../../etc/passwd'],
  ['GET', '/..%2F..%2F..%2Fetc%2Fpasswd'],
  ['GET', '/api/sessions/:id/../../../etc/passwd'],
  ['POST', '/internal/live'],
  // The console's static files (when built): traversal in the file name.
  ['GET', '/'],
  ['GET', '/index.html'],
  ['GET', '/assets/:id'],
  ['GET', '/:id'],
  ['GET', '/assets/..%2f..%2f..%2fpackage.json'],
  ['GET', '/%2e%2e/%2e%2e/package.json'],
];

const FIELDS = ['description', 'text', 'verb', 'reason', 'requestKey', 'command', 'timeoutSeconds', 'decision', 'mutatingVerbs', 'devvmCommands', 'toolCallsPerMessage', 'token', 'chunks'];
const POLLUTION = ['__proto__', 'constructor', 'prototype', '__defineGetter__', 'hasOwnProperty', 'toString', 'valueOf', 'isAdmin', 'operator'];
const GOOD_VALUES = ['status', 'forensics', 'cycle', 'reset', 'approve', 'deny', 'autonomous', 'approve', 'two-person', 'allowlist', 'uptime', 'devvm wedged', 'rk-1'];

/** JSON values with the shapes validation most often gets wrong. */
const value: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(...GOOD_VALUES),
    fc.string({ unit: 'grapheme', maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.constantFrom('', ' ', '\n\t', '\u200b', '\u0000', '0', '1', '-1', '1.5', '1e3', '0x10', 'NaN', 'Infinity', '-Infinity', '1e400', 'true', 'null', '[]', '{}', '5', '600', '601'),
    fc.integer({ min: -2, max: 700 }).map(String), // numbers as strings
    fc.oneof(fc.integer(), fc.double({ noNaN: true }), fc.constantFrom(0, -0, 1, 600, 601, 2 ** 53, -(2 ** 31), 1e308)),
    fc.boolean(),
    fc.constant(null),
    fc.constantFrom({ polluted: true }, { prototype: { polluted: true } }, { __proto__: { polluted: true } }),
    fc.integer({ min: 500, max: 9_000 }).map((n) => 'x'.repeat(n)), // around the length limits
    fc.array(tie('v'), { maxLength: 3 }),
    fc.dictionary(fc.constantFrom(...FIELDS, ...POLLUTION), tie('v'), { maxKeys: 3 }),
  ),
})).v;

/** A JSON object written by hand, so `__proto__` and duplicate keys reach the parser as text. */
const objectText = fc
  .array(fc.tuple(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...FIELDS) }, { weight: 2, arbitrary: fc.constantFrom(...POLLUTION) }, { weight: 1, arbitrary: fc.string({ maxLength: 12 }) }), value), { maxLength: 5 })
  .map((entries) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v) ?? 'null'}`).join(',')}}`);

const garbage = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.constantFrom('{', '}', '{"text":', '{"text":"x"', "{'text':'x'}", '{"text":"x",}', '{"text":"x"} trailing', '\ufeff{"text":"x"}', '{"text":"x" /* c */}', '{"text": NaN}', '{"text": undefined}', 'null', 'true', '1', '"x"', '[]', '[{"text":"x"}]', 'text=x', '<xml/>'),
  fc.integer({ min: 100, max: 30_000 }).map((n) => '['.repeat(n) + ']'.repeat(n)),
  fc.integer({ min: 100, max: 8_000 }).map((n) => '{"a":'.repeat(n) + '1' + '}'.repeat(n)),
);

const CONTENT_TYPES = [
  'application/json', 'application/json', 'application/json', 'application/json; charset=utf-8', 'application/JSON', 'application/json; charset=utf-16',
  'application/json;charset=latin1', 'text/plain', 'text/html', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=xyz', 'application/xml',
  'application/merge-patch+json', 'application/vnd.api+json', 'application/json, text/plain', '*/*', 'json', ';', 'application/json; boundary=' + 'x'.repeat(200),
];

const query = fc
  .array(
    fc.tuple(
      fc.constantFrom('cursor', 'limit', 'from', '__proto__', 'constructor', 'cursor[]', 'limit[0]', '__proto__[polluted]', 'constructor[prototype][polluted]', 'x', ''),
      fc.constantFrom('1', '0', '-1', '1.5', '1e3', '0x10', 'abc', '', '99999999999999999999', '%201', '%00', '200', '201', 'NaN', 'Infinity', '-Infinity', '1e400', 'null', 'true', '%5B%5D', '%7B%7D', '1,2', 'a'.repeat(300)),
    ),
    { maxLength: 4 },
  )
  .map((pairs) => (pairs.length ? `?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}` : ''));

const extraHeaders = fc.dictionary(
  fc.oneof(
    fc.constantFrom('x-http-method-override', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'forwarded', 'last-event-id', 'accept', 'accept-encoding', 'accept-language', 'range', 'if-none-match', 'origin', 'referer', 'x-requested-with', 'te', 'upgrade'),
    fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/),
  ),
  fc.oneof(fc.constantFrom('GET', 'DELETE', '127.0.0.1', 'evil.example', 'https', 'for=10.0.0.1', '-1', '9007199254740993', 'abc', '*/*', 'gzip, br, zstd', 'bytes=0-1', 'null', 'websocket', 'trailers'), fc.stringMatching(/^[\x21-\x7e]{0,40}$/)),
  { maxKeys: 3 },
);

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'];

/** A body the route would accept, for each route that takes one. */
const VALID_BODIES: Record<string, Record<string, unknown>[]> = {
  '/api/sessions': [{ description: 'devvm wedged' }],
  messages: [{ text: 'what is wrong?' }],
  verbs: [{ verb: 'status', reason: 'look' }, { verb: 'cycle', reason: 'I/O stalled', requestKey: 'rk-1' }, { verb: 'forensics', reason: '' }],
  commands: [{ command: 'uptime' }, { command: 'dmesg | tail', timeoutSeconds: 10, requestKey: 'rk-2' }],
  approvals: [{ decision: 'approve' }, { decision: 'deny', reason: 'not yet' }],
  pause: [{}, { reason: 'hands off' }],
  resume: [{}],
  end: [{ reason: 'fixed' }],
  cancel: [{}],
  policy: [{ mutatingVerbs: 'two-person' }, { devvmCommands: 'autonomous', toolCallsPerMessage: 5 }],
  login: [{ token: TOKEN }],
  live: [{ chunks: [{ sessionId: KNOWN_SESSION, stream: 's', kind: 'text', text: 'x' }] }],
};
const bodyKey = (template: string) => (template === '/api/sessions' ? template : (template.split('/').filter((part) => part && !part.startsWith(':')).at(-1) ?? ''));

/** A valid body with one change: a field retyped or removed, or a key (often a pollution key) added. */
const nearValid = (template: string): fc.Arbitrary<string> => {
  const bodies = VALID_BODIES[bodyKey(template)] ?? [{ description: 'x' }];
  return fc
    .tuple(fc.constantFrom(...bodies), fc.constantFrom('as-is', 'as-is', 'as-is', 'retype', 'remove', 'add', 'duplicate'), fc.constantFrom(...FIELDS, ...POLLUTION), value)
    .map(([body, how, key, v]) => {
      const entries: [string, unknown][] = Object.entries(body);
      const pick = entries.length ? (key.length % entries.length) : 0;
      if (how === 'retype' && entries[pick]) entries[pick] = [entries[pick][0], v];
      if (how === 'remove') entries.splice(pick, 1);
      if (how === 'add') entries.push([key, v]);
      if (how === 'duplicate' && entries[pick]) entries.push([entries[pick][0], v]);
      return `{${entries.map(([k, val]) => `${JSON.stringify(k)}:${JSON.stringify(val) ?? 'null'}`).join(',')}}`;
    });
};

/** One generated request: mostly wild, a quarter aimed (right route, id, auth and type, near-valid body). */
const requestFor = (known: string, approval = 'a-1'): fc.Arbitrary<HttpAsk> => fc.oneof({ weight: 3, arbitrary: wildRequest(known, approval) }, { weight: 1, arbitrary: aimedRequest(known, approval) });

/** Session routes with a body (or none), exactly addressed: proves the fuzz reaches every handler. */
const aimedRequest = (known: string, approval: string): fc.Arbitrary<HttpAsk> =>
  fc.constantFrom(...ROUTES.filter(([, template]) => template.startsWith('/api/sessions') && !template.includes('..'))).chain(([method, template]) =>
    fc.tuple(method === 'GET' ? fc.constant(undefined) : nearValid(template), extraHeaders).map(([body, headers]) => ({
      method,
      path: template.replace(':id', known).replace(':approvalId', approval),
      headers: { ...headers, authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body } : {}),
    })),
  );

const wildRequest = (known: string, approval: string): fc.Arbitrary<HttpAsk> =>
  // Routes with two path parameters need more tries to get both right.
  fc.oneof(...ROUTES.map((route) => ({ weight: route[1].includes(':approvalId') ? 4 : 1, arbitrary: fc.constant(route) }))).chain(([routeMethod, template]) =>
    fc
      .record({
        method: fc.oneof({ weight: 5, arbitrary: fc.constant(routeMethod) }, { weight: 1, arbitrary: fc.constantFrom(...METHODS) }),
        id: segment(known),
        approvalId: segment(approval),
        query: fc.option(query, { freq: 2 }),
        body: fc.oneof(
          { weight: 2, arbitrary: fc.constant(undefined) },
          { weight: 8, arbitrary: nearValid(template) },
          { weight: 4, arbitrary: objectText },
          { weight: 2, arbitrary: value.map((v) => JSON.stringify(v) ?? 'null') },
          { weight: 2, arbitrary: garbage },
        ),
        contentType: fc.oneof({ weight: 6, arbitrary: fc.constant('application/json') }, { weight: 3, arbitrary: fc.constantFrom(...CONTENT_TYPES) }, { weight: 1, arbitrary: fc.constant(null) }),
        auth: fc.constantFrom('token', 'token', 'token', 'token', 'token', 'none', 'lowercase-bearer', 'garbage'),
        headers: extraHeaders,
        contentLength: fc.boolean(),
      })
      .map(({ method: verb, id, approvalId, query: q, body, contentType, auth, headers, contentLength }) => {
        const path = template.replace(':id', id).replace(':approvalId', approvalId) + (template.includes('transcript') || template.includes('events') ? (q ?? '') : q && q.length < 40 ? q : '');
        const all: Record<string, string> = { ...headers };
        if (auth === 'token') all.authorization = `Bearer ${TOKEN}`;
        if (auth === 'lowercase-bearer') all.authorization = `bearer ${TOKEN}`;
        if (auth === 'garbage') all.authorization = `Bearer %FF${TOKEN}`;
        const withBody = body !== undefined && verb !== 'GET' && verb !== 'HEAD';
        if (withBody && contentType !== null) all['content-type'] = contentType;
        // Node's client frames DELETE/OPTIONS bodies only with an explicit length; POST, PUT and
        // PATCH go chunked without one (both framings are exercised).
        if (withBody && (contentLength || verb === 'DELETE' || verb === 'OPTIONS')) all['content-length'] = String(Buffer.byteLength(body));
        return { method: verb, path, headers: all, ...(withBody ? { body } : {}) };
      }),
  );

// ------------------------------------------------------------------------------ checking

function expectSafe(t: Tally, ask: HttpAsk, answer: HttpAnswer): void {
  t.requests++;
  count(t, answer.status);
  const label = `${ask.method} ${ask.path.slice(0, 160)} body=${String(ask.body ?? '').slice(0, 160)} -> ${answer.status} ${answer.text.slice(0, 300)}`;
  expect(answer.status, label).toBeLessThan(500);
  if (answer.status >= 400 && ask.method !== 'HEAD') {
    expect(String(answer.headers['content-type']), label).toMatch(/^application\/json/);
    const error = JSON.parse(answer.text) as { error: unknown; message: unknown };
    expect(typeof error.error, label).toBe('string');
    expect(typeof error.message, label).toBe('string');
    // 5xx detail is hidden; 4xx messages never echo a stack.
    expect(answer.text, label).not.toMatch(/\bat .+\.(ts|js):\d+/);
  }
  // Outside the API, a 200 serves a file of the built console and nothing else (no traversal).
  const path = ask.path.split('?')[0] ?? '';
  if (answer.status === 200 && ask.method === 'GET' && !/^\/(api|internal)\/|^\/(healthz|readyz|metrics)$/.test(path)) {
    expect(UI_FILES.has(answer.text), `${label}: not a console file`).toBe(true);
  }
}

function expectSafeRaw(t: Tally, what: string, answer: RawAnswer): void {
  t.requests++;
  t.raw++;
  count(t, answer.status);
  const label = `${what} -> ${answer.head.split('\r\n')[0]} ${answer.body.slice(0, 200)}`;
  if (answer.status === null) return; // the server hung up: fine, as long as it still serves
  expect(answer.status, label).toBeLessThan(500);
  if (answer.status >= 400 && answer.body) {
    const error = JSON.parse(answer.body) as { error: unknown; message: unknown };
    expect(typeof error.error, label).toBe('string');
    expect(typeof error.message, label).toBe('string');
  }
}

function expectNoPollution(): void {
  const probe = {} as Record<string, unknown>;
  expect(probe.polluted).toBeUndefined();
  expect(Object.prototype).not.toHaveProperty('polluted');
  expect(Object.prototype).not.toHaveProperty('isAdmin');
}

// ------------------------------------------------------------------------------- suites

describe('abuse: the HTTP API under generated requests (stand-in session layer)', () => {
  let server: Awaited<ReturnType<typeof serveFake>>;
  let fake: FakeSessions;
  let uiDir: string | undefined;

  beforeAll(async () => {
    uiDir = snapshotUi();
    server = await serveFake(createAuthenticator(tokenConfig()), { livePush: { token: 'live-push-token-0123456789', bus: new LiveBus() }, ...(uiDir ? { uiDir } : {}) });
    fake = server.fake;
  });

  afterAll(async () => {
    const reached = fake ? fake.calls.length : 0;
    console.log(report('abuse-api (stand-in session layer)', fakeTally, [`reached the session layer (all in-schema): ${reached}`, `out-of-schema values that got through: ${fake?.violations.length ?? 0}`, `±Infinity past integer bounds (finding A2): ${fake?.nonFinite.length ?? 0}`, `wrongly typed fields accepted after coercion: ${typeCoerced.length}`, ...typeCoerced.map((line) => `  ${line}`)]));
    await server?.app.close();
    if (uiDir) rmSync(uiDir, { recursive: true, force: true });
  });

  it(`when ${(BATCH * FAKE_RUNS).toLocaleString('en')} generated requests hit every route, then nothing answers 5xx, every error is JSON {error, message}, and only in-schema values reach the sessions`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(requestFor(KNOWN_SESSION), { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        const answers = await mapLimit(batch, 8, (ask) => send(server.port, ask));
        batch.forEach((ask, i) => expectSafe(fakeTally, ask, answers[i] as HttpAnswer));
        expect(fake.violations).toEqual([]);
      }),
      { numRuns: FAKE_RUNS, endOnFailure: true },
    );
    expectNoPollution();
    expect((await send(server.port, { method: 'GET', path: '/healthz' })).status).toBe(200);
    // The fuzz did reach every kind of handler (it is not all 4xx at the door).
    const reached = new Set(fake.calls.map((call) => call.method));
    expect(['start', 'list', 'transcript', 'message', 'verb', 'command', 'approval', 'pause', 'resume', 'end', 'cancel', 'policy', 'subscribe'].filter((method) => !reached.has(method))).toEqual([]);
  }, scaledTimeout(80_000));

  it('when bodies are over the 64 KiB limit (with or without a length, valid JSON or not), then 413 in JSON and nothing reaches the sessions', async () => {
    const before = fake.calls.length;
    const sizes = [64 * 1024 + 1, 100_000, 1024 * 1024];
    const cases = sizes.flatMap((size): HttpAsk[] => [
      { method: 'POST', path: '/api/sessions', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'content-length': String(size) }, body: JSON.stringify({ description: 'x'.repeat(size) }).slice(0, size) },
      { method: 'POST', path: `/api/sessions/${KNOWN_SESSION}/messages`, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ text: 'é'.repeat(size) }) }, // chunked, no length
      { method: 'POST', path: `/api/sessions/${KNOWN_SESSION}/verbs`, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '['.repeat(size) },
    ]);
    for (const ask of cases) {
      const answer = await send(server.port, ask).catch((error: Error) => ({ status: 0, headers: {}, text: error.message }));
      // A server may hang up on a client still sending a too-large body: then no answer at all.
      if (answer.status === 0) {
        expect(answer.text).toMatch(/ECONNRESET|EPIPE|socket hang up/);
        count(fakeTally, null);
        fakeTally.requests++;
        continue;
      }
      expectSafe(fakeTally, ask, answer);
      expect(answer.status, `${ask.path} ${ask.body?.length}`).toBe(413);
    }
    expect(fake.calls.length).toBe(before);
  });

  it('when a body field has the wrong JSON type (array, boolean, number, null, object), then no value out of schema reaches the sessions', async () => {
    const id = KNOWN_SESSION;
    const cases: [string, string][] = [
      ['/api/sessions', '{"description":["x"]}'],
      ['/api/sessions', '{"description":true}'],
      ['/api/sessions', '{"description":5}'],
      ['/api/sessions', '{"description":null}'],
      ['/api/sessions', '{"description":{"a":1}}'],
      [`/api/sessions/${id}/verbs`, '{"verb":["cycle"],"reason":"x"}'],
      [`/api/sessions/${id}/verbs`, '{"verb":["status","cycle"],"reason":"x"}'],
      [`/api/sessions/${id}/verbs`, '{"verb":1,"reason":"x"}'],
      [`/api/sessions/${id}/verbs`, '{"verb":{"0":"cycle"},"reason":"x"}'],
      [`/api/sessions/${id}/verbs`, '{"verb":"status","reason":null}'],
      [`/api/sessions/${id}/verbs`, '{"verb":"status","reason":false}'],
      [`/api/sessions/${id}/verbs`, '{"verb":"status","reason":"x","requestKey":7}'],
      [`/api/sessions/${id}/commands`, '{"command":"uptime","timeoutSeconds":"10"}'],
      [`/api/sessions/${id}/commands`, '{"command":"uptime","timeoutSeconds":true}'],
      [`/api/sessions/${id}/commands`, '{"command":"uptime","timeoutSeconds":[5]}'],
      [`/api/sessions/${id}/commands`, '{"command":"uptime","timeoutSeconds":"1e2"}'],
      [`/api/sessions/${id}/commands`, '{"command":"uptime","timeoutSeconds":null}'],
      [`/api/sessions/${id}/commands`, '{"command":["uptime"]}'],
      [`/api/sessions/${id}/approvals/a-1`, '{"decision":["approve"]}'],
      [`/api/sessions/${id}/policy`, '{"toolCallsPerMessage":"5"}'],
      [`/api/sessions/${id}/policy`, '{"mutatingVerbs":["autonomous"]}'],
      // Finding A2: these pass the integer bounds as ±Infinity (recorded in fake.nonFinite).
      [`/api/sessions/${id}/commands`, '{"command":"uptime","timeoutSeconds":"Infinity"}'],
      [`/api/sessions/${id}/commands`, '{"command":"uptime","timeoutSeconds":"-1e400"}'],
      [`/api/sessions/${id}/policy`, '{"toolCallsPerMessage":"Infinity"}'],
    ];
    const accepted: string[] = [];
    for (const [path, body] of cases) {
      const before = fake.calls.length;
      const ask = { method: path.endsWith('/policy') ? 'PUT' : 'POST', path, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body };
      const answer = await send(server.port, ask);
      expectSafe(fakeTally, ask, answer);
      expect([200, 400], `${path} ${body}`).toContain(answer.status);
      if (fake.calls.length > before) accepted.push(`${path.split('/').at(-1)} ${body} -> ${JSON.stringify(fake.calls.at(-1)?.args.at(-1))}`);
    }
    // Findings A1/A2 (RELIABILITY.md), fixed: no type coercion, so none of these gets through.
    typeCoerced.push(...accepted);
    expect(accepted).toEqual([]);
    for (const q of ['limit=Infinity', 'cursor=-Infinity', 'cursor=1e400', 'limit=0', 'limit=201', 'cursor=1.5']) {
      const ask = { method: 'GET', path: `/api/sessions/${id}/transcript?${q}`, headers: { authorization: `Bearer ${TOKEN}` } };
      const answer = await send(server.port, ask);
      expectSafe(fakeTally, ask, answer);
      expect(answer.status, q).toBe(400);
    }
    expect(fake.violations).toEqual([]);
  });

  it('when raw bytes are not valid HTTP (bad request lines, header injection, smuggling, oversize headers), then the answer is a 4xx in JSON or a hang-up, and the server keeps serving', async () => {
    const host = `Host: 127.0.0.1:${server.port}\r\n`;
    const auth = `Authorization: Bearer ${TOKEN}\r\n`;
    const body = '{"description":"x"}';
    const fixed: [string, string][] = [
      ['garbage request line', 'HELLO\r\n\r\n'],
      ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
      ['unknown method', `BREW /api/sessions HTTP/1.1\r\n${host}Connection: close\r\n\r\n`],
      ['no Host (HTTP/1.1)', 'GET /api/me HTTP/1.1\r\nConnection: close\r\n\r\n'],
      ['absolute-form URL to another host', `GET http://evil.example/api/me HTTP/1.1\r\n${host}${auth}Connection: close\r\n\r\n`],
      ['asterisk form', `OPTIONS * HTTP/1.1\r\n${host}Connection: close\r\n\r\n`],
      ['path without slash', `GET api/me HTTP/1.1\r\n${host}Connection: close\r\n\r\n`],
      ['raw dot segments', `GET /api/sessions/../../../../etc/passwd HTTP/1.1\r\n${host}${auth}Connection: close\r\n\r\n`],
      ['raw backslashes', `GET /api\\sessions\\..\\..\\etc HTTP/1.1\r\n${host}${auth}Connection: close\r\n\r\n`],
      ['space in the path', `GET /api/sessions/a b HTTP/1.1\r\n${host}${auth}Connection: close\r\n\r\n`],
      ['raw UTF-8 in the path', `GET /api/sessions/é HTTP/1.1\r\n${host}${auth}Connection: close\r\n\r\n`],
      ['CR inside a header value', `GET /api/me HTTP/1.1\r\n${host}X-A: a\rb\r\nConnection: close\r\n\r\n`],
      ['LF-only line ends', `GET /api/me HTTP/1.1\n${host.replace('\r', '')}Connection: close\n\n`],
      ['header without colon', `GET /api/me HTTP/1.1\r\n${host}NoColonHere\r\nConnection: close\r\n\r\n`],
      ['space before colon', `GET /api/me HTTP/1.1\r\n${host}Authorization : Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`],
      ['obs-fold continuation', `GET /api/me HTTP/1.1\r\n${host}X-A: a\r\n b\r\nConnection: close\r\n\r\n`],
      ['NUL in a header', `GET /api/me HTTP/1.1\r\n${host}X-A: a\u0000b\r\nConnection: close\r\n\r\n`],
      ['CL and TE together (smuggling)', `POST /api/sessions HTTP/1.1\r\n${host}${auth}Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\nGET /api/me HTTP/1.1\r\n${host}\r\n\r\n`],
      ['two different Content-Lengths', `POST /api/sessions HTTP/1.1\r\n${host}${auth}Content-Type: application/json\r\nContent-Length: 3\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`],
      ['negative Content-Length', `POST /api/sessions HTTP/1.1\r\n${host}${auth}Content-Type: application/json\r\nContent-Length: -1\r\nConnection: close\r\n\r\n${body}`],
      ['bad chunk size', `POST /api/sessions HTTP/1.1\r\n${host}${auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n${body}\r\n0\r\n\r\n`],
      ['body shorter than Content-Length', `POST /api/sessions HTTP/1.1\r\n${host}${auth}Content-Type: application/json\r\nContent-Length: 500\r\nConnection: close\r\n\r\n${body}`],
      // Fastify does not decode Content-Encoding: this body is parsed as sent (valid JSON, valid
      // token), so this one request is legitimately accepted; see RELIABILITY.md.
      ['Content-Encoding gzip that is not', `POST /api/sessions HTTP/1.1\r\n${host}${auth}Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`],
      ['Expect: 100-continue, then nothing', `POST /api/sessions HTTP/1.1\r\n${host}${auth}Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 19\r\nConnection: close\r\n\r\n`],
      ['headers over 16 KiB', `GET /api/me HTTP/1.1\r\n${host}X-Big: ${'a'.repeat(20_000)}\r\nConnection: close\r\n\r\n`],
      ['URL over 16 KiB', `GET /api/sessions/${'a'.repeat(20_000)} HTTP/1.1\r\n${host}Connection: close\r\n\r\n`],
      ['10,000 headers', `GET /api/me HTTP/1.1\r\n${host}${'X-A: 1\r\n'.repeat(10_000)}Connection: close\r\n\r\n`],
      ['HTTP/0.9', 'GET /api/me\r\n\r\n'],
      ['HTTP/1.0 without Host', 'GET /healthz HTTP/1.0\r\n\r\n'],
      ['HTTP/9.9', `GET /healthz HTTP/9.9\r\n${host}\r\n\r\n`],
      ['upgrade to websocket', `GET /api/sessions/${KNOWN_SESSION}/events HTTP/1.1\r\n${host}${auth}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`],
    ];
    const before = fake.calls.length;
    const answers = await mapLimit(fixed, 6, ([, bytes]) => sendRaw(server.port, bytes, 5_000));
    fixed.forEach(([what], i) => expectSafeRaw(fakeTally, what, answers[i] as RawAnswer));
    // Nothing but the one well-formed (mislabelled gzip) request started a session: not the
    // smuggled one, not the mis-framed ones.
    expect(fake.calls.slice(before).filter((call) => call.method === 'start')).toHaveLength(1);

    // And generated request lines and header blocks.
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.string({ unit: 'binary', maxLength: 120 }).map((s) => `${s}\r\n\r\n`),
            fc.tuple(fc.constantFrom(...METHODS, 'BREW', 'get', 'G ET', ''), fc.string({ unit: 'binary', maxLength: 60 }), fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/2', 'http/1.1', '')).map(
              ([m, p, v]) => `${m} /${p} ${v}\r\n${host}Connection: close\r\n\r\n`,
            ),
            fc.tuple(fc.string({ unit: 'binary', maxLength: 30 }), fc.string({ unit: 'binary', maxLength: 60 })).map(([name, val]) => `GET /api/me HTTP/1.1\r\n${host}${name}: ${val}\r\nConnection: close\r\n\r\n`),
          ),
          { minLength: 8, maxLength: 8 },
        ),
        async (batch) => {
          const raw = await mapLimit(batch, 8, (bytes) => sendRaw(server.port, bytes, 5_000));
          batch.forEach((bytes, i) => expectSafeRaw(fakeTally, JSON.stringify(bytes.slice(0, 120)), raw[i] as RawAnswer));
        },
      ),
      { numRuns: 25, endOnFailure: true },
    );
    expect((await send(server.port, { method: 'GET', path: '/healthz' })).status).toBe(200);
    expect(fake.violations).toEqual([]);
  }, 60_000);
});

describe('abuse: a slice of generated requests against the real stack (Temporal dev server, worker, real Sessions)', () => {
  let env: SessionEnv;
  let port: number;
  let app: Awaited<ReturnType<typeof buildApp>>;
  let sessionId: string;
  let events: SessionEvents | undefined;
  const sessionCalls = new Set<Promise<unknown>>();

  beforeAll(async () => {
    env = await startSessionEnv();
    const queue = uniqueQueue('abuse-api');
    await env.startWorker(queue);
    // Mutating verbs wait for approval and devvm commands need one: a generated valid request
    // is recorded, never run against the (simulated) hosts.
    const real = new Sessions(env.client, { taskQueue: queue, target: { devvm: 'devvm', vmid: 102 }, policy: { ...DEFAULT_POLICY, mutatingVerbs: 'approve', devvmCommands: 'allowlist' }, namespace: 'default' });
    // A client that hangs up leaves its handler's Temporal call running (maybe in a retry
    // backoff): teardown waits for every call before the connection closes under it.
    const sessions = new Proxy(real, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver) as unknown;
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          const result = (value as (...a: unknown[]) => unknown).apply(target, args);
          if (result instanceof Promise) {
            sessionCalls.add(result);
            void result.then(() => sessionCalls.delete(result), () => sessionCalls.delete(result));
          }
          return result;
        };
      },
    });
    events = new SessionEvents(sessions, new LiveBus());
    app = await buildApp({
      sessions,
      events,
      auth: createAuthenticator(tokenConfig()),
      readiness: async () => ({ temporal: true, worker: true }),
      temporalUiUrl: null,
      namespace: 'default',
      agent: { mode: 'off', reason: 'abuse suite' },
      heartbeatMs: 60_000,
      mutationRateLimit: 1_000_000,
      loginRateLimit: 1_000_000,
    });
    port = Number(new URL(await app.listen({ host: '127.0.0.1', port: 0 })).port);
    const created = await send(port, { method: 'POST', path: '/api/sessions', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ description: 'abuse suite: real stack' }) });
    expect(created.status).toBe(200);
    sessionId = (JSON.parse(created.text) as { id: string }).id;
  }, 120_000);

  afterAll(async () => {
    console.log(report('abuse-api (real stack slice)', realTally));
    // Polls still in flight finish before their Temporal connection goes.
    await events?.close();
    await app?.close();
    closeAgent();
    await Promise.allSettled([...sessionCalls]);
    await env?.teardown();
  });

  it('when generated requests hit the real stack, then nothing answers 5xx, errors are JSON, and the session and server still answer', async () => {
    // End and cancel would close the session early and leave the rest of the slice with 404s;
    // an autonomous policy or a matching approval id would let a generated cycle really run.
    const live = requestFor('SESSION', 'a-no-such-approval').filter((ask) => !/\/(end|cancel)(\?|$)/.test(ask.path) && !(/\/policy(\?|$)/.test(ask.path) && String(ask.body).includes('autonomous')));
    await fc.assert(
      fc.asyncProperty(fc.array(live, { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        const asks = batch.map((ask) => ({ ...ask, path: ask.path.replaceAll('SESSION', sessionId) }));
        // Events streams stay open on a real session: ask, read the head, hang up.
        const answers = await mapLimit(asks, 4, (ask) => (/\/events(\?|$)/.test(ask.path) && (ask.method === 'GET' || ask.method === 'HEAD') ? sendAndHangUp(port, ask) : send(port, ask, 30_000)));
        asks.forEach((ask, i) => expectSafe(realTally, ask, answers[i] as HttpAnswer));
      }),
      { numRuns: REAL_RUNS, endOnFailure: true },
    );
    expectNoPollution();
    expect((await send(port, { method: 'GET', path: '/healthz' })).status).toBe(200);
    const view = await send(port, { method: 'GET', path: `/api/sessions/${sessionId}`, headers: { authorization: `Bearer ${TOKEN}` } });
    expect(view.status).toBe(200);
    expect(JSON.parse(view.text)).toMatchObject({ state: { workflowId: sessionId, ended: false } });
  }, scaledTimeout(80_000));

  it('when ±Infinity slips past the API\'s integer bounds (finding A2), then the workflow still bounds it: a page holds at most 200 entries and a command gets a finite timeout', async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    for (const q of ['limit=Infinity', 'limit=1e400', 'cursor=-Infinity', 'cursor=Infinity&limit=-Infinity']) {
      const ask = { method: 'GET', path: `/api/sessions/${sessionId}/transcript?${q}`, headers: auth };
      const page = await send(port, ask);
      expectSafe(realTally, ask, page);
      if (page.status === 200) expect((JSON.parse(page.text) as { entries: unknown[] }).entries.length).toBeLessThanOrEqual(200);
    }
    const marker = `infinity-${Date.now()}`;
    const ask = { method: 'POST', path: `/api/sessions/${sessionId}/commands`, headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ command: `echo ${marker}`, timeoutSeconds: 'Infinity' }) };
    const answer = await send(port, ask);
    expectSafe(realTally, ask, answer);
    if (answer.status === 200) {
      const recorded = await waitForEntry(port, sessionId, marker);
      expect(recorded.timeoutSeconds).toBeGreaterThanOrEqual(1);
      expect(recorded.timeoutSeconds).toBeLessThanOrEqual(600);
    }
  }, 30_000);
});

/** The transcript's request entry for the command containing marker. */
async function waitForEntry(port: number, id: string, marker: string): Promise<{ timeoutSeconds: number }> {
  const until = Date.now() + 15_000;
  while (Date.now() < until) {
    const page = await send(port, { method: 'GET', path: `/api/sessions/${id}/transcript?limit=200`, headers: { authorization: `Bearer ${TOKEN}` } });
    const entries = (JSON.parse(page.text) as { entries: { type: string; item?: { kind: string; command?: string; timeoutSeconds: number } }[] }).entries;
    const found = entries.find((entry) => entry.type === 'request' && entry.item?.kind === 'command' && entry.item.command?.includes(marker));
    if (found?.item) return found.item;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no request entry for ${marker} within 15 s`);
}

/** For a live SSE stream: the status and headers, then close (the body never ends by itself). */
function sendAndHangUp(port: number, ask: HttpAsk): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    {
      const req = request({ host: '127.0.0.1', port, method: ask.method, path: ask.path, headers: ask.headers ?? {}, timeout: 30_000 }, (res) => {
        const status = res.statusCode ?? 0;
        if (status === 200) {
          req.destroy();
          return resolve({ status, headers: res.headers, text: '' });
        }
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      });
      req.on('timeout', () => req.destroy(new Error('no answer from the events route')));
      req.on('error', reject);
      req.end();
    }
  });
}
