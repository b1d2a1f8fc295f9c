/**
 * A whole session environment on loopback: the real Temporal dev server, a PVE host (real sshd +
 * real dispatcher + the lab's qm over a real QEMU), a devvm (a real shell behind a real sshd, or
 * the real guest booted in the VM) and a worker on a unique task queue.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../../activities/index.js';
import type { AgentModelConfig } from '../../activities/agent/turn.js';
import { generateKeyPair, type KeyPair } from '../../lab/keys.js';
import { startPveHost, type DispatcherConfig, type PveHost } from '../../lab/pve-host.js';
import { startScenarioHost, type DevvmScenario } from '../../lab/scenarios.js';
import { startSshd } from '../../lab/sshd.js';
import { startTemporalDev, type TemporalDev } from '../../lab/temporal-dev.js';
import { attestingInterceptor } from '../../server/attestation.js';
import { codecDataConverter, EncryptingPayloadCodec, type CodecKey } from '../../server/payload-codec.js';
import { pinnedDeploymentOptions, type DeploymentVersion } from '../../server/worker-deployment.js';
import { TEST_ATTESTATION_KEY } from './attestation-key.js';
import { bundlerOptions, WORKFLOWS_PATH } from '../../server/worker.js';
import { breakglassSession } from '../../workflows/session.js';
import { stateQuery, transcriptQuery } from '../../workflows/messages.js';
import { DEFAULT_POLICY, type SessionInput, type SessionPolicy, type TranscriptEntry } from '../../workflows/session-types.js';
import { userInfo } from 'node:os';
import { startMessagesApi, type MessagesApi, type Script } from '../../lab/messages-api/server.js';

/** The key the Messages API stand-in accepts in tests. */
export const STANDIN_KEY = 'sk-test-standin-key-0000';


// Quiet workers: state changes at INFO drown the test output.
Runtime.install({ logger: new DefaultLogger('WARN') });

let bundlePromise: Promise<{ code: string }> | undefined;
/** Bundled once per test file: webpack takes seconds. */
export function workflowBundle(): Promise<{ code: string }> {
  bundlePromise ??= bundleWorkflowCode({
    workflowsPath: WORKFLOWS_PATH,
    ...(bundlerOptions?.webpackConfigHook ? { webpackConfigHook: bundlerOptions.webpackConfigHook } : {}),
    logger: { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} } as never,
  });
  return bundlePromise;
}

export interface SessionEnv {
  dir: string;
  temporal: TemporalDev;
  /** Signs operator messages like the console's client (see TEST_ATTESTATION_KEY). */
  client: Client;
  /** Signs nothing: what `temporal` or any script with namespace access sends. */
  rawClient: Client;
  pve: PveHost;
  /** The devvm: a real shell behind sshd, or the real guest in the VM (`guest` option). */
  devvm: { port: number; knownHostsLine: string; user: string; privateKeyPath: string; stop(): Promise<void>; /** The sshd stand-in only: calls hang until thawed. */ freeze?(): void; thaw?(): void };
  clientKey: KeyPair;
  messagesApi: MessagesApi | null;
  activityDeps: ActivityDeps;
  /** Settings a worker in another process needs (JSON-serialisable). */
  workerSettings(taskQueue: string): WorkerProcessSettings;
  /**
   * An in-process worker; `activities` overrides some dependencies (e.g. another PVE host),
   * `codecKeys` the env's key ring (a rotation), `deployment` makes it a versioned worker.
   */
  startWorker(taskQueue: string, activities?: Partial<ActivityDeps>, options?: { codecKeys?: CodecKey[]; deployment?: DeploymentVersion; identity?: string }): Promise<RunningWorker>;
  startSession(taskQueue: string, overrides?: Omit<Partial<SessionInput>, 'policy'> & { policy?: Partial<SessionPolicy> }): Promise<WorkflowHandle<typeof breakglassSession>>;
  teardown(): Promise<void>;
}

export interface RunningWorker {
  worker: Worker;
  stop(): Promise<void>;
}

export interface WorkerProcessSettings {
  address: string;
  namespace: string;
  taskQueue: string;
  pve: { host: string; port: number; username: string; privateKeyPath: string; knownHosts: string };
  devvm: { host: string; port: number; username: string; privateKeyPath: string; knownHosts: string };
  artifactsDir: string;
  /** The Messages API stand-in, when the env has an agent. */
  agent?: AgentModelConfig;
  /** The payload codec's key ring (keys as base64), when the env encrypts history. */
  codecKeys?: { id: string; key: string }[];
}

let sessionCounter = 0;

export interface SessionEnvOptions {
  dynamicConfig?: Record<string, string | number | boolean>;
  pveConfig?: DispatcherConfig;
  /** A scripted model behind the Messages API stand-in: sessions then have an agent. */
  agentScript?: Script;
  /** The key the worker presents (default: the one the stand-in accepts). */
  agentApiKey?: string;
  /**
   * Boot the real guest in VM 102 as the devvm, in this scenario (reachability then follows the
   * real VM), instead of a real shell on this machine with a QEMU that has no guest.
   */
  guest?: DevvmScenario;
  /** Encrypt history with this key ring (the first encrypts), in every client and worker of the env. */
  codecKeys?: CodecKey[];
  /** Start the dev server's Web UI (headless otherwise), decoding through this codec server. */
  webUi?: { codecEndpoint: string };
}

export async function startSessionEnv(options: SessionEnvOptions = {}): Promise<SessionEnv> {
  const dir = await mkdtemp(join(tmpdir(), 'bg-session-'));
  const temporal = await startTemporalDev({
    dataDir: join(dir, 'temporal'),
    headless: !options.webUi,
    ...(options.webUi ? { uiCodecEndpoint: options.webUi.codecEndpoint } : {}),
    ...(options.dynamicConfig ? { dynamicConfig: options.dynamicConfig } : {}),
  });
  const connection = await Connection.connect({ address: temporal.address });
  const dataConverter = codecDataConverter(options.codecKeys ? new EncryptingPayloadCodec(options.codecKeys, { compress: true }) : null);
  const client = new Client({ connection, dataConverter, interceptors: { workflow: [attestingInterceptor(TEST_ATTESTATION_KEY)] } });
  const rawClient = new Client({ connection, dataConverter });
  const clientKey = await generateKeyPair(dir, 'breakglass');
  const pveOptions = { dir: join(dir, 'pve'), clientPublicKey: clientKey.publicKey, ...(options.pveConfig ? { config: options.pveConfig } : {}) };
  const user = userInfo().username;
  let pve: PveHost;
  let devvm: SessionEnv['devvm'];
  if (options.guest) {
    const started = await startScenarioHost(options.guest, pveOptions);
    pve = started.pve;
    devvm = { port: started.devvm.port, knownHostsLine: started.devvm.knownHostsLine, user: started.devvm.user, privateKeyPath: started.devvm.clientKeyPath, stop: async () => undefined };
  } else {
    pve = await startPveHost(pveOptions);
    // A real shell behind a real sshd, as the breakglass user has on a devvm.
    const sshd = await startSshd({ dir: join(dir, 'devvm'), authorizedKeys: [`restrict ${clientKey.publicKey}`] });
    devvm = { port: sshd.port, knownHostsLine: sshd.knownHostsLine, user, privateKeyPath: clientKey.privateKeyPath, stop: () => sshd.stop(), freeze: () => sshd.freeze(), thaw: () => sshd.thaw() };
  }
  const privateKey = await readFile(clientKey.privateKeyPath);
  const activityDeps: ActivityDeps = {
    pve: pve.target(privateKey, user),
    devvm: { host: '127.0.0.1', port: devvm.port, username: devvm.user, privateKey: await readFile(devvm.privateKeyPath), pins: { knownHosts: devvm.knownHostsLine }, readyTimeoutMs: 5_000, keepaliveIntervalMs: 1_000 },
    artifactsDir: join(dir, 'artifacts'),
    deadlines: { devvmProbeMs: 3_000 },
    attestationKey: TEST_ATTESTATION_KEY,
  };
  const workers: RunningWorker[] = [];
  const messagesApi = options.agentScript ? await startMessagesApi({ apiKey: STANDIN_KEY, script: options.agentScript }) : null;
  if (messagesApi) {
    activityDeps.agent = {
      model: { apiKey: options.agentApiKey ?? STANDIN_KEY, baseURL: messagesApi.url, model: 'claude-test-standin', maxTokens: 1024, timeoutMs: 30_000 },
      client,
      target: { devvm: 'devvm', vmid: 102 },
      maxContextTokens: 50_000,
    };
  }

  const env: SessionEnv = {
    dir,
    temporal,
    client,
    rawClient,
    pve,
    devvm,
    clientKey,
    messagesApi,
    activityDeps,
    workerSettings: (taskQueue) => ({
      address: temporal.address,
      namespace: 'default',
      taskQueue,
      pve: { host: '127.0.0.1', port: pve.sshd.port, username: user, privateKeyPath: clientKey.privateKeyPath, knownHosts: pve.sshd.knownHostsLine },
      devvm: { host: '127.0.0.1', port: devvm.port, username: devvm.user, privateKeyPath: devvm.privateKeyPath, knownHosts: devvm.knownHostsLine },
      artifactsDir: join(dir, 'artifacts'),
      ...(activityDeps.agent ? { agent: activityDeps.agent.model } : {}),
      ...(options.codecKeys ? { codecKeys: options.codecKeys.map(({ id, key }) => ({ id, key: key.toString('base64') })) } : {}),
    }),
    startWorker: async (taskQueue, activities = {}, workerOptions = {}) => {
      const workerConnection = await NativeConnection.connect({ address: temporal.address });
      const worker = await Worker.create({
        connection: workerConnection,
        taskQueue,
        workflowBundle: await workflowBundle(),
        activities: createActivities({ ...activityDeps, ...activities }),
        dataConverter: workerOptions.codecKeys ? codecDataConverter(new EncryptingPayloadCodec(workerOptions.codecKeys, { compress: true })) : dataConverter,
        ...(workerOptions.deployment ? { workerDeploymentOptions: pinnedDeploymentOptions(workerOptions.deployment) } : {}),
        ...(workerOptions.identity ? { identity: workerOptions.identity } : {}),
      });
      const running = worker.run();
      let stopped: Promise<void> | undefined;
      const handle: RunningWorker = {
        worker,
        // Idempotent: a test may stop its worker early and teardown stops every worker again.
        stop: () =>
          (stopped ??= (async () => {
            if (worker.getState() === 'RUNNING') worker.shutdown();
            await running.catch(() => undefined);
            await workerConnection.close();
          })()),
      };
      workers.push(handle);
      return handle;
    },
    startSession: async (taskQueue, overrides = {}) => {
      const id = `bg-test-${process.pid}-${Date.now()}-${++sessionCounter}`;
      return client.workflow.start(breakglassSession, {
        taskQueue,
        workflowId: id,
        args: [
          {
            target: { devvm: 'devvm', vmid: 102 },
            operator: 'alice',
            description: 'devvm wedged',
            // Suites run many sessions on one VM one after another: the lease is held only while a
            // verb runs, unless a test asks for a hold (test/target-lease.test.ts).
            leaseHoldMinutes: 0,
            ...(messagesApi ? { agent: { enabled: true, reason: 'test stand-in' } } : {}),
            ...overrides,
            policy: { ...DEFAULT_POLICY, ...overrides.policy },
          },
        ],
      });
    },
    teardown: async () => {
      for (const worker of workers) await worker.stop();
      await messagesApi?.stop();
      await connection.close();
      await temporal.stop();
      await pve.stop();
      await devvm.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return env;
}

export function uniqueQueue(name: string): string {
  return `${name}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
}

/** All transcript entries of the current run. */
export async function transcriptOf(handle: WorkflowHandle): Promise<TranscriptEntry[]> {
  const entries: TranscriptEntry[] = [];
  let cursor: number | undefined;
  for (;;) {
    const page = await handle.query(transcriptQuery, { ...(cursor !== undefined ? { cursor } : {}), limit: 200 });
    entries.push(...page.entries);
    if (!page.more) return entries;
    cursor = page.nextCursor ?? undefined;
  }
}

/** Polls the transcript until `predicate` holds (or throws after `timeoutMs`). */
export async function waitForTranscript(
  handle: WorkflowHandle,
  predicate: (entries: TranscriptEntry[]) => boolean,
  timeoutMs = 60_000,
): Promise<TranscriptEntry[]> {
  const until = Date.now() + timeoutMs;
  let last: TranscriptEntry[] = [];
  while (Date.now() < until) {
    try {
      last = await transcriptOf(handle);
      if (predicate(last)) return last;
    } catch {
      // the query can fail while no worker is polling; keep trying
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const tail = JSON.stringify(last.slice(-3)).slice(0, 1500);
  throw new Error(`transcript condition not met within ${timeoutMs} ms; entries: ${last.map((e) => e.type).join(', ')}; last: ${tail}`);
}

export async function stateOf(handle: WorkflowHandle) {
  return handle.query(stateQuery);
}
