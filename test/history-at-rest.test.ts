/**
 * History at rest, end to end on the real Temporal dev server: a session whose devvm output
 * holds a secret leaves no trace of it in the server's SQLite file, while the console, the
 * postmortem and the real `temporal` CLI through the codec server show it; a key rotation keeps
 * old sessions readable; a ring without the old key says which key it lacks; and the dev server's
 * Web UI in Chromium shows the session decoded to a person logged in to the console, and
 * encrypted (the codec server answering 401) to one who is not.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { freePort } from '../lab/sshd.js';
import { toolPath } from '../lab/temporal-dev.js';
import { buildApp } from '../server/app.js';
import { attestingInterceptor } from '../server/attestation.js';
import { createAuthenticator } from '../server/auth.js';
import { loadConfig } from '../server/config.js';
import { SessionEvents } from '../server/events.js';
import { LiveBus } from '../server/live-bus.js';
import { codecDataConverter, EncryptingPayloadCodec, KEY_ID_METADATA, type CodecKey } from '../server/payload-codec.js';
import { Sessions } from '../server/sessions.js';
import { searchKeyFrom } from '../server/session-search.js';
import { requestCommandUpdate } from '../workflows/messages.js';
import { DEFAULT_POLICY, type TranscriptEntry } from '../workflows/session-types.js';
import { TEST_ATTESTATION_KEY } from './helpers/attestation-key.js';
import { launchChromium } from './helpers/browser-lab.js';
import { startSessionEnv, uniqueQueue, waitForTranscript, type RunningWorker, type SessionEnv } from './helpers/session-env.js';

const run = promisify(execFile);
const TOKEN = 'history-at-rest-token-0123456789';
const KEY_A: CodecKey = { id: 'key-a', key: randomBytes(32) };
const KEY_B: CodecKey = { id: 'key-b', key: randomBytes(32) };
const endpoints = {
  devvm: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
  pve: { host: '127.0.0.1', keyFile: '/dev/null', fingerprints: ['SHA256:' + 'A'.repeat(43)] },
};
const marker = (what: string) => `${what}-${randomBytes(8).toString('hex')}`;

let env: SessionEnv;
let queue: string;
let worker: RunningWorker;
let browser: Browser | undefined;
/** Where the console the dev server's Web UI decodes through listens (chosen before the dev server starts). */
let webUiConsolePort: number;
const apps: FastifyInstance[] = [];

/** A console on the env's Temporal whose client and codec server use this key ring. */
async function serveConsole(keys: CodecKey[], listen: { port: number; webUiOrigins: string[] } = { port: 0, webUiOrigins: [] }): Promise<string> {
  const config = loadConfig({ env: {}, file: { ...endpoints, auth: { mode: 'token', tokens: [{ operator: 'carol', sha256: createHash('sha256').update(TOKEN).digest('hex') }] } } });
  const codec = new EncryptingPayloadCodec(keys, { compress: true });
  const client = new Client({ connection: env.client.connection, dataConverter: codecDataConverter(codec), interceptors: { workflow: [attestingInterceptor(TEST_ATTESTATION_KEY)] } });
  const sessions = new Sessions(client, { taskQueue: queue, target: { devvm: 'devvm', vmid: 102 }, policy: DEFAULT_POLICY, namespace: 'default', searchKeys: keys.map((key) => searchKeyFrom(key.key)) });
  const app = await buildApp({
    sessions,
    events: new SessionEvents(sessions, new LiveBus()),
    auth: createAuthenticator(config),
    readiness: async () => ({ temporal: true, worker: true }),
    temporalUiUrl: null,
    namespace: 'default',
    agent: { mode: 'off', reason: 'test' },
    codecServer: { codec, webUiOrigins: listen.webUiOrigins },
  });
  apps.push(app);
  return app.listen({ host: '127.0.0.1', port: listen.port });
}

const api = (base: string, path: string, body?: unknown) =>
  fetch(`${base}${path}`, body === undefined ? { headers: { authorization: `Bearer ${TOKEN}` } } : { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

async function transcriptWith(base: string, id: string, text: string): Promise<TranscriptEntry[]> {
  const deadline = Date.now() + 60_000;
  let last: TranscriptEntry[] = [];
  while (Date.now() < deadline) {
    const response = await api(base, `/api/sessions/${id}/transcript?limit=200`);
    if (response.ok) last = ((await response.json()) as { entries: TranscriptEntry[] }).entries;
    if (last.some((entry) => entry.type === 'command-result' && JSON.stringify(entry).includes(text))) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`no command result with ${text}; entries: ${last.map((entry) => entry.type).join(', ')}`);
}

/** A devvm command whose output, not its text, holds the secret: the secret sits in a file. */
async function runSecretCommand(base: string, id: string, secret: string): Promise<void> {
  const file = join(env.dir, `devvm-file-${randomBytes(4).toString('hex')}.txt`);
  await writeFile(file, `token=${secret}\n`);
  const response = await api(base, `/api/sessions/${id}/commands`, { command: `cat ${file}`, timeoutSeconds: 10 });
  expect(response.status).toBe(200);
  await transcriptWith(base, id, secret);
}

/**
 * The dev server's SQLite database as stored: the main file and its journal or write-ahead log.
 * A journal may be gone between listing and reading (its transaction committed): list again.
 */
async function sqliteBytes(): Promise<Buffer> {
  const dir = join(env.dir, 'temporal');
  for (let attempt = 1; ; attempt++) {
    const files = (await readdir(dir)).filter((name) => name.startsWith('temporal.sqlite'));
    expect(files).toContain('temporal.sqlite');
    try {
      return Buffer.concat(await Promise.all(files.map((name) => readFile(join(dir, name)))));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 20) throw error;
    }
  }
}

/** What `temporal workflow show --output json` printed, with every payload's data base64-decoded. */
function payloadTexts(json: string): string {
  const texts: string[] = [];
  const walk = (node: unknown): void => {
    if (!node || typeof node !== 'object') return;
    const { metadata, data } = node as { metadata?: Record<string, string>; data?: unknown };
    if (metadata && typeof data === 'string') texts.push(`${Buffer.from(metadata.encoding ?? '', 'base64').toString()}: ${Buffer.from(data, 'base64').toString('utf8')}`);
    for (const value of Object.values(node)) walk(value);
  };
  walk(JSON.parse(json));
  return texts.join('\n');
}

const temporalCli = (args: string[]) => run(toolPath('temporal'), [...args, '--address', env.temporal.address], { maxBuffer: 32 * 1024 * 1024 }).then(({ stdout }) => stdout);

beforeAll(async () => {
  webUiConsolePort = await freePort();
  env = await startSessionEnv({ codecKeys: [KEY_A], webUi: { codecEndpoint: `http://127.0.0.1:${webUiConsolePort}/codec` } });
  queue = uniqueQueue('at-rest');
  worker = await env.startWorker(queue);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  for (const app of apps) await app.close();
  await env?.teardown();
});

describe('history at rest', () => {
  it('when devvm output holds a secret, then the SQLite file never holds it, while the console, the postmortem and the CLI through the codec server show it', async () => {
    const base = await serveConsole([KEY_A]);
    const secret = marker('devvm-secret');
    // The console's search keeps the description's words as keyed hashes (BreakglassWords).
    const described = `devvm wedged since ${marker('deploy')} by the ${marker('nightly')} job`;
    const opened = await api(base, '/api/sessions', { description: described });
    const { id } = (await opened.json()) as { id: string };
    await runSecretCommand(base, id, secret);

    const report = await api(base, `/api/sessions/${id}/report`);
    expect(await report.text()).toContain(secret);

    const stored = await sqliteBytes();
    expect(stored.includes(id), 'the session is in this database (control)').toBe(true);
    expect(stored.includes(secret), 'devvm output in the database').toBe(false);
    expect(stored.includes(described), 'the description in the database').toBe(false);
    const [word] = described.split(' ').filter((part) => part.startsWith('deploy-')).map((part) => part.split('-').at(-1) as string);
    expect(stored.includes(word as string), 'a description word in the search attribute').toBe(false);
    // …and the search still finds the session by that word.
    const found = async () => ((await (await api(base, `/api/sessions?q=${word}`)).json()) as { sessions: { id: string }[] }).sessions.map((row) => row.id);
    await expect.poll(found, { timeout: 15_000 }).toEqual([id]);

    // The real CLI decodes through the codec server with a token, and shows ciphertext without it.
    const show = ['workflow', 'show', '--workflow-id', id, '--output', 'json'];
    const decoded = payloadTexts(await temporalCli([...show, '--codec-endpoint', `${base}/codec`, '--codec-auth', `Bearer ${TOKEN}`]));
    expect(decoded).toContain(secret);
    expect(decoded).not.toContain('binary/encrypted');
    const plain = payloadTexts(await temporalCli(show));
    expect(plain).not.toContain(secret);
    expect(plain).toContain('binary/encrypted');
    const refused = await temporalCli([...show, '--codec-endpoint', `${base}/codec`, '--codec-auth', 'Bearer not-the-token-0123456789']).then(
      (out) => payloadTexts(out),
      (error: { stderr?: string }) => `failed: ${error.stderr ?? ''}`,
    );
    expect(refused).not.toContain(secret);
    expect(refused).toMatch(/401|failed/);

    // Negative control: what a client without the codec sends is stored as sent, and found.
    const control = marker('plain-control');
    await new Client({ connection: env.client.connection }).workflow.getHandle(id).signal('pause', { operator: 'carol', reason: control });
    expect((await sqliteBytes()).includes(control), 'a plain payload is found in the database').toBe(true);
  }, 120_000);

  it('when key B becomes the encrypting key, then a session written with A stays readable and goes on with B, and a ring without A names "key-a"', async () => {
    const before = await serveConsole([KEY_A]);
    const { id } = (await (await api(before, '/api/sessions', { description: 'rotation' })).json()) as { id: string };
    const oldSecret = marker('written-with-a');
    await runSecretCommand(before, id, oldSecret);

    // Rolled out: the worker and the console hold B first, A still to decrypt.
    await worker.stop();
    worker = await env.startWorker(queue, {}, { codecKeys: [KEY_B, KEY_A] });
    const after = await serveConsole([KEY_B, KEY_A]);
    const newSecret = marker('written-with-b');
    await runSecretCommand(after, id, newSecret);
    const entries = await transcriptWith(after, id, oldSecret);
    expect(JSON.stringify(entries)).toContain(newSecret);

    const history = await env.client.workflow.getHandle(id).fetchHistory();
    const payloads: Payload[] = [];
    const collect = (node: unknown): void => {
      if (!node || typeof node !== 'object') return;
      if ('metadata' in node && 'data' in node) payloads.push(node as Payload);
      for (const value of Object.values(node)) collect(value);
    };
    collect(history.events);
    const keyIds = new Set(payloads.map((payload) => Buffer.from(payload.metadata?.[KEY_ID_METADATA] ?? []).toString()).filter(Boolean));
    expect([...keyIds].sort()).toEqual(['key-a', 'key-b']);

    const first = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0] as Payload;
    await expect(new EncryptingPayloadCodec([KEY_B], { compress: true }).decode([first])).rejects.toThrow('the payload was encrypted with key id "key-a", which is not in codec.keys (it has: "key-b")');
  }, 120_000);

  it('when a client holding the key but not the console\'s signature signals a request, then the worker finds the sender in the encrypted history', async () => {
    const queueHere = uniqueQueue('unsigned');
    const running = await env.startWorker(queueHere);
    const handle = await env.startSession(queueHere);
    const script = new Client({ connection: env.client.connection, identity: 'script@ops-box', dataConverter: codecDataConverter(new EncryptingPayloadCodec([KEY_A], { compress: true })) });
    await script.workflow.getHandle(handle.workflowId).signal('requestVerb', { verb: 'status', reason: 'by script', operator: 'carol', requestKey: 'script-status-1' });
    const entries = await waitForTranscript(handle, (all) => all.some((entry) => entry.type === 'request' && entry.item.kind === 'verb' && entry.item.requestedBy.kind === 'operator'));
    const request = entries.find((entry) => entry.type === 'request' && entry.item.kind === 'verb' && entry.item.requestedBy.kind === 'operator') as Extract<TranscriptEntry, { type: 'request' }>;
    expect(request.item.requestedBy).toMatchObject({ kind: 'operator', name: 'carol', unverified: { identity: 'script@ops-box', why: 'sent without the console' } });
    const signalled = (await handle.fetchHistory()).events?.find((event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'requestVerb');
    expect(Buffer.from(signalled?.workflowExecutionSignaledEventAttributes?.input?.payloads?.[0]?.metadata?.encoding ?? []).toString()).toBe('binary/encrypted');
    await running.stop();
  }, 120_000);

  it('when recording.redactOutput is on, then devvm output is recorded with the agent\'s redaction; off (the default), it is recorded raw', async () => {
    const output = 'DB_PASSWORD=hunter2-redact-check\n';
    const file = join(env.dir, 'env-file.txt');
    await writeFile(file, output);
    const recordedBy = async (redactRecordedOutput: boolean) => {
      const queueHere = uniqueQueue(redactRecordedOutput ? 'redacting' : 'raw');
      const running = await env.startWorker(queueHere, { redactRecordedOutput });
      const handle = await env.startSession(queueHere);
      await handle.executeUpdate(requestCommandUpdate, { args: [{ command: `cat ${file}`, operator: 'alice' }] });
      const entries = await waitForTranscript(handle, (all) => all.some((entry) => entry.type === 'command-result'));
      await running.stop();
      return (entries.find((entry) => entry.type === 'command-result') as Extract<TranscriptEntry, { type: 'command-result' }>).result.stdout;
    };
    expect(await recordedBy(true)).toBe('DB_PASSWORD=[REDACTED]\n');
    expect(await recordedBy(false)).toBe(output);
  }, 120_000);

  it('when a person logged in to the console opens the session in the Temporal Web UI, then it reads decoded; without a login the codec server answers 401 and the page shows no secret', async () => {
    const uiUrl = env.temporal.uiUrl as string;
    // After the rotation above: the ring the worker holds too.
    const base = await serveConsole([KEY_B, KEY_A], { port: webUiConsolePort, webUiOrigins: [new URL(uiUrl).origin] });
    const secret = marker('web-ui-secret');
    const { id } = (await (await api(base, '/api/sessions', { description: `devvm wedged ${secret}` })).json()) as { id: string };
    const { runId } = await env.client.workflow.getHandle(id).describe();
    browser = await launchChromium();
    // The dev server sets only the endpoint: the person picks "Use my browser setting" and ticks
    // "Include cross-origin credentials" in the Web UI's Codec Server settings (README).
    const settings = { endpoint: `${base}/codec`, includeCredentials: true, overrideRemoteCodecConfiguration: true };
    const openHistory = async (loggedIn: boolean) => {
      const context = await (browser as Browser).newContext();
      await context.addInitScript(`for (const [k, v] of Object.entries(${JSON.stringify(settings)})) localStorage.setItem(k, JSON.stringify(v));`);
      if (loggedIn) expect((await context.request.post(`${base}/api/login`, { data: { token: TOKEN } })).status()).toBe(200);
      const page = await context.newPage();
      const decodes: number[] = [];
      page.on('response', (response) => {
        if (response.url().startsWith(`${base}/codec/decode`)) decodes.push(response.status());
      });
      await page.goto(`${uiUrl}/namespaces/default/workflows/${id}/${runId}/history`);
      return { page, decodes };
    };

    const person = await openHistory(true);
    await person.page.waitForFunction((text) => document.body.innerText.includes(text), secret, { timeout: 30_000 });
    expect(person.decodes).toContain(200);
    expect(person.decodes.filter((status) => status !== 200)).toEqual([]);

    const stranger = await openHistory(false);
    await expect.poll(() => stranger.decodes, { timeout: 30_000 }).toContain(401);
    expect(stranger.decodes).not.toContain(200);
    expect(await stranger.page.evaluate(() => document.body.innerText)).not.toContain(secret);
  }, 120_000);
});
