// Abuse suite, part 3: authentication under attack. Forged proxy identity headers from
// untrusted addresses (and address-spoofing headers), header case/whitespace/duplicate tricks,
// malformed, forged and tampered bearer tokens and session cookies, CSRF variants on
// cookie-authenticated (and proxy-authenticated) mutations, and the lab token from
// non-loopback addresses. Proxy mode also gets missing, wrong and misplaced shared secrets, and
// scaled(10,000) generated requests (forged addresses, headers, secrets) straight at `identify`. Every attempt must be refused (401/403, or a 400 for a request that
// is not valid HTTP) and reach nothing: ZERO accepted. Controls — the legitimate request next to
// each family — prove the checks can tell the difference.
//
// Over the real HTTP port; where a remote address other than loopback is needed, through
// Fastify's inject with `remoteAddress` (the same app, the same auth code).
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyRequest } from 'fastify';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthError, createAuthenticator, SESSION_COOKIE } from '../server/auth.js';
import { loadConfig } from '../server/config.js';
import { LiveBus } from '../server/live-bus.js';
import { serveFake, type FakeSessions } from './helpers/abuse-fakes.js';
import { closeAgent, send, sendRaw, type HttpAnswer } from './helpers/abuse-http.js';
import { scaled, scaledTimeout } from './helpers/abuse-scale.js';

const ALICE = 'alice-abuse-auth-token-0123456789';
const BOB = 'bob-abuse-auth-token-0123456789ab';
const MALLORY = 'mallory-abuse-auth-token-0123456'; // valid token, operator not on the allowlist
const LAB = 'lab-abuse-auth-token-0123456789ab';
const LIVE = 'live-push-abuse-token-0123456789';
const PROXY_SECRET = 'proxy-shared-secret-abuse-auth-0123456789';
const OTHER_PROXY_SECRET = 'proxy-shared-secret-other-deployment-0123';
/** The headers the trusted proxy adds: the identity and the shared secret. */
const fromProxy = <T extends string | string[]>(identity: T) => ({ 'x-forwarded-user': identity, 'x-breakglass-proxy-secret': PROXY_SECRET });
const sha = (text: string) => createHash('sha256').update(text).digest('hex');
const endpoints = {
  devvm: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
  pve: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
};
const authOf = (auth: Record<string, unknown>, env: Record<string, string> = {}) => createAuthenticator(loadConfig({ env, file: { ...endpoints, auth } }));

let secretDir: string;
/** Proxy-mode auth config: these trusted ranges, alice on the allowlist, PROXY_SECRET shared. */
const proxyAuth = (trustedCidrs: string[]) => ({ mode: 'proxy', proxy: { trustedCidrs, secretFile: join(secretDir, 'proxy-secret') }, operators: ['alice'] });
beforeAll(async () => {
  secretDir = await mkdtemp(join(tmpdir(), 'bg-abuse-auth-'));
  await writeFile(join(secretDir, 'proxy-secret'), `${PROXY_SECRET}\n`);
});

const CREATE = JSON.stringify({ description: 'abuse-auth: must never be created' });
const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

// ---------------------------------------------------------------------- servers + counting

type Server = Awaited<ReturnType<typeof serveFake>>;
const servers: Server[] = [];
async function serve(auth: Record<string, unknown>, env: Record<string, string> = {}, overrides = {}): Promise<Server> {
  const server = await serveFake(authOf(auth, env), overrides);
  servers.push(server);
  return server;
}

const attempts = new Map<string, number>();
const controls = new Map<string, number>();
let accepted = 0;

/** The one assertion of this suite: refused, and nothing reached the session layer. */
function expectRefused(family: string, fake: FakeSessions, callsBefore: number, answer: { status: number | null; text?: string }, what: string): void {
  attempts.set(family, (attempts.get(family) ?? 0) + 1);
  const reached = fake.calls.length - callsBefore;
  const ok = answer.status !== null && answer.status >= 200 && answer.status < 300;
  if (ok || reached > 0) accepted++;
  expect({ status: answer.status, reached }, `${family}: ${what} -> ${answer.status} ${answer.text?.slice(0, 200) ?? ''}`).toEqual({ status: expect.toBeOneOf([400, 401, 403, null]), reached: 0 });
  if (answer.status === 401 || answer.status === 403) {
    const body = JSON.parse(answer.text ?? '') as { error: string; message: string };
    expect(['unauthenticated', 'forbidden', 'csrf']).toContain(body.error);
    // The refusal never echoes a credential back.
    for (const secret of [ALICE, BOB, MALLORY, LAB, LIVE, PROXY_SECRET]) expect(answer.text).not.toContain(secret);
  }
}

function control(family: string, answer: { status: number }, what: string): void {
  controls.set(family, (controls.get(family) ?? 0) + 1);
  expect(answer.status, `control ${family}: ${what}`).toBe(200);
}

async function attempt(family: string, server: Server, ask: Parameters<typeof send>[1]): Promise<HttpAnswer> {
  const before = server.fake.calls.length;
  const answer = await send(server.port, ask);
  expectRefused(family, server.fake, before, answer, `${ask.method} ${ask.path} ${JSON.stringify(ask.headers)}`);
  return answer;
}

/** Through inject, from the given remote address (the real TCP port only ever sees loopback). */
async function attemptFrom(family: string, server: Server, remoteAddress: string, ask: { method: 'GET' | 'POST'; url: string; headers?: Record<string, string>; payload?: string }) {
  const before = server.fake.calls.length;
  const res = await server.app.inject({ ...ask, remoteAddress });
  expectRefused(family, server.fake, before, { status: res.statusCode, text: res.body }, `${ask.method} ${ask.url} from ${remoteAddress} ${JSON.stringify(ask.headers)}`);
  return res;
}

const me = (headers: Record<string, string | string[]>) => ({ method: 'GET', path: '/api/me', headers });
const create = (headers: Record<string, string | string[]>) => ({ method: 'POST', path: '/api/sessions', headers: { 'content-type': 'application/json', ...headers }, body: CREATE });

async function cookieFor(server: Server, token: string): Promise<string> {
  const login = await send(server.port, { method: 'POST', path: '/api/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
  expect(login.status).toBe(200);
  const header = String(login.headers['set-cookie']);
  return header.split(';')[0]!.slice(`${SESSION_COOKIE}=`.length);
}

afterAll(async () => {
  const lines = [...attempts.entries()].map(([family, n]) => `    ${String(n).padStart(5)}  ${family}`);
  const total = [...attempts.values()].reduce((a, b) => a + b, 0);
  const controlTotal = [...controls.values()].reduce((a, b) => a + b, 0);
  console.log(['abuse-auth counts:', `  attempts: ${total}, accepted: ${accepted}`, `  legitimate controls (accepted, as they must be): ${controlTotal}`, '  by family:', ...lines].join('\n'));
  for (const server of servers) await server.app.close();
  closeAgent();
  await rm(secretDir, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------- proxy mode

const IDENTITY_HEADERS = ['x-forwarded-user', 'X-Forwarded-User', 'X-FORWARDED-USER', 'x-remote-user', 'remote-user', 'x-auth-request-user', 'x-auth-request-email', 'x-forwarded-email', 'x-user', 'x-webauth-user', 'x-forwarded-preferred-username'];
const SPOOF_HEADERS: Record<string, string>[] = [
  {},
  { 'x-forwarded-for': '10.0.0.1' },
  { 'x-forwarded-for': '10.0.0.1, 127.0.0.1' },
  { 'x-real-ip': '10.0.0.1' },
  { forwarded: 'for=10.0.0.1;proto=https' },
  { 'true-client-ip': '10.0.0.1' },
  { 'cf-connecting-ip': '10.0.0.1' },
  { 'x-client-ip': '10.0.0.1' },
  { 'x-originating-ip': '10.0.0.1' },
  { 'x-forwarded-host': 'proxy.internal', 'x-forwarded-proto': 'https' },
];

describe('abuse: proxy auth — identity headers from an untrusted address', () => {
  let untrusted: Server;
  let trusted: Server;
  beforeAll(async () => {
    untrusted = await serve(proxyAuth(['10.0.0.0/8', 'fd00::/8']));
    trusted = await serve(proxyAuth(['127.0.0.1/32']));
  });

  it('when any identity header (any case) plus any address-spoofing header comes from 127.0.0.1 (not the proxy), then 401 on reads and mutations, even with the shared secret', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...IDENTITY_HEADERS), fc.constantFrom(...SPOOF_HEADERS), fc.constantFrom('alice', 'admin', 'root'), fc.boolean(), fc.boolean(), async (name, spoof, who, withBearer, withSecret) => {
        const headers = { [name]: who, ...spoof, ...(withBearer ? { authorization: `Bearer ${ALICE}` } : {}), ...(withSecret ? { 'x-breakglass-proxy-secret': PROXY_SECRET } : {}) };
        await attempt('proxy: forged identity, untrusted source', untrusted, me(headers));
        await attempt('proxy: forged identity, untrusted source', untrusted, create({ ...headers, origin: `http://127.0.0.1:${untrusted.port}` }));
      }),
      { numRuns: 120 },
    );
  });

  it('when the socket address is outside the trusted ranges (or not an IP at all), then 401 whatever the headers say; inside, the same request is accepted', async () => {
    const outside = ['11.0.0.1', '9.255.255.255', '127.0.0.1', '::1', '::ffff:11.0.0.1', '::ffff:127.0.0.1', 'fe80::1', 'fc00::1', '0.0.0.0', '::', '10.0.0.1.evil.example', '010.0.0.1', '10.0.0.256', 'unknown'];
    for (const remoteAddress of outside) {
      for (const spoof of SPOOF_HEADERS) {
        await attemptFrom('proxy: untrusted socket address', untrusted, remoteAddress, { method: 'GET', url: '/api/me', headers: { ...fromProxy('alice'), ...spoof } });
      }
    }
    for (const remoteAddress of ['10.0.0.5', '10.255.255.254', '::ffff:10.0.0.5', 'fd00::5']) {
      const res = await untrusted.app.inject({ method: 'GET', url: '/api/me', headers: fromProxy('alice'), remoteAddress });
      control('proxy: trusted socket address', { status: res.statusCode }, remoteAddress);
    }
  });

  it('when the trusted proxy passes a doubled, malformed, look-alike or unlisted identity, then 401/403; exactly "alice" is accepted', async () => {
    const fixed: (string | string[])[] = [
      ['alice', 'alice'], ['alice', 'mallory'], ['mallory', 'alice'], 'alice,alice', 'alice, bob', 'alice;bob', 'al ice', 'ALICE', 'Alice', 'alice@evil.example', 'alice+admin',
      'admin', 'root', 'mallory', '*', '../alice', 'alice/..', 'alice\\', 'alice%00', '', '"alice"', "'alice'", 'alice.', '.alice', 'a'.repeat(201), 'alice\u00a0',
    ];
    for (const value of fixed) await attempt('proxy: bad identity from the trusted proxy', trusted, me(fromProxy(value)));
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: fc.constantFrom(...'aliceALICE@+-._ ,;:/\\"\'%*0123456789'), maxLength: 24 }).filter((v) => v.trim() !== 'alice'), async (value) => {
        await attempt('proxy: bad identity from the trusted proxy', trusted, me(fromProxy(value)));
      }),
      { numRuns: 150 },
    );
    // Header-name tricks the proxy would not have set (underscore, other names) identify nobody.
    for (const name of ['x_forwarded_user', 'x-forwarded-users', 'x-forwarded-user-x', 'forwarded-user', 'x-forwarded-for']) {
      await attempt('proxy: identity under another header name', trusted, me({ [name]: 'alice', 'x-breakglass-proxy-secret': PROXY_SECRET }));
    }
    // Raw bytes: non-Latin-1 look-alikes (Cyrillic а), a space before the colon, obs-fold.
    for (const line of ['X-Forwarded-User: \u0430lice', 'X-Forwarded-User : alice', 'X-Forwarded-User:\r\n alice', 'X-Forwarded-User: ali\u0000ce']) {
      const before = trusted.fake.calls.length;
      const answer = await sendRaw(trusted.port, Buffer.from(`GET /api/me HTTP/1.1\r\nHost: 127.0.0.1:${trusted.port}\r\nX-Breakglass-Proxy-Secret: ${PROXY_SECRET}\r\n${line}\r\nConnection: close\r\n\r\n`, 'utf8'));
      expectRefused('proxy: raw header tricks', trusted.fake, before, { status: answer.status, text: answer.body }, JSON.stringify(line));
    }
    control('proxy: exact identity', await send(trusted.port, me(fromProxy('alice'))), 'alice');
  });

  it('when the trusted address sends a missing, wrong, near-miss, doubled or misplaced shared secret, then 401 on reads and mutations; the exact secret under any header-name case is accepted', async () => {
    const flip = (text: string, at: number) => text.slice(0, at) + (text[at] === 'x' ? 'y' : 'x') + text.slice(at + 1);
    const secrets: (string | string[] | undefined)[] = [
      undefined, '', ' ', OTHER_PROXY_SECRET, PROXY_SECRET.slice(0, -1), `${PROXY_SECRET}x`, `x${PROXY_SECRET}`, PROXY_SECRET.toUpperCase(), flip(PROXY_SECRET, 0), flip(PROXY_SECRET, PROXY_SECRET.length - 1),
      `${PROXY_SECRET},${PROXY_SECRET}`, [PROXY_SECRET, PROXY_SECRET], [PROXY_SECRET, 'wrong'], sha(PROXY_SECRET), Buffer.from(PROXY_SECRET).toString('base64'), `Bearer ${PROXY_SECRET}`, encodeURIComponent(`${PROXY_SECRET}/`),
    ];
    for (const secret of secrets) {
      const headers = { 'x-forwarded-user': 'alice', ...(secret === undefined ? {} : { 'x-breakglass-proxy-secret': secret }) };
      const answer = await attempt('proxy: wrong shared secret from the trusted address', trusted, me(headers));
      expect(JSON.parse(answer.text).message, JSON.stringify(secret)).toBe("x-breakglass-proxy-secret: the proxy's shared secret is missing or wrong");
      await attempt('proxy: wrong shared secret from the trusted address', trusted, create({ ...headers, origin: `http://127.0.0.1:${trusted.port}`, 'sec-fetch-site': 'same-origin' }));
    }
    // The right secret anywhere but its own header proves nothing.
    const misplacedSecrets: Record<string, string>[] = [{ 'x-breakglass-proxy-secrets': PROXY_SECRET }, { 'x_breakglass_proxy_secret': PROXY_SECRET }, { 'x-proxy-secret': PROXY_SECRET }, { authorization: `Bearer ${PROXY_SECRET}` }, { cookie: `${SESSION_COOKIE}=${PROXY_SECRET}` }, { 'x-forwarded-user': PROXY_SECRET }];
    for (const misplaced of misplacedSecrets) {
      await attempt('proxy: shared secret under another header', trusted, me({ 'x-forwarded-user': 'alice', ...misplaced }));
    }
    // Raw bytes: the header given twice (Node joins the values), folded, or with a space before the colon.
    for (const lines of [`X-Breakglass-Proxy-Secret: ${PROXY_SECRET}\r\nX-Breakglass-Proxy-Secret: ${PROXY_SECRET}`, `X-Breakglass-Proxy-Secret:\r\n ${PROXY_SECRET}`, `X-Breakglass-Proxy-Secret : ${PROXY_SECRET}`]) {
      const before = trusted.fake.calls.length;
      const answer = await sendRaw(trusted.port, Buffer.from(`GET /api/me HTTP/1.1\r\nHost: 127.0.0.1:${trusted.port}\r\nX-Forwarded-User: alice\r\n${lines}\r\nConnection: close\r\n\r\n`, 'utf8'));
      expectRefused('proxy: raw shared-secret tricks', trusted.fake, before, { status: answer.status, text: answer.body }, JSON.stringify(lines));
    }
    for (const name of ['x-breakglass-proxy-secret', 'X-Breakglass-Proxy-Secret', 'X-BREAKGLASS-PROXY-SECRET']) {
      control('proxy: exact shared secret', await send(trusted.port, me({ 'x-forwarded-user': 'alice', [name]: PROXY_SECRET })), name);
    }
  });
});

// -------------------------------------------------- proxy mode: generated requests at identify

/** A socket address the generator knows the trust of, for ranges 10.0.0.0/8 and fd00::/8. */
type LabelledAddress = { address: string | undefined; trusted: boolean };
const octet = fc.integer({ min: 0, max: 255 });
const hextet = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16));
const trustedAddress: fc.Arbitrary<LabelledAddress> = fc.oneof(
  fc.tuple(octet, octet, octet).map(([a, b, c]) => `10.${a}.${b}.${c}`),
  fc.tuple(octet, octet, octet).map(([a, b, c]) => `::ffff:10.${a}.${b}.${c}`),
  fc.tuple(fc.integer({ min: 0, max: 0xff }), hextet, hextet).map(([a, b, c]) => `fd${a.toString(16).padStart(2, '0')}:${b}::${c}`),
).map((address) => ({ address, trusted: true }));
const untrustedAddress: fc.Arbitrary<LabelledAddress> = fc.oneof(
  fc.tuple(octet.filter((a) => a !== 10), octet, octet, octet).map(([a, b, c, d]) => `${a}.${b}.${c}.${d}`),
  fc.tuple(octet.filter((a) => a !== 10), octet, octet, octet).map(([a, b, c, d]) => `::ffff:${a}.${b}.${c}.${d}`),
  fc.tuple(hextet.filter((h) => !/^fd..$/.test(h)), hextet).map(([a, b]) => `${a}::${b}`),
  // What ipaddr.js alone would read as 10.x or 8.x (inet_aton forms), and look-alikes of trusted addresses.
  fc
    .tuple(octet, octet, fc.constantFrom(
      (a: number, b: number) => `010.0.${a}.${b}`,
      (a: number) => `10.${a}`,
      (a: number, b: number) => `0x0a.0.${a}.${b}`,
      (a: number, b: number) => `10.0.${a}.${b}.evil.example`,
      (a: number, b: number) => ` 10.0.${a}.${b}`,
      (a: number, b: number) => `10.0.${a}.${b}/8`,
      (a: number) => `[fd00::${a}]`,
    ))
    .map(([a, b, form]) => form(a, b)),
  fc.constantFrom('', 'unknown', 'localhost', '127.0.0.1', '::1', '::', '0.0.0.0', '::ffff:127.0.0.1'),
  fc.string({ maxLength: 20 }).filter((text) => isIP(text) === 0),
).map((address) => ({ address, trusted: false }));
const socketAddress = fc.oneof({ weight: 3, arbitrary: trustedAddress }, { weight: 2, arbitrary: untrustedAddress }, { weight: 1, arbitrary: fc.constant<LabelledAddress>({ address: undefined, trusted: false }) });

/** The shared-secret header as sent, and whether it is exactly the secret. */
type LabelledSecret = { headers: Record<string, string | string[]>; exact: boolean };
const nearMiss = fc.tuple(fc.nat({ max: PROXY_SECRET.length - 1 }), fc.constantFrom(...B64URL, ' ', ',', '\t'), fc.constantFrom('flip', 'drop', 'insert')).map(([at, ch, how]) => {
  const chars = [...PROXY_SECRET];
  if (how === 'flip') chars[at] = chars[at] === ch ? (ch === 'a' ? 'b' : 'a') : ch;
  else if (how === 'drop') chars.splice(at, 1);
  else chars.splice(at, 0, ch);
  return chars.join('');
});
const secretHeader = (value: string | string[]) => ({ 'x-breakglass-proxy-secret': value });
const sharedSecret: fc.Arbitrary<LabelledSecret> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ headers: secretHeader(PROXY_SECRET), exact: true }) },
  {
    weight: 5,
    arbitrary: fc
      .oneof(
        fc.constant<Record<string, string | string[]>>({}),
        nearMiss.map(secretHeader),
        fc.constantFrom('', OTHER_PROXY_SECRET, PROXY_SECRET.toUpperCase(), ` ${PROXY_SECRET}`, `${PROXY_SECRET} `, `${PROXY_SECRET}, ${PROXY_SECRET}`, sha(PROXY_SECRET), `Bearer ${PROXY_SECRET}`).map(secretHeader),
        fc.constant(secretHeader([PROXY_SECRET, PROXY_SECRET])),
        fc.string({ maxLength: 60 }).map(secretHeader),
        fc.constantFrom('x-breakglass-proxy-secrets', 'x_breakglass_proxy_secret', 'x-proxy-secret', 'x-forwarded-secret', 'authorization').map((name) => ({ [name]: PROXY_SECRET })),
      )
      .map((headers) => ({ headers, exact: false })),
  },
);

/** The identity header as sent, and what identify must make of it given the rest is right. */
type LabelledIdentity = { headers: Record<string, string | string[]>; outcome: 'alice' | 403 | 401 };
const identityHeader: fc.Arbitrary<LabelledIdentity> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<LabelledIdentity>({ headers: { 'x-forwarded-user': 'alice' }, outcome: 'alice' }) },
  { weight: 2, arbitrary: fc.constantFrom('bob', 'mallory', 'admin', 'root', 'ALICE', 'Alice', 'alice@evil.example', 'alice+admin', 'a'.repeat(200)).map((who): LabelledIdentity => ({ headers: { 'x-forwarded-user': who }, outcome: 403 })) },
  {
    weight: 2,
    arbitrary: fc
      .oneof(
        fc.constant<Record<string, string | string[]>>({}),
        fc.constantFrom('', 'alice, bob', 'al ice', 'alice;bob', 'a'.repeat(201), 'alice\u0000', '"alice"', 'alice\u00a0', '\u0430lice').map((who) => ({ 'x-forwarded-user': who })),
        fc.constant<Record<string, string | string[]>>({ 'x-forwarded-user': ['alice', 'alice'] }),
        fc.constantFrom('x-remote-user', 'x-auth-request-user', 'x_forwarded_user').map((name) => ({ [name]: 'alice' })),
      )
      .map((headers): LabelledIdentity => ({ headers, outcome: 401 })),
  },
);

describe('abuse: proxy auth — generated requests straight at identify', () => {
  it(
    `when ${scaled(10_000).toLocaleString('en')} generated requests combine socket addresses, shared secrets, identities and spoofing headers, then only a trusted address with the exact secret and an allowlisted identity is accepted`,
    () => {
      const auth = authOf(proxyAuth(['10.0.0.0/8', 'fd00::/8']));
      const tally = { runs: 0, accepted: 0, refused: 0 };
      const started = performance.now();
      fc.assert(
        fc.property(socketAddress, sharedSecret, identityHeader, fc.constantFrom(...SPOOF_HEADERS), (socket, secret, identity, spoof) => {
          tally.runs++;
          const request = { socket: { remoteAddress: socket.address }, headers: { ...spoof, ...secret.headers, ...identity.headers } } as unknown as FastifyRequest;
          const expected = !socket.trusted ? 401 : !secret.exact ? 401 : identity.outcome;
          let outcome: string | number;
          let message = '';
          try {
            outcome = auth.identify(request);
            tally.accepted++;
          } catch (error) {
            expect(error).toBeInstanceOf(AuthError);
            outcome = (error as AuthError).statusCode;
            message = (error as AuthError).message;
            tally.refused++;
          }
          expect(outcome, JSON.stringify({ socket, secret, identity })).toBe(expected);
          if (socket.trusted && !secret.exact) expect(message).toBe("x-breakglass-proxy-secret: the proxy's shared secret is missing or wrong");
          expect(message).not.toContain(PROXY_SECRET);
        }),
        { numRuns: scaled(10_000) },
      );
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      console.log(`abuse-auth: identify (proxy mode): ${tally.runs} generated requests in ${seconds} s — ${tally.accepted} accepted (trusted address, exact secret, allowlisted identity), ${tally.refused} refused`);
      expect(tally.runs).toBeGreaterThanOrEqual(scaled(10_000));
      expect(tally.accepted).toBeGreaterThan(0);
    },
    scaledTimeout(60_000),
  );
});

// ------------------------------------------------------------------------------- token mode

describe('abuse: bearer tokens — malformed, forged, tampered, misplaced', () => {
  let server: Server;
  let other: Server;
  let allowlisted: Server;
  beforeAll(async () => {
    const tokens = [{ operator: 'alice', sha256: sha(ALICE) }, { operator: 'bob', sha256: sha(BOB) }];
    server = await serve({ mode: 'token', tokens });
    other = await serve({ mode: 'token', tokens: [{ operator: 'eve', sha256: sha('eve-other-deployment-0123456789') }] });
    allowlisted = await serve({ mode: 'token', tokens: [...tokens, { operator: 'mallory', sha256: sha(MALLORY) }], operators: ['alice', 'bob'] });
  });

  it('when the Authorization header is malformed or carries a near-miss of a real token, then 401 on every route and on login', async () => {
    const fixed = [
      `bearer ${ALICE}`, `BEARER ${ALICE}`, `Bearer  ${ALICE}`, `Bearer\t${ALICE}`, `Bearer`, `Bearer `, ALICE, `Token ${ALICE}`, `Basic ${Buffer.from(`alice:${ALICE}`).toString('base64')}`,
      `Bearer ${sha(ALICE)}`, `Bearer ${ALICE.slice(0, -1)}`, `Bearer ${ALICE}x`, `Bearer ${ALICE.toUpperCase()}`, `Bearer ${ALICE} ${ALICE}`, `Bearer ${ALICE},Bearer ${BOB}`,
      `Bearer ${'a'.repeat(15)}`, `Bearer ${'a'.repeat(257)}`, `Bearer eve-other-deployment-0123456789`, `Bearer ${LAB}`, `Bearer ${LIVE}`, `Bearer ${encodeURIComponent(ALICE + '/')}`,
    ];
    for (const authorization of fixed) {
      await attempt('token: malformed or near-miss', server, me({ authorization }));
      await attempt('token: malformed or near-miss', server, create({ authorization }));
    }
    // Duplicate Authorization headers: Node keeps the first; a wrong first one is refused.
    await attempt('token: duplicate headers (wrong first)', server, me({ authorization: [`Bearer ${BOB}x`, `Bearer ${ALICE}`] }));
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: ALICE.length - 1 }), fc.constantFrom(...B64URL, '.', '~', '+', '/', '='), fc.constantFrom('flip', 'drop', 'insert'), async (at, ch, how) => {
        const chars = [...ALICE];
        if (how === 'flip') chars[at] = chars[at] === ch ? (ch === 'a' ? 'b' : 'a') : ch;
        else if (how === 'drop') chars.splice(at, 1);
        else chars.splice(at, 0, ch);
        const token = chars.join('');
        fc.pre(token !== ALICE && token !== BOB);
        await attempt('token: tampered real token', server, me({ authorization: `Bearer ${token}` }));
        const before = server.fake.calls.length;
        const login = await send(server.port, { method: 'POST', path: '/api/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
        expectRefused('token: tampered real token at login', server.fake, before, login, token);
      }),
      { numRuns: 150 },
    );
    await fc.assert(
      fc.asyncProperty(fc.stringMatching(/^[A-Za-z0-9._~+/=-]{16,64}$/), async (guess) => {
        await attempt('token: random guesses', server, me({ authorization: `Bearer ${guess}` }));
      }),
      { numRuns: 100 },
    );
    control('token: real token', await send(server.port, me({ authorization: `Bearer ${ALICE}` })), 'alice');
    control('token: duplicate headers (right first)', await send(server.port, me({ authorization: [`Bearer ${ALICE}`, 'Bearer wrong-wrong-wrong-wrong'] })), 'alice first');
  });

  it('when a valid token belongs to another deployment or to an operator off the allowlist, then 401 / 403', async () => {
    await attempt('token: other deployment', other, me({ authorization: `Bearer ${ALICE}` }));
    await attempt('token: other deployment', server, me({ authorization: 'Bearer eve-other-deployment-0123456789' }));
    await attempt('token: operator off the allowlist', allowlisted, me({ authorization: `Bearer ${MALLORY}` }));
    await attempt('token: operator off the allowlist', allowlisted, create({ authorization: `Bearer ${MALLORY}` }));
    const before = allowlisted.fake.calls.length;
    const login = await send(allowlisted.port, { method: 'POST', path: '/api/login', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: MALLORY }) });
    expectRefused('token: operator off the allowlist', allowlisted.fake, before, login, 'login as mallory');
    expect(login.headers['set-cookie']).toBeUndefined();
    control('token: allowlisted operator', await send(allowlisted.port, me({ authorization: `Bearer ${BOB}` })), 'bob');
  });
});

// --------------------------------------------------------------------------------- cookies

describe('abuse: session cookies — tampered, forged, swapped, expired, misplaced', () => {
  let server: Server;
  let other: Server;
  let alice: string;
  let bob: string;
  beforeAll(async () => {
    server = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }, { operator: 'bob', sha256: sha(BOB) }] });
    other = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }] });
    alice = await cookieFor(server, ALICE);
    bob = await cookieFor(server, BOB);
  });

  const jar = (value: string) => ({ cookie: `${SESSION_COOKIE}=${value}` });

  it('when any character of the payload or the signature is changed, then 401', async () => {
    const [payload, signature] = alice.split('.') as [string, string];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('payload', 'signature'), fc.nat(), fc.constantFrom(...B64URL), async (part, index, ch) => {
        const target = part === 'payload' ? payload : signature;
        const at = index % target.length;
        fc.pre(target[at] !== ch);
        const changed = target.slice(0, at) + ch + target.slice(at + 1);
        const value = part === 'payload' ? `${changed}.${signature}` : `${payload}.${changed}`;
        await attempt(`cookie: tampered ${part}`, server, me(jar(value)));
      }),
      { numRuns: 300 },
    );
    control('cookie: as issued', await send(server.port, me(jar(alice))), 'alice');
  });

  it('when a payload is crafted (another operator, a far expiry, an admin flag) or swapped between cookies, then 401: no modification is accepted', async () => {
    const [alicePayload, aliceSig] = alice.split('.') as [string, string];
    const [bobPayload, bobSig] = bob.split('.') as [string, string];
    const decoded = JSON.parse(Buffer.from(alicePayload, 'base64url').toString('utf8')) as { operator: string; expires: number };
    expect(decoded.operator).toBe('alice');
    const craft = (data: object) => Buffer.from(JSON.stringify(data)).toString('base64url');
    const crafted = [
      craft({ ...decoded, operator: 'bob' }),
      craft({ ...decoded, expires: decoded.expires + 365 * 24 * 3600 * 1000 }),
      craft({ ...decoded, expires: Date.now() - 1000 }), // "expired": without the key, not even this can be produced
      craft({ ...decoded, admin: true }),
      craft({ operator: 'alice' }),
      craft({ operator: 'alice', expires: 'never' }),
      craft([decoded]),
      `${alicePayload}=`,
      `${alicePayload}==`,
      Buffer.from(JSON.stringify(decoded)).toString('base64'), // standard base64, same JSON
      alicePayload.toUpperCase(),
    ];
    for (const payload of crafted) {
      // Alice's payload renamed to bob IS bob's genuine payload when both cookies were issued in
      // the same millisecond: that is bob's own cookie, not a forgery.
      if (payload === bobPayload) continue;
      for (const signature of [aliceSig, bobSig, '', 'x', aliceSig.slice(0, -1), `${aliceSig}A`]) {
        await attempt('cookie: crafted payload', server, me(jar(`${payload}.${signature}`)));
      }
    }
    for (const value of [`${alicePayload}.${bobSig}`, `${bobPayload}.${aliceSig}`]) await attempt('cookie: swapped signature', server, me(jar(value)));
    await attempt('cookie: from another deployment', other, me(jar(alice)));
    await attempt('cookie: from another deployment', server, me(jar(await cookieFor(other, ALICE))));
  });

  it('when the cookie is malformed, misnamed, doubled or misplaced, then 401', async () => {
    const [payload, signature] = alice.split('.') as [string, string];
    const values = [
      '', '.', '..', `${payload}.`, `.${signature}`, `${payload}..${signature}`, `${payload}.${signature}.`, `${payload}.${signature}.x`, `${payload}.${signature}.${signature}`,
      `"${alice}"`, ` ${alice}`, `${payload}%2E${signature}`, encodeURIComponent(alice).replace('.', '%2e'), `${payload}\t.${signature}`, 'forged.signature', 'a'.repeat(5000),
    ];
    for (const value of values) await attempt('cookie: malformed value', server, me(jar(value)));
    const headers: Record<string, string>[] = [
      { cookie: `Breakglass_Session=${alice}` },
      { cookie: `BREAKGLASS_SESSION=${alice}` },
      { cookie: `breakglass_session_x=${alice}` },
      { cookie: `x_breakglass_session=${alice}` },
      { cookie: `breakglass_session =${alice}` },
      { cookie: `${SESSION_COOKIE}=forged.sig; ${SESSION_COOKIE}=${alice}` },
      { cookie2: `${SESSION_COOKIE}=${alice}` },
      { 'set-cookie': `${SESSION_COOKIE}=${alice}` },
      { authorization: `Bearer ${alice}` },
      { 'x-breakglass-session': alice },
    ];
    for (const h of headers) await attempt('cookie: misnamed, doubled or misplaced', server, me(h));
    control('cookie: among other cookies', await send(server.port, me({ cookie: `theme=dark; ${SESSION_COOKIE}=${alice}; lang=en` })), 'alice among others');
  });
});

// ------------------------------------------------------------------------------------ CSRF

describe('abuse: CSRF on cookie- and proxy-authenticated mutations', () => {
  let server: Server;
  let proxy: Server;
  let cookie: string;
  let host: string;
  beforeAll(async () => {
    server = await serve({ mode: 'token', tokens: [{ operator: 'alice', sha256: sha(ALICE) }] });
    proxy = await serve(proxyAuth(['127.0.0.1/32']));
    cookie = `${SESSION_COOKIE}=${await cookieFor(server, ALICE)}`;
    host = `127.0.0.1:${server.port}`;
  });

  const MUTATIONS = (id: string): { method: string; path: string; body?: string }[] => [
    { method: 'POST', path: '/api/sessions', body: CREATE },
    { method: 'POST', path: `/api/sessions/${id}/verbs`, body: JSON.stringify({ verb: 'cycle', reason: 'csrf' }) },
    { method: 'POST', path: `/api/sessions/${id}/approvals/a-1`, body: JSON.stringify({ decision: 'approve' }) },
    { method: 'PUT', path: `/api/sessions/${id}/policy`, body: JSON.stringify({ mutatingVerbs: 'autonomous' }) },
    { method: 'POST', path: `/api/sessions/${id}/end`, body: '{}' },
    // Body-less POSTs: what a cross-site `fetch(url, { method: 'POST', mode: 'no-cors', credentials: 'include' })`
    // sends without any CORS preflight.
    { method: 'POST', path: `/api/sessions/${id}/cancel` },
    { method: 'POST', path: `/api/sessions/${id}/pause` },
    { method: 'POST', path: `/api/sessions/${id}/end` },
  ];
  const json = (mutation: { body?: string }): Record<string, string> => (mutation.body !== undefined ? { 'content-type': 'application/json' } : {});

  it('when a cookie-authenticated mutation has no Origin, a null, foreign, other-scheme or other-port Origin, or a cross-site Sec-Fetch-Site, then 403', async () => {
    const origins: (string | undefined)[] = [
      undefined, 'null', 'http://evil.example', `http://${host}.evil.example`, `http://evil.example/${host}`, `http://${host}@evil.example`, `ftp://${host}`, `ws://${host}`, `file://`,
      `http://127.0.0.1:${server.port + 1}`, `http://localhost:${server.port}`, `http://127.0.0.1`, `http://${host}/`, `HTTP://${host}`, `http://[::1]:${server.port}`, `http://127.0.0.2:${server.port}`,
    ];
    const sites: (string | undefined)[] = [undefined, 'cross-site', 'same-site', 'Same-Origin', 'same-origin, cross-site'];
    for (const mutation of MUTATIONS('bg-20260611-0312-k7qm')) {
      for (const origin of origins) {
        for (const site of sites) {
          const headers: Record<string, string> = { cookie, ...json(mutation), ...(origin !== undefined ? { origin } : {}), ...(site !== undefined ? { 'sec-fetch-site': site } : {}) };
          await attempt('csrf: bad Origin / Sec-Fetch-Site', server, { ...mutation, headers });
        }
      }
      // The right Origin with a cross-site fetch context, and a same-origin Referer without Origin.
      for (const site of ['cross-site', 'same-site']) await attempt('csrf: right Origin, cross-site context', server, { ...mutation, headers: { cookie, ...json(mutation), origin: `http://${host}`, 'sec-fetch-site': site } });
      await attempt('csrf: Referer instead of Origin', server, { ...mutation, headers: { cookie, ...json(mutation), referer: `http://${host}/` } });
    }
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.webUrl(), fc.webUrl().map((u) => u.replace(/^https?:\/\/[^/]+/, `http://${host}.x`)), fc.string({ maxLength: 40 })), async (origin) => {
        fc.pre(origin !== `http://${host}` && origin !== `https://${host}` && /^[\x20-\x7e]*$/.test(origin) && origin.trim() === origin);
        await attempt('csrf: generated Origins', server, { ...MUTATIONS('bg-x')[0]!, headers: { cookie, 'content-type': 'application/json', origin } });
      }),
      { numRuns: 150 },
    );
    control('csrf: same-origin console', await send(server.port, { ...MUTATIONS('x')[0]!, headers: { cookie, 'content-type': 'application/json', origin: `http://${host}`, 'sec-fetch-site': 'same-origin' } }), 'same origin');
  });

  it('when a proxy-authenticated mutation comes cross-site, then 403 — also when the browser attaches an Authorization header (Basic auth at the proxy)', async () => {
    const proxyHost = `127.0.0.1:${proxy.port}`;
    for (const extra of [{}, { authorization: 'Basic YWxpY2U6c2VjcmV0' }, { authorization: 'Bearer not-a-breakglass-token-000' }, { authorization: 'Negotiate YIIx' }] as Record<string, string>[]) {
      for (const origin of [undefined, 'null', 'http://evil.example']) {
        for (const mutation of MUTATIONS('bg-20260611-0312-k7qm')) {
          const headers: Record<string, string> = { ...fromProxy('alice'), ...json(mutation), ...extra, ...(origin ? { origin, 'sec-fetch-site': 'cross-site' } : {}) };
          await attempt('csrf: proxy mode', proxy, { ...mutation, headers });
        }
      }
    }
    control('csrf: proxy mode same-origin', await send(proxy.port, { ...MUTATIONS('x')[0]!, headers: { ...fromProxy('alice'), 'content-type': 'application/json', origin: `http://${proxyHost}`, 'sec-fetch-site': 'same-origin' } }), 'same origin');
  });
});

// ------------------------------------------------------------------------------- lab mode

describe('abuse: the lab token from non-loopback addresses', () => {
  let lab: Server;
  beforeAll(async () => {
    lab = await serve({ mode: 'lab' }, { BREAKGLASS_LAB_TOKEN: LAB }, { livePush: { token: LIVE, bus: new LiveBus() } });
  });

  const REMOTES = ['10.0.0.5', '192.168.1.10', '172.16.0.1', '100.64.0.1', '::ffff:10.0.0.5', '2001:db8::1', 'fe80::1', '127.0.0.2', '::ffff:127.0.0.2', '127.1', '0.0.0.0', '::', 'localhost'];

  it('when the lab token (bearer, cookie or login) comes from any non-loopback address, then 401 — forwarding headers claiming loopback change nothing', async () => {
    const loopbackCookie = await cookieFor(lab, LAB);
    for (const remoteAddress of REMOTES) {
      for (const spoof of [{}, { 'x-forwarded-for': '127.0.0.1' }, { 'x-real-ip': '127.0.0.1' }, { forwarded: 'for=127.0.0.1' }, { host: '127.0.0.1' }] as Record<string, string>[]) {
        await attemptFrom('lab: bearer from non-loopback', lab, remoteAddress, { method: 'GET', url: '/api/me', headers: { authorization: `Bearer ${LAB}`, ...spoof } });
        await attemptFrom('lab: bearer from non-loopback', lab, remoteAddress, { method: 'POST', url: '/api/sessions', headers: { authorization: `Bearer ${LAB}`, 'content-type': 'application/json', ...spoof }, payload: CREATE });
      }
      await attemptFrom('lab: cookie from non-loopback', lab, remoteAddress, { method: 'GET', url: '/api/me', headers: { cookie: `${SESSION_COOKIE}=${loopbackCookie}` } });
      const res = await attemptFrom('lab: login from non-loopback', lab, remoteAddress, { method: 'POST', url: '/api/login', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ token: LAB }) });
      expect(res.headers['set-cookie'], remoteAddress).toBeUndefined();
    }
    for (const remoteAddress of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) {
      const res = await lab.app.inject({ method: 'GET', url: '/api/me', headers: { authorization: `Bearer ${LAB}` }, remoteAddress });
      control('lab: loopback', { status: res.statusCode }, remoteAddress);
    }
  });

  it('when the live-push endpoint gets anything but its own token, then 401 and nothing is published', async () => {
    const body = JSON.stringify({ chunks: [{ sessionId: 'bg-x', stream: 's', kind: 'text', text: 'injected' }] });
    for (const authorization of [undefined, `Bearer ${LAB}`, `Bearer ${LIVE}x`, `Bearer ${LIVE.slice(0, -1)}`, `bearer ${LIVE}`, `Bearer  ${LIVE}`, LIVE, `Basic ${Buffer.from(`x:${LIVE}`).toString('base64')}`, `Bearer ${sha(LIVE)}`]) {
      await attempt('live push: wrong token', lab, { method: 'POST', path: '/internal/live', headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) }, body });
    }
    control('live push: its own token', await send(lab.port, { method: 'POST', path: '/internal/live', headers: { 'content-type': 'application/json', authorization: `Bearer ${LIVE}` }, body }), 'live token');
  });
});

describe('abuse-auth totals', () => {
  it('when every family has run, then not one attempt was accepted', () => {
    const total = [...attempts.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(1_000);
    expect(accepted).toBe(0);
    expect([...controls.values()].reduce((a, b) => a + b, 0)).toBeGreaterThan(10);
  });
});
