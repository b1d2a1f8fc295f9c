import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTE_TYPES } from '../workflows/search-attributes.js';
import { freePort } from './sshd.js';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The provisioned tool (scripts/provision.sh) or, failing that, one on PATH. */
export function toolPath(name: 'temporal' | 'tctl'): string {
  const provisioned = join(REPO_ROOT, '.tools/bin', name);
  return existsSync(provisioned) ? realpathSync(provisioned) : name;
}

export interface TemporalDevOptions {
  /** The SQLite database lives here, so sessions survive a server restart. */
  dataDir: string;
  port?: number;
  uiPort?: number;
  /** Extra `--dynamic-config-value` pairs, e.g. a low continue-as-new threshold in tests. */
  dynamicConfig?: Record<string, string | number | boolean>;
  headless?: boolean;
  /** The Web UI decodes payloads through this codec server (the console's /codec). */
  uiCodecEndpoint?: string;
}

export interface TemporalDev {
  address: string;
  uiUrl: string | null;
  port: number;
  uiPort: number;
  process: ChildProcess;
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Stops and starts again on the same ports and database file. */
  restart(): Promise<void>;
}

async function waitUntilServing(address: string, child: ChildProcess, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  let lastError: unknown;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`temporal dev server exited with ${child.exitCode}`);
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      try {
        await connection.workflowService.getSystemInfo({});
        return;
      } finally {
        await connection.close();
      }
    } catch (error) {
      lastError = error;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error(`temporal dev server at ${address} not ready within ${deadlineMs} ms: ${String(lastError)}`);
}

/**
 * Starts the real Temporal dev server (the `temporal` CLI) with a persistent SQLite file under
 * dataDir, the Breakglass search attributes registered and the Web UI on its own port.
 */
export async function startTemporalDev(options: TemporalDevOptions): Promise<TemporalDev> {
  mkdirSync(options.dataDir, { recursive: true });
  const port = options.port ?? (await freePort());
  const uiPort = options.uiPort ?? (await freePort());
  const args = [
    'server', 'start-dev',
    '--ip', '127.0.0.1',
    '--port', String(port),
    '--ui-port', String(uiPort),
    '--db-filename', join(options.dataDir, 'temporal.sqlite'),
    '--log-level', 'error',
    ...Object.entries(SEARCH_ATTRIBUTE_TYPES).flatMap(([name, type]) => ['--search-attribute', `${name}=${type}`]),
    ...Object.entries(options.dynamicConfig ?? {}).flatMap(([key, value]) => ['--dynamic-config-value', `${key}=${JSON.stringify(value)}`]),
    ...(options.headless ? ['--headless'] : []),
    ...(options.uiCodecEndpoint && !options.headless ? ['--ui-codec-endpoint', options.uiCodecEndpoint] : []),
  ];
  const address = `127.0.0.1:${port}`;
  const logFd = openSync(join(options.dataDir, 'temporal.log'), 'a');
  const launch = () => spawn(toolPath('temporal'), args, { stdio: ['ignore', logFd, logFd] });

  const dev: TemporalDev = {
    address,
    uiUrl: options.headless ? null : `http://127.0.0.1:${uiPort}`,
    port,
    uiPort,
    process: launch(),
    stop: async (signal = 'SIGTERM') => {
      const child = dev.process;
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
    restart: async () => {
      await dev.stop();
      dev.process = launch();
      await waitUntilServing(address, dev.process, 60_000);
    },
  };
  await waitUntilServing(address, dev.process, 60_000);
  return dev;
}
