// @ts-check
// Turns a VM config into a real QEMU process (and, for a disk on the lab's stalling path, a
// real qemu-storage-daemon serving it over NBD), the way qemu-server builds its command line:
// every device comes from a config key, so a stop → start really applies pending config and a
// reset (same process) really does not.
//
// The disk's I/O path is the one thing the lab maps freely: a disk without `aio=threads` is
// served by qemu-storage-daemon over NBD (the path the lab can freeze with SIGSTOP, as the
// 2026-06-11 stall froze the devvm's disk I/O); with `aio=threads` (the staged fix) QEMU opens
// the image itself. Everything else is QEMU's own behaviour.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { enterScope } from './cgroups.mjs';
import { freeze, isAlive, paths, readLabState, readPid, signal, waitGone } from './pve-node.mjs';

const QEMU = process.env.BREAKGLASS_QEMU ?? 'qemu-system-x86_64';
const STORAGE_DAEMON = process.env.BREAKGLASS_QEMU_STORAGE_DAEMON ?? 'qemu-storage-daemon';

/** `a,b=c,d=e` → { _: 'a', b: 'c', d: 'e' } (Proxmox's property strings, first item unnamed). */
export function parseProperties(/** @type {string} */ value, defaultKey = '_') {
  /** @type {Record<string, string>} */
  const out = {};
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) out[defaultKey] = part;
    else out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

/** Shell-like word splitting of the `args:` key (double and single quotes, no expansion). */
export function splitArgs(/** @type {string} */ text) {
  /** @type {string[]} */
  const words = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let current = '';
  let last = -1;
  for (const match of text.matchAll(re)) {
    const piece = match[1] ?? match[2] ?? match[3] ?? '';
    const index = match.index ?? 0;
    if (last === index) current += piece; // adjacent pieces form one word: a="b c"
    else {
      if (last >= 0) words.push(current);
      current = piece;
    }
    last = index + match[0].length;
  }
  if (last >= 0) words.push(current);
  return words;
}

/** Where the lab keeps a volume of its one storage (`local-lvm:vm-102-disk-0` → a raw file). */
export function volumePath(/** @type {string} */ root, /** @type {string} */ volume) {
  const name = volume.includes(':') ? volume.slice(volume.indexOf(':') + 1) : volume;
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`unsupported volume '${volume}'`);
  return path.join(paths(root).storageDir, `${name}.raw`);
}

/** True when the disk goes through the storage daemon (the path the lab can freeze). */
export function usesStoragePath(/** @type {Record<string, string>} */ config) {
  const disk = config.scsi0;
  return disk !== undefined && parseProperties(disk).aio !== 'threads';
}

/**
 * The QEMU command line for a config (the config must have pending applied already).
 * @param {string} root
 * @param {Record<string, string>} config
 * @param {{ vmid: number, sshPort: number | null, accel: 'kvm' | 'tcg' }} lab
 */
export function qemuArgv(root, config, lab) {
  const p = paths(root, lab.vmid);
  const cores = Number(config.cores ?? 1) * Number(config.sockets ?? 1);
  const argv = [
    '-name', `${config.name ?? `vm${lab.vmid}`},debug-threads=on`,
    '-chardev', `socket,id=qmp,path=${p.qmpSocket},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
    '-pidfile', p.pidFile,
    '-daemonize',
    '-nodefaults',
    '-display', 'none',
    '-machine', `pc,accel=${lab.accel}`,
    '-smp', String(cores),
    '-m', String(Number(config.memory ?? 512)),
    '-serial', `file:${p.serialLog}`,
  ];
  if (lab.accel === 'kvm' && config.cpu === 'host') argv.push('-cpu', 'host');
  if (/^(enabled=)?1\b/.test(config.agent ?? '')) {
    argv.push(
      '-chardev', `socket,path=${p.qgaSocket},server=on,wait=off,id=qga0`,
      '-device', 'virtio-serial,id=qga0',
      '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
    );
  }
  if (config.scsi0) {
    const disk = parseProperties(config.scsi0);
    const single = config.scsihw === 'virtio-scsi-single';
    const controller = single ? 'virtioscsi0' : 'scsihw0';
    if (single && disk.iothread === '1') {
      argv.push('-object', 'iothread,id=iothread-virtioscsi0', '-device', `virtio-scsi-pci,id=${controller},iothread=iothread-virtioscsi0`);
    } else {
      argv.push('-device', `virtio-scsi-pci,id=${controller}`);
    }
    const file = usesStoragePath(config)
      ? `file=nbd:unix:${p.nbdSocket}:exportname=drive-scsi0`
      : `file=${volumePath(root, disk._ ?? '')},aio=threads`;
    argv.push(
      '-drive', `${file},if=none,id=drive-scsi0,format=raw`,
      '-device', `scsi-hd,bus=${controller}.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi0,id=scsi0`,
    );
  }
  if (config.net0) {
    const net = parseProperties(config.net0);
    const mac = net.virtio ?? '';
    const forward = lab.sshPort ? `,hostfwd=tcp:127.0.0.1:${lab.sshPort}-:22` : '';
    argv.push('-netdev', `user,id=net0${forward}`, '-device', `virtio-net-pci,mac=${mac},netdev=net0,id=net0,romfile=`);
  }
  if (config.args) argv.push(...splitArgs(config.args));
  return argv;
}

/** Runs a daemonizing program; resolves when its parent exits, rejects with its stderr. */
function runDaemonizing(/** @type {string} */ program, /** @type {string[]} */ argv) {
  return new Promise((resolve, reject) => {
    // stdio beyond 0-2 is closed in the child: nothing qm holds (its lock) leaks into QEMU.
    const child = spawn(program, argv, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    child.stderr?.on('data', (chunk) => (stderr += chunk.toString('utf8')));
    child.on('error', (error) =>
      reject(
        new Error(
          /** @type {NodeJS.ErrnoException} */ (error).code === 'ENOENT'
            ? `${program} is not installed: run 'sh scripts/provision.sh qemu' (Debian's qemu-system-x86 and qemu-utils)`
            : `${program}: ${error.message}`,
        ),
      ),
    );
    child.on('close', (code) => (code === 0 ? resolve(undefined) : reject(new Error(stderr.trim() || `${program} exited with code ${code}`))));
  });
}

/** Starts the storage daemon serving the VM's disk over NBD, frozen when the stall is on. */
export async function startStorage(/** @type {string} */ root, /** @type {Record<string, string>} */ config, vmid = 102) {
  const p = paths(root, vmid);
  const file = volumePath(root, parseProperties(config.scsi0 ?? '')._ ?? '');
  fs.rmSync(p.nbdSocket, { force: true });
  await runDaemonizing(STORAGE_DAEMON, [
    '--blockdev', `driver=file,node-name=file0,filename=${file}`,
    '--nbd-server', `addr.type=unix,addr.path=${p.nbdSocket}`,
    '--export', 'type=nbd,id=exp0,node-name=file0,name=drive-scsi0,writable=on',
    '--pidfile', p.storagePidFile,
    '--daemonize',
  ]);
}

/** Freezes (SIGSTOP) or thaws the storage daemon: the disk's I/O stops or moves again. */
export async function freezeStorage(/** @type {string} */ root, /** @type {boolean} */ frozen, vmid = 102) {
  const pid = readPid(paths(root, vmid).storagePidFile);
  if (pid !== null) await freeze(pid, frozen);
}

export async function stopStorage(/** @type {string} */ root, vmid = 102) {
  const p = paths(root, vmid);
  const pid = readPid(p.storagePidFile);
  if (pid !== null && isAlive(pid)) {
    signal(pid, 'SIGKILL'); // a frozen daemon cannot handle SIGTERM; SIGKILL always takes
    await waitGone(pid, 5000);
  }
  fs.rmSync(p.storagePidFile, { force: true });
  fs.rmSync(p.nbdSocket, { force: true });
}

/** Starts QEMU for the config; resolves with its pid once it has daemonized. */
export async function startQemu(/** @type {string} */ root, /** @type {Record<string, string>} */ config, vmid = 102) {
  const lab = readLabState(root, vmid);
  const p = paths(root, vmid);
  fs.mkdirSync(p.runDir, { recursive: true });
  for (const file of [p.qmpSocket, p.qgaSocket, p.pidFile]) fs.rmSync(file, { force: true });
  if (usesStoragePath(config)) await startStorage(root, config, vmid);
  try {
    await runDaemonizing(QEMU, qemuArgv(root, config, lab));
  } catch (error) {
    await stopStorage(root, vmid);
    throw error;
  }
  const pid = readPid(p.pidFile);
  if (pid === null) throw new Error('QEMU daemonized without writing its pid file');
  // Proxmox starts QEMU inside `qemu.slice/<vmid>.scope`; the lab moves it there at once.
  enterScope(root, pid, vmid);
  // The stall belongs to the storage path, not to one process: a new daemon stalls too.
  if (lab.faults.includes('io_stall')) await freezeStorage(root, true, vmid);
  return pid;
}

