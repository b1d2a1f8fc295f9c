import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inAddressRanges, isLoopbackHost } from '../server/auth.js';
import { ConfigError, ENV_OVERRIDES, loadConfig, type Config } from '../server/config.js';

let dir: string;
const PROXY_SECRET = 'proxy-shared-secret-config-test-0123';
const fingerprint = 'SHA256:' + 'B'.repeat(43);
const endpoints = {
  devvm: { host: 'devvm.lan', keyFile: '/keys/devvm', fingerprints: [fingerprint] },
  pve: { host: 'pve.lan', keyFile: '/keys/pve', knownHostsFile: '/keys/known_hosts' },
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bg-config-'));
  await writeFile(join(dir, 'anthropic'), 'sk-ant-from-file\n');
  await writeFile(join(dir, 'webhook'), 'https://hooks.example.com/T000/B000/xyz\n');
  await writeFile(join(dir, 'live-token'), 'live-token-0123456789\n');
  await writeFile(join(dir, 'metrics-token'), 'metrics-token-0123456789\n');
  await writeFile(join(dir, 'proxy-secret'), `  ${PROXY_SECRET}\n`);
  await writeFile(join(dir, 'identity-key'), 'identity-key-config-test-0123456789abcdef\n');
  await writeFile(join(dir, 'codec-key'), `${Buffer.alloc(32, 7).toString('base64')}\n`);
  await writeFile(join(dir, 'short-secret'), `${'s'.repeat(31)}\n`);
});

afterAll(() => rm(dir, { recursive: true, force: true }));

/** The trusted ranges as text, the way a person reads them. */
const rangesOf = (config: Config) => config.auth.proxy.trustedCidrs.map(([network, bits]) => `${network.toString()}/${bits}`);

describe('configuration', () => {
  it('when every documented key is set, then each is parsed into the typed config', () => {
    const config = loadConfig({
      env: {},
      file: {
        listen: { host: '0.0.0.0', port: 9000 },
        dataDir: '/var/lib/breakglass',
        temporal: {
          address: 'temporal-frontend:7233',
          namespace: 'ops',
          taskQueue: 'bg',
          uiUrl: 'https://temporal.example.com/',
          tls: { caFile: '/tls/ca', certFile: '/tls/crt', keyFile: '/tls/key', serverName: 'temporal' },
          apiKeyFile: '/secrets/temporal-api-key',
          deployment: { name: 'bg-prod', buildId: '2026.12.06-1', promote: true },
        },
        target: { devvmName: 'devvm-prod', vmid: 102 },
        devvm: { ...endpoints.devvm, port: 2222, user: 'bg' },
        pve: { ...endpoints.pve, port: 22, user: 'breakglass' },
        agent: { apiKeyFile: join(dir, 'anthropic'), model: 'claude-test', maxTokens: 4096, maxContextTokens: 100_000, baseUrl: 'https://llm.example.com' },
        policy: { mutatingVerbs: 'two-person', devvmCommands: 'autonomous', toolCallsPerMessage: 7 },
        auth: {
          mode: 'proxy',
          proxy: { header: 'X-Auth-Request-User', trustedCidrs: ['10.0.0.0/8', 'fd00::/8'], secretHeader: 'X-Proxy-Secret', secretFile: join(dir, 'proxy-secret') },
          operators: ['alice', 'bob'],
          tokens: [{ operator: 'ci', sha256: 'a'.repeat(64) }],
        },
        notifications: { webhookUrlFile: join(dir, 'webhook'), format: 'slack' },
        console: { publicUrl: 'https://breakglass.example.com/' },
        roles: ['worker'],
        live: { pushUrl: 'http://breakglass:8080', tokenFile: join(dir, 'live-token') },
        metrics: { port: 9500, sdkPrometheusAddress: '0.0.0.0:9501', tokenFile: join(dir, 'metrics-token') },
        identity: { keyFile: join(dir, 'identity-key') },
        codec: { enabled: true, keys: [{ id: 'key-2026-12', file: join(dir, 'codec-key') }], compress: false, webUiOrigins: ['https://temporal-ui.example.com'] },
        recording: { redactOutput: true },
      },
    });
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(config.dataDir).toBe('/var/lib/breakglass');
    expect(config.temporal).toEqual({
      address: 'temporal-frontend:7233',
      namespace: 'ops',
      taskQueue: 'bg',
      uiUrl: 'https://temporal.example.com',
      tls: { caFile: '/tls/ca', certFile: '/tls/crt', keyFile: '/tls/key', serverName: 'temporal' },
      apiKeyFile: '/secrets/temporal-api-key',
      deployment: { name: 'bg-prod', buildId: '2026.12.06-1', promote: true },
    });
    expect(config.recording).toEqual({ redactOutput: true });
    expect(config.codec).toEqual({ enabled: true, keys: [{ id: 'key-2026-12', key: Buffer.alloc(32, 7) }], compress: false, webUiOrigins: ['https://temporal-ui.example.com'] });
    expect(config.target).toEqual({ devvmName: 'devvm-prod', vmid: 102 });
    expect(config.devvm).toEqual({ host: 'devvm.lan', port: 2222, user: 'bg', keyFile: '/keys/devvm', knownHostsFile: null, fingerprints: [fingerprint] });
    expect(config.pve).toMatchObject({ host: 'pve.lan', port: 22, user: 'breakglass', knownHostsFile: '/keys/known_hosts' });
    expect(config.agent).toMatchObject({ apiKey: 'sk-ant-from-file', model: 'claude-test', maxTokens: 4096, maxContextTokens: 100_000, baseUrl: 'https://llm.example.com' });
    expect(config.policy).toEqual({ mutatingVerbs: 'two-person', devvmCommands: 'autonomous', toolCallsPerMessage: 7 });
    // A worker-only process authenticates no one and serves no console /metrics: it reads neither secret.
    expect(config.auth).toMatchObject({ mode: 'proxy', proxy: { header: 'x-auth-request-user', secretHeader: 'x-proxy-secret', secret: null }, operators: ['alice', 'bob'] });
    expect(rangesOf(config)).toEqual(['10.0.0.0/8', 'fd00::/8']);
    expect(config.notifications).toEqual({ webhookUrl: 'https://hooks.example.com/T000/B000/xyz', format: 'slack' });
    expect(config.console).toEqual({ publicUrl: 'https://breakglass.example.com' });
    expect(config.roles).toEqual({ server: false, worker: true });
    expect(config.live).toEqual({ pushUrl: 'http://breakglass:8080', token: 'live-token-0123456789' });
    expect(config.metrics).toEqual({ port: 9500, sdkPrometheusAddress: '0.0.0.0:9501', token: null });
  });

  it('when the console runs in proxy mode, then the shared secret and the metrics token are read from their files, trimmed', () => {
    const config = loadConfig({
      env: { BREAKGLASS_ROLES: 'server' },
      file: {
        ...endpoints,
        auth: { mode: 'proxy', proxy: { trustedCidrs: ['10.42.0.0/16'], secretFile: join(dir, 'proxy-secret') }, operators: ['alice'] },
        metrics: { tokenFile: join(dir, 'metrics-token') },
        identity: { keyFile: join(dir, 'identity-key') },
      },
    });
    expect(config.auth.proxy).toMatchObject({ header: 'x-forwarded-user', secretHeader: 'x-breakglass-proxy-secret', secret: PROXY_SECRET });
    expect(config.metrics.token).toBe('metrics-token-0123456789');
  });

  it('when nothing is set but the hosts, then the documented defaults apply', () => {
    const config = loadConfig({ env: {}, file: endpoints });
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(config.temporal).toMatchObject({ address: null, namespace: 'default', taskQueue: 'breakglass', tls: null });
    expect(config.policy).toEqual({ mutatingVerbs: 'autonomous', devvmCommands: 'allowlist', toolCallsPerMessage: 20 });
    expect(config.auth.mode).toBe('lab');
    expect(config.devvm).toMatchObject({ port: 22, user: 'breakglass' });
    expect(config.roles).toEqual({ server: true, worker: true });
    expect(config.agent.apiKey).toBeNull();
    expect(config.recording).toEqual({ redactOutput: false });
  });

  it('when environment overrides are set, then they win over the file', () => {
    const env = { PORT: '9090', TEMPORAL_ADDRESS: 'other:7233', BREAKGLASS_ROLES: 'server', ANTHROPIC_API_KEY: 'sk-env' };
    // A server-only process needs the key it shares with its worker (identity.keyFile).
    const config = loadConfig({ env, file: { ...endpoints, listen: { port: 1 }, temporal: { address: 'file:7233' }, identity: { keyFile: join(dir, 'identity-key') } } });
    expect(config.listen.port).toBe(9090);
    expect(config.temporal.address).toBe('other:7233');
    expect(config.roles).toEqual({ server: true, worker: false });
    expect(config.agent.apiKey).toBe('sk-env');
    expect(Object.keys(ENV_OVERRIDES)).toContain('BREAKGLASS_AUTH_MODE');
  });

  it('when BREAKGLASS_BUILD_ID is set, then the worker is versioned under temporal.deployment.name (default breakglass)', () => {
    expect(loadConfig({ env: {}, file: endpoints }).temporal.deployment).toEqual({ name: 'breakglass', buildId: null, promote: false });
    expect(loadConfig({ env: { BREAKGLASS_BUILD_ID: '0.2.0', BREAKGLASS_PROMOTE_BUILD: 'true' }, file: endpoints }).temporal.deployment).toEqual({ name: 'breakglass', buildId: '0.2.0', promote: true });
  });

  it('when TLS is an empty object, then TLS stays on (system roots)', () => {
    expect(loadConfig({ env: {}, file: { ...endpoints, temporal: { tls: {} } } }).temporal.tls).toEqual({ caFile: null, certFile: null, keyFile: null, serverName: null });
  });

  const bad: [string, Record<string, unknown>, string][] = [
    ['port out of range', { listen: { port: 70000 } }, 'listen.port'],
    ['port not a number', { listen: { port: 'eighty' } }, 'listen.port'],
    ['unknown policy', { policy: { mutatingVerbs: 'yolo' } }, 'policy.mutatingVerbs'],
    ['budget zero', { policy: { toolCallsPerMessage: 0 } }, 'policy.toolCallsPerMessage'],
    ['unknown auth mode', { auth: { mode: 'anonymous' } }, 'auth.mode'],
    ['lab auth on a public address', { listen: { host: '0.0.0.0' } }, 'auth.mode'],
    ['token mode without tokens', { auth: { mode: 'token' } }, 'auth.tokens'],
    ['plain token instead of a hash', { auth: { mode: 'token', tokens: [{ operator: 'a', sha256: 'hunter2' }] } }, 'auth.tokens[0].sha256'],
    ['proxy without trusted addresses', { auth: { mode: 'proxy', operators: ['a'] } }, 'auth.proxy.trustedCidrs'],
    ['bad CIDR prefix', { auth: { mode: 'proxy', operators: ['a'], proxy: { trustedCidrs: ['10.0.0.0/33'] } } }, 'auth.proxy.trustedCidrs[0]'],
    ['bad IPv6 prefix, second entry', { auth: { mode: 'proxy', operators: ['a'], proxy: { trustedCidrs: ['10.0.0.0/8', 'fd00::/129'] } } }, 'auth.proxy.trustedCidrs[1]'],
    ['an octal-looking address', { auth: { proxy: { trustedCidrs: ['010.0.0.0/8'] } } }, 'auth.proxy.trustedCidrs[0]'],
    ['a short-form address', { auth: { proxy: { trustedCidrs: ['10.1/16'] } } }, 'auth.proxy.trustedCidrs[0]'],
    ['a name instead of an address', { auth: { proxy: { trustedCidrs: ['proxy.internal/32'] } } }, 'auth.proxy.trustedCidrs[0]'],
    ['two prefixes', { auth: { proxy: { trustedCidrs: ['10.0.0.0/8/8'] } } }, 'auth.proxy.trustedCidrs[0]'],
    ['an empty prefix', { auth: { proxy: { trustedCidrs: ['10.0.0.0/'] } } }, 'auth.proxy.trustedCidrs[0]'],
    ['proxy without allowlist', { auth: { mode: 'proxy', proxy: { trustedCidrs: ['10.0.0.0/8'] } } }, 'auth.operators'],
    ['proxy without the shared secret', { auth: { mode: 'proxy', operators: ['a'], proxy: { trustedCidrs: ['10.0.0.0/8'] } } }, 'auth.proxy.secretFile'],
    ['proxy with an unreadable secret file', { auth: { mode: 'proxy', operators: ['a'], proxy: { trustedCidrs: ['10.0.0.0/8'], secretFile: '/nonexistent/secret' } } }, 'auth.proxy.secretFile'],
    ['the secret header the same as the identity header', { auth: { proxy: { header: 'X-User', secretHeader: 'x-user' } } }, 'auth.proxy.secretHeader'],
    ['a secret header that is no header name', { auth: { proxy: { secretHeader: 'x proxy secret' } } }, 'auth.proxy.secretHeader'],
    ['no pinned devvm host key', { devvm: { host: 'x', keyFile: '/k' } }, 'devvm.knownHostsFile'],
    ['malformed fingerprint', { devvm: { host: 'x', keyFile: '/k', fingerprints: ['MD5:aa'] } }, 'devvm.fingerprints'],
    ['missing PVE host', { pve: { keyFile: '/k', fingerprints: [fingerprint] } }, 'pve.host'],
    ['missing PVE key', { pve: { host: 'pve', fingerprints: [fingerprint] } }, 'pve.keyFile'],
    ['API key in the file', { agent: { apiKey: 'sk-ant-oops' } }, 'agent.apiKey'],
    ['unreadable API key file', { agent: { apiKeyFile: '/nonexistent/key' } }, 'agent.apiKeyFile'],
    ['non-http webhook', { notifications: { webhookUrl: 'ftp://x' } }, 'notifications.webhookUrl'],
    ['unknown notification format', { notifications: { format: 'email' } }, 'notifications.format'],
    ['unknown role', { roles: ['server', 'janitor'] }, 'roles'],
    ['vmid out of range', { target: { vmid: 5 } }, 'target.vmid'],
    ['bad Temporal UI URL', { temporal: { uiUrl: 'not a url' } }, 'temporal.uiUrl'],
    ['a deployment name with a dot', { temporal: { deployment: { name: 'breakglass.v1' } } }, 'temporal.deployment.name'],
    ['a build id with a space', { temporal: { deployment: { buildId: 'build 1' } } }, 'temporal.deployment.buildId'],
    ['promote not a boolean', { temporal: { deployment: { promote: 'yes' } } }, 'temporal.deployment.promote'],
  ];
  it.each(['labtok123', 'a token with spaces in it', 'x'.repeat(257), 'ünïcödé-token-0123456789'])('when BREAKGLASS_LAB_TOKEN is %j (the login would refuse it), then start-up is refused naming the variable and the rule', (token) => {
    expect(() => loadConfig({ env: { BREAKGLASS_LAB_TOKEN: token }, file: endpoints })).toThrow(/^config: BREAKGLASS_LAB_TOKEN: must be 16 to 256 characters of A-Z a-z 0-9/);
  });

  it('when BREAKGLASS_LAB_TOKEN follows the rule, then the lab uses it', () => {
    expect(loadConfig({ env: { BREAKGLASS_LAB_TOKEN: 'labtok1234567890ab' }, file: endpoints }).auth.labToken).toBe('labtok1234567890ab');
  });

  it.each(bad)('when %s, then start-up is refused naming %s', (_what, file, key) => {
    const merged = { ...endpoints, ...file };
    let error: unknown;
    try {
      loadConfig({ env: {}, file: merged });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).key).toBe(key);
    expect((error as ConfigError).message).toContain(key);
    expect((error as ConfigError).message).not.toContain('sk-ant-oops');
  });

  it('when a real deployment has no Temporal address, then it is refused naming the key', () => {
    expect(() => loadConfig({ env: {}, file: endpoints, requireTemporal: true })).toThrow(/temporal\.address/);
  });

  it('when the proxy secret is shorter than 32 characters, then start-up is refused naming auth.proxy.secretFile, without the secret', () => {
    const file = { ...endpoints, auth: { mode: 'proxy', operators: ['a'], proxy: { trustedCidrs: ['10.0.0.0/8'], secretFile: join(dir, 'short-secret') } } };
    let error: unknown;
    try {
      loadConfig({ env: {}, file });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).key).toBe('auth.proxy.secretFile');
    expect((error as ConfigError).message).toMatch(/holds 31 characters after trimming; the proxy's shared secret must be at least 32 characters/);
    expect((error as ConfigError).message).not.toContain('s'.repeat(31));
  });
});

describe('trusted address ranges (parsed by ipaddr.js at start-up)', () => {
  const ranges = (...cidrs: string[]) => loadConfig({ env: {}, file: { ...endpoints, auth: { proxy: { trustedCidrs: cidrs } } } }).auth.proxy.trustedCidrs;

  it('when an address is IPv4, IPv6 or IPv4-mapped IPv6, then it matches the ranges of its own family', () => {
    const trusted = ranges('10.0.0.0/8', 'fd00::/8', '192.168.1.7');
    for (const inside of ['10.0.0.5', '10.255.255.255', '::ffff:10.0.0.5', '::ffff:a00:5', '::FFFF:10.1.2.3', 'fd00::5', 'fdff:ffff::1', '192.168.1.7', '::ffff:192.168.1.7']) {
      expect(inAddressRanges(inside, trusted), inside).toBe(true);
    }
    for (const outside of ['11.0.0.1', '9.255.255.255', '192.168.1.8', '::ffff:11.0.0.1', 'fe80::1', 'fc00::1', '::1', '127.0.0.1', '::ffff:127.0.0.1']) {
      expect(inAddressRanges(outside, trusted), outside).toBe(false);
    }
  });

  it('when address and range are of different families, then they never match (not even everything-ranges)', () => {
    expect(inAddressRanges('10.0.0.5', ranges('::/0'))).toBe(false);
    expect(inAddressRanges('::ffff:10.0.0.5', ranges('::/0'))).toBe(false); // matched as the IPv4 address it is
    expect(inAddressRanges('fd00::5', ranges('0.0.0.0/0'))).toBe(false);
    expect(inAddressRanges('::', ranges('0.0.0.0/0'))).toBe(false);
    expect(inAddressRanges('::ffff:10.0.0.5', ranges('0.0.0.0/0'))).toBe(true);
  });

  it('when a range is written IPv4-mapped, then it is its IPv4 range, for plain and mapped addresses alike', () => {
    const mapped = ranges('::ffff:10.0.0.0/104');
    expect(mapped.map(([network, bits]) => `${network.toString()}/${bits}`)).toEqual(['10.0.0.0/8']);
    expect(inAddressRanges('10.9.8.7', mapped)).toBe(true);
    expect(inAddressRanges('::ffff:10.9.8.7', mapped)).toBe(true);
    expect(inAddressRanges('11.0.0.1', mapped)).toBe(false);
  });

  it('when the address is not a plain IP address (inet_aton forms, names, garbage), then it matches nothing', () => {
    const everything = ranges('0.0.0.0/0', '::/0');
    for (const address of ['', 'unknown', 'localhost', '010.0.0.1', '127.1', '0x7f.0.0.1', '10.0.0.256', '10.0.0.1.evil.example', ' 10.0.0.1', '10.0.0.1/8', '[::1]']) {
      expect(inAddressRanges(address, everything), JSON.stringify(address)).toBe(false);
    }
  });

  it('when the console is reached by a loopback name or address, then isLoopbackHost says so, with or without a port', () => {
    for (const host of ['localhost', 'localhost:8080', 'console.localhost', '127.0.0.1', '127.0.0.1:8080', '127.3.2.1', '[::1]', '[::1]:8080', '[::ffff:127.0.0.1]:8080']) {
      expect(isLoopbackHost(host), host).toBe(true);
    }
    for (const host of ['breakglass.example.internal', '10.0.0.1:8080', '[::2]:8080', '[fe80::1]', '127.1', 'localhost.example.com', '128.0.0.1']) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });
});
