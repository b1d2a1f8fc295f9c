// The host install scripts (host/pve/install.sh, host/devvm/install.sh), run against a scratch
// root standing in for `/`: the files they write, with their modes and exact contents; a second
// run changes nothing and keeps an existing install config; every bad option is refused, named,
// with nothing written; and both scripts pass `sh -n` and shellcheck.
import { execFile, type ExecFileException } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintOf, generateKeyPair } from '../lab/keys.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PVE_INSTALL = path.join(REPO, 'host/pve/install.sh');
const DEVVM_INSTALL = path.join(REPO, 'host/devvm/install.sh');
const DISPATCHER_SOURCE = path.join(REPO, 'host/pve/pve-dispatch');
const DISPATCHER_PARTS = path.join(REPO, 'host/pve/dispatch');
const CONFIG_SOURCE = path.join(DISPATCHER_PARTS, 'config.sh');
const CONFIG_EXAMPLE = path.join(REPO, 'host/pve/pve.conf.example');

const DISPATCHER = '/usr/local/lib/breakglass/pve-dispatch';
const CONF = '/etc/breakglass/pve.conf';
const PVE_SUDO_RULE = `breakglass ALL=(root) NOPASSWD: ${DISPATCHER} --validated *`;
const DEVVM_SUDO_RULE = 'breakglass ALL=(ALL:ALL) NOPASSWD: ALL';
const IS_ROOT = process.getuid?.() === 0;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Result> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: 30_000 }, (err: ExecFileException | null, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

let work: string;
let tmpDir: string;
let publicKeyFile: string;
let publicKey: string;
let privateKeyFile: string;
let otherPublicKeyFile: string;
let counter = 0;

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'host-install-'));
  tmpDir = path.join(work, 'tmp');
  await fs.mkdir(tmpDir);
  const keys = path.join(work, 'keys');
  await fs.mkdir(keys);
  const key = await generateKeyPair(keys, 'breakglass_ed25519');
  privateKeyFile = key.privateKeyPath;
  publicKeyFile = `${key.privateKeyPath}.pub`;
  publicKey = key.publicKey;
  otherPublicKeyFile = `${(await generateKeyPair(keys, 'rotated_ed25519')).privateKeyPath}.pub`;
});

afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

async function freshRoot(): Promise<string> {
  const root = path.join(work, `root-${++counter}`);
  await fs.mkdir(root);
  return root;
}

/**
 * Runs an install script, always with --root (so a mistake here can never install onto the
 * machine running the tests) and with TMPDIR pointed at a dir the test checks is left empty.
 */
function install(script: string, root: string, args: string[]): Promise<Result> {
  return run('sh', [script, '--root', root, ...args], { ...process.env, TMPDIR: tmpDir });
}

interface Entry {
  type: 'dir' | 'file' | 'other';
  mode: string;
  uid: number;
  gid: number;
  content?: string;
}

/** Every path under root with its type, mode (octal), owner and (for files) content. */
async function snapshot(root: string): Promise<Record<string, Entry>> {
  const out: Record<string, Entry> = {};
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await fs.readdir(dir)).sort()) {
      const full = path.join(dir, name);
      const st = await fs.lstat(full);
      const rel = path.relative(root, full);
      const entry: Entry = {
        type: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other',
        mode: (st.mode & 0o7777).toString(8),
        uid: st.uid,
        gid: st.gid,
      };
      if (st.isFile()) entry.content = await fs.readFile(full, 'utf8');
      out[rel] = entry;
      if (st.isDirectory()) await walk(full);
    }
  };
  await walk(root);
  return out;
}

async function modeOf(file: string): Promise<string> {
  return ((await fs.stat(file)).mode & 0o7777).toString(8);
}

/** The lines of a file that are neither comments nor blank. */
async function activeLines(file: string): Promise<string[]> {
  return (await fs.readFile(file, 'utf8')).split('\n').filter((line) => line.trim() !== '' && !line.startsWith('#'));
}

async function expectTmpDirEmpty(): Promise<void> {
  expect(await fs.readdir(tmpDir), 'the script left its staging dir behind').toEqual([]);
}

/** sshd as the tests' fixtures find it: the provisioned link, or Debian's. */
function sshdPath(): string {
  const provisioned = path.join(REPO, '.tools/bin/sshd');
  return existsSync(provisioned) ? realpathSync(provisioned) : '/usr/sbin/sshd';
}

function shellcheckPath(): string | undefined {
  const dirs = [path.join(REPO, '.tools/bin'), ...(process.env.PATH ?? '').split(path.delimiter)];
  return dirs.map((dir) => path.join(dir, 'shellcheck')).find((candidate) => existsSync(candidate));
}

// ------------------------------------------------------------------------------------ PVE
describe('host/pve/install.sh', () => {
  const FROM = '10.20.0.0/24,fd00:20::/64';
  const expectedKeyLine = () => `command="${DISPATCHER} ${CONF}",restrict,from="${FROM}" ${publicKey}`;
  let root: string;
  let first: Result;

  beforeAll(async () => {
    root = await freshRoot();
    first = await install(PVE_INSTALL, root, ['--public-key', publicKeyFile, '--from', FROM, '--vmid', '4711']);
  });

  it('when run against a scratch root, then it succeeds and leaves no staging files', async () => {
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toContain('useradd not called');
    await expectTmpDirEmpty();
  });

  it('installs the dispatcher root-owned 0755 and identical to host/pve/pve-dispatch', async () => {
    const installed = path.join(root, DISPATCHER);
    expect(await modeOf(installed)).toBe('755');
    expect(await modeOf(path.dirname(installed))).toBe('755');
    expect(await fs.readFile(installed, 'utf8')).toBe(await fs.readFile(DISPATCHER_SOURCE, 'utf8'));
    // Its sourced parts beside it, root-owned 0644, each identical to host/pve/dispatch/.
    const parts = (await fs.readdir(DISPATCHER_PARTS)).sort();
    expect(parts).toEqual(['config.sh', 'forensics.sh', 'json.sh', 'verbs.sh', 'vm.sh']);
    expect((await fs.readdir(path.join(path.dirname(installed), 'dispatch'))).sort()).toEqual(parts);
    for (const part of parts) {
      const file = path.join(path.dirname(installed), 'dispatch', part);
      expect([part, await modeOf(file)]).toEqual([part, '644']);
      expect(await fs.readFile(file, 'utf8')).toBe(await fs.readFile(path.join(DISPATCHER_PARTS, part), 'utf8'));
    }
  });

  it('writes the install config 0644 from the example, with the vmid and escalate=sudo', async () => {
    const conf = path.join(root, CONF);
    expect(await modeOf(conf)).toBe('644');
    const lines = await activeLines(conf);
    expect(lines.filter((l) => l.startsWith('vmid='))).toEqual(['vmid=4711']);
    expect(lines.filter((l) => l.startsWith('escalate='))).toEqual(['escalate=sudo']);
    expect(lines).toEqual(['vmid=4711', 'escalate=sudo']);
    const text = await fs.readFile(conf, 'utf8');
    expect(text).toContain('#qmp_socket=/var/run/qemu-server/4711.qmp');
    const example = (await fs.readFile(CONFIG_EXAMPLE, 'utf8'))
      .replace(/^vmid=.*$/m, 'vmid=4711')
      .replace('#qmp_socket=/var/run/qemu-server/102.qmp', '#qmp_socket=/var/run/qemu-server/4711.qmp');
    expect(text).toBe(example);
  });

  it('writes the one forced-command authorized_keys line, 0644, that ssh-keygen parses', async () => {
    const file = path.join(root, '/etc/breakglass/authorized_keys');
    expect(await modeOf(file)).toBe('644');
    expect(await modeOf(path.dirname(file))).toBe('755');
    expect(await activeLines(file)).toEqual([expectedKeyLine()]);
    const parsed = await run('ssh-keygen', ['-l', '-f', file]);
    expect(parsed.code).toBe(0);
    expect(parsed.stdout).toContain(await fingerprintOf(publicKeyFile));
  });

  it('writes the sudoers drop-in 0440 allowing exactly the dispatcher with --validated', async () => {
    const file = path.join(root, '/etc/sudoers.d/breakglass');
    expect(await modeOf(file)).toBe('440');
    expect(await activeLines(file)).toEqual(['Defaults:breakglass !requiretty', PVE_SUDO_RULE]);
    expect(await activeLines(path.join(REPO, 'host/pve/sudoers.example'))).toEqual(await activeLines(file));
  });

  it('creates the state dir 0700, the log dir 0750 and a home the account cannot write', async () => {
    expect(await modeOf(path.join(root, '/var/lib/breakglass'))).toBe('700');
    expect(await modeOf(path.join(root, '/var/log/breakglass'))).toBe('750');
    const home = path.join(root, '/var/lib/breakglass-home');
    expect(await modeOf(home)).toBe('755');
    expect(await fs.readdir(home)).toEqual([]);
    expect(await modeOf(path.join(root, '/etc/logrotate.d/breakglass'))).toBe('644');
  });

  it('writes the account as passwd/group/shadow lines: system uid, shell /bin/sh, no password', async () => {
    const passwd = await activeLines(path.join(root, '/etc/passwd'));
    expect(passwd).toHaveLength(1);
    const match = /^breakglass:x:(\d+):(\d+):[^:]*:\/var\/lib\/breakglass-home:\/bin\/sh$/.exec(passwd[0] ?? '');
    expect(match, passwd[0]).not.toBeNull();
    const [uid, gid] = [Number(match?.[1]), Number(match?.[2])];
    expect(uid).toBeGreaterThanOrEqual(100);
    expect(uid).toBeLessThan(1000);
    expect(await activeLines(path.join(root, '/etc/group'))).toEqual([`breakglass:x:${gid}:`]);
    const shadow = await activeLines(path.join(root, '/etc/shadow'));
    expect(shadow).toHaveLength(1);
    expect(shadow[0]).toMatch(/^breakglass:\*:\d+:/);
    expect(await modeOf(path.join(root, '/etc/shadow'))).toBe('640');
  });

  it('points sshd at the root-owned key file for breakglass only, with no TTY and no forwarding', async () => {
    const dropin = path.join(root, '/etc/ssh/sshd_config.d/breakglass.conf');
    expect(await modeOf(dropin)).toBe('644');
    const text = await fs.readFile(dropin, 'utf8');
    expect(text).not.toMatch(/ForceCommand/i);
    // Ask the real sshd what the drop-in means, under a main config that allows everything.
    const dir = await fs.mkdtemp(path.join(work, 'sshd-'));
    const hostKey = await generateKeyPair(dir, 'host_key');
    const main = path.join(dir, 'sshd_config');
    await fs.writeFile(main, [
      `Include ${root}/etc/ssh/sshd_config.d/*.conf`,
      `HostKey ${hostKey.privateKeyPath}`,
      'PasswordAuthentication yes',
      'X11Forwarding yes',
      'AllowTcpForwarding yes',
      'PermitTTY yes',
      '',
    ].join('\n'));
    const effective = async (user: string) => {
      const r = await run(sshdPath(), ['-T', '-f', main, '-C', `user=${user},host=client.example,addr=10.20.0.7`]);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.split('\n');
    };
    const bg = await effective('breakglass');
    for (const line of [
      'authorizedkeysfile /etc/breakglass/authorized_keys',
      'permittty no',
      'x11forwarding no',
      'allowtcpforwarding no',
      'allowagentforwarding no',
      'disableforwarding yes',
      'passwordauthentication no',
      'authenticationmethods publickey',
      'permituserrc no',
    ]) expect(bg).toContain(line);
    const other = await effective('alice');
    expect(other).toContain('permittty yes');
    expect(other).toContain('x11forwarding yes');
    expect(other).not.toContain('authorizedkeysfile /etc/breakglass/authorized_keys');
  });

  it('owns every file it writes as root when run as root', async () => {
    if (!IS_ROOT) {
      expect(first.stdout).toContain('not running as root');
      return;
    }
    const entries = await snapshot(root);
    for (const [rel, entry] of Object.entries(entries)) expect([rel, entry.uid, entry.gid]).toEqual([rel, 0, 0]);
  });

  it('installs a config the installed dispatcher loads (every documented key uncommented too)', async () => {
    const dispatcher = path.join(root, DISPATCHER);
    const dir = await fs.mkdtemp(path.join(work, 'conf-'));
    const logFile = path.join(dir, 'dispatch.log');
    // The installed config, with only the log redirected away from /var/log.
    const installed = (await fs.readFile(path.join(root, CONF), 'utf8')).replace(/^#log_file=.*$/m, `log_file=${logFile}`);
    const variants: Record<string, string> = {
      installed,
      everyKey: installed.replace(/^#([a-z_]+=)/gm, '$1'),
      unknownKey: `${installed}no_such_key=1\n`,
    };
    const codes: Record<string, number | null> = {};
    for (const [name, text] of Object.entries(variants)) {
      const file = path.join(dir, `${name}.conf`);
      await fs.writeFile(file, text, { mode: 0o644 });
      // A rejected verb: the dispatcher loads the config, logs the rejection and stops (64);
      // a config it cannot load stops it with 78 instead.
      const r = await run(dispatcher, [file], { PATH: process.env.PATH, SSH_ORIGINAL_COMMAND: 'status; id' });
      codes[name] = r.code;
      if (name !== 'unknownKey') expect(r.stdout, name).toContain('"result":"rejected"');
    }
    expect(codes).toEqual({ installed: 64, everyKey: 64, unknownKey: 78 });
    expect(await fs.readFile(logFile, 'utf8')).toContain('event=rejected');
  });

  it('refuses to run when one of its parts is missing or writable by others, before it reads anything', async () => {
    const dispatcher = path.join(root, DISPATCHER);
    const part = path.join(path.dirname(dispatcher), 'dispatch', 'verbs.sh');
    const conf = path.join(root, CONF);
    try {
      await fs.chmod(part, 0o664);
      const writable = await run(dispatcher, [conf], { PATH: process.env.PATH, SSH_ORIGINAL_COMMAND: 'status' });
      expect(writable.code).toBe(78);
      expect(writable.stderr).toContain(`${part} must not be group- or world-writable`);
      await fs.rename(part, `${part}.away`);
      const missing = await run(dispatcher, [conf], { PATH: process.env.PATH, SSH_ORIGINAL_COMMAND: 'status' });
      expect(missing.code).toBe(78);
      expect(missing.stderr).toContain(`${part} is missing`);
    } finally {
      await fs.rename(`${part}.away`, part).catch(() => undefined);
      await fs.chmod(part, 0o644);
    }
  });

  it('when run again, then nothing changes', async () => {
    const before = await snapshot(root);
    const again = await install(PVE_INSTALL, root, ['--public-key', publicKeyFile, '--from', FROM, '--vmid', '4711']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toBe('');
    expect(again.stdout).toContain(`kept existing ${CONF}`);
    expect(again.stdout).not.toMatch(/installed \//);
    expect(await snapshot(root)).toEqual(before);
    await expectTmpDirEmpty();
  });

  it('when a config exists, then it is kept as it is even with another --vmid, and the key is replaced', async () => {
    const r2 = await freshRoot();
    const args = ['--from', '192.168.7.0/24'];
    expect((await install(PVE_INSTALL, r2, ['--public-key', publicKeyFile, ...args])).code).toBe(0);
    const conf = path.join(r2, CONF);
    const edited = (await fs.readFile(conf, 'utf8')) + 'stop_timeout=90\n';
    await fs.writeFile(conf, edited);
    const before = await snapshot(r2);
    const r = await install(PVE_INSTALL, r2, ['--public-key', otherPublicKeyFile, ...args, '--vmid', '120']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`kept existing ${CONF}`);
    expect(r.stderr).toContain('vmid=102 but --vmid is 120');
    expect(await fs.readFile(conf, 'utf8')).toBe(edited);
    const after = await snapshot(r2);
    const rotated = (await fs.readFile(otherPublicKeyFile, 'utf8')).trim();
    expect(await activeLines(path.join(r2, '/etc/breakglass/authorized_keys'))).toEqual([
      `command="${DISPATCHER} ${CONF}",restrict,from="192.168.7.0/24" ${rotated}`,
    ]);
    // Only the key file changed.
    const changed = Object.keys(after).filter((rel) => JSON.stringify(after[rel]) !== JSON.stringify(before[rel]));
    expect(changed).toEqual(['etc/breakglass/authorized_keys']);
  });

  it('when the scratch root has accounts, then they are kept and a free id is used', async () => {
    const r3 = await freshRoot();
    await fs.mkdir(path.join(r3, 'etc'));
    const passwd = 'root:x:0:0:root:/root:/bin/bash\nsvc:x:999:999::/nonexistent:/usr/sbin/nologin\n';
    const group = 'root:x:0:\nsvc:x:999:\n';
    await fs.writeFile(path.join(r3, 'etc/passwd'), passwd, { mode: 0o644 });
    await fs.writeFile(path.join(r3, 'etc/group'), group, { mode: 0o644 });
    const r = await install(PVE_INSTALL, r3, ['--public-key', publicKeyFile, '--from', '10.0.0.0/8']);
    expect(r.code, r.stderr).toBe(0);
    const p = await fs.readFile(path.join(r3, 'etc/passwd'), 'utf8');
    expect(p.startsWith(passwd)).toBe(true);
    expect(p.slice(passwd.length)).toMatch(/^breakglass:x:998:998:[^:]*:\/var\/lib\/breakglass-home:\/bin\/sh\n$/);
    expect(await fs.readFile(path.join(r3, 'etc/group'), 'utf8')).toBe(`${group}breakglass:x:998:\n`);
  });

  it('the example files show the same line and rule the installer writes', async () => {
    const example = await activeLines(path.join(REPO, 'host/pve/authorized_keys.example'));
    expect(example).toHaveLength(1);
    expect(example[0]).toMatch(new RegExp(`^command="${DISPATCHER} ${CONF}",restrict,from="[0-9a-f.:/,]+" ssh-ed25519 \\S+ \\S+$`));
  });
});

describe('host/pve/pve.conf.example', () => {
  it('documents every key the dispatcher accepts, each with its default, and no other key', async () => {
    const source = await fs.readFile(CONFIG_SOURCE, 'utf8');
    const keys = [...source.matchAll(/^CONFIG_KEYS="?'?(?:\$CONFIG_KEYS )?([a-z_ ]+)['"]?$/gm)].flatMap((m) => (m[1] ?? '').trim().split(/\s+/));
    expect(keys).toContain('vmid');
    expect(keys).toContain('dmesg_lines');
    const body = /^config_defaults\(\) \{\n([\s\S]*?)\n\}/m.exec(source)?.[1] ?? '';
    const defaults = Object.fromEntries([...body.matchAll(/([a-z_]+)=('[^']*'|\S+)/g)].map((m) => [m[1], (m[2] ?? '').replace(/^'(.*)'$/, '$1')]));
    expect(Object.keys(defaults).sort()).toEqual([...keys].sort());

    const example = await fs.readFile(CONFIG_EXAMPLE, 'utf8');
    const settings = [...example.matchAll(/^#?([a-z_]+)=(.*)$/gm)].map((m) => ({ key: m[1] ?? '', value: m[2] ?? '' }));
    expect(settings.map((s) => s.key).sort()).toEqual([...keys].sort());
    for (const key of keys) {
      const value = settings.find((s) => s.key === key)?.value;
      if (key === 'escalate') {
        expect(value).toBe('sudo');
        expect(example).toContain(`Default: ${defaults[key]}`);
      } else if (key === 'qmp_socket') {
        expect(defaults[key]).toBe('');
        expect(example).toContain('Default: /var/run/qemu-server/<vmid>.qmp');
      } else {
        expect([key, value]).toEqual([key, defaults[key]]);
        expect(example).toContain(`Default: ${defaults[key]}`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------- devvm
describe('host/devvm/install.sh', () => {
  const FROM = '10.20.0.0/24';
  let root: string;
  let first: Result;

  beforeAll(async () => {
    root = await freshRoot();
    first = await install(DEVVM_INSTALL, root, ['--public-key', publicKeyFile, '--from', FROM]);
  });

  const account = async (r: string) => {
    const passwd = await activeLines(path.join(r, '/etc/passwd'));
    expect(passwd).toHaveLength(1);
    const match = /^breakglass:x:(\d+):(\d+):[^:]*:(\/[^:]+):(\/bin\/(?:ba)?sh)$/.exec(passwd[0] ?? '');
    expect(match, passwd[0]).not.toBeNull();
    return { uid: Number(match?.[1]), gid: Number(match?.[2]), home: match?.[3] ?? '', shell: match?.[4] ?? '' };
  };

  it('when run against a scratch root, then it succeeds and leaves no staging files', async () => {
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    await expectTmpDirEmpty();
  });

  it('writes a normal login account with a home, a shell and no password', async () => {
    const a = await account(root);
    expect(a.uid).toBeGreaterThanOrEqual(1000);
    expect(a.home).toBe('/home/breakglass');
    expect(a.shell).toBe('/bin/sh'); // the scratch root has no /bin/bash
    expect(await activeLines(path.join(root, '/etc/group'))).toEqual([`breakglass:x:${a.gid}:`]);
    expect((await activeLines(path.join(root, '/etc/shadow')))[0]).toMatch(/^breakglass:\*:/);
  });

  it('writes ~/.ssh/authorized_keys 0600 with from= and no forwarding, owned by the account', async () => {
    const a = await account(root);
    const home = path.join(root, a.home);
    const file = path.join(home, '.ssh/authorized_keys');
    expect(await modeOf(home)).toBe('750');
    expect(await modeOf(path.join(home, '.ssh'))).toBe('700');
    expect(await modeOf(file)).toBe('600');
    expect(await activeLines(file)).toEqual([
      `from="${FROM}",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty ${publicKey}`,
    ]);
    expect((await run('ssh-keygen', ['-l', '-f', file])).code).toBe(0);
    if (IS_ROOT) {
      for (const p of [home, path.join(home, '.ssh'), file]) {
        const st = await fs.stat(p);
        expect([p, st.uid, st.gid]).toEqual([p, a.uid, a.gid]);
      }
    }
  });

  it('writes the sudoers drop-in 0440 granting NOPASSWD: ALL, as the example shows', async () => {
    const file = path.join(root, '/etc/sudoers.d/breakglass');
    expect(await modeOf(file)).toBe('440');
    expect(await activeLines(file)).toEqual(['Defaults:breakglass !requiretty', DEVVM_SUDO_RULE]);
    expect(await activeLines(path.join(REPO, 'host/devvm/sudoers.example'))).toEqual(await activeLines(file));
    if (IS_ROOT) expect((await fs.stat(file)).uid).toBe(0);
  });

  it('when run again, then nothing changes', async () => {
    const before = await snapshot(root);
    const again = await install(DEVVM_INSTALL, root, ['--public-key', publicKeyFile, '--from', FROM]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).not.toMatch(/installed \//);
    expect(await snapshot(root)).toEqual(before);
    await expectTmpDirEmpty();
  });

  it('when the root has bash and the account exists with its own home, then both are used', async () => {
    const r2 = await freshRoot();
    await fs.mkdir(path.join(r2, 'bin'));
    await fs.writeFile(path.join(r2, 'bin/bash'), '#!/bin/sh\n', { mode: 0o755 });
    await fs.mkdir(path.join(r2, 'etc'));
    await fs.writeFile(path.join(r2, 'etc/passwd'), 'breakglass:x:1234:1234:old:/srv/bg:/usr/sbin/nologin\n', { mode: 0o644 });
    await fs.writeFile(path.join(r2, 'etc/group'), 'breakglass:x:1234:\n', { mode: 0o644 });
    const r = await install(DEVVM_INSTALL, r2, ['--public-key', publicKeyFile, '--from', FROM]);
    expect(r.code, r.stderr).toBe(0);
    expect(await activeLines(path.join(r2, 'etc/passwd'))).toEqual(['breakglass:x:1234:1234:old:/srv/bg:/bin/bash']);
    expect(await activeLines(path.join(r2, '/srv/bg/.ssh/authorized_keys'))).toHaveLength(1);
    expect(existsSync(path.join(r2, 'home'))).toBe(false);
  });

  it('when the root has the systemd-journal group, then the account joins it once (journal reads without sudo)', async () => {
    const r3 = await freshRoot();
    await fs.mkdir(path.join(r3, 'etc'));
    await fs.writeFile(path.join(r3, 'etc/group'), 'root:x:0:\nsystemd-journal:x:101:alice\n', { mode: 0o644 });
    for (let i = 0; i < 2; i++) {
      const r = await install(DEVVM_INSTALL, r3, ['--public-key', publicKeyFile, '--from', FROM]);
      expect(r.code, r.stderr).toBe(0);
    }
    const groups = await activeLines(path.join(r3, 'etc/group'));
    expect(groups.filter((line) => line.startsWith('systemd-journal:'))).toEqual(['systemd-journal:x:101:alice,breakglass']);
  });
});

// ------------------------------------------------------------------------- refused input
interface BadCase {
  name: string;
  option: string;
  args: () => Promise<string[]>;
}

async function writeKeyFile(name: string, text: string): Promise<string> {
  const file = path.join(work, 'keys', name);
  await fs.writeFile(file, text);
  return file;
}

const goodKey = () => ['--public-key', publicKeyFile];
const commonBadCases = (): BadCase[] => [
  { name: 'no --public-key', option: '--public-key', args: async () => ['--from', '10.0.0.0/8'] },
  { name: 'a key file that does not exist', option: '--public-key', args: async () => ['--public-key', path.join(work, 'nope.pub'), '--from', '10.0.0.0/8'] },
  { name: 'the private key instead of the .pub', option: '--public-key', args: async () => ['--public-key', privateKeyFile, '--from', '10.0.0.0/8'] },
  { name: 'two keys in the file', option: '--public-key', args: async () => ['--public-key', await writeKeyFile('two.pub', `${publicKey}\n${publicKey}\n`), '--from', '10.0.0.0/8'] },
  { name: 'a key line that carries options', option: '--public-key', args: async () => ['--public-key', await writeKeyFile('opts.pub', `command="/bin/sh" ${publicKey}\n`), '--from', '10.0.0.0/8'] },
  { name: 'text that is not a key', option: '--public-key', args: async () => ['--public-key', await writeKeyFile('text.pub', 'hello world\n'), '--from', '10.0.0.0/8'] },
  { name: 'a key with damaged base64', option: '--public-key', args: async () => ['--public-key', await writeKeyFile('bad64.pub', 'ssh-ed25519 AAAAC3Nzbroken me@host\n'), '--from', '10.0.0.0/8'] },
  { name: 'an empty key file', option: '--public-key', args: async () => ['--public-key', await writeKeyFile('empty.pub', ''), '--from', '10.0.0.0/8'] },
  { name: 'no --from', option: '--from', args: async () => goodKey() },
  { name: 'an empty --from', option: '--from', args: async () => [...goodKey(), '--from', ''] },
  { name: '--from with a shell metacharacter', option: '--from', args: async () => [...goodKey(), '--from', '10.0.0.0/24;reboot'] },
  { name: '--from with a quote', option: '--from', args: async () => [...goodKey(), '--from', '10.0.0.0/24"'] },
  { name: '--from with a space', option: '--from', args: async () => [...goodKey(), '--from', '10.0.0.0/24 10.1.0.0/16'] },
  { name: '--from with a wildcard', option: '--from', args: async () => [...goodKey(), '--from', '10.0.*'] },
  { name: '--from with a host name', option: '--from', args: async () => [...goodKey(), '--from', 'client.example'] },
  { name: '--from with host bits set', option: '--from', args: async () => [...goodKey(), '--from', '10.0.0.5/24'] },
  { name: '--from admitting everyone', option: '--from', args: async () => [...goodKey(), '--from', '0.0.0.0/0'] },
  { name: '--from with a bad IPv4 address', option: '--from', args: async () => [...goodKey(), '--from', '10.0.0.256'] },
  { name: '--from with a bad IPv6 address', option: '--from', args: async () => [...goodKey(), '--from', 'fd00::1::2'] },
  { name: '--from with IPv6 host bits set', option: '--from', args: async () => [...goodKey(), '--from', 'fd00::1/64'] },
  { name: 'an unknown option', option: '--vm', args: async () => [...goodKey(), '--from', '10.0.0.0/8', '--vm', '102'] },
  { name: 'an option without its value', option: '--from', args: async () => [...goodKey(), '--from'] },
];

describe.each([
  {
    script: PVE_INSTALL,
    label: 'host/pve/install.sh',
    extra: [
      { name: '--vmid that is not a number', option: '--vmid', args: async () => [...goodKey(), '--from', '10.0.0.0/8', '--vmid', 'abc'] },
      { name: '--vmid with trailing junk', option: '--vmid', args: async () => [...goodKey(), '--from', '10.0.0.0/8', '--vmid', '102;x'] },
      { name: '--vmid below 100', option: '--vmid', args: async () => [...goodKey(), '--from', '10.0.0.0/8', '--vmid', '99'] },
      { name: '--vmid with a leading zero', option: '--vmid', args: async () => [...goodKey(), '--from', '10.0.0.0/8', '--vmid', '0102'] },
    ] as BadCase[],
  },
  { script: DEVVM_INSTALL, label: 'host/devvm/install.sh', extra: [] as BadCase[] },
])('$label refuses bad input', ({ script, extra }) => {
  it.each([...commonBadCases(), ...extra].map((c) => [c.name, c] as const))(
    'when given %s, then it exits 64 naming the option and writes nothing',
    async (_name, bad) => {
      const root = await freshRoot();
      const r = await install(script, root, await bad.args());
      expect(r.code, r.stdout + r.stderr).toBe(64);
      expect(r.stderr).toContain(`${bad.option}:`);
      expect(r.stderr).toContain('nothing was written');
      expect(await fs.readdir(root)).toEqual([]);
      await expectTmpDirEmpty();
      // Key material (a private key passed by mistake above all) is never echoed.
      const privateBody = (await fs.readFile(privateKeyFile, 'utf8')).split('\n')[1] ?? '';
      expect(privateBody.length).toBeGreaterThan(20);
      for (const secret of ['PRIVATE KEY', privateBody, publicKey.split(' ')[1] ?? '']) expect(r.stderr).not.toContain(secret);
    },
  );

  it('when --root names a missing directory, then it exits 64 naming --root and creates nothing', async () => {
    const missing = path.join(work, `missing-${++counter}`);
    const r = await install(script, missing, [...goodKey(), '--from', '10.0.0.0/8']);
    expect(r.code).toBe(64);
    expect(r.stderr).toContain('--root:');
    expect(existsSync(missing)).toBe(false);
  });
});

// ------------------------------------------------------------------------- static checks
describe.each([PVE_INSTALL, DEVVM_INSTALL])('%s static checks', (script) => {
  it('parses with sh -n', async () => {
    const r = await run('sh', ['-n', script]);
    expect(r.code, r.stderr).toBe(0);
  });

  it('passes shellcheck -s sh -S warning', async () => {
    const shellcheck = shellcheckPath();
    expect(shellcheck, 'shellcheck is not installed (Debian package "shellcheck")').toBeDefined();
    const r = await run(shellcheck ?? 'shellcheck', ['-s', 'sh', '-S', 'warning', script]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('prints its usage with --help', async () => {
    const r = await run('sh', [script, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--public-key FILE');
    expect(r.stdout).toContain('--root DIR');
  });
});
