import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fingerprintOf, generateKeyPair } from './keys.js';

export interface SshdOptions {
  /** Scratch directory owned by the caller: config, host key, authorized_keys and logs go here. */
  dir: string;
  /** Complete authorized_keys lines (options + key). */
  authorizedKeys: string[];
  port?: number;
}

export interface RunningSshd {
  port: number;
  /** `SHA256:…` fingerprint of this server's host key. */
  hostKeyFingerprint: string;
  /** A known_hosts line pinning this server's host key for 127.0.0.1:port. */
  knownHostsLine: string;
  logPath: string;
  process: ChildProcess;
  /**
   * SIGSTOP / SIGCONT the listener and every sshd process serving a connection: calls then
   * hang instead of failing. The commands those connections run are left alone (a hung sshd,
   * not a hung host).
   */
  freeze(): void;
  thaw(): void;
  stop(): Promise<void>;
}

// sshd re-executes itself, so it needs an absolute path (the provisioned link or Debian's).
const PROVISIONED_SSHD = join(dirname(fileURLToPath(import.meta.url)), '../.tools/bin/sshd');
const SSHD = existsSync(PROVISIONED_SSHD) ? realpathSync(PROVISIONED_SSHD) : '/usr/sbin/sshd';
const SFTP_SERVER = '/usr/lib/openssh/sftp-server';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * `wanted` when nothing listens on it on loopback, else a free port: the lab keeps the ports the
 * tools default to (temporal, tctl: 7233) whenever it can.
 */
export async function preferredPort(wanted: number): Promise<number> {
  const free = await new Promise<boolean>((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(wanted, '127.0.0.1', () => server.close(() => resolve(true)));
  });
  return free ? wanted : freePort();
}

/** Pids of the sshd processes below listenerPid (OpenSSH setsid()s each connection). */
function sshdDescendants(listenerPid: number): number[] {
  const children = new Map<number, number[]>();
  const names = new Map<number, string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may contain spaces, so parse around the last ')'.
      const close = stat.lastIndexOf(')');
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      names.set(Number(entry), stat.slice(stat.indexOf('(') + 1, close));
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // exited while we looked
    }
  }
  const found: number[] = [];
  const queue = [...(children.get(listenerPid) ?? [])];
  for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
    if (names.get(pid) === 'sshd') found.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return found;
}

/** The environment variable sshd sets in every session it starts (SetEnv), naming it. */
export const SESSION_MARK_VAR = 'BREAKGLASS_LAB_SSHD';

/**
 * SIGKILLs every process started through one sshd: all of them inherit its SetEnv mark. A
 * non-interactive session's command outlives the client and the connection (OpenSSH sends it
 * no signal), so this is the only way to leave nothing behind.
 */
function killSessions(mark: string): void {
  const needle = `${SESSION_MARK_VAR}=${mark}`;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (!readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0').includes(needle)) continue;
      process.kill(Number(entry), 'SIGKILL');
    } catch {
      // exited while we looked, or not ours to read
    }
  }
}

async function waitForListener(port: number, child: ChildProcess, logPath: string, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) {
      throw new Error(`sshd exited with ${child.exitCode}: ${await readFile(logPath, 'utf8').catch(() => '')}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`sshd did not listen on ${port} within ${deadlineMs} ms`);
}

/**
 * Starts a real OpenSSH sshd on 127.0.0.1 with its own host key and authorized_keys, for the
 * current user only. StrictModes/PAM are off because the files live in a scratch dir.
 */
export async function startSshd(options: SshdOptions): Promise<RunningSshd> {
  const { dir } = options;
  mkdirSync(dir, { recursive: true });
  // Debian's sshd refuses to start as root without its privilege-separation directory.
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true });
  // An existing host key in dir is kept: a restarted server (the lab's devvm coming back after
  // a cycle) must present the key its clients pinned.
  const hostKeyPath = join(dir, 'ssh_host_ed25519_key');
  const hostKey = existsSync(hostKeyPath)
    ? { privateKeyPath: hostKeyPath, publicKey: (await readFile(`${hostKeyPath}.pub`, 'utf8')).trim() }
    : await generateKeyPair(dir, 'ssh_host_ed25519_key');
  const hostKeyFingerprint = await fingerprintOf(`${hostKey.privateKeyPath}.pub`);
  const authorizedKeysPath = join(dir, 'authorized_keys');
  await writeFile(authorizedKeysPath, options.authorizedKeys.join('\n') + '\n', { mode: 0o600 });
  const logPath = join(dir, 'sshd.log');
  const user = userInfo().username;
  const mark = `${process.pid}-${randomBytes(6).toString('hex')}`;

  for (let attempt = 0; ; attempt++) {
    const port = options.port ?? (await freePort());
    const configPath = join(dir, 'sshd_config');
    await writeFile(
      configPath,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey.privateKeyPath}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${authorizedKeysPath}`,
        `AllowUsers ${user}`,
        'StrictModes no',
        'UsePAM no',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        // Root may log in only through keys that carry a forced command or that the test
        // deliberately leaves unrestricted (the devvm stand-in).
        `PermitRootLogin ${process.getuid?.() === 0 ? 'prohibit-password' : 'no'}`,
        'PermitUserEnvironment no',
        'PrintMotd no',
        'LogLevel VERBOSE',
        'MaxStartups 100:30:200',
        // As in Debian's stock sshd_config: a forced command must also capture sftp requests.
        ...(existsSync(SFTP_SERVER) ? [`Subsystem sftp ${SFTP_SERVER}`] : []),
        // HOME points at the scratch dir: bash (the test user's login shell) sources ~/.bashrc
        // for every ssh command, and a developer's rc file (pyenv rehash, say) would otherwise
        // write its own noise into the stand-ins' stderr.
        `SetEnv ${SESSION_MARK_VAR}=${mark} HOME=${dir}`,
        '',
      ].join('\n'),
    );
    // Its own process group, so a signal reaches the listener; the connections it forks are
    // found through /proc (see sshdDescendants).
    const child = spawn(SSHD, ['-D', '-e', '-f', configPath], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid) process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    };
    // Connection processes live in their own sessions: signal them one by one, by pid.
    const signalConnections = (signal: NodeJS.Signals) => {
      for (const pid of child.pid ? sshdDescendants(child.pid) : []) {
        try {
          process.kill(pid, signal);
        } catch {
          // already gone
        }
      }
    };
    const logChunks: Buffer[] = [];
    child.stderr?.on('data', (chunk: Buffer) => {
      logChunks.push(chunk);
      // The caller may already have removed dir (sshd says goodbye after it exits).
      writeFile(logPath, Buffer.concat(logChunks)).catch(() => {});
    });
    try {
      await waitForListener(port, child, logPath, 5_000);
    } catch (error) {
      child.kill('SIGKILL');
      if (attempt < 3 && options.port === undefined) continue; // lost the port race: retry
      throw error;
    }
    return {
      port,
      hostKeyFingerprint,
      knownHostsLine: `[127.0.0.1]:${port} ${hostKey.publicKey.split(' ').slice(0, 2).join(' ')}`,
      logPath,
      process: child,
      freeze: () => {
        signalGroup('SIGSTOP');
        signalConnections('SIGSTOP');
      },
      thaw: () => {
        signalConnections('SIGCONT');
        signalGroup('SIGCONT');
      },
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((r) => child.once('exit', r));
          signalConnections('SIGCONT');
          signalGroup('SIGCONT');
          // Open connections would outlive the listener: end them too.
          signalConnections('SIGTERM');
          signalGroup('SIGTERM');
          await Promise.race([exited, new Promise((r) => setTimeout(r, 2_000))]);
          signalGroup('SIGKILL');
        }
        killSessions(mark);
      },
    };
  }
}
