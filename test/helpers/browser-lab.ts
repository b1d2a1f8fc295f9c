/**
 * The lab for the browser tests: the whole product composed as `npm start -- --demo-agent` does
 * it (Temporal dev server, the PVE host over real sshd with the real QEMU devvm, the scripted Messages API
 * stand-in, server + worker in this process, auth mode "lab" with a fixed token), plus Chromium
 * driven by playwright-core and a watcher that collects what a page complains about.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core';
import { generateKeyPair } from '../../lab/keys.js';
import { startMessagesApi, type Script } from '../../lab/messages-api/server.js';
import { startScenarioHost, type DevvmScenario } from '../../lab/scenarios.js';
import { startTemporalDev } from '../../lab/temporal-dev.js';
import { loadConfig } from '../../server/config.js';
import { startBreakglass } from '../../server/start.js';

export const CHROMIUM = '/usr/bin/chromium';

export interface BrowserLab {
  /** The console's base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  token: string;
  /** A Temporal client on the lab's server, to check what the workflow itself says. */
  temporal: Client;
  stop(): Promise<void>;
}

export interface BrowserLabOptions {
  scenario: DevvmScenario;
  script: Script;
  /** Pause between the stand-in's streamed events, so streaming is observable. */
  chunkDelayMs: number;
}

export async function startBrowserLab(options: BrowserLabOptions): Promise<BrowserLab> {
  const dir = await mkdtemp(join(tmpdir(), 'bg-browser-'));
  const stops: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  const stop = async () => {
    for (const step of stops.reverse()) await step().catch(() => undefined);
  };
  try {
    const temporal = await startTemporalDev({ dataDir: join(dir, 'temporal') });
    stops.push(() => temporal.stop());
    const connection = await Connection.connect({ address: temporal.address });
    stops.push(() => connection.close());

    const key = await generateKeyPair(dir, 'breakglass');
    const { pve, devvm } = await startScenarioHost(options.scenario, { dir: join(dir, 'pve'), clientPublicKey: key.publicKey });
    stops.push(() => pve.stop());
    const knownHosts = join(dir, 'known_hosts');
    await writeFile(knownHosts, `${pve.sshd.knownHostsLine}\n${devvm.knownHostsLine}\n`);

    const apiKey = `sk-browser-demo-${randomBytes(8).toString('hex')}`;
    const messages = await startMessagesApi({ apiKey, script: options.script, chunkDelayMs: options.chunkDelayMs });
    stops.push(() => messages.stop());

    const token = `browser-lab-${randomBytes(12).toString('hex')}`;
    const user = userInfo().username;
    const config = loadConfig({
      env: { BREAKGLASS_LAB_TOKEN: token },
      file: {
        dataDir: join(dir, 'data'),
        listen: { host: '127.0.0.1', port: 0 },
        temporal: {
          address: temporal.address,
          taskQueue: `browser-${process.pid}-${Date.now()}`,
          ...(temporal.uiUrl ? { uiUrl: temporal.uiUrl } : {}),
        },
        devvm: { host: '127.0.0.1', port: devvm.port, user: devvm.user, keyFile: devvm.clientKeyPath, knownHostsFile: knownHosts },
        pve: { host: '127.0.0.1', port: pve.sshd.port, user, keyFile: key.privateKeyPath, knownHostsFile: knownHosts },
        auth: { mode: 'lab' },
      },
    });
    const running = await startBreakglass(config, { demoAgent: { baseURL: messages.url, apiKey } });
    stops.push(() => running.close());
    if (!running.url || running.labToken !== token) throw new Error('browser lab: the console did not start with the fixed lab token');
    return { url: running.url, token, temporal: new Client({ connection }), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

export interface PageProblems {
  /** console.error messages and uncaught exceptions, with where they came from. */
  errors: string[];
  /** Content-Security-Policy violations (from the DOM event and from Chromium's console). */
  csp: string[];
  /** Reads the in-page CSP violation log (kept across reloads in sessionStorage). */
  collect(): Promise<void>;
}

/** The in-page half: every securitypolicyviolation event, kept in sessionStorage across reloads. */
const CSP_RECORDER = `
  document.addEventListener('securitypolicyviolation', (event) => {
    const log = JSON.parse(sessionStorage.getItem('__csp') || '[]');
    log.push(event.violatedDirective + ' blocked ' + (event.blockedURI || '(inline)') + ' at ' + event.sourceFile + ':' + event.lineNumber);
    sessionStorage.setItem('__csp', JSON.stringify(log));
  });
`;

/**
 * Watches a page for console errors, uncaught exceptions and CSP violations. `allow` names
 * console errors that are expected (e.g. the 401 of /api/me on a page that is not logged in yet).
 */
export async function watchPage(page: Page, allow: (message: ConsoleMessage) => boolean = () => false): Promise<PageProblems> {
  const problems: PageProblems = {
    errors: [],
    csp: [],
    collect: async () => {
      const log = (await page.evaluate("JSON.parse(sessionStorage.getItem('__csp') || '[]')")) as string[];
      for (const line of log) if (!problems.csp.includes(line)) problems.csp.push(line);
    },
  };
  await page.addInitScript({ content: CSP_RECORDER });
  page.on('console', (message) => {
    if (/Content.Security.Policy/i.test(message.text())) problems.csp.push(message.text());
    else if (message.type() === 'error' && !allow(message)) problems.errors.push(`${message.text()} (${message.location().url})`);
  });
  page.on('pageerror', (error) => problems.errors.push(`uncaught: ${error.message}`));
  return problems;
}
