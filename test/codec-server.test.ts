/**
 * The codec server (server/codec-routes.ts) through the real HTTP port: Temporal's remote codec
 * protocol for the people the console lets in, and 4xx with nothing decoded for everything else
 * (no login, another origin, another media type, an oversized or malformed body, a flood).
 */
import { createHash, randomBytes } from 'node:crypto';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../server/app.js';
import { createAuthenticator } from '../server/auth.js';
import { CODEC_BODY_LIMIT_BYTES } from '../server/codec-routes.js';
import { loadConfig } from '../server/config.js';
import { EncryptingPayloadCodec } from '../server/payload-codec.js';

const TOKEN = 'codec-operator-token-0123456789';
const WEB_UI = 'http://127.0.0.1:8233';
const MARKER = `codec-marker-${randomBytes(6).toString('hex')}`;
const codec = new EncryptingPayloadCodec([{ id: 'key-a', key: randomBytes(32) }], { compress: true });
const endpoints = {
  devvm: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
  pve: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
};

let app: FastifyInstance;
let base: string;
const logLines: string[] = [];
/** The log lines of decodes and encodes (what the server says it decoded, for whom). */
const codecLog = () => logLines.map((line) => JSON.parse(line) as { msg: string; operator?: string; keyIds?: string[]; payloads?: number }).filter((line) => /^codec /.test(line.msg));

const toJson = (payload: Payload) => ({
  metadata: Object.fromEntries(Object.entries(payload.metadata ?? {}).map(([key, value]) => [key, Buffer.from(value).toString('base64')])),
  data: Buffer.from(payload.data ?? []).toString('base64'),
});
const encryptedBody = async (value: unknown) => ({ payloads: (await codec.encode([defaultPayloadConverter.toPayload(value) as Payload])).map(toJson) });
const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}`, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

beforeAll(async () => {
  const config = loadConfig({ env: {}, file: { ...endpoints, auth: { mode: 'token', tokens: [{ operator: 'carol', sha256: createHash('sha256').update(TOKEN).digest('hex') }] } } });
  app = await buildApp({
    // The codec routes touch no session: the session routes are registered but never called here.
    sessions: {} as never,
    events: {} as never,
    auth: createAuthenticator(config),
    readiness: async () => ({ temporal: true, worker: true }),
    temporalUiUrl: WEB_UI,
    namespace: 'default',
    agent: { mode: 'off', reason: 'test' },
    logger: { level: 'info', stream: { write: (line: string) => logLines.push(line) } },
    codecServer: { codec, webUiOrigins: [WEB_UI], rateLimit: 40 },
  });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

afterAll(() => app?.close());

describe('codec server', () => {
  it('when an operator decodes what the codec encrypted, then the payloads come back in the protocol shape and the log names the operator, not the contents', async () => {
    const response = await post('/codec/decode', await encryptedBody({ stdout: MARKER }), { 'x-namespace': 'default' });
    expect(response.status).toBe(200);
    const { payloads } = (await response.json()) as { payloads: { metadata: Record<string, string>; data: string }[] };
    expect(Buffer.from(payloads[0]?.metadata.encoding ?? '', 'base64').toString()).toBe('json/plain');
    expect(JSON.parse(Buffer.from(payloads[0]?.data ?? '', 'base64').toString())).toEqual({ stdout: MARKER });
    expect(codecLog().at(-1)).toMatchObject({ msg: 'codec decode', operator: 'carol', namespace: 'default', payloads: 1, keyIds: ['key-a'] });
    expect(logLines.join('\n')).not.toContain(MARKER);
    // A decoded payload would show up base64-encoded or as a Buffer, not as the marker: the line
    // may carry these fields and no others.
    const fields = new Set(['level', 'time', 'pid', 'hostname', 'reqId', 'msg', 'operator', 'namespace', 'payloads', 'keyIds']);
    for (const line of codecLog()) expect(Object.keys(line).filter((key) => !fields.has(key))).toEqual([]);
  });

  it('when payloads that inflate small-to-huge are sent at once, then the request is refused once the decoded total passes its bound (413), not held in memory', async () => {
    // 3 MiB of zeros deflates to a few KiB: within the body limit, 40 of them would decode to 120 MiB.
    const [bomb] = await codec.encode([{ metadata: { encoding: Buffer.from('binary/plain') }, data: Buffer.alloc(3 * 1024 * 1024) }]);
    const body = { payloads: Array.from({ length: 40 }, () => toJson(bomb as Payload)) };
    expect(JSON.stringify(body).length).toBeLessThan(CODEC_BODY_LIMIT_BYTES);
    const response = await post('/codec/decode', body);
    expect(response.status).toBe(413);
    expect(Object.keys((await response.json()) as object).sort()).toEqual(['error', 'message']);
  });

  it('when an operator encodes (the Web UI sending a typed input), then the result is encrypted and decodes back', async () => {
    const plain = { payloads: [toJson(defaultPayloadConverter.toPayload({ reason: MARKER }) as Payload)] };
    const encoded = (await (await post('/codec/encode', plain)).json()) as { payloads: { metadata: Record<string, string>; data: string }[] };
    expect(Buffer.from(encoded.payloads[0]?.metadata.encoding ?? '', 'base64').toString()).toBe('binary/encrypted');
    expect(Buffer.from(encoded.payloads[0]?.data ?? '', 'base64').toString('latin1')).not.toContain(MARKER);
    const decoded = (await (await post('/codec/decode', encoded)).json()) as typeof plain;
    expect(decoded).toEqual(plain);
  });

  it('when the Web UI origin calls with the console\'s login cookie, then the preflight and the call are allowed for that origin only', async () => {
    const login = await fetch(`${base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: TOKEN }) });
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] as string;
    const preflight = await fetch(`${base}/codec/decode`, { method: 'OPTIONS', headers: { origin: WEB_UI, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-namespace' } });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe(WEB_UI);
    expect(preflight.headers.get('access-control-allow-credentials')).toBe('true');
    expect(preflight.headers.get('access-control-allow-headers')).toContain('x-namespace');
    const response = await fetch(`${base}/codec/decode`, { method: 'POST', headers: { 'content-type': 'application/json', origin: WEB_UI, cookie }, body: JSON.stringify(await encryptedBody(MARKER)) });
    expect(response.status).toBe(200);
    expect(response.headers.get('access-control-allow-origin')).toBe(WEB_UI);
  });

  describe('abuse: all 4xx, nothing decoded', () => {
    let body: { payloads: unknown[] };
    beforeAll(async () => {
      body = await encryptedBody({ stdout: MARKER });
    });

    const refused: [string, () => Promise<Response>, number, RegExp][] = [
      ['no credentials', () => fetch(`${base}/codec/decode`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }), 401, /authentication required/],
      ['a wrong token', () => post('/codec/decode', body, { authorization: 'Bearer not-the-token-0123456789' }), 401, /token: not valid/],
      ['an unlisted Origin, even with a valid token', () => post('/codec/decode', body, { origin: 'https://evil.example' }), 403, /origin https:\/\/evil\.example may not call the codec server/],
      ['text/plain', () => post('/codec/decode', JSON.stringify(body), { 'content-type': 'text/plain' }), 415, /content-type: must be application\/json/],
      ['no content type', () => fetch(`${base}/codec/decode`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: new Blob([JSON.stringify(body)]) }), 415, /content-type/],
      ['form encoding', () => post('/codec/decode', 'payloads=x', { 'content-type': 'application/x-www-form-urlencoded' }), 415, /content-type/],
      ['a body over the limit', () => post('/codec/decode', { payloads: [{ metadata: {}, data: 'A'.repeat(CODEC_BODY_LIMIT_BYTES + 4) }] }), 413, /.+/],
      ['not JSON', () => post('/codec/decode', '{"payloads": [', {}), 400, /.+/],
      ['payloads not a list', () => post('/codec/decode', { payloads: { data: 'AA==' } }), 400, /payloads/],
      ['data not base64', () => post('/codec/decode', { payloads: [{ metadata: {}, data: '<script>' }] }), 400, /data/],
      ['an unknown field', () => post('/codec/decode', { payloads: [], extra: 1 }), 400, /.+/],
      ['a metadata key that is no name', () => post('/codec/decode', { payloads: [{ metadata: { 'en coding': 'AA==' }, data: '' }] }), 400, /.+/],
      ['a key given twice', () => post('/codec/decode', '{"payloads":[],"payloads":[]}'), 400, /given twice/],
    ];
    it.each(refused)('when %s, then the answer is the 4xx that says so', async (_what, send, status, message) => {
      const before = codecLog().length;
      const response = await send();
      expect(response.status).toBe(status);
      const text = await response.text();
      expect(text).toMatch(message);
      expect(text).not.toContain(MARKER);
      expect(response.headers.get('access-control-allow-origin')).toBeNull();
      expect(codecLog().length, 'nothing was decoded').toBe(before);
    });

    it('when a payload names a key the ring lacks, or was altered, then 400 names the key and nothing is decoded', async () => {
      const foreign = new EncryptingPayloadCodec([{ id: 'key-from-elsewhere', key: randomBytes(32) }], { compress: false });
      const [payload] = await foreign.encode([defaultPayloadConverter.toPayload(MARKER) as Payload]);
      const unknown = await post('/codec/decode', { payloads: [toJson(payload as Payload)] });
      expect(unknown.status).toBe(400);
      expect(await unknown.json()).toMatchObject({ error: 'bad_payload', message: expect.stringContaining('key id "key-from-elsewhere", which is not in codec.keys') });
      const altered = body.payloads[0] as { metadata: Record<string, string>; data: string };
      const flipped = Buffer.from(altered.data, 'base64');
      flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 0xff;
      const tampered = await post('/codec/decode', { payloads: [{ ...altered, data: flipped.toString('base64') }] });
      expect(tampered.status).toBe(400);
      expect(await tampered.text()).not.toContain(MARKER);
    });

    it('when a preflight comes from an unlisted origin, then it is refused without CORS headers', async () => {
      const preflight = await fetch(`${base}/codec/decode`, { method: 'OPTIONS', headers: { origin: 'http://127.0.0.1:9999', 'access-control-request-method': 'POST' } });
      expect(preflight.status).toBe(403);
      expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    });

    it('when one client floods the codec server, then it is rate limited (429)', async () => {
      const statuses: number[] = [];
      for (let i = 0; i < 45; i++) statuses.push((await post('/codec/encode', { payloads: [] })).status);
      expect(statuses).toContain(429);
    });
  });
});
