/**
 * A breakglass worker in its own process, so fault tests can SIGKILL it. Usage:
 *   tsx test/helpers/worker-process.ts <settings.json> [<workflow-bundle.js>]
 * Prints "worker ready" once polling.
 */
import { readFileSync } from 'node:fs';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { createBreakglassWorker } from '../../server/worker.js';
import type { WorkerProcessSettings } from './session-env.js';

const [settingsPath, bundlePath] = process.argv.slice(2);
if (!settingsPath) throw new Error('usage: worker-process.ts <settings.json> [bundle.js]');
const settings = JSON.parse(readFileSync(settingsPath, 'utf8')) as WorkerProcessSettings;
Runtime.install({ logger: new DefaultLogger('WARN') });

const target = (host: WorkerProcessSettings['pve']) => ({
  host: host.host,
  port: host.port,
  username: host.username,
  privateKey: readFileSync(host.privateKeyPath),
  pins: { knownHosts: host.knownHosts },
  readyTimeoutMs: 5_000,
  keepaliveIntervalMs: 1_000,
});

const { worker } = await createBreakglassWorker({
  address: settings.address,
  namespace: settings.namespace,
  taskQueue: settings.taskQueue,
  activities: { pve: target(settings.pve), devvm: target(settings.devvm), artifactsDir: settings.artifactsDir, deadlines: { devvmProbeMs: 3_000 } },
  ...(bundlePath ? { workflowBundlePath: bundlePath } : {}),
});
const running = worker.run();
console.log('worker ready');
await running;
