/**
 * The lab's own budgets (issue "the lab on real QEMU"): how long the real devvm takes from a
 * fresh QEMU to sshd's banner, against the same kernel booting alone (to its expected panic
 * without a root disk) under the same accelerator; and `npm start` to "lab is up" on a warm
 * cache, against that guest boot.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { devvmOf, loadGuestImage } from '../lab/devvm.js';
import { initVm, killVm, runQm } from '../lab/pve/lab-vm.mjs';
import { paths } from '../lab/pve/pve-node.mjs';
import { freePort } from '../lab/sshd.js';
import { REPO_ROOT } from './product.js';

/** A fresh VM 102 with the guest, started: ms from `qm start` to the guest sshd's banner. */
export async function guestBootMs(): Promise<number> {
  const image = loadGuestImage();
  const root = await mkdtemp(join(tmpdir(), 'bg-bench-guest-'));
  try {
    const sshPort = await freePort();
    await initVm(root, { guest: image, sshPort, accel: image.accel, running: false });
    const started = performance.now();
    await runQm(root, ['start', '102']);
    await devvmOf(image, sshPort, paths(root).serialLog).waitForSsh(120_000);
    return performance.now() - started;
  } finally {
    await killVm(root);
    await rm(root, { recursive: true, force: true });
  }
}

/** The same kernel, same accelerator, no disk: ms from spawn to its "Kernel panic" line. */
export function bareKernelBootMs(): Promise<number> {
  const image = loadGuestImage();
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn('qemu-system-x86_64', ['-accel', image.accel, '-m', '512', '-display', 'none', '-nodefaults', '-serial', 'stdio', '-no-reboot', '-kernel', join(image.dir, 'vmlinux'), '-append', 'console=ttyS0 panic=-1 mitigations=off'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString('latin1');
      if (out.includes('Kernel panic')) {
        const ms = performance.now() - started;
        clearTimeout(timer);
        child.kill('SIGKILL');
        resolve(ms);
      }
    });
    child.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`the bare kernel did not reach its panic: ${out.slice(-300)}`));
    });
  });
}

/** `npm start`'s lab (tools provisioned, UI built) to its "lab is up" banner; then Ctrl-C. */
export async function labStartMs(): Promise<number> {
  const dataDir = await mkdtemp(join(tmpdir(), 'bg-bench-labstart-'));
  try {
    const port = await freePort();
    const started = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'lab/main.ts')], {
      cwd: REPO_ROOT,
      env: { ...process.env, BREAKGLASS_DATA_DIR: dataDir, PORT: String(port), BREAKGLASS_LAB_SCENARIO: 'healthy' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const ms = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`npm start's lab was not up within 180 s: ${out.slice(-500)}`)), 180_000);
      const watch = (chunk: Buffer) => {
        out += chunk.toString('utf8');
        if (out.includes('Breakglass lab is up')) {
          clearTimeout(timer);
          resolve(performance.now() - started);
        }
      };
      child.stdout.on('data', watch);
      child.stderr.on('data', watch);
      child.on('close', (code) => reject(new Error(`the lab exited (${code}) before it was up: ${out.slice(-500)}`)));
    });
    child.kill('SIGINT');
    await new Promise((r) => child.once('close', r));
    return ms;
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
