/**
 * The bench's lab, all on loopback and all real processes: the Temporal dev server, the PVE
 * host (OpenSSH sshd + the real forced-command dispatcher over the lab's qm, VM 102 a real QEMU
 * without a guest), a devvm (OpenSSH sshd, real shell), one breakglass key, pinned host keys, operator
 * tokens, and a prebuilt workflow bundle (as the container image ships one).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode } from '@temporalio/worker';
import { generateKeyPair, type KeyPair } from '../lab/keys.js';
import { startPveHost, type PveHost } from '../lab/pve-host.js';
import { startSshd, type RunningSshd } from '../lab/sshd.js';
import { startTemporalDev, type TemporalDev } from '../lab/temporal-dev.js';
import { bundlerOptions, WORKFLOWS_PATH } from '../server/worker.js';
import type { SshTarget } from '../activities/ssh/connection.js';
import type { SshEndpoint } from './ssh-cli.js';

/** The model name sessions ask the Messages API stand-in for (any name works there). */
export const STANDIN_MODEL = 'claude-bench-standin';

/** Operators (and tokens) the product accepts; requests rotate over them (see api.ts). */
const OPERATORS = 32;

export interface BenchLab {
  dir: string;
  temporal: TemporalDev;
  connection: Connection;
  client: Client;
  pve: PveHost;
  devvm: RunningSshd;
  key: KeyPair;
  user: string;
  knownHostsFile: string;
  tokens: string[];
  /** The prebuilt workflow bundle (BREAKGLASS_WORKFLOW_BUNDLE). */
  bundlePath: string;
  pveSsh: SshEndpoint;
  devvmSsh: SshEndpoint;
  /** The hosts as the product's SSH client (ssh2) reaches them, for the in-process baselines. */
  devvmTarget: SshTarget;
  pveTarget: SshTarget;
  /** The product's config file contents for a task queue (token auth, this lab's hosts). */
  productConfig(taskQueue: string, port: number): Record<string, unknown>;
  teardown(): Promise<void>;
}

export async function startLab(log: (line: string) => void): Promise<BenchLab> {
  const dir = await mkdtemp(join(tmpdir(), 'bg-bench-'));
  const stops: (() => Promise<void>)[] = [];
  const teardown = async () => {
    for (const stop of stops.reverse()) await stop().catch((error: unknown) => log(`teardown: ${(error as Error).message}`));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    log('lab: Temporal dev server…');
    const temporal = await startTemporalDev({ dataDir: join(dir, 'temporal'), headless: true });
    stops.push(() => temporal.stop());
    const connection = await Connection.connect({ address: temporal.address });
    stops.push(() => connection.close());
    const client = new Client({ connection });

    log('lab: PVE host and devvm stand-ins…');
    const key = await generateKeyPair(dir, 'breakglass');
    // blockstats_interval 1: forensics waits one second between its two block-stat samples.
    const pve = await startPveHost({ dir: join(dir, 'pve'), clientPublicKey: key.publicKey, config: { blockstats_interval: 1 } });
    stops.push(() => pve.stop());
    const devvm = await startSshd({ dir: join(dir, 'devvm'), authorizedKeys: [`restrict ${key.publicKey}`] });
    stops.push(() => devvm.stop());
    const knownHostsFile = join(dir, 'known_hosts');
    await writeFile(knownHostsFile, `${pve.sshd.knownHostsLine}\n${devvm.knownHostsLine}\n`);
    const identityKeyFile = join(dir, 'identity.key');
    await writeFile(identityKeyFile, randomBytes(48).toString('base64'));
    const user = userInfo().username;

    log('lab: bundling the workflow code once…');
    const bundle = await bundleWorkflowCode({
      workflowsPath: WORKFLOWS_PATH,
      ...(bundlerOptions?.webpackConfigHook ? { webpackConfigHook: bundlerOptions.webpackConfigHook } : {}),
      logger: { trace() {}, debug() {}, info() {}, warn() {}, error: (message: string) => log(`bundle: ${message}`), log() {} } as never,
    });
    const bundlePath = join(dir, 'workflow-bundle.js');
    await writeFile(bundlePath, bundle.code);

    const tokens = Array.from({ length: OPERATORS }, () => randomBytes(24).toString('base64url'));
    const privateKey = await readFile(key.privateKeyPath);
    return {
      dir,
      temporal,
      connection,
      client,
      pve,
      devvm,
      key,
      user,
      knownHostsFile,
      tokens,
      bundlePath,
      pveSsh: { port: pve.sshd.port, user, keyPath: key.privateKeyPath, knownHostsFile },
      devvmSsh: { port: devvm.port, user, keyPath: key.privateKeyPath, knownHostsFile },
      pveTarget: pve.target(privateKey, user),
      devvmTarget: { host: '127.0.0.1', port: devvm.port, username: user, privateKey, pins: { knownHosts: devvm.knownHostsLine }, readyTimeoutMs: 10_000, keepaliveIntervalMs: 5_000 },
      productConfig: (taskQueue, port) => ({
        dataDir: join(dir, 'data'),
        listen: { host: '127.0.0.1', port },
        temporal: { address: temporal.address, taskQueue },
        devvm: { host: '127.0.0.1', port: devvm.port, user, keyFile: key.privateKeyPath, knownHostsFile },
        pve: { host: '127.0.0.1', port: pve.sshd.port, user, keyFile: key.privateKeyPath, knownHostsFile },
        auth: {
          mode: 'token',
          tokens: tokens.map((token, index) => ({ operator: `bench-${index + 1}`, sha256: createHash('sha256').update(token).digest('hex') })),
        },
        identity: { keyFile: identityKeyFile },
        // The agent bench runs many tool calls on one operator message.
        policy: { toolCallsPerMessage: 200 },
        agent: { model: STANDIN_MODEL },
      }),
      teardown,
    };
  } catch (error) {
    await teardown();
    throw error;
  }
}
