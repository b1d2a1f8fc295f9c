import { existsSync } from 'node:fs';
import { killPids, livePids } from './processes.js';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { SshTarget } from '../activities/ssh/connection.js';
import { SIM_DEVVM_SCRIPT, markGuestReady, observeGuest, resetDevvmState } from './devvm/sim-devvm.mjs';
import { fingerprintOf, generateKeyPair } from './keys.js';
import { startSshd, type RunningSshd } from './sshd.js';

/**
 * The lab's devvm: a real OpenSSH sshd whose only key runs the simulated devvm
 * (lab/devvm/sim-devvm.mjs) as its forced command, driven by the simulated VM's state:
 *
 *   VM stopped                 → sshd stopped: connection refused
 *   VM running, guest wedged   → sshd frozen (SIGSTOP): connections hang, as with the 2026-06-11
 *     (io_stall or dstate)       I/O stall; a `qm reset` keeps it so (same QEMU, same fault)
 *   new boot (cycle, or reset  → sshd stopped for bootDelayMs (the guest is booting), then up
 *     of a healthy guest)
 *   running, healthy           → sshd up
 *
 * sshd always comes back on the same port with the same host key, so `knownHostsLine` stays
 * valid for the life of the host. A guest already running when the host starts counts as
 * booted (the devvm was up before the lab looked).
 */

export type DevvmScenario = 'io-stall' | 'oom' | 'healthy';
export const DEVVM_SCENARIOS: readonly DevvmScenario[] = ['io-stall', 'oom', 'healthy'];

/** What the watcher last made of the guest. */
export type DevvmGuestState = 'down' | 'booting' | 'up' | 'wedged';
/** What the watcher did to sshd accordingly. */
export type DevvmSshdMode = 'running' | 'frozen' | 'stopped';

export interface DevvmHostOptions {
  /** Scratch directory owned by the caller: sshd's config, host key, logs. */
  dir: string;
  /** The simulated VM's state dir (lab/pve/sim-vm.mjs), e.g. a PveHost's vmDir. */
  vmDir: string;
  /** The breakglass client's public key line. */
  clientPublicKey: string;
  scenario: DevvmScenario;
  /** How long a freshly started guest takes before sshd answers. */
  bootDelayMs?: number;
  /** How often the watcher looks at the VM. */
  pollMs?: number;
}

export interface DevvmHost {
  sshd: { readonly port: number; readonly knownHostsLine: string; readonly hostKeyFingerprint: string };
  scenario: DevvmScenario;
  vmDir: string;
  /** The watcher's log: one line per change of guest state or sshd mode. */
  logFile: string;
  state(): DevvmGuestState;
  sshdMode(): DevvmSshdMode;
  /** Resolves once the watcher has seen the guest in `state` (and set sshd accordingly). */
  waitForState(state: DevvmGuestState, timeoutMs?: number): Promise<void>;
  target(privateKey: Buffer | string, username: string): SshTarget;
  stop(): Promise<void>;
}

/** Quote for the POSIX shell sshd runs a forced command with. */
const shQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** The authorized_keys line that makes the client key answer from the simulation only. */
export function devvmForcedCommandLine(vmDir: string, scenario: DevvmScenario, publicKey: string): string {
  const command = [process.execPath, SIM_DEVVM_SCRIPT, resolve(vmDir), scenario].map(shQuote).join(' ');
  // The option value is double-quoted in authorized_keys: keep it unambiguous.
  if (/["\\\n]/.test(command)) throw new Error(`devvm host: paths with '"', '\\' or newlines cannot go into authorized_keys: ${command}`);
  return `command="${command}",restrict ${publicKey.trim()}`;
}

/** Pids of simulated-devvm commands serving vmDir (and the shells sshd ran them in). */
function simDevvmProcesses(vmDir: string): number[] {
  return livePids((argv) => argv.some((a) => a.includes(SIM_DEVVM_SCRIPT)) && argv.some((a) => a.includes(vmDir)));
}

export async function startDevvmHost(options: DevvmHostOptions): Promise<DevvmHost> {
  const { scenario, bootDelayMs = 2500, pollMs = 250 } = options;
  if (!DEVVM_SCENARIOS.includes(scenario)) throw new Error(`devvm host: unknown scenario '${scenario}' (known: ${DEVVM_SCENARIOS.join(', ')})`);
  const dir = resolve(options.dir);
  const vmDir = resolve(options.vmDir);
  const sshdDir = join(dir, 'sshd');
  const logFile = join(dir, 'devvm-host.log');
  await mkdir(sshdDir, { recursive: true });
  // The host key is made here, once: every sshd this host starts presents it.
  const hostKeyPath = join(sshdDir, 'ssh_host_ed25519_key');
  const hostPublicKey = existsSync(hostKeyPath)
    ? (await readFile(`${hostKeyPath}.pub`, 'utf8')).trim()
    : (await generateKeyPair(sshdDir, 'ssh_host_ed25519_key')).publicKey;
  const hostKeyFingerprint = await fingerprintOf(`${hostKeyPath}.pub`);
  const authorizedKeys = [devvmForcedCommandLine(vmDir, scenario, options.clientPublicKey)];
  // A fresh lab: the VM was (re-)created, so the guest has no history yet.
  resetDevvmState(vmDir, scenario);

  // The first start picks a free port (with startSshd's retries); later ones reuse it.
  let sshd: RunningSshd = await startSshd({ dir: sshdDir, authorizedKeys });
  const port = sshd.port;
  const knownHostsLine = `[127.0.0.1]:${port} ${hostPublicKey.split(' ').slice(0, 2).join(' ')}`;
  let mode: DevvmSshdMode = 'running';
  let guest: DevvmGuestState = 'up';

  // Boot tracking: the boot whose guest finished booting, and the one under way.
  let bootedKey: string | null = null;
  let bootingKey: string | null = null;
  let bootingSince: number | null = null;
  let first = true;

  const log = (line: string) => appendFile(logFile, `${new Date().toISOString()} ${line}\n`).catch(() => undefined);

  const judge = (now: number): DevvmGuestState => {
    const obs = observeGuest(vmDir, scenario, now);
    if (!obs.running || !obs.boot) return 'down';
    const key = obs.boot.key;
    if (first) {
      // Already running when we started: booted before we looked.
      bootedKey = key;
      markGuestReady(vmDir, scenario, key, now);
    }
    if (key === bootedKey) return obs.wedged ? 'wedged' : 'up';
    if (bootingKey !== key) {
      bootingKey = key;
      bootingSince = obs.wedged ? null : obs.boot.bootAt;
    }
    // A wedged guest makes no progress booting (its BIOS cannot even read the disk).
    if (obs.wedged) {
      bootingSince = null;
      return 'wedged';
    }
    bootingSince ??= now;
    if (now - bootingSince < bootDelayMs) return 'booting';
    bootedKey = key;
    markGuestReady(vmDir, scenario, key, bootingSince + bootDelayMs);
    return 'up';
  };

  const sshdAlive = () => sshd.process.exitCode === null && sshd.process.signalCode === null;

  const apply = async (want: DevvmSshdMode) => {
    if (mode === 'stopped' && want !== 'stopped') {
      sshd = await startSshd({ dir: sshdDir, authorizedKeys, port });
      mode = 'running';
    }
    if (want === 'stopped' && mode !== 'stopped') {
      await sshd.stop();
      // Whatever the guest was running died with it.
      killPids(simDevvmProcesses(vmDir));
      mode = 'stopped';
    } else if (want === 'frozen' && mode === 'running') {
      sshd.freeze();
      mode = 'frozen';
    } else if (want === 'running' && mode === 'frozen') {
      sshd.thaw();
      mode = 'running';
    }
  };

  const tick = async () => {
    const now = Date.now();
    const next = judge(now);
    first = false;
    if (mode !== 'stopped' && !sshdAlive()) mode = 'stopped'; // died on its own: start again
    const want: DevvmSshdMode = next === 'up' ? 'running' : next === 'wedged' ? 'frozen' : 'stopped';
    const before = `${guest}/${mode}`;
    try {
      await apply(want);
      // Only now: whoever waits for a state finds sshd already in the matching mode.
      guest = next;
    } catch (error) {
      // Typically the port was taken while sshd was down: try again on the next look.
      await log(`sshd ${want} failed: ${(error as Error).message}`);
    }
    if (`${guest}/${mode}` !== before) await log(`guest=${guest} sshd=${mode}${mode === 'stopped' ? '' : ` pid=${sshd.process.pid}`}`);
  };

  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let inFlight: Promise<void> = Promise.resolve();
  const loop = () => {
    timer = setTimeout(() => {
      inFlight = tick()
        .catch((error: Error) => log(`watcher error: ${error.message}`))
        .finally(() => {
          if (!stopped) loop();
        });
    }, pollMs);
  };
  try {
    await tick();
  } catch (error) {
    await sshd.stop();
    throw error;
  }
  loop();

  return {
    sshd: { port, knownHostsLine, hostKeyFingerprint },
    scenario,
    vmDir,
    logFile,
    state: () => guest,
    sshdMode: () => mode,
    waitForState: async (state, timeoutMs = 15_000) => {
      const until = Date.now() + timeoutMs;
      while (guest !== state) {
        if (stopped) throw new Error(`devvm host stopped while waiting for '${state}'`);
        if (Date.now() > until) throw new Error(`devvm guest did not become '${state}' within ${timeoutMs} ms (it is '${guest}', sshd ${mode})`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    target: (privateKey, username) => ({
      host: '127.0.0.1',
      port,
      username,
      privateKey,
      pins: { knownHosts: knownHostsLine },
      readyTimeoutMs: 5_000,
      keepaliveIntervalMs: 1_000,
    }),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      if (timer) clearTimeout(timer);
      await inFlight;
      // stop() sends SIGCONT before SIGTERM, so a frozen sshd goes too.
      if (mode === 'frozen') sshd.thaw();
      await sshd.stop();
      mode = 'stopped';
      killPids(simDevvmProcesses(vmDir));
    },
  };
}
