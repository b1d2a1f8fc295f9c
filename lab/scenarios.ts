import { readFileSync } from 'node:fs';
import { runSshCommand } from '../activities/ssh/connection.js';
import type { Devvm } from './devvm.js';
import { incidentFixPending, runQm, setFault } from './pve/lab-vm.mjs';
import { paths } from './pve/pve-node.mjs';
import { startPveHost, type PveHost, type PveHostOptions } from './pve-host.js';

/**
 * What the lab's devvm is going through, each made real on the booted guest:
 *   io-stall  the 2026-06-11 class: the fix is staged as pending config, then the disk's storage
 *             is frozen while the guest writes (SSH logins hang; the kernel logs hung tasks)
 *   oom       a service eats memory until the guest kernel's OOM killer kills it; systemd leaves
 *             the unit failed
 *   healthy   nothing wrong
 */
export type DevvmScenario = 'io-stall' | 'oom' | 'healthy';
export const DEVVM_SCENARIOS: readonly DevvmScenario[] = ['io-stall', 'oom', 'healthy'];

/** The unit the oom scenario runs away with (lab/guest/rootfs/etc/systemd/system). */
export const OOM_UNIT = 'code-indexer.service';

/**
 * Brings a freshly booted devvm into the scenario. For io-stall the caller stages the fix as
 * pending config when creating the VM (incidentFixPending); this freezes the disk under load.
 */
export async function applyScenario(scenario: DevvmScenario, nodeRoot: string, devvm: Devvm): Promise<void> {
  if (scenario === 'healthy') return;
  const target = devvm.target();
  if (scenario === 'oom') {
    const started = await runSshCommand(target, { command: `sudo -n systemctl start --no-block ${OOM_UNIT}`, deadlineMs: 15_000 });
    if (started.exitCode !== 0) throw new Error(`oom scenario: could not start ${OOM_UNIT}: ${started.stderr.text}`);
    // The guest kernel needs a few seconds of TCG time to fill its memory and kill the eater;
    // meanwhile the guest can be too starved to finish an SSH handshake: keep asking.
    const until = Date.now() + 90_000;
    for (;;) {
      const state = await runSshCommand(target, { command: `systemctl is-failed ${OOM_UNIT}`, deadlineMs: 10_000 }).then(
        (out) => out.stdout.text.trim(),
        (error: Error) => error.message,
      );
      if (state === 'failed') return;
      if (Date.now() > until) throw new Error(`oom scenario: ${OOM_UNIT} did not fail within 90 s (last: ${state})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  // io-stall: the journal and a writer keep I/O in flight when the storage freezes, as the
  // devvm's build jobs did; those writes then never complete.
  const writer = await runSshCommand(target, {
    command: "sudo -n sh -c 'nohup sh -c \"while :; do date >>/var/log/devvm-writer.log; sync; sleep 0.2; done\" >/dev/null 2>&1 &'",
    deadlineMs: 15_000,
  });
  if (writer.exitCode !== 0) throw new Error(`io-stall scenario: could not start the writer: ${writer.stderr.text}`);
  await setFault(nodeRoot, 'io_stall', true);
  await stallShows(nodeRoot);
}

/**
 * An operator arrives after the stall has shown itself: wait (up to 60 s) for the guest's first
 * sign of it that forensics reads — its agent no longer answering, or its kernel reporting a
 * hung task on the console. Flat block counters alone are what an idle guest shows too.
 */
async function stallShows(nodeRoot: string): Promise<void> {
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    if (readFileSync(paths(nodeRoot).serialLog, 'utf8').includes('blocked for more than')) return;
    if (!(await runQm(nodeRoot, ['guest', 'cmd', '102', 'ping']).then(() => true, () => false))) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error('io-stall scenario: the guest showed no sign of the stall within 60 s (agent still answering, no hung task)');
}

/**
 * A PVE host whose VM 102 boots the real guest, brought into the scenario: what `npm start`,
 * the browser tests and the session suites run on. `bootMs` is the boot to sshd's banner.
 */
export async function startScenarioHost(
  scenario: DevvmScenario,
  options: Omit<PveHostOptions, 'vm'>,
): Promise<{ pve: PveHost; devvm: Devvm; bootMs: number }> {
  const pve = await startPveHost({
    ...options,
    vm: { running: true, guest: true, ...(scenario === 'io-stall' ? { pending: incidentFixPending() } : {}) },
  });
  try {
    const devvm = pve.devvm;
    if (!devvm) throw new Error('the PVE host started without its devvm');
    const bootMs = await devvm.waitForSsh();
    await applyScenario(scenario, pve.nodeRoot, devvm);
    return { pve, devvm, bootMs };
  } catch (error) {
    await pve.stop();
    throw error;
  }
}
