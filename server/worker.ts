import { fileURLToPath } from 'node:url';
import type { DataConverter } from '@temporalio/common';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities/index.js';
import { pinnedDeploymentOptions, type DeploymentVersion } from './worker-deployment.js';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

export interface WorkerSettings {
  address: string;
  namespace: string;
  taskQueue: string;
  activities: ActivityDeps;
  /** A prebuilt bundle (the Docker image ships one); otherwise workflows are bundled at start. */
  workflowBundlePath?: string;
  tls?: NativeConnectionTls;
  apiKey?: string;
  maxConcurrentActivityTaskExecutions?: number;
  /** The payload codec and encoded failures (server/payload-codec.ts), when history is encrypted. */
  dataConverter?: DataConverter;
  /** Worker Deployment Versioning: poll as this version, sessions pinned to it. */
  deployment?: DeploymentVersion;
}

type NativeConnectionTls = Parameters<typeof NativeConnection.connect>[0] extends infer O ? (O extends { tls?: infer T } ? T : never) : never;

/** Our sources import `./x.js` while the files are `./x.ts`: teach the bundler that mapping. */
export const bundlerOptions: WorkerOptions['bundlerOptions'] = {
  webpackConfigHook: (config) => {
    config.resolve = { ...config.resolve, extensionAlias: { '.js': ['.ts', '.js'] } };
    return config;
  },
};

export async function createBreakglassWorker(settings: WorkerSettings): Promise<{ worker: Worker; connection: NativeConnection }> {
  const connection = await NativeConnection.connect({
    address: settings.address,
    ...(settings.tls ? { tls: settings.tls } : {}),
    ...(settings.apiKey ? { apiKey: settings.apiKey } : {}),
  });
  const worker = await Worker.create({
    connection,
    namespace: settings.namespace,
    taskQueue: settings.taskQueue,
    activities: createActivities(settings.activities),
    ...(settings.dataConverter ? { dataConverter: settings.dataConverter } : {}),
    ...(settings.deployment ? { workerDeploymentOptions: pinnedDeploymentOptions(settings.deployment) } : {}),
    ...(settings.workflowBundlePath
      ? { workflowBundle: { codePath: settings.workflowBundlePath } }
      : { workflowsPath: WORKFLOWS_PATH, bundlerOptions }),
    ...(settings.maxConcurrentActivityTaskExecutions ? { maxConcurrentActivityTaskExecutions: settings.maxConcurrentActivityTaskExecutions } : {}),
    // A rolling deploy lets running activities finish (a verb's host call, a devvm wait) before
    // they are cancelled; what is cancelled then fails and is retried on the next worker.
    shutdownGraceTime: '20s',
  });
  return { worker, connection };
}
