/**
 * Configuration, parsed once at start-up into a typed object. Sources, later wins:
 * defaults < JSON config file (BREAKGLASS_CONFIG or --config) < environment overrides.
 * Secrets are read from files (mounted Kubernetes Secrets), never from the config file itself.
 * A bad value stops start-up with a message naming the key. The README's configuration
 * reference lists every key below with its default.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { CommandPolicy, MutationPolicy, SessionPolicy } from '../workflows/session-types.js';
import { MIN_KEY_BYTES } from './attestation.js';
import { parseCodecConfig, type CodecConfig } from './codec-config.js';

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(`config: ${key}: ${message}`);
    this.name = 'ConfigError';
  }
}

export interface SshEndpointConfig {
  host: string;
  port: number;
  user: string;
  /** Private key file (a mounted Secret). */
  keyFile: string;
  /** OpenSSH known_hosts file pinning the host key. */
  knownHostsFile: string | null;
  /** Alternatively/additionally: pinned `SHA256:…` fingerprints. */
  fingerprints: string[];
}

/** An address range as ipaddr.js parses it: network address and prefix length. */
export type AddressRange = [ipaddr.IPv4 | ipaddr.IPv6, number];

export interface TokenEntry {
  operator: string;
  /** Hex sha256 of the bearer token. */
  sha256: string;
}

export interface Config {
  listen: { host: string; port: number };
  dataDir: string;
  temporal: {
    /** null: the lab starts its own dev server. */
    address: string | null;
    namespace: string;
    taskQueue: string;
    /** Base URL of the Temporal Web UI, for links from the console. */
    uiUrl: string | null;
    tls: { caFile: string | null; certFile: string | null; keyFile: string | null; serverName: string | null } | null;
    apiKeyFile: string | null;
    /** Worker Deployment Versioning: with a build id the worker pins each session to its build (server/worker-deployment.ts). */
    deployment: { name: string; buildId: string | null; /** Each new build makes itself current (one build at a time, as the chart runs it). */ promote: boolean };
  };
  target: { devvmName: string; vmid: number };
  devvm: SshEndpointConfig;
  pve: SshEndpointConfig;
  agent: {
    apiKeyFile: string | null;
    /** From ANTHROPIC_API_KEY or apiKeyFile; read only where the worker runs. */
    apiKey: string | null;
    /** A key is configured (a server-only process knows the agent exists without reading it). */
    configured: boolean;
    model: string;
    maxTokens: number;
    maxContextTokens: number;
    baseUrl: string | null;
  };
  policy: SessionPolicy;
  auth: {
    mode: 'lab' | 'token' | 'proxy';
    tokens: TokenEntry[];
    proxy: {
      /** The identity header the proxy sets (lower-case). */
      header: string;
      /** The proxy's source addresses, parsed at start-up. */
      trustedCidrs: AddressRange[];
      /** The header carrying the proxy's shared secret (lower-case). */
      secretHeader: string;
      /** The shared secret from auth.proxy.secretFile; null unless this process serves the console in proxy mode. */
      secret: string | null;
    };
    /** Allowlist of operator names; empty allows every authenticated operator. */
    operators: string[];
    labToken: string | null;
  };
  notifications: { webhookUrl: string | null; format: 'ntfy' | 'slack' };
  /** Where people reach the console (notifications link to the session there). */
  console: { publicUrl: string | null };
  /** A pending approval lapses after this long: an hours-old approval must not fire unasked. */
  approvals: { expiryMinutes: number };
  /** After a mutating verb, its session keeps the VM's lease this long: another session's verb is refused meanwhile (0: only while the verb runs). */
  lease: { holdMinutes: number };
  roles: { server: boolean; worker: boolean };
  /** Separate worker process: live output (token deltas, command output) is pushed to the server. */
  live: { pushUrl: string | null; token: string | null };
  /**
   * The key the console signs operator messages with and the worker checks them by
   * (server/attestation.ts); null: console and worker share one process, which makes one up.
   */
  identity: { key: Buffer | null };
  /** A worker-only process serves /healthz, /readyz and /metrics on this port. */
  metrics: { port: number; sdkPrometheusAddress: string | null; /** A scraper's bearer token for the console's /metrics (else an operator's login). */ token: string | null };
  /** The payload codec's key ring and the codec server's allowed Web UI origins (server/codec-config.ts). */
  codec: CodecConfig;
  /** Devvm command output recorded with the agent's redaction applied (off by default: operators need the raw output). */
  recording: { redactOutput: boolean };
}

type Json = Record<string, unknown>;

function at(root: Json, path: string): unknown {
  return path.split('.').reduce<unknown>((node, part) => (node && typeof node === 'object' ? (node as Json)[part] : undefined), root);
}

function setAt(root: Json, path: string, value: unknown): void {
  const parts = path.split('.');
  let node = root;
  for (const part of parts.slice(0, -1)) {
    if (!node[part] || typeof node[part] !== 'object') node[part] = {};
    node = node[part] as Json;
  }
  node[parts[parts.length - 1] as string] = value;
}

const str = (key: string, value: unknown, fallback: string): string => {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || value.trim() === '') throw new ConfigError(key, 'must be a non-empty string');
  return value.trim();
};
const optStr = (key: string, value: unknown): string | null => (value === undefined || value === null || value === '' ? null : str(key, value, ''));
const int = (key: string, value: unknown, fallback: number, min: number, max: number): number => {
  if (value === undefined) return fallback;
  const number = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof number !== 'number' || !Number.isInteger(number) || number < min || number > max) {
    throw new ConfigError(key, `must be a whole number from ${min} to ${max} (got ${JSON.stringify(value)})`);
  }
  return number;
};
const matching = <T extends string | null>(key: string, value: T, pattern: RegExp, rule: string): T => {
  if (value !== null && !pattern.test(value)) throw new ConfigError(key, `must be ${rule} (got ${JSON.stringify(value)})`);
  return value;
};
/** true / false (a JSON boolean, or the word from an environment variable); default false. */
const boolFlag = (key: string, value: unknown): boolean => oneOf(key, value === undefined ? undefined : String(value), 'false', ['true', 'false'] as const) === 'true';
const oneOf = <T extends string>(key: string, value: unknown, fallback: T, allowed: readonly T[]): T => {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !allowed.includes(value as T)) throw new ConfigError(key, `must be one of ${allowed.join(', ')} (got ${JSON.stringify(value)})`);
  return value as T;
};
const list = (key: string, value: unknown): string[] => {
  if (value === undefined) return [];
  const items = typeof value === 'string' ? value.split(',').map((s) => s.trim()).filter(Boolean) : value;
  if (!Array.isArray(items) || items.some((item) => typeof item !== 'string' || item.trim() === '')) throw new ConfigError(key, 'must be a list of non-empty strings');
  return items.map((item: string) => item.trim());
};
/** The trimmed contents of a secret file named by `key`, or null when the key is unset. */
const secretFile = (key: string, value: unknown): string | null => {
  const path = optStr(key, value);
  if (path === null) return null;
  try {
    return readFileSync(path, 'utf8').trim() || null;
  } catch (error) {
    throw new ConfigError(key, `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
};
/** What a bearer or login token may look like (server/auth.ts and the login route check the same). */
export const TOKEN_PATTERN = /^[A-Za-z0-9._~+/=-]{16,256}$/;
/** A lab token the login would refuse is refused here, before a console URL that cannot work is printed. */
const labToken = (text: string | null): string | null => {
  if (text !== null && !TOKEN_PATTERN.test(text)) {
    throw new ConfigError('BREAKGLASS_LAB_TOKEN', `must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ + / = - (got ${text.length} characters${/^[A-Za-z0-9._~+/=-]*$/.test(text) ? '' : ', some of them not allowed'}); e.g. BREAKGLASS_LAB_TOKEN=$(openssl rand -hex 16)`);
  }
  return text;
};
/** The attestation key: required wherever the console and the worker do not share one process. */
const identityKey = (text: string | null, oneProcess: boolean): Buffer | null => {
  if (text === null) {
    if (oneProcess) return null;
    throw new ConfigError('identity.keyFile', 'required when the console and the worker run in separate processes: the console signs operator messages with this key and the worker checks them (the same mounted Secret in both)');
  }
  if (Buffer.byteLength(text) < MIN_KEY_BYTES) throw new ConfigError('identity.keyFile', `the key must be at least ${MIN_KEY_BYTES} characters (e.g. openssl rand -base64 48)`);
  return Buffer.from(text);
};
const url = (key: string, value: unknown): string | null => {
  const text = optStr(key, value);
  if (text === null) return null;
  try {
    const parsed = new URL(text);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('scheme');
  } catch {
    throw new ConfigError(key, `must be an http(s) URL (got ${JSON.stringify(text)})`);
  }
  return text.replace(/\/+$/, '');
};

/** The shortest proxy secret accepted: as hard to guess as an operator token. */
const MIN_PROXY_SECRET_LENGTH = 32;

/**
 * One trusted range: `10.0.0.0/8`, `fd00::/8`, or a bare address (that one host). An IPv4-mapped
 * range (`::ffff:10.0.0.0/104`) becomes its IPv4 range, as mapped addresses are matched as IPv4.
 */
function addressRange(key: string, text: string): AddressRange {
  const [address = '', prefix, ...extra] = text.split('/');
  const family = isIP(address);
  // node:net first: ipaddr.js also takes inet_aton forms, where 010.0.0.1 is octal for 8.0.0.1.
  if (family === 0 || extra.length > 0) throw new ConfigError(key, `"${text}" is not an IP address or CIDR`);
  const longest = family === 4 ? 32 : 128;
  let range: AddressRange;
  try {
    range = ipaddr.parseCIDR(`${address}/${prefix ?? longest}`);
  } catch {
    throw new ConfigError(key, `"${text}" has a bad prefix length (0 to ${longest})`);
  }
  const [network, length] = range;
  if (network.kind() === 'ipv6' && (network as ipaddr.IPv6).isIPv4MappedAddress() && length >= 96) return [(network as ipaddr.IPv6).toIPv4Address(), length - 96];
  return range;
}

/** An HTTP header name (an RFC 9110 token), lower-cased as Node presents request headers. */
function headerName(key: string, value: unknown, fallback: string): string {
  const name = str(key, value, fallback);
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw new ConfigError(key, `"${name}" is not an HTTP header name`);
  return name.toLowerCase();
}

/**
 * auth.proxy. The shared secret is required, and read, only where the console is served in proxy
 * mode: a worker-only process authenticates no one and need not hold it.
 */
function proxyAuth(raw: Json, mode: Config['auth']['mode'], servesConsole: boolean): Config['auth']['proxy'] {
  const trustedCidrs = list('auth.proxy.trustedCidrs', at(raw, 'auth.proxy.trustedCidrs')).map((cidr, index) => addressRange(`auth.proxy.trustedCidrs[${index}]`, cidr));
  if (mode === 'proxy' && trustedCidrs.length === 0) throw new ConfigError('auth.proxy.trustedCidrs', 'auth.mode "proxy" needs the proxy addresses it trusts');
  const header = headerName('auth.proxy.header', at(raw, 'auth.proxy.header'), 'x-forwarded-user');
  const secretHeader = headerName('auth.proxy.secretHeader', at(raw, 'auth.proxy.secretHeader'), 'x-breakglass-proxy-secret');
  if (secretHeader === header) throw new ConfigError('auth.proxy.secretHeader', `must differ from auth.proxy.header (${header})`);
  if (mode !== 'proxy' || !servesConsole) return { header, trustedCidrs, secretHeader, secret: null };
  const what = `at least ${MIN_PROXY_SECRET_LENGTH} characters (openssl rand -base64 48), the same secret the proxy sends in ${secretHeader}`;
  const path = optStr('auth.proxy.secretFile', at(raw, 'auth.proxy.secretFile'));
  if (path === null) throw new ConfigError('auth.proxy.secretFile', `auth.mode "proxy" needs a file holding the proxy's shared secret: ${what}`);
  const secret = secretFile('auth.proxy.secretFile', path) ?? '';
  if (secret.length < MIN_PROXY_SECRET_LENGTH) throw new ConfigError('auth.proxy.secretFile', `${path} holds ${secret.length} characters after trimming; the proxy's shared secret must be ${what}`);
  return { header, trustedCidrs, secretHeader, secret };
}

function endpoint(raw: Json, prefix: 'devvm' | 'pve', defaults: { port: number; user: string }): SshEndpointConfig {
  const knownHostsFile = optStr(`${prefix}.knownHostsFile`, at(raw, `${prefix}.knownHostsFile`));
  const fingerprints = list(`${prefix}.fingerprints`, at(raw, `${prefix}.fingerprints`));
  for (const fingerprint of fingerprints) {
    if (!/^SHA256:[A-Za-z0-9+/]{43}$/.test(fingerprint)) throw new ConfigError(`${prefix}.fingerprints`, `"${fingerprint}" is not a SHA256:… fingerprint`);
  }
  const host = str(`${prefix}.host`, at(raw, `${prefix}.host`), '');
  if (host === '') throw new ConfigError(`${prefix}.host`, 'is required');
  const keyFile = str(`${prefix}.keyFile`, at(raw, `${prefix}.keyFile`), '');
  if (keyFile === '') throw new ConfigError(`${prefix}.keyFile`, 'is required (path to the private key, e.g. a mounted Secret)');
  if (!knownHostsFile && fingerprints.length === 0) {
    throw new ConfigError(`${prefix}.knownHostsFile`, 'a pinned host key is required (knownHostsFile or fingerprints); accept-any is never used');
  }
  return {
    host,
    port: int(`${prefix}.port`, at(raw, `${prefix}.port`), defaults.port, 1, 65535),
    user: str(`${prefix}.user`, at(raw, `${prefix}.user`), defaults.user),
    keyFile,
    knownHostsFile,
    fingerprints,
  };
}

/** Environment variables that override file keys (documented in the README). */
export const ENV_OVERRIDES: Record<string, string> = {
  PORT: 'listen.port',
  HOST: 'listen.host',
  BREAKGLASS_DATA_DIR: 'dataDir',
  TEMPORAL_ADDRESS: 'temporal.address',
  TEMPORAL_NAMESPACE: 'temporal.namespace',
  TEMPORAL_TASK_QUEUE: 'temporal.taskQueue',
  TEMPORAL_UI_URL: 'temporal.uiUrl',
  TEMPORAL_API_KEY_FILE: 'temporal.apiKeyFile',
  BREAKGLASS_AUTH_MODE: 'auth.mode',
  BREAKGLASS_MODEL: 'agent.model',
  BREAKGLASS_AGENT_BASE_URL: 'agent.baseUrl',
  BREAKGLASS_ROLES: 'roles',
  BREAKGLASS_LIVE_PUSH_URL: 'live.pushUrl',
  BREAKGLASS_LIVE_TOKEN_FILE: 'live.tokenFile',
  BREAKGLASS_IDENTITY_KEY_FILE: 'identity.keyFile',
  BREAKGLASS_PUBLIC_URL: 'console.publicUrl',
  BREAKGLASS_METRICS_PORT: 'metrics.port',
  BREAKGLASS_CODEC_ENABLED: 'codec.enabled',
  BREAKGLASS_DEPLOYMENT_NAME: 'temporal.deployment.name',
  BREAKGLASS_BUILD_ID: 'temporal.deployment.buildId',
  BREAKGLASS_PROMOTE_BUILD: 'temporal.deployment.promote',
  BREAKGLASS_REDACT_RECORDED_OUTPUT: 'recording.redactOutput',
};

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Parsed file contents (tests) — otherwise read from `configFile`. */
  file?: Json;
  configFile?: string | null;
  /** Values the lab supplies (its own hosts and keys), below the file and the environment. */
  base?: Json;
  /** A real deployment: refuse to start without a Temporal address. */
  requireTemporal?: boolean;
  /** A real deployment: refuse to start without codec keys unless codec.enabled is false. */
  requireCodecKeys?: boolean;
}

export function loadConfig(options: LoadOptions = {}): Config {
  const config = parseConfig(options);
  if (options.requireTemporal && !config.temporal.address) throw new ConfigError('temporal.address', 'required (or TEMPORAL_ADDRESS)');
  if (config.roles.worker && !config.roles.server && config.live.pushUrl && !config.live.token) {
    throw new ConfigError('live.tokenFile', 'a worker that pushes live output needs the shared token');
  }
  return config;
}

function parseConfig(options: LoadOptions): Config {
  const env = options.env ?? process.env;
  const raw: Json = structuredClone(options.base ?? {});
  const configFile = options.configFile ?? env.BREAKGLASS_CONFIG ?? null;
  let fileValues: Json = options.file ?? {};
  if (!options.file && configFile) {
    try {
      fileValues = JSON.parse(readFileSync(configFile, 'utf8')) as Json;
    } catch (error) {
      throw new ConfigError('BREAKGLASS_CONFIG', `cannot read ${configFile}: ${(error as Error).message}`);
    }
  }
  const merge = (target: Json, source: Json, prefix = '') => {
    for (const [key, value] of Object.entries(source)) {
      const path = prefix ? `${prefix}.${key}` : key;
      if (value && typeof value === 'object' && !Array.isArray(value)) {
        // An empty object is a value too (`temporal.tls: {}`: TLS with the system's roots).
        if (Object.keys(value).length === 0 && at(target, path) === undefined) setAt(target, path, {});
        merge(target, value as Json, path);
      } else setAt(target, path, value);
    }
  };
  merge(raw, fileValues);
  for (const [name, path] of Object.entries(ENV_OVERRIDES)) {
    if (env[name] !== undefined && env[name] !== '') setAt(raw, path, env[name]);
  }
  if (at(raw, 'apiKey') !== undefined || at(raw, 'agent.apiKey') !== undefined) {
    throw new ConfigError('agent.apiKey', 'secrets never go in the config file: use agent.apiKeyFile or ANTHROPIC_API_KEY');
  }

  const authMode = oneOf('auth.mode', at(raw, 'auth.mode'), 'lab', ['lab', 'token', 'proxy'] as const);
  const listenHost = str('listen.host', at(raw, 'listen.host'), '127.0.0.1');
  const loopback = listenHost === '127.0.0.1' || listenHost === '::1' || listenHost === 'localhost';
  if (authMode === 'lab' && !loopback) {
    throw new ConfigError('auth.mode', `"lab" (a printed token) is for loopback only; listen.host is ${listenHost}: configure "token" or "proxy"`);
  }
  const tokens = (at(raw, 'auth.tokens') ?? []) as unknown;
  if (!Array.isArray(tokens)) throw new ConfigError('auth.tokens', 'must be a list of { operator, sha256 }');
  const tokenEntries = tokens.map((entry, index): TokenEntry => {
    const key = `auth.tokens[${index}]`;
    if (!entry || typeof entry !== 'object') throw new ConfigError(key, 'must be { operator, sha256 }');
    const { operator, sha256 } = entry as Json;
    if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) throw new ConfigError(`${key}.sha256`, 'must be the hex sha256 of the token (never the token itself)');
    return { operator: str(`${key}.operator`, operator, ''), sha256 };
  });
  if (authMode === 'token' && tokenEntries.length === 0) throw new ConfigError('auth.tokens', 'auth.mode "token" needs at least one token');
  const operators = list('auth.operators', at(raw, 'auth.operators'));
  if (authMode === 'proxy' && operators.length === 0) throw new ConfigError('auth.operators', 'auth.mode "proxy" needs an operator allowlist');

  const rolesRaw = at(raw, 'roles');
  const roles = rolesRaw === undefined ? ['server', 'worker'] : list('roles', rolesRaw);
  for (const role of roles) if (role !== 'server' && role !== 'worker') throw new ConfigError('roles', `unknown role "${role}" (server, worker)`);
  if (roles.length === 0) throw new ConfigError('roles', 'at least one of server, worker');

  const tlsRaw = at(raw, 'temporal.tls') as Json | undefined;
  const uiUrl = url('temporal.uiUrl', at(raw, 'temporal.uiUrl'));
  const agentKeyFile = optStr('agent.apiKeyFile', at(raw, 'agent.apiKeyFile'));
  let apiKey = env.ANTHROPIC_API_KEY && env.ANTHROPIC_API_KEY.trim() !== '' ? env.ANTHROPIC_API_KEY.trim() : null;
  // Only the worker talks to the model: a server-only process never reads the key.
  if (!apiKey && agentKeyFile && roles.includes('worker')) {
    try {
      apiKey = readFileSync(agentKeyFile, 'utf8').trim() || null;
    } catch (error) {
      throw new ConfigError('agent.apiKeyFile', `cannot read: ${(error as Error).message}`);
    }
  }

  return {
    listen: { host: listenHost, port: int('listen.port', at(raw, 'listen.port'), 8080, 0, 65535) },
    dataDir: str('dataDir', at(raw, 'dataDir'), '.data'),
    temporal: {
      address: optStr('temporal.address', at(raw, 'temporal.address')),
      namespace: str('temporal.namespace', at(raw, 'temporal.namespace'), 'default'),
      taskQueue: str('temporal.taskQueue', at(raw, 'temporal.taskQueue'), 'breakglass'),
      uiUrl,
      tls: tlsRaw
        ? {
            caFile: optStr('temporal.tls.caFile', tlsRaw.caFile),
            certFile: optStr('temporal.tls.certFile', tlsRaw.certFile),
            keyFile: optStr('temporal.tls.keyFile', tlsRaw.keyFile),
            serverName: optStr('temporal.tls.serverName', tlsRaw.serverName),
          }
        : null,
      apiKeyFile: optStr('temporal.apiKeyFile', at(raw, 'temporal.apiKeyFile')),
      deployment: {
        name: matching('temporal.deployment.name', str('temporal.deployment.name', at(raw, 'temporal.deployment.name'), 'breakglass'), /^[A-Za-z0-9_-]{1,100}$/, '1 to 100 of A-Z a-z 0-9 _ - (no dot: Temporal writes the version as <name>.<build id>)'),
        buildId: matching('temporal.deployment.buildId', optStr('temporal.deployment.buildId', at(raw, 'temporal.deployment.buildId')), /^[A-Za-z0-9._+-]{1,200}$/, '1 to 200 of A-Z a-z 0-9 . _ + -'),
        promote: boolFlag('temporal.deployment.promote', at(raw, 'temporal.deployment.promote')),
      },
    },
    target: {
      devvmName: str('target.devvmName', at(raw, 'target.devvmName'), 'devvm'),
      vmid: int('target.vmid', at(raw, 'target.vmid'), 102, 100, 999_999_999),
    },
    devvm: endpoint(raw, 'devvm', { port: 22, user: 'breakglass' }),
    pve: endpoint(raw, 'pve', { port: 22, user: 'breakglass' }),
    agent: {
      apiKeyFile: agentKeyFile,
      apiKey,
      configured: apiKey !== null || agentKeyFile !== null,
      model: str('agent.model', at(raw, 'agent.model'), 'claude-sonnet-4-6'),
      maxTokens: int('agent.maxTokens', at(raw, 'agent.maxTokens'), 2048, 256, 64_000),
      maxContextTokens: int('agent.maxContextTokens', at(raw, 'agent.maxContextTokens'), 150_000, 8_000, 1_000_000),
      baseUrl: url('agent.baseUrl', at(raw, 'agent.baseUrl')),
    },
    policy: {
      mutatingVerbs: oneOf<MutationPolicy>('policy.mutatingVerbs', at(raw, 'policy.mutatingVerbs'), 'autonomous', ['autonomous', 'approve', 'two-person']),
      devvmCommands: oneOf<CommandPolicy>('policy.devvmCommands', at(raw, 'policy.devvmCommands'), 'allowlist', ['allowlist', 'autonomous']),
      toolCallsPerMessage: int('policy.toolCallsPerMessage', at(raw, 'policy.toolCallsPerMessage'), 20, 1, 200),
    },
    auth: {
      mode: authMode,
      tokens: tokenEntries,
      proxy: proxyAuth(raw, authMode, roles.includes('server')),
      operators,
      labToken: authMode === 'lab' ? labToken(optStr('BREAKGLASS_LAB_TOKEN', env.BREAKGLASS_LAB_TOKEN)) : null,
    },
    notifications: {
      webhookUrl: url('notifications.webhookUrl', at(raw, 'notifications.webhookUrl') ?? secretFile('notifications.webhookUrlFile', at(raw, 'notifications.webhookUrlFile'))),
      format: oneOf('notifications.format', at(raw, 'notifications.format'), 'ntfy', ['ntfy', 'slack'] as const),
    },
    console: { publicUrl: url('console.publicUrl', at(raw, 'console.publicUrl'))?.replace(/\/+$/, '') ?? null },
    approvals: { expiryMinutes: int('approvals.expiryMinutes', at(raw, 'approvals.expiryMinutes'), 15, 1, 1440) },
    lease: { holdMinutes: int('lease.holdMinutes', at(raw, 'lease.holdMinutes'), 10, 0, 1440) },
    roles: { server: roles.includes('server'), worker: roles.includes('worker') },
    identity: { key: identityKey(secretFile('identity.keyFile', at(raw, 'identity.keyFile')), roles.includes('server') && roles.includes('worker')) },
    live: {
      pushUrl: url('live.pushUrl', at(raw, 'live.pushUrl')),
      token: secretFile('live.tokenFile', at(raw, 'live.tokenFile')),
    },
    metrics: {
      port: int('metrics.port', at(raw, 'metrics.port'), 9464, 0, 65535),
      sdkPrometheusAddress: optStr('metrics.sdkPrometheusAddress', at(raw, 'metrics.sdkPrometheusAddress')),
      // Only the console's /metrics asks for it: a worker-only process never reads the file.
      token: roles.includes('server') ? secretFile('metrics.tokenFile', at(raw, 'metrics.tokenFile')) : null,
    },
    recording: { redactOutput: boolFlag('recording.redactOutput', at(raw, 'recording.redactOutput')) },
    codec: parseCodecConfig(at(raw, 'codec') as Json | undefined, uiUrl, options.requireCodecKeys ?? false, (key, message) => {
      throw new ConfigError(key, message);
    }),
  };
}
