import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scopeDir } from './pve/cgroups.mjs';
import { initVm, killVm, writeQmWrapper } from './pve/lab-vm.mjs';
import { paths } from './pve/pve-node.mjs';
import { devvmOf, loadGuestImage, type Devvm } from './devvm.js';
import { killPids, pidsWithArg } from './processes.js';
import { freePort, startSshd, type RunningSshd } from './sshd.js';
import type { SshTarget } from '../activities/ssh/connection.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DISPATCHER = join(REPO_ROOT, 'host/pve/pve-dispatch');

/** Install-config values (host/pve/pve.conf.example documents each key). */
export type DispatcherConfig = Partial<Record<
  'lock_wait' | 'status_lock_wait' | 'status_timeout' | 'section_timeout' | 'qmp_timeout' | 'blockstats_interval'
  | 'reset_timeout' | 'stop_timeout' | 'stop_grace' | 'start_timeout' | 'result_wait' | 'dmesg_lines' | 'ha_wait', number>>;

export interface PveHostOptions {
  dir: string;
  /** The breakglass client's public key line. */
  clientPublicKey: string;
  /** Extra authorized_keys lines (e.g. a key without forced command, to prove it is refused). */
  extraAuthorizedKeys?: string[];
  vm?: {
    running?: boolean;
    /** Pending config (key → value), e.g. incidentFixPending(). */
    pending?: Record<string, string>;
    /**
     * Boot the real Debian guest (the devvm) in the VM. Without it QEMU runs with a blank disk
     * and no kernel: real QMP, real block devices, milliseconds to start — for tests that only
     * need the hypervisor side.
     */
    guest?: boolean;
  };
  config?: DispatcherConfig;
}

export interface PveHost {
  sshd: RunningSshd;
  /** The lab PVE node's root: Proxmox's paths under it (lab/pve/pve-node.mjs). */
  nodeRoot: string;
  /** The devvm in VM 102, when the VM boots the guest. */
  devvm: Devvm | null;
  /** VM 102 created anew (same guest, same SSH port): a fresh disk, a fresh QEMU, no faults. */
  recreateVm(options?: { running?: boolean; pending?: Record<string, string> }): Promise<void>;
  /** The dispatcher's own state: journal, forensics, lock. */
  stateDir: string;
  logFile: string;
  configFile: string;
  target(privateKey: Buffer | string, username: string): SshTarget;
  stop(): Promise<void>;
}

/** The authorized_keys line that makes the breakglass key a forced-command key. */
export function forcedCommandLine(configFile: string, publicKey: string, from = '127.0.0.1,::1', dispatcher = DISPATCHER): string {
  return `command="${dispatcher} ${configFile}",restrict,from="${from}" ${publicKey}`;
}

/**
 * A PVE host: real sshd + the real dispatcher over the lab's `qm` stand-in, which runs VM 102 as a
 * real QEMU process (with the real Debian guest as the devvm when `vm.guest` is set).
 */
export async function startPveHost(options: PveHostOptions): Promise<PveHost> {
  const dir = resolve(options.dir);
  const nodeRoot = join(dir, 'node');
  const stateDir = join(dir, 'state');
  const logFile = join(dir, 'dispatch.log');
  const configFile = join(dir, 'pve.conf');
  await mkdir(nodeRoot, { recursive: true });
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const image = options.vm?.guest ? loadGuestImage() : null;
  const sshPort = image ? await freePort() : null;
  const recreateVm = (vm: { running?: boolean; pending?: Record<string, string> } = {}) =>
    initVm(nodeRoot, {
      running: vm.running ?? true,
      guest: image,
      sshPort,
      // PVE 9 gives QMP quit 60 s; the lab 8 s, so a stop of a hung QEMU takes ~20 s, not ~71 s
      // (the dispatcher's stop_grace below matches it).
      qmpQuitTimeoutS: 8,
      ...(image ? { accel: image.accel } : {}),
      ...(vm.pending ? { pending: vm.pending } : {}),
    });
  await recreateVm(options.vm);
  const node = paths(nodeRoot);
  const qm = writeQmWrapper(nodeRoot, join(dir, 'qm'));
  const config = {
    vmid: 102,
    qm,
    socat: '/usr/bin/socat',
    qmp_socket: node.qmpSocket,
    qm_lock_dir: node.lockDir,
    // The lab logs VM 102's serial console to a file; forensics keeps its tail.
    console_log: node.serialLog,
    // The VM's real cgroup-v2 scope (lab/pve/cgroups.mjs), or a path that never exists on a
    // machine without a writable cgroup v2.
    scope_dir: scopeDir(nodeRoot) ?? join(nodeRoot, 'sys/fs/cgroup/qemu.slice/102.scope'),
    ha_resources: node.haResources,
    // The lab's HA manager acts within seconds (haDelayS); a real one may take a minute.
    ha_wait: 20,
    state_dir: stateDir,
    log_file: logFile,
    lock_wait: 10,
    status_lock_wait: 3,
    status_timeout: 5,
    section_timeout: 4,
    qmp_timeout: 3,
    blockstats_interval: 1,
    reset_timeout: 20,
    stop_timeout: 8,
    // The lab's qm gives QMP quit 8 s (below): 8 + 10 (SIGTERM) + 1 (SIGKILL) + 10 (lock) + 1.
    stop_grace: 30,
    start_timeout: 20,
    result_wait: 60,
    dmesg_lines: 40,
    ...options.config,
  };
  let sshd: RunningSshd;
  try {
    await writeFile(configFile, Object.entries(config).map(([key, value]) => `${key}=${value}`).join('\n') + '\n');
    await chmod(configFile, 0o644);
    await writeFile(logFile, '');
    sshd = await startSshd({
      dir: join(dir, 'sshd'),
      authorizedKeys: [forcedCommandLine(configFile, options.clientPublicKey), ...(options.extraAuthorizedKeys ?? [])],
    });
  } catch (error) {
    // The caller gets no handle to stop: the VM started above must not outlive this failure.
    await killVm(nodeRoot);
    throw error;
  }
  return {
    sshd,
    nodeRoot,
    devvm: image && sshPort ? devvmOf(image, sshPort, node.serialLog) : null,
    recreateVm,
    stateDir,
    logFile,
    configFile,
    target: (privateKey, username) => ({
      host: '127.0.0.1',
      port: sshd.port,
      username,
      privateKey,
      pins: { knownHosts: sshd.knownHostsLine },
      readyTimeoutMs: 5_000,
      keepaliveIntervalMs: 1_000,
    }),
    stop: async () => {
      await sshd.stop();
      // Detached runners (setsid), their hung qm calls and timeouts outlive sshd by design.
      await killProcessesUnder(resolve(dir));
      await killVm(nodeRoot);
    },
  };
}

/** SIGKILLs every process (but this one) whose command line names a path inside dir. */
async function killProcessesUnder(dir: string): Promise<void> {
  // Twice: a runner killed mid-step may have forked a child a moment before.
  for (let round = 0; round < 2; round++) {
    killPids(pidsWithArg(`${dir}/`));
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function readHostLog(host: PveHost): Promise<string[]> {
  return (await readFile(host.logFile, 'utf8')).split('\n').filter(Boolean);
}
