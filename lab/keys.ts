import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface KeyPair {
  privateKeyPath: string;
  publicKey: string;
}

/** Generates an ed25519 key pair with the real ssh-keygen (no passphrase). */
export async function generateKeyPair(dir: string, name: string): Promise<KeyPair> {
  const privateKeyPath = join(dir, name);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', privateKeyPath]);
  const publicKey = (await readFile(`${privateKeyPath}.pub`, 'utf8')).trim();
  return { privateKeyPath, publicKey };
}

/** The `SHA256:…` fingerprint of an OpenSSH public key line, as ssh-keygen -l prints it. */
export async function fingerprintOf(publicKeyPath: string): Promise<string> {
  const { stdout } = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', publicKeyPath]);
  const match = /SHA256:[A-Za-z0-9+/]+/.exec(stdout);
  if (!match) throw new Error(`ssh-keygen printed no fingerprint for ${publicKeyPath}`);
  return match[0];
}

/**
 * The lab's payload-codec key (config codec.keys): made once and kept with the lab's data, so
 * the sessions in its Temporal database stay readable across restarts of the lab.
 */
export async function labCodecKey(dir: string): Promise<{ id: string; file: string }> {
  const file = join(dir, 'codec-lab-1.key');
  if (!existsSync(file)) await writeFile(file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  return { id: 'lab-1', file };
}
