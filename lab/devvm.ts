import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SshTarget } from '../activities/ssh/connection.js';

/**
 * The lab's devvm is a real Debian guest (lab/guest/build-image.sh) in the PVE node's real QEMU:
 * its sshd is reached through QEMU's user networking, forwarded to a loopback port; its host key
 * was generated once when the image was built and is pinned like any real host's.
 */

export const GUEST_IMAGE_LINK = resolve(dirname(fileURLToPath(import.meta.url)), '../.tools/guest');

export interface GuestImage {
  /** The image directory (vmlinux, initrd.img, rootfs.raw, keys). */
  dir: string;
  /** The guest sshd's public host key (`ssh-ed25519 AAAA…`). */
  hostPublicKey: string;
  /** The private key the guest's breakglass account accepts. */
  clientKeyPath: string;
  /** The account host/devvm/install.sh installed in the guest. */
  user: string;
  /** What provisioning found works here: KVM, or TCG where /dev/kvm is missing or hangs. */
  accel: 'kvm' | 'tcg';
}

/** The provisioned guest image; a clear error naming the command when it is not there. */
export function loadGuestImage(link = GUEST_IMAGE_LINK): GuestImage {
  if (!existsSync(join(link, 'image.env'))) {
    throw new Error(`the lab devvm's guest image is missing (${link}): run 'sh scripts/provision.sh guest' (installs QEMU and builds the image from Debian packages)`);
  }
  const dir = realpathSync(link);
  const env = Object.fromEntries(
    readFileSync(join(dir, 'image.env'), 'utf8')
      .split('\n')
      .filter((line) => line.includes('='))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  return {
    dir,
    hostPublicKey: readFileSync(join(dir, 'ssh_host_ed25519_key.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' '),
    clientKeyPath: join(dir, 'breakglass_ed25519'),
    user: env.GUEST_USER ?? 'breakglass',
    accel: existsSync(join(link, '../accel')) && readFileSync(join(link, '../accel'), 'utf8').trim() === 'kvm' ? 'kvm' : 'tcg',
  };
}

export interface Devvm {
  port: number;
  user: string;
  /** A known_hosts line pinning the guest's host key at 127.0.0.1:port. */
  knownHostsLine: string;
  clientKeyPath: string;
  /** The guest's serial console (kernel and systemd messages), for when it does not boot. */
  serialLog: string;
  target(overrides?: Partial<SshTarget>): SshTarget;
  /** Resolves once the guest's sshd sends its banner; the error names the serial console log. */
  waitForSsh(timeoutMs?: number): Promise<number>;
}

export function devvmOf(image: GuestImage, port: number, serialLog: string): Devvm {
  const knownHostsLine = `[127.0.0.1]:${port} ${image.hostPublicKey}`;
  return {
    port,
    user: image.user,
    knownHostsLine,
    clientKeyPath: image.clientKeyPath,
    serialLog,
    target: (overrides = {}) => ({
      host: '127.0.0.1',
      port,
      username: image.user,
      privateKey: readFileSync(image.clientKeyPath),
      pins: { knownHosts: knownHostsLine },
      readyTimeoutMs: 5_000,
      keepaliveIntervalMs: 1_000,
      ...overrides,
    }),
    waitForSsh: async (timeoutMs = 60_000) => {
      const started = Date.now();
      while (!(await sshBanner(port, 1_500))) {
        if (Date.now() - started > timeoutMs) {
          const tail = existsSync(serialLog) ? readFileSync(serialLog, 'utf8').trim().split('\n').slice(-5).join('\n') : '(no serial log)';
          throw new Error(`the devvm's sshd did not answer on 127.0.0.1:${port} within ${timeoutMs} ms; serial console log: ${serialLog}\n${tail}`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      return Date.now() - started;
    },
  };
}

/**
 * True when an SSH server's banner arrives on the port within timeoutMs. QEMU's port forward
 * accepts a connection even while the guest is down, so only the banner proves sshd answers.
 */
export function sshBanner(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolveBanner) => {
    const socket = connect(port, '127.0.0.1');
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolveBanner(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('data', (chunk) => done(chunk.toString('latin1').startsWith('SSH-')));
    socket.on('error', () => done(false));
    socket.on('close', () => done(false));
  });
}
