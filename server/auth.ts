/**
 * Who is asking. Three modes (config `auth.mode`):
 * - `lab`: one random token printed at start (or BREAKGLASS_LAB_TOKEN), loopback only;
 * - `token`: bearer tokens whose sha256 is in the config, each naming an operator;
 * - `proxy`: an identity header set by a forward-auth proxy, believed only from its addresses and
 *   next to the shared secret the proxy adds to every request.
 * The console logs in once with the token and then uses an HttpOnly, SameSite=Strict cookie
 * (EventSource cannot send headers); scripts send `Authorization: Bearer`.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { FastifyRequest } from 'fastify';
import ipaddr from 'ipaddr.js';
import { TOKEN_PATTERN, type AddressRange, type Config } from './config.js';

export const SESSION_COOKIE = 'breakglass_session';
const COOKIE_LIFETIME_MS = 12 * 60 * 60 * 1000;

export class AuthError extends Error {
  constructor(
    readonly statusCode: 401 | 403,
    message: string,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

export interface Authenticator {
  mode: Config['auth']['mode'];
  /** The operator making this request, or an AuthError. */
  identify(request: FastifyRequest): string;
  /** Checks a login token and returns the operator it names. */
  login(token: string): string;
  /** A signed cookie value for an operator. */
  issueCookie(operator: string): string;
  /** Logs out the request's cookie, if it carries one: it stops working here at once, not when it expires. */
  revokeCookie(request: FastifyRequest): void;
  labToken: string | null;
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/**
 * Whether an address lies in one of the ranges. IPv4-mapped IPv6 (`::ffff:10.0.0.5`, how a
 * dual-stack listener reports IPv4 clients) is matched as IPv4; an address of the other family
 * than a range never matches it, and anything but a plain IP address matches nothing.
 */
export function inAddressRanges(address: string, ranges: readonly AddressRange[]): boolean {
  // node:net first: ipaddr.js also takes inet_aton forms (127.1, 010.0.0.1) no socket reports.
  if (isIP(address) === 0) return false;
  const ip = ipaddr.process(address);
  return ranges.some(([network, bits]) => network.kind() === ip.kind() && ip.match(network, bits));
}

function bearer(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (!header) return null;
  const token = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : '';
  if (!TOKEN_PATTERN.test(token)) throw new AuthError(401, 'authorization: expected "Bearer <token>"');
  return token;
}

function cookieValue(request: FastifyRequest): string | null {
  const header = request.headers.cookie;
  if (!header) return null;
  for (const part of header.split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === SESSION_COOKIE) return rest.join('=');
  }
  return null;
}

export function createAuthenticator(config: Config): Authenticator {
  const auth = config.auth;
  const labToken = auth.mode === 'lab' ? (auth.labToken ?? randomBytes(24).toString('base64url')) : null;
  // Cookies are signed with a per-process key: a restart logs everyone out, which is fine for
  // a console people open during an incident (they log in again with their token).
  const cookieKey = randomBytes(32);
  // Compared as digests: equal lengths for timingSafeEqual, whatever the request sends.
  const proxySecretDigest = auth.mode === 'proxy' && auth.proxy.secret !== null ? sha256(auth.proxy.secret) : null;
  const isProxySecret = (given: string | string[] | undefined) => proxySecretDigest !== null && typeof given === 'string' && timingSafeEqual(sha256(given), proxySecretDigest);
  const allowed = (operator: string) => {
    if (auth.operators.length > 0 && !auth.operators.includes(operator)) {
      throw new AuthError(403, `operator "${operator}" is not on the breakglass allowlist`);
    }
    return operator;
  };

  const login = (token: string): string => {
    if (auth.mode === 'lab') {
      if (labToken && timingSafeEqual(sha256(token), sha256(labToken))) return allowed('lab-operator');
      throw new AuthError(401, 'token: not valid');
    }
    if (auth.mode === 'token') {
      const digest = sha256(token);
      const entry = auth.tokens.find((candidate) => timingSafeEqual(Buffer.from(candidate.sha256, 'hex'), digest));
      if (!entry) throw new AuthError(401, 'token: not valid');
      return allowed(entry.operator);
    }
    throw new AuthError(401, 'token: this deployment authenticates through its proxy');
  };

  const sign = (payload: string) => createHmac('sha256', cookieKey).update(payload).digest('base64url');
  const issueCookie = (operator: string) => {
    const payload = Buffer.from(JSON.stringify({ operator, expires: Date.now() + COOKIE_LIFETIME_MS })).toString('base64url');
    return `${payload}.${sign(payload)}`;
  };
  // Logged-out cookies, until they would have expired anyway (this process's memory: one console
  // replica, as the chart runs it).
  const revoked = new Map<string, number>();
  const revocationKey = (value: string) => createHash('sha256').update(value).digest('hex');
  /** The signed contents of one of our cookies, checked for signature and expiry. */
  const readCookie = (value: string): { operator: string; expires: number } => {
    const [payload, signature, ...extra] = value.split('.');
    if (!payload || !signature || extra.length > 0) throw new AuthError(401, 'session cookie: malformed');
    const expected = Buffer.from(sign(payload));
    const given = Buffer.from(signature);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) throw new AuthError(401, 'session cookie: not valid (log in again)');
    const data = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { operator: string; expires: number };
    if (data.expires < Date.now()) throw new AuthError(401, 'session cookie: expired (log in again)');
    return data;
  };
  const fromCookie = (value: string): string => {
    const data = readCookie(value);
    if (revoked.has(revocationKey(value))) throw new AuthError(401, 'session cookie: logged out (log in again)');
    return allowed(data.operator);
  };
  const revokeCookie = (request: FastifyRequest) => {
    const value = cookieValue(request);
    if (!value) return;
    let expires: number;
    try {
      expires = readCookie(value).expires;
    } catch {
      return; // Not a cookie of ours, or already unusable: nothing to revoke.
    }
    const now = Date.now();
    for (const [key, until] of revoked) if (until < now) revoked.delete(key);
    revoked.set(revocationKey(value), expires);
  };

  return {
    mode: auth.mode,
    labToken,
    login,
    issueCookie,
    revokeCookie,
    identify(request) {
      if (auth.mode === 'proxy') {
        const address = request.socket.remoteAddress ?? '';
        if (!inAddressRanges(address, auth.proxy.trustedCidrs)) throw new AuthError(401, `requests must come through the authenticating proxy (${address} is not trusted)`);
        // An address is not proof: other pods can share the proxy's node or range. The secret is.
        if (!isProxySecret(request.headers[auth.proxy.secretHeader])) throw new AuthError(401, `${auth.proxy.secretHeader}: the proxy's shared secret is missing or wrong`);
        const identity = request.headers[auth.proxy.header];
        if (typeof identity !== 'string' || !/^[A-Za-z0-9._@+-]{1,200}$/.test(identity)) throw new AuthError(401, `${auth.proxy.header}: missing or malformed identity header`);
        return allowed(identity);
      }
      if (auth.mode === 'lab') {
        const address = request.socket.remoteAddress ?? '';
        if (!['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(address)) throw new AuthError(401, 'lab mode accepts loopback clients only');
      }
      const token = bearer(request);
      if (token) return login(token);
      const cookie = cookieValue(request);
      if (cookie) return fromCookie(cookie);
      throw new AuthError(401, 'authentication required: log in with your token');
    },
  };
}

/** Whether the console was reached by a loopback name or address (the lab), from the Host header. */
export function isLoopbackHost(hostname: string): boolean {
  // "[::1]:8080", "[::1]", "127.0.0.1:8080", "localhost": the name or address without a port.
  const bracketed = /^\[([^\]]+)\]/.exec(hostname);
  const host = bracketed ? (bracketed[1] as string) : hostname.split(':').length === 2 ? (hostname.split(':')[0] as string) : hostname;
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  return isIP(host) !== 0 && ipaddr.process(host).range() === 'loopback';
}
