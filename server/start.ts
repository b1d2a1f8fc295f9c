/**
 * Composition: from a Config to a running console and/or worker. Used by server/main.ts (a real
 * deployment) and lab/main.ts (everything embedded).
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import type { ActivityDeps } from '../activities/index.js';
import type { AgentModelConfig } from '../activities/agent/turn.js';
import type { SshTarget } from '../activities/ssh/connection.js';
import { buildApp, type AgentStatus } from './app.js';
import { createAuthenticator } from './auth.js';
import type { Config, SshEndpointConfig } from './config.js';
import { SessionEvents } from './events.js';
import { LiveBus } from './live-bus.js';
import { Sessions } from './sessions.js';
import { createBreakglassWorker } from './worker.js';

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
  if (config.agent.apiKey) {
    return {
      status: { mode: 'live', reason: `Claude (${config.agent.model})` },
      model: { ...common, apiKey: config.agent.apiKey, ...(config.agent.baseUrl ? { baseURL: config.agent.baseUrl } : {}) },
    };
  }
  return { status: { mode: 'off', reason: 'no Anthropic API key configured: the console works manually' }, model: null };
}

export async function startBreakglass(config: Config, options: StartOptions = {}): Promise<Running> {
  if (!config.temporal.address) throw new Error('config: temporal.address: required outside the lab');
  const connectionOptions = temporalConnectionOptions(config);
  const live = new LiveBus();
  const closers: (() => Promise<void>)[] = [];
  const agent = agentSetup(config, options.demoAgent);
  const target = { devvm: config.target.devvmName, vmid: config.target.vmid };
  let workerState: () => boolean | null = () => null;

  if (config.roles.worker) {
    // The agent's activity reads the session transcript through its own client.
    const agentConnection = agent.model ? await Connection.connect(connectionOptions) : null;
    const activities: ActivityDeps = {
      pve: sshTarget(config.pve, 'pve'),
      devvm: sshTarget(config.devvm, 'devvm'),
      artifactsDir: join(config.dataDir, 'forensics'),
      onCommandOutput: (key, stream, text) =>
        live.publish({ sessionId: key.workflowId, stream: `${key.activityId}#${key.attempt}`, kind: stream, text }),
      onAgentText: (key, text) => live.publish({ sessionId: key.workflowId, stream: `${key.activityId}#${key.attempt}`, kind: 'text', text }),
      ...(agent.model && agentConnection
        ? {
            agent: {
              model: agent.model,
              client: new Client({ connection: agentConnection, namespace: config.temporal.namespace }),
              target,
              maxContextTokens: config.agent.maxContextTokens,
            },
          }
        : {}),
    };
    const { worker, connection } = await createBreakglassWorker({
      address: connectionOptions.address,
      namespace: config.temporal.namespace,
      taskQueue: config.temporal.taskQueue,
      activities,
      ...(process.env.BREAKGLASS_WORKFLOW_BUNDLE ? { workflowBundlePath: process.env.BREAKGLASS_WORKFLOW_BUNDLE } : {}),
      ...('tls' in connectionOptions ? { tls: connectionOptions.tls } : {}),
      ...('apiKey' in connectionOptions ? { apiKey: connectionOptions.apiKey } : {}),
    });
    const running = worker.run();
    workerState = () => worker.getState() === 'RUNNING';
    closers.push(async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => undefined);
      await connection.close();
      await agentConnection?.close();
    });
  }

  let url: string | null = null;
  let labToken: string | null = null;
  if (config.roles.server) {
    const connection = await Connection.connect(connectionOptions);
    const client = new Client({ connection, namespace: config.temporal.namespace });
    const sessions = new Sessions(client, {
      taskQueue: config.temporal.taskQueue,
      target,
      policy: config.policy,
      namespace: config.temporal.namespace,
      agent: { enabled: agent.status.mode !== 'off', reason: agent.status.reason },
    });
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
      readiness: async () => {
        const temporal = await Promise.race([
          connection.workflowService.getSystemInfo({}).then(() => true, () => false),
          new Promise<boolean>((r) => setTimeout(() => r(false), 2_000)),
        ]);
        return { temporal, worker: workerState() };
      },
    });
    url = await app.listen({ host: config.listen.host, port: config.listen.port });
    closers.unshift(async () => {
      events.close();
      await app.close();
      await connection.close();
    });
  }

  return {
    url,
    labToken,
    close: async () => {
      for (const close of closers) await close().catch(() => undefined);
    },
  };
}
