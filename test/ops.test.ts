/**
 * Running it for real: the composed product (server/start.ts) with notifications and metrics,
 * and split into a server process and a worker process that pushes live output.
 */
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { userInfo } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../server/config.js';
import { startBreakglass, type Running } from '../server/start.js';
import type { TranscriptEntry } from '../workflows/session-types.js';
import { startSessionEnv, uniqueQueue, type SessionEnv } from './helpers/session-env.js';
import { expectOrdered } from './helpers/order.js';

const TOKEN = 'ops-token-0123456789abcdef';
const sha = (text: string) => createHash('sha256').update(text).digest('hex');
const post = (base: string, path: string, body: unknown) =>
  fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(body) });

let env: SessionEnv;
let hooks: { body: Record<string, unknown> }[] = [];
let hookServer: Server;
let hookUrl: string;
const running: Running[] = [];

async function configFor(extra: Record<string, unknown>, roles: string[]) {
  const knownHosts = join(env.dir, 'known_hosts');
  await writeFile(knownHosts, `${env.pve.sshd.knownHostsLine}\n${env.devvm.knownHostsLine}\n`);
  const user = userInfo().username;
  // Console and worker share the attestation key, as the chart's two deployments do.
  const identityKey = join(env.dir, 'identity.key');
  await writeFile(identityKey, 'ops-test-identity-key-0123456789abcdef\n');
  return loadConfig({
    env: {},
    file: {
      dataDir: join(env.dir, 'data'),
      listen: { host: '127.0.0.1', port: 0 },
      temporal: { address: env.temporal.address, taskQueue: uniqueQueue('ops') },
      devvm: { host: '127.0.0.1', port: env.devvm.port, user, keyFile: env.clientKey.privateKeyPath, knownHostsFile: knownHosts },
      pve: { host: '127.0.0.1', port: env.pve.sshd.port, user, keyFile: env.clientKey.privateKeyPath, knownHostsFile: knownHosts },
      auth: { mode: 'token', tokens: [{ operator: 'alice', sha256: sha(TOKEN) }] },
      identity: { keyFile: identityKey },
      roles,
      ...extra,
    },
  });
}

async function transcript(base: string, id: string): Promise<TranscriptEntry[]> {
  const response = await fetch(`${base}/api/sessions/${id}/transcript?limit=200`, { headers: { authorization: `Bearer ${TOKEN}` } });
  return ((await response.json()) as { entries: TranscriptEntry[] }).entries;
}

async function until(probe: () => Promise<boolean>, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('condition not met in time');
}

beforeAll(async () => {
  env = await startSessionEnv();
  hookServer = createServer((request, response) => {
    let text = '';
    request.on('data', (chunk) => (text += chunk));
    request.on('end', () => {
      hooks.push({ body: JSON.parse(text) as Record<string, unknown> });
      response.end('ok');
    });
  });
  await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', r));
  const address = hookServer.address() as { port: number };
  hookUrl = `http://127.0.0.1:${address.port}/breakglass-alerts`;
}, 120_000);

afterAll(async () => {
  for (const instance of running) await instance.close();
  hookServer?.close();
  await env?.teardown();
});

describe('the composed product', () => {
  it('when a session cycles the VM, then the webhook hears start, verb and end, and /metrics counts them', async () => {
    hooks = [];
    const scraperToken = 'scraper-token-0123456789abcdef';
    const scraperFile = join(env.dir, 'metrics-token');
    await writeFile(scraperFile, `${scraperToken}\n`);
    const config = await configFor({ notifications: { webhookUrl: hookUrl, format: 'ntfy' }, metrics: { tokenFile: scraperFile }, console: { publicUrl: 'https://breakglass.example.com/' } }, ['server', 'worker']);
    const product = await startBreakglass(config);
    running.push(product);
    const base = product.url!;
    expect((await (await fetch(`${base}/readyz`)).json()) as object).toMatchObject({ ready: true, temporal: true, worker: true });

    const { id } = (await (await post(base, '/api/sessions', { description: 'metrics and hooks' })).json()) as { id: string };
    await post(base, `/api/sessions/${id}/verbs`, { verb: 'cycle', reason: 'test' });
    await until(async () => (await transcript(base, id)).some((e) => e.type === 'devvm-wait'), 30_000);
    await post(base, `/api/sessions/${id}/end`, { reason: 'done' });
    await until(async () => hooks.some((hook) => String(hook.body.title).includes('ended')), 20_000).catch((error) => {
      throw new Error(`${(error as Error).message}: hooks ${JSON.stringify(hooks)}`);
    });

    const titles = hooks.map((hook) => String(hook.body.title));
    expect(titles.some((title) => title.includes('opened'))).toBe(true);
    expect(titles.some((title) => title.startsWith('cycle succeeded'))).toBe(true);
    expect(hooks.every((hook) => hook.body.topic === 'breakglass-alerts')).toBe(true);
    // Each notification opens the session in the console.
    expect(hooks.every((hook) => hook.body.click === `https://breakglass.example.com/#/sessions/${id}`)).toBe(true);

    // Not for anyone who reaches the port: the scraper's token or an operator's login.
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    expect((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer not-the-scraper-token-000' } })).status).toBe(401);
    expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${scraperToken}` } })).text();
    expect(metrics).toMatch(/breakglass_verbs_total\{verb="cycle",outcome="succeeded"\} 1/);
    expect(metrics).toMatch(/breakglass_verbs_total\{verb="forensics",outcome="succeeded"\} 1/);
    expect(metrics).toMatch(/breakglass_verb_duration_seconds_count\{verb="cycle"\} 1/);
    expect(metrics).toMatch(/breakglass_sessions\{outcome="recovered"\} [1-9]/);
    expect(metrics).toContain('breakglass_ssh_errors_total');
    expect(metrics).toContain('breakglass_agent_tokens_total');
  });

  it('when the worker runs in its own process, then live command output still reaches the console over SSE', async () => {
    const tokenFile = join(env.dir, 'live-token');
    await writeFile(tokenFile, 'shared-live-token-0123456789');
    const serverConfig = await configFor({ live: { tokenFile } }, ['server']);
    const server = await startBreakglass(serverConfig);
    running.push(server);
    const base = server.url!;
    const workerConfig = await configFor({ live: { tokenFile, pushUrl: base }, temporal: { address: env.temporal.address, taskQueue: serverConfig.temporal.taskQueue }, metrics: { port: 0 } }, ['worker']);
    const worker = await startBreakglass(workerConfig);
    running.push(worker);
    expect(worker.url).toBeNull();

    const { id } = (await (await post(base, '/api/sessions', { description: 'split' })).json()) as { id: string };
    const controller = new AbortController();
    const events = await fetch(`${base}/api/sessions/${id}/events`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: controller.signal });
    const reader = events.body!.getReader();
    await post(base, `/api/sessions/${id}/commands`, { command: 'for i in 1 2 3; do echo tick$i; sleep 0.4; done', timeoutSeconds: 20 });
    let text = '';
    const deadline = Date.now() + 30_000;
    while (!text.includes('"command-result"') && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    controller.abort();
    const liveAt = text.indexOf('event: live');
    // The live preview arrived before the command's final record.
    expectOrdered({ 'live preview': liveAt, 'command-result': text.indexOf('"command-result"') });
    expect(text.slice(liveAt)).toMatch(/"kind":"stdout","text":"tick1/);
    await post(base, `/api/sessions/${id}/end`, {});
  });

  it('when a live push carries the wrong token, then it is refused', async () => {
    const tokenFile = join(env.dir, 'live-token-2');
    await writeFile(tokenFile, 'another-live-token-0123456789');
    const server = await startBreakglass(await configFor({ live: { tokenFile } }, ['server']));
    running.push(server);
    const response = await fetch(`${server.url}/internal/live`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer not-the-token' },
      body: JSON.stringify({ chunks: [{ sessionId: 'x', stream: 'a#1', kind: 'stdout', text: 'forged' }] }),
    });
    expect(response.status).toBe(401);
  });
});
