/**
 * Composition: from a Config to a running console and/or worker. Used by server/main.ts (a real
 * deployment) and lab/main.ts (everything embedded).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
// A CommonJS package: its namespaces hang off the default export under Node's ESM loader.
import proto from '@temporalio/proto';
import Fastify from 'fastify';
import type { Registry } from 'prom-client';
import { SEARCH_ATTRIBUTE_TYPES } from '../workflows/search-attributes.js';
import type { ActivityDeps } from '../activities/index.js';
import type { AgentModelConfig } from '../activities/agent/turn.js';
import type { SshTarget } from '../activities/ssh/connection.js';
import { buildApp, type AgentStatus } from './app.js';
import { attestingInterceptor } from './attestation.js';
import { createAuthenticator } from './auth.js';
import { ConfigError, type Config, type SshEndpointConfig } from './config.js';
import { SessionEvents } from './events.js';
import { LiveBus, type LiveChunk } from './live-bus.js';
import { codecDataConverter, EncryptingPayloadCodec } from './payload-codec.js';
import { searchKeyFrom } from './session-search.js';
import { createLivePusher } from './live-push.js';
import { createMetrics } from './metrics.js';
import { Sessions } from './sessions.js';
import { createBreakglassWorker } from './worker.js';
import { claimCurrentVersion, type DeploymentVersion } from './worker-deployment.js';

export const UI_DIR = resolve(fileURLToPath(new URL('../ui/dist', import.meta.url)));

export function sshTarget(endpoint: SshEndpointConfig, key: string): SshTarget {
  const read = (path: string, what: string) => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new Error(`config: ${key}.${what}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
    }
  };
  return {
    host: endpoint.host,
    port: endpoint.port,
    username: endpoint.user,
    privateKey: read(endpoint.keyFile, 'keyFile'),
    pins: {
      ...(endpoint.knownHostsFile ? { knownHosts: read(endpoint.knownHostsFile, 'knownHostsFile').toString('utf8') } : {}),
      fingerprints: endpoint.fingerprints,
    },
    readyTimeoutMs: 10_000,
    keepaliveIntervalMs: 5_000,
  };
}

function temporalConnectionOptions(config: Config) {
  const tls = config.temporal.tls;
  const read = (path: string | null) => (path ? readFileSync(path) : undefined);
  return {
    address: config.temporal.address as string,
    ...(tls
      ? {
          tls: {
            ...(tls.serverName ? { serverNameOverride: tls.serverName } : {}),
            ...(tls.caFile ? { serverRootCACertificate: read(tls.caFile) } : {}),
            ...(tls.certFile && tls.keyFile ? { clientCertPair: { crt: read(tls.certFile) as Buffer, key: read(tls.keyFile) as Buffer } } : {}),
          },
        }
      : {}),
    ...(config.temporal.apiKeyFile ? { apiKey: readFileSync(config.temporal.apiKeyFile, 'utf8').trim() } : {}),
  };
}

export interface Running {
  url: string | null;
  labToken: string | null;
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: boolean | object;
  /** The lab's scripted stand-in for the Messages API, labelled DEMO in the console. */
  demoAgent?: { baseURL: string; apiKey: string };
}

/** What the console says about the agent, and the model settings the worker uses. */
function agentSetup(config: Config, demo: StartOptions['demoAgent']): { status: AgentStatus; model: AgentModelConfig | null } {
  const common = { model: config.agent.model, maxTokens: config.agent.maxTokens, timeoutMs: 120_000 };
  if (demo) {
    return { status: { mode: 'demo', reason: 'DEMO: a local stand-in for the Messages API plays a scripted agent' }, model: { ...common, apiKey: demo.apiKey, baseURL: demo.baseURL } };
  }
  if (config.agent.configured) {
    return {
      status: { mode: 'live', reason: `Claude (${config.agent.model})` },
      // Only a process that runs the worker holds the key.
      model: config.agent.apiKey ? { ...common, apiKey: config.agent.apiKey, ...(config.agent.baseUrl ? { baseURL: config.agent.baseUrl } : {}) } : null,
    };
  }
  return { status: { mode: 'off', reason: 'no Anthropic API key configured: the console works manually' }, model: null };
}

/** Registers the session's search attributes when missing (dev servers, fresh namespaces). */
async function registerSearchAttributes(connection: Connection, namespace: string): Promise<string | null> {
  try {
    const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace });
    const missing = Object.keys(SEARCH_ATTRIBUTE_TYPES).filter((name) => !(name in (customAttributes ?? {})));
    if (missing.length === 0) return null;
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(
        missing.map((name) => {
          const { INDEXED_VALUE_TYPE_KEYWORD, INDEXED_VALUE_TYPE_KEYWORD_LIST } = proto.temporal.api.enums.v1.IndexedValueType;
          return [name, SEARCH_ATTRIBUTE_TYPES[name] === 'KeywordList' ? INDEXED_VALUE_TYPE_KEYWORD_LIST : INDEXED_VALUE_TYPE_KEYWORD];
        }),
      ),
    });
    return null;
  } catch (error) {
    // Temporal Cloud and locked-down clusters refuse this: say exactly what to run instead.
    return `could not register search attributes (${(error as Error).message}); run: ${Object.entries(SEARCH_ATTRIBUTE_TYPES)
      .map(([name, type]) => `temporal operator search-attribute create --namespace ${namespace} --name ${name} --type ${type}`)
      .join(' && ')}`;
  }
}

export async function startBreakglass(config: Config, options: StartOptions = {}): Promise<Running> {
  if (!config.temporal.address) throw new ConfigError('temporal.address', 'required (or TEMPORAL_ADDRESS)');
  const connectionOptions = temporalConnectionOptions(config);
  const live = new LiveBus();
  const closers: (() => Promise<void>)[] = [];
  const agent = agentSetup(config, options.demoAgent);
  const target = { devvm: config.target.devvmName, vmid: config.target.vmid };
  const metrics = createMetrics();
  let workerState: () => boolean | null = () => null;

  // Live output: in-process when the server runs here, pushed to the server otherwise.
  const pusher = !config.roles.server && config.live.pushUrl && config.live.token ? createLivePusher(config.live.pushUrl, config.live.token) : null;
  const publish = (chunk: LiveChunk) => (pusher ? pusher.push(chunk) : live.publish(chunk));

  // History at rest: every payload encrypted with the key ring, or, said out loud, plain text.
  const codec = config.codec.enabled && config.codec.keys.length > 0 ? new EncryptingPayloadCodec(config.codec.keys, { compress: config.codec.compress }) : null;
  const codecState = codecStatus(config, codec);
  if (!codec) console.warn(`breakglass: ${codecState}`);
  const dataConverter = codecDataConverter(codec);

  // One client connection for everything but the worker's own (native) one.
  const connection = await Connection.connect(connectionOptions);
  closers.push(() => connection.close());
  // Console and worker in one process (the lab, the chart's single pod) make a key up; in separate
  // processes they share a Secret (config identity.keyFile).
  const attestationKey = config.identity.key ?? randomBytes(48);
  // Only the console vouches for operators: its client signs the messages it sends for them.
  const client = new Client({
    connection,
    namespace: config.temporal.namespace,
    dataConverter,
    ...(config.roles.server ? { interceptors: { workflow: [attestingInterceptor(attestationKey)] } } : {}),
  });
  const registration = await registerSearchAttributes(connection, config.temporal.namespace);
  if (registration) console.warn(`breakglass: ${registration}`);

  // Sessions pinned to the build that started them, when the build is named.
  const { name: deploymentName, buildId, promote } = config.temporal.deployment;
  const deployment: DeploymentVersion | null = buildId ? { name: deploymentName, buildId, promote } : null;
  if (config.roles.worker) {
    const activities: ActivityDeps = {
      pve: sshTarget(config.pve, 'pve'),
      devvm: sshTarget(config.devvm, 'devvm'),
      artifactsDir: join(config.dataDir, 'forensics'),
      attestationKey,
      redactRecordedOutput: config.recording.redactOutput,
      observer: metrics.observer,
      onCommandOutput: (key, stream, text) => publish({ sessionId: key.workflowId, stream: `${key.activityId}#${key.attempt}`, kind: stream, text }),
      onAgentText: (key, text) => publish({ sessionId: key.workflowId, stream: `${key.activityId}#${key.attempt}`, kind: 'text', text }),
      ...(config.notifications.webhookUrl ? { notifier: { webhookUrl: config.notifications.webhookUrl, format: config.notifications.format, consoleUrl: config.console.publicUrl } } : {}),
      ...(agent.model
        ? { agent: { model: agent.model, client, target, maxContextTokens: config.agent.maxContextTokens } }
        : {}),
    };
    const { worker, connection: workerConnection } = await createBreakglassWorker({
      address: connectionOptions.address,
      namespace: config.temporal.namespace,
      taskQueue: config.temporal.taskQueue,
      activities,
      dataConverter,
      ...(deployment ? { deployment } : {}),
      ...(process.env.BREAKGLASS_WORKFLOW_BUNDLE ? { workflowBundlePath: process.env.BREAKGLASS_WORKFLOW_BUNDLE } : {}),
      ...('tls' in connectionOptions ? { tls: connectionOptions.tls } : {}),
      ...('apiKey' in connectionOptions ? { apiKey: connectionOptions.apiKey } : {}),
    });
    const running = worker.run();
    workerState = () => worker.getState() === 'RUNNING';
    if (deployment) {
      // In the background: the version registers when the worker first polls.
      void claimCurrentVersion(connection, config.temporal.namespace, deployment).then(
        (what) => console.log(`breakglass: worker deployment: ${what}`),
        (error: Error) => console.warn(`breakglass: ${error.message}`),
      );
    }
    closers.unshift(async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => undefined);
      await workerConnection.close();
      await pusher?.close();
    });
  }

  // Sessions upsert these: without them every session's next workflow task fails. Not ready until
  // they exist (checked again at most every 30 s, so registering them by hand is enough).
  let attributesProblem = registration;
  let attributesCheckedAt = Date.now();
  const searchAttributes = async () => {
    if (attributesProblem && Date.now() - attributesCheckedAt > 30_000) {
      attributesCheckedAt = Date.now();
      attributesProblem = await registerSearchAttributes(connection, config.temporal.namespace);
    }
    return attributesProblem;
  };
  const readiness = async () => {
    const temporalUp = await Promise.race([
      connection.workflowService.getSystemInfo({}).then(() => true, () => false),
      new Promise<boolean>((r) => setTimeout(() => r(false), 2_000)),
    ]);
    return { temporal: temporalUp, worker: workerState(), codec: codecState, searchAttributes: await searchAttributes(), ...(deployment && config.roles.worker ? { version: `${deployment.name}.${deployment.buildId} (sessions pinned)` } : {}) };
  };

  let url: string | null = null;
  let labToken: string | null = null;
  if (config.roles.server) {
    const sessions = new Sessions(client, {
      taskQueue: config.temporal.taskQueue,
      target,
      policy: config.policy,
      namespace: config.temporal.namespace,
      agent: { enabled: agent.status.mode !== 'off', reason: agent.status.reason },
      notify: config.notifications.webhookUrl !== null,
      approvalExpiryMinutes: config.approvals.expiryMinutes,
      leaseHoldMinutes: config.lease.holdMinutes,
      ...(codec ? { searchKeys: config.codec.keys.map((key) => searchKeyFrom(key.key)) } : {}),
    });
    metrics.watchSessions(client, config.temporal.namespace);
    const events = new SessionEvents(sessions, live);
    const auth = createAuthenticator(config);
    labToken = auth.labToken;
    const app = await buildApp({
      sessions,
      events,
      auth,
      temporalUiUrl: config.temporal.uiUrl,
      namespace: config.temporal.namespace,
      agent: agent.status,
      uiDir: UI_DIR,
      logger: options.logger ?? false,
      readiness,
      metrics: metrics.registry,
      metricsToken: config.metrics.token,
      ...(config.live.token ? { livePush: { token: config.live.token, bus: live } } : {}),
      ...(codec ? { codecServer: { codec, webUiOrigins: config.codec.webUiOrigins } } : {}),
    });
    url = await app.listen({ host: config.listen.host, port: config.listen.port });
    closers.unshift(async () => {
      await events.close();
      await app.close();
    });
  } else {
    // A worker on its own still answers probes and scrapes.
    const health = await buildHealthApp(readiness, metrics.registry);
    await health.listen({ host: config.listen.host === '127.0.0.1' ? '127.0.0.1' : '0.0.0.0', port: config.metrics.port });
    closers.unshift(() => health.close());
  }

  return {
    url,
    labToken,
    close: async () => {
      for (const close of closers) await close().catch(() => undefined);
    },
  };
}

/** What /readyz and the log say about history at rest. */
function codecStatus(config: Config, codec: EncryptingPayloadCodec | null): string {
  if (codec) return `encrypting with key "${codec.encryptingKeyId}" (${codec.keyIds.length} key${codec.keyIds.length === 1 ? '' : 's'} decrypt)`;
  if (!config.codec.enabled) return 'codec.enabled is false: workflow history is stored in plain text';
  return 'no codec.keys configured: workflow history is stored in plain text';
}

async function buildHealthApp(readiness: () => Promise<{ temporal: boolean; worker: boolean | null; codec: string; version?: string; searchAttributes: string | null }>, registry: Registry) {
  const app = Fastify({ logger: false });
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/readyz', async (_request, reply) => {
    const state = await readiness();
    const ready = state.temporal && state.worker !== false && !state.searchAttributes;
    return reply.code(ready ? 200 : 503).send({ ready, ...state });
  });
  app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  return app;
}
