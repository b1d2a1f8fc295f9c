/**
 * The bench's pieces, with tiny repetition counts: the statistics and the table, the SSE
 * client against a real HTTP stream, the raw OpenSSH baseline against the real dispatcher,
 * and a child process started, measured and stopped the way the footprint rows do it.
 * (`npm run bench` itself runs for minutes; this only proves its parts work.)
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../lab/keys.js';
import { startPveHost, type PveHost } from '../lab/pve-host.js';
import { startHello } from '../bench/product.js';
import { runSsh, type SshEndpoint } from '../bench/ssh-cli.js';
import { SseClient } from '../bench/sse.js';
import { formatRatio, markdownTable, quantile, summarize } from '../bench/stats.js';

describe('bench statistics', () => {
  it('when samples are summarised, then median and p95 interpolate between ranks and ratios read as N×', () => {
    const samples = [5, 1, 4, 2, 3];
    expect(quantile(samples, 0.5)).toBe(3);
    expect(quantile(samples, 0.95)).toBeCloseTo(4.8);
    expect(summarize([])).toMatchObject({ n: 0 });
    expect(formatRatio(18, 10)).toBe('1.8×');
    expect(formatRatio(1, 0)).toBe('—');
    const table = markdownTable([
      { id: '1', title: 'a | b', measured: { what: 'm', unit: 'ms', samples: [20, 22] }, baseline: { what: 'b', unit: 'ms', samples: [10, 11] } },
      { id: '5', title: 'bytes', measured: { what: 'x', unit: 'B', samples: [830], count: 1000 }, baseline: null, single: true },
    ]);
    const lines = table.split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[2]).toContain('a \\| b');
    expect(lines[2]).toContain('2.0×');
    expect(lines[3]).toContain('| 1000 |');
  });
});

describe('bench SSE client', () => {
  let server: Server;
  let url: string;
  beforeAll(async () => {
    server = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write('retry: 2000\n\n: heartbeat\n\n');
      response.write('event: state\ndata: {"ok":true}\n\n');
      // An entry split across two writes, as a real stream may deliver it.
      setTimeout(() => response.write('id: 7\nevent: entry\ndata: {"seq":7,'), 50);
      setTimeout(() => response.write('"type":"status","key":"r1"}\n\n'), 100);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/events`;
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  it('when events arrive in pieces, then each is parsed once with its id and timestamp, and waitFor finds it', async () => {
    const sse = new SseClient(url, {});
    await sse.open();
    const mark = sse.mark();
    const entry = await sse.waitFor((event) => SseClient.entry(event)?.key === 'r1', 5_000, mark);
    expect(entry.id).toBe('7');
    expect(SseClient.entry(entry)).toEqual({ seq: 7, type: 'status', key: 'r1' });
    expect(sse.events.map((event) => event.event)).toEqual(['state', 'entry']);
    await expect(sse.waitFor((event) => event.event === 'never', 100)).rejects.toThrow(/no matching event/);
    await sse.close();
  });
});

describe('bench raw baselines and child processes', () => {
  let dir: string;
  let pve: PveHost;
  let endpoint: SshEndpoint;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bg-bench-smoke-'));
    const key = await generateKeyPair(dir, 'client');
    pve = await startPveHost({ dir: join(dir, 'pve'), clientPublicKey: key.publicKey });
    const knownHostsFile = join(dir, 'known_hosts');
    await writeFile(knownHostsFile, `${pve.sshd.knownHostsLine}\n`);
    endpoint = { port: pve.sshd.port, user: userInfo().username, keyPath: key.privateKeyPath, knownHostsFile };
  }, 60_000);
  afterAll(async () => {
    await pve?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('when the OpenSSH client runs a verb with the forced-command key, then it is timed and the dispatcher answers', async () => {
    const status = await runSsh(endpoint, 'status');
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('"verb":"status"');
    expect(status.ms).toBeGreaterThan(0);
    const rejected = await runSsh(endpoint, 'reboot');
    expect(rejected.code).toBe(64);
  });

  it('when a child is started for the footprint rows, then it reports start time and RSS, and stop leaves nothing behind', async () => {
    const child = await startHello(dir, 'hello-smoke');
    expect(child.startMs).toBeGreaterThan(0);
    expect(child.rssMiB()).toBeGreaterThan(10);
    expect(child.peakRssMiB()).toBeGreaterThanOrEqual(child.rssMiB() - 1);
    expect((await fetch(`${child.base}/readyz`)).status).toBe(200);
    await child.stop();
    expect(() => process.kill(child.pid, 0)).toThrow();
    expect(Number.isNaN(child.rssMiB())).toBe(true);
  }, 30_000);
});
