/**
 * `npm start`: the whole product on this machine, no real hosts needed. Starts the Temporal dev
 * server (persistent database under .data/lab, Web UI), a PVE host (real sshd + the real
 * dispatcher over the lab's `qm` stand-in) whose VM 102 is a real QEMU running the real Debian
 * guest as the devvm, brings the devvm into the scenario, then starts the worker and the console
 * and prints where to go. Ctrl-C stops everything it started.
 *
 * Honoured: PORT, TEMPORAL_ADDRESS (use that server instead of starting one), BREAKGLASS_CONFIG
 * (a config file layered over the lab's), BREAKGLASS_LAB_TOKEN, ANTHROPIC_API_KEY (the real
 * agent), BREAKGLASS_LAB_SCENARIO (io-stall | oom | healthy), --demo-agent (the local Messages
 * API stand-in plays a scripted agent, labelled DEMO in the console).
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { userInfo } from 'node:os';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { ConfigError, loadConfig } from '../server/config.js';
import { startBreakglass } from '../server/start.js';
import { generateKeyPair, labCodecKey } from './keys.js';
import { guestOomScenario, ioStallScenario } from './messages-api/scenarios.js';
import { startMessagesApi } from './messages-api/server.js';
import { DEVVM_SCENARIOS, startScenarioHost, type DevvmScenario } from './scenarios.js';
import { REPO_ROOT } from './pve-host.js';
import { preferredPort } from './sshd.js';
import { startTemporalDev, type TemporalDev } from './temporal-dev.js';

/** What the `temporal` and `tctl` CLIs connect to by default, and the dev server's Web UI port. */
const DEFAULT_TEMPORAL_PORT = 7233;
const DEFAULT_TEMPORAL_UI_PORT = 8233;

async function main() {
  // The console prints what matters; the SDK's per-state INFO lines would drown it.
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const dataDir = resolve(process.env.BREAKGLASS_DATA_DIR ?? join(REPO_ROOT, '.data/lab'));
  const scenario = (process.env.BREAKGLASS_LAB_SCENARIO ?? 'io-stall') as DevvmScenario;
  if (!DEVVM_SCENARIOS.includes(scenario)) throw new ConfigError('BREAKGLASS_LAB_SCENARIO', `one of ${DEVVM_SCENARIOS.join(', ')}`);
  await mkdir(dataDir, { recursive: true });
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  };

  try {
    let temporal: TemporalDev | null = null;
    let temporalAddress = process.env.TEMPORAL_ADDRESS ?? null;
    let uiUrl = process.env.TEMPORAL_UI_URL ?? null;
    if (!temporalAddress) {
      console.log('lab: starting the Temporal dev server…');
      // The ports temporal and tctl default to, and a Web UI a bookmark finds again, when free.
      // Its Web UI decodes history through the console's codec server, where the console will listen.
      const uiCodecEndpoint = `http://127.0.0.1:${process.env.PORT ?? 8080}/codec`;
      temporal = await startTemporalDev({ dataDir: join(dataDir, 'temporal'), port: await preferredPort(DEFAULT_TEMPORAL_PORT), uiPort: await preferredPort(DEFAULT_TEMPORAL_UI_PORT), uiCodecEndpoint });
      stops.push(() => (temporal as TemporalDev).stop());
      temporalAddress = temporal.address;
      uiUrl = temporal.uiUrl;
    }

    // The breakglass key: generated once, kept with the lab's data.
    const keyDir = join(dataDir, 'keys');
    await mkdir(keyDir, { recursive: true, mode: 0o700 });
    const keyPath = join(keyDir, 'breakglass');
    const key = existsSync(keyPath)
      ? { privateKeyPath: keyPath, publicKey: (await readFile(`${keyPath}.pub`, 'utf8')).trim() }
      : await generateKeyPair(keyDir, 'breakglass');

    console.log('lab: starting the PVE host and booting the devvm (real QEMU, Debian guest)…');
    const { pve, devvm, bootMs } = await startScenarioHost(scenario, { dir: join(dataDir, 'pve'), clientPublicKey: key.publicKey });
    stops.push(() => pve.stop());
    console.log(`lab: devvm sshd answered after ${(bootMs / 1000).toFixed(1)} s; ${scenario} scenario set up`);

    const knownHosts = join(dataDir, 'known_hosts');
    await writeFile(knownHosts, `${pve.sshd.knownHostsLine}\n${devvm.knownHostsLine}\n`);
    const user = userInfo().username;
    const config = loadConfig({
      base: {
        dataDir,
        listen: { host: '127.0.0.1', port: 8080 },
        temporal: { address: temporalAddress, ...(uiUrl ? { uiUrl } : {}) },
        devvm: { host: '127.0.0.1', port: devvm.port, user: devvm.user, keyFile: devvm.clientKeyPath, knownHostsFile: knownHosts },
        pve: { host: '127.0.0.1', port: pve.sshd.port, user, keyFile: keyPath, knownHostsFile: knownHosts },
        // History at rest is encrypted in the lab too, with a key kept beside the SSH key.
        codec: { keys: [await labCodecKey(keyDir)] },
      },
    });

    // The scripted demo agent runs only when asked for, and never instead of a real key.
    let demoAgent: { baseURL: string; apiKey: string } | undefined;
    if (process.argv.includes('--demo-agent') && !config.agent.apiKey) {
      const apiKey = `sk-lab-demo-${randomBytes(12).toString('hex')}`;
      const api = await startMessagesApi({ apiKey, script: scenario === 'oom' ? guestOomScenario : ioStallScenario, chunkDelayMs: 15 });
      stops.push(() => api.stop());
      demoAgent = { baseURL: api.url, apiKey };
    }
    const running = await startBreakglass(config, demoAgent ? { demoAgent } : {});
    stops.push(() => running.close());
    const agentLine = config.agent.apiKey
      ? `live (Claude, ${config.agent.model})`
      : demoAgent
        ? 'DEMO — the local Messages API stand-in plays a scripted agent'
        : 'off — no ANTHROPIC_API_KEY: the console works manually (npm start -- --demo-agent for a scripted demo)';

    const consoleUrl = `${running.url}/#token=${running.labToken}`;
    console.log('');
    console.log('  Breakglass lab is up.');
    console.log(`  console:          ${consoleUrl}`);
    console.log(`  token:            ${running.labToken}`);
    const taken = (port: number, wanted: number) => (temporal && port !== wanted ? `   (${wanted} was taken)` : '');
    console.log(`  Temporal Web UI:  ${uiUrl ?? '(external server)'}${temporal ? taken(temporal.uiPort, DEFAULT_TEMPORAL_UI_PORT) : ''}`);
    console.log(
      temporal?.port === DEFAULT_TEMPORAL_PORT
        ? `  Temporal address: ${temporalAddress}   (the CLIs' default: .tools/bin/temporal workflow list)`
        : `  Temporal address: ${temporalAddress}   e.g. .tools/bin/temporal workflow list --address ${temporalAddress}${temporal ? taken(temporal.port, DEFAULT_TEMPORAL_PORT) : ''}`,
    );
    console.log(`  scenario:         ${scenario} (VM 102 ${scenario === 'io-stall' ? 'has its I/O stalled: try status, forensics, then cycle' : 'is running'})`);
    console.log(`  agent:            ${agentLine}`);
    console.log(`  faults:           node lab/pve/labctl.mjs ${relative(process.cwd(), pve.nodeRoot) || '.'} fault zombie_leader on   (status, ha-delay; see lab/pve/lab-vm.mjs)`);
    console.log('  Ctrl-C stops everything the lab started.');
    console.log('');
  } catch (error) {
    await stopAll();
    throw error;
  }

  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    console.log('\nlab: stopping…');
    await stopAll();
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown());
  process.on('SIGTERM', () => void shutdown());
}

main().catch((error) => {
  console.error(error instanceof ConfigError ? error.message : error);
  process.exit(error instanceof ConfigError ? 78 : 1);
});
