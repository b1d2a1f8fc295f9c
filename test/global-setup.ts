import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Makes sure the real tools the suites drive (sshd, socat, temporal, tctl, …) are installed
 * before any suite starts. Idempotent and fast when they already are.
 */
export default function setup(): void {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  execFileSync('sh', [join(root, 'scripts/provision.sh'), 'all'], { stdio: 'inherit' });
}
