import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, ENV_OVERRIDES, loadConfig } from '../server/config.js';

let dir: string;
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
});

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
        },
        target: { devvmName: 'devvm-prod', vmid: 102 },
        devvm: { ...endpoints.devvm, port: 2222, user: 'bg' },
        pve: { ...endpoints.pve, port: 22, user: 'breakglass' },
        agent: { apiKeyFile: join(dir, 'anthropic'), model: 'claude-test', maxTokens: 4096, maxContextTokens: 100_000, baseUrl: 'https://llm.example.com' },
        policy: { mutatingVerbs: 'two-person', devvmCommands: 'autonomous', toolCallsPerMessage: 7 },
        auth: {
          mode: 'proxy',
          proxy: { header: 'X-Auth-Request-User', trustedCidrs: ['10.0.0.0/8', 'fd00::/8'] },
          operators: ['alice', 'bob'],
          tokens: [{ operator: 'ci', sha256: 'a'.repeat(64) }],
        },
        notifications: { webhookUrlFile: join(dir, 'webhook'), format: 'slack' },
        roles: ['worker'],
        live: { pushUrl: 'http://breakglass:8080', tokenFile: join(dir, 'live-token') },
        metrics: { port: 9500, sdkPrometheusAddress: '0.0.0.0:9501', tokenFile: join(dir, 'metrics-token') },
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
    });
    expect(config.target).toEqual({ devvmName: 'devvm-prod', vmid: 102 });
    expect(config.devvm).toEqual({ host: 'devvm.lan', port: 2222, user: 'bg', keyFile: '/keys/devvm', knownHostsFile: null, fingerprints: [fingerprint] });
    expect(config.pve).toMatchObject({ host: 'pve.lan', port: 22, user: 'breakglass', knownHostsFile: '/keys/known_hosts' });
    expect(config.agent).toMatchObject({ apiKey: 'sk-ant-from-file', model: 'claude-test', maxTokens: 4096, maxContextTokens: 100_000, baseUrl: 'https://llm.example.com' });
    expect(config.policy).toEqual({ mutatingVerbs: 'two-person', devvmCommands: 'autonomous', toolCallsPerMessage: 7 });
    expect(config.auth).toMatchObject({ mode: 'proxy', proxy: { header: 'x-auth-request-user', trustedCidrs: ['10.0.0.0/8', 'fd00::/8'] }, operators: ['alice', 'bob'] });
    expect(config.notifications).toEqual({ webhookUrl: 'https://hooks.example.com/T000/B000/xyz', format: 'slack' });
    expect(config.roles).toEqual({ server: false, worker: true });
    expect(config.live).toEqual({ pushUrl: 'http://breakglass:8080', token: 'live-token-0123456789' });
    expect(config.metrics).toEqual({ port: 9500, sdkPrometheusAddress: '0.0.0.0:9501', token: 'metrics-token-0123456789' });
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
  });

  it('when environment overrides are set, then they win over the file', () => {
    const env = { PORT: '9090', TEMPORAL_ADDRESS: 'other:7233', BREAKGLASS_ROLES: 'server', ANTHROPIC_API_KEY: 'sk-env' };
    const config = loadConfig({ env, file: { ...endpoints, listen: { port: 1 }, temporal: { address: 'file:7233' } } });
    expect(config.listen.port).toBe(9090);
    expect(config.temporal.address).toBe('other:7233');
    expect(config.roles).toEqual({ server: true, worker: false });
    expect(config.agent.apiKey).toBe('sk-env');
    expect(Object.keys(ENV_OVERRIDES)).toContain('BREAKGLASS_AUTH_MODE');
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
    ['bad CIDR', { auth: { mode: 'proxy', operators: ['a'], proxy: { trustedCidrs: ['10.0.0.0/33'] } } }, 'auth.proxy.trustedCidrs'],
    ['proxy without allowlist', { auth: { mode: 'proxy', proxy: { trustedCidrs: ['10.0.0.0/8'] } } }, 'auth.operators'],
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
  ];
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
});
