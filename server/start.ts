/**
 * Composition: from a Config to a running console and/or worker. Used by server/main.ts (a real
 * deployment) and lab/main.ts (everything embedded).
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import type { ActivityDeps } from '../activities/index.js';
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
      throw new Error(`config: ${key}.${what}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
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
  agent?: AgentStatus;
  /** Extra activity dependencies (e.g. the agent runtime). */
  activityDeps?: Partial<ActivityDeps>;
}

export async function startBreakglass(config: Config, options: StartOptions = {}): Promise<Running> {
  if (!config.temporal.address) throw new Error('config: temporal.address: required outside the lab');
  const connectionOptions = temporalConnectionOptions(config);
  const live = new LiveBus();
  const closers: (() => Promise<void>)[] = [];
  let workerState: () => boolean | null = () => null;

  if (config.roles.worker) {
    const activities: ActivityDeps = {
      pve: sshTarget(config.pve, 'pve'),
      devvm: sshTarget(config.devvm, 'devvm'),
      artifactsDir: join(config.dataDir, 'forensics'),
      onCommandOutput: (key, stream, text) =>
        live.publish({ sessionId: key.workflowId, stream: `${key.activityId}#${key.attempt}`, kind: stream, text }),
      ...options.activityDeps,
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
    });
  }

  let url: string | null = null;
  let labToken: string | null = null;
  if (config.roles.server) {
    const connection = await Connection.connect(connectionOptions);
    const client = new Client({ connection, namespace: config.temporal.namespace });
    const sessions = new Sessions(client, {
      taskQueue: config.temporal.taskQueue,
      target: { devvm: config.target.devvmName, vmid: config.target.vmid },
      policy: config.policy,
      namespace: config.temporal.namespace,
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
      agent: options.agent ?? { mode: 'off', reason: 'no ANTHROPIC_API_KEY: the console works manually' },
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
