/**
 * A breakglass worker in its own process for the fault suites, so a test can SIGKILL it:
 *   node --import tsx test/helpers/fault-worker-process.ts <settings.json> <workflow-bundle.js>
 * Prints "worker ready" once polling.
 *
 * Same workflows, activities and shutdown grace time as server/worker.ts (a SIGTERM lets running
 * activities finish for up to 20 s, as a rolling deploy does), with one test-only difference: a 1 s sticky schedule-to-start timeout instead of the SDK's 10 s.
 * After a SIGKILL the server keeps offering the session's next workflow task to the dead
 * worker's sticky queue until that timeout; 10 s per kill would make the kill suite too slow.
 */
import { readFileSync } from 'node:fs';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createActivities } from '../../activities/index.js';
import { codecDataConverter, EncryptingPayloadCodec } from '../../server/payload-codec.js';
import { TEST_ATTESTATION_KEY } from './attestation-key.js';
import type { WorkerProcessSettings } from './session-env.js';

const [settingsPath, bundlePath] = process.argv.slice(2);
if (!settingsPath || !bundlePath) throw new Error('usage: fault-worker-process.ts <settings.json> <bundle.js>');
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

const dataConverter = codecDataConverter(settings.codecKeys ? new EncryptingPayloadCodec(settings.codecKeys.map(({ id, key }) => ({ id, key: Buffer.from(key, 'base64') })), { compress: true }) : null);
const connection = await NativeConnection.connect({ address: settings.address });
// Agent turns read the transcript through a client, as in the product.
const agentClient = settings.agent ? new Client({ connection: await Connection.connect({ address: settings.address }), namespace: settings.namespace, dataConverter }) : null;
const agent =
  settings.agent && agentClient
    ? {
        model: settings.agent,
        client: agentClient,
        target: { devvm: 'devvm', vmid: 102 },
        maxContextTokens: 50_000,
      }
    : undefined;
const worker = await Worker.create({
  connection,
  namespace: settings.namespace,
  taskQueue: settings.taskQueue,
  activities: createActivities({ pve: target(settings.pve), devvm: target(settings.devvm), artifactsDir: settings.artifactsDir, deadlines: { devvmProbeMs: 3_000 }, attestationKey: TEST_ATTESTATION_KEY, ...(agent ? { agent } : {}) }),
  workflowBundle: { codePath: bundlePath },
  dataConverter,
  stickyQueueScheduleToStartTimeout: '1s',
  shutdownGraceTime: '20s',
});
const running = worker.run();
console.log('worker ready');
await running;
await connection.close();
await agentClient?.connection.close();
