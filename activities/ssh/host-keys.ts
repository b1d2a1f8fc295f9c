import { createHash, createHmac } from 'node:crypto';

/**
 * Pinned host keys: OpenSSH known_hosts lines (plain or hashed host names, `[host]:port` for
 * non-22 ports) and/or bare `SHA256:…` fingerprints. Never "accept any".
 */
export interface PinnedHostKeys {
  knownHosts?: string;
  fingerprints?: string[];
}

export function fingerprint(rawKey: Buffer): string {
  return `SHA256:${createHash('sha256').update(rawKey).digest('base64').replace(/=+$/, '')}`;
}

function hostPatterns(host: string, port: number): string[] {
  return port === 22 ? [host, `[${host}]:22`] : [`[${host}]:${port}`];
}

function hostFieldMatches(field: string, candidates: string[]): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (!salt || !hash) return false;
    return candidates.some(
      (candidate) => createHmac('sha1', Buffer.from(salt, 'base64')).update(candidate).digest('base64') === hash,
    );
  }
  return field.split(',').some((pattern) => candidates.includes(pattern));
}

/** The fingerprints pinned for host:port. */
export function pinnedFingerprints(pins: PinnedHostKeys, host: string, port: number): string[] {
  const result = new Set(pins.fingerprints ?? []);
  const revoked = new Set<string>();
  const candidates = hostPatterns(host, port);
  for (const rawLine of (pins.knownHosts ?? '').split('\n')) {
    const line = rawLine.trim();
    if (!line || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    // @cert-authority never pins a key directly (host certificates are not supported), so it
    // is ignored rather than half-trusted; @revoked withdraws a key, as in OpenSSH.
    const marker = fields[0]?.startsWith('@') ? fields.shift() : undefined;
    if (marker !== undefined && marker !== '@revoked') continue;
    const [hosts, , keyBase64] = fields;
    if (!hosts || !keyBase64 || !hostFieldMatches(hosts, candidates)) continue;
    (marker === '@revoked' ? revoked : result).add(fingerprint(Buffer.from(keyBase64, 'base64')));
  }
  return [...result].filter((pinned) => !revoked.has(pinned));
}
