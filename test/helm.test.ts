/**
 * The Helm chart (helm/breakglass), with the real helm binary the project provisions
 * (scripts/provision.sh helm): `helm lint` and `helm template` with default and non-default
 * values, assertions on the rendered manifests, the schema refusing bad values, and the rendered
 * config fed through the app's own config loader.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../server/config.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CHART = join(ROOT, 'helm/breakglass');
const HELM = join(ROOT, '.tools/bin/helm');
const RELEASE = 'bg';
const NAMESPACE = 'breakglass';

// ---- the rendered shapes the assertions read ----

interface Meta {
  name: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: Meta;
  spec?: unknown;
  data?: Record<string, string>;
  automountServiceAccountToken?: boolean;
}
interface Mount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}
interface Probe {
  httpGet: { path: string; port: string };
}
interface Container {
  name: string;
  image: string;
  env: { name: string; value: string }[];
  ports?: { name: string; containerPort: number; protocol: string }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext: Record<string, unknown>;
  volumeMounts: Mount[];
}
interface Volume {
  name: string;
  secret?: { secretName: string; defaultMode: number; items: { key: string; path: string }[] };
  configMap?: { name: string; defaultMode: number };
  emptyDir?: { sizeLimit?: string };
  persistentVolumeClaim?: { claimName: string };
}
interface PodSpec {
  serviceAccountName: string;
  automountServiceAccountToken: boolean;
  enableServiceLinks: boolean;
  securityContext: Record<string, unknown>;
  containers: Container[];
  volumes: Volume[];
}
interface Deployment extends Manifest {
  spec: { replicas: number; strategy: { type: string }; selector: { matchLabels: Record<string, string> }; template: { metadata: Meta; spec: PodSpec } };
}
interface PolicyPeer {
  ipBlock?: { cidr: string };
  namespaceSelector?: { matchLabels: Record<string, string> };
  podSelector?: { matchLabels: Record<string, string> };
}
interface PolicyRule {
  to?: PolicyPeer[];
  from?: PolicyPeer[];
  ports: { protocol: string; port: number }[];
}
interface NetworkPolicy extends Manifest {
  spec: { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress: PolicyRule[]; egress: PolicyRule[] };
}
interface Ingress extends Manifest {
  spec: {
    ingressClassName?: string;
    tls?: { hosts: string[]; secretName: string }[];
    rules: { host: string; http: { paths: { path: string; backend: { service: { name: string; port: { name: string } } } }[] } }[];
  };
}

// ---- helm ----

interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

function helm(args: string[]): Promise<HelmResult> {
  return new Promise((resolve) => {
    execFile(HELM, args, { cwd: ROOT, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let scratch: string;
let valuesCount = 0;

async function valuesFile(values: object): Promise<string> {
  // JSON is YAML: no serializer needed for values files.
  const path = join(scratch, `values-${valuesCount++}.json`);
  await writeFile(path, JSON.stringify(values, null, 2));
  return path;
}

async function valuesArgs(values?: object): Promise<string[]> {
  return values ? ['-f', await valuesFile(values)] : [];
}

async function lint(values?: object): Promise<HelmResult> {
  return helm(['lint', CHART, '--strict', '--namespace', NAMESPACE, ...(await valuesArgs(values))]);
}

async function template(values?: object): Promise<HelmResult> {
  return helm(['template', RELEASE, CHART, '--namespace', NAMESPACE, ...(await valuesArgs(values))]);
}

async function render(values?: object): Promise<Manifest[]> {
  const result = await template(values);
  if (result.code !== 0) throw new Error(`helm template failed (${result.code}):\n${result.stderr}`);
  return parseAllDocuments(result.stdout)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`rendered YAML does not parse: ${doc.errors[0]?.message}`);
      return doc.toJS() as Manifest | null;
    })
    .filter((doc): doc is Manifest => doc !== null);
}

const one = <T extends Manifest>(docs: Manifest[], kind: string, name: string): T => {
  const found = docs.filter((doc) => doc.kind === kind && doc.metadata.name === name);
  expect(found, `${kind}/${name}`).toHaveLength(1);
  return found[0] as T;
};
const kinds = (docs: Manifest[]) => docs.map((doc) => `${doc.kind}/${doc.metadata.name}`).sort();
const envOf = (container: Container) => Object.fromEntries(container.env.map((e) => [e.name, e.value]));
const volume = (pod: PodSpec, name: string) => pod.volumes.find((v) => v.name === name);
const mount = (container: Container, name: string) => container.volumeMounts.find((m) => m.name === name);

// ---- values ----

const HASH_ALICE = 'a'.repeat(64);
const PROXY_SECRET = 'test-proxy-shared-secret-0123456789abcdef';
const FP = (char: string) => `SHA256:${char.repeat(43)}`;

/** ingress-nginx's pods in its namespace: the chart's default proxy peer. */
const INGRESS_NGINX_PEER: PolicyPeer = {
  namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } },
  podSelector: { matchLabels: { 'app.kubernetes.io/name': 'ingress-nginx' } },
};
const PROMETHEUS_PEER: PolicyPeer = {
  namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } },
  podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus' } },
};

/** Separate worker, ingress with forward auth, PVC, proxy auth, Temporal Cloud by API key. */
const NON_DEFAULT = {
  image: { repository: 'ghcr.io/example/breakglass', digest: `sha256:${'0'.repeat(63)}1` },
  devvm: { host: '10.20.0.12', port: 2222, user: 'bg', fingerprints: [FP('B')] },
  pve: { host: 'pve.lab.internal', fingerprints: [FP('A')] },
  ssh: { existingSecret: 'bg-ssh', items: { devvmPrivateKey: 'devvm', pvePrivateKey: 'pve', knownHosts: '' } },
  temporal: {
    address: 'acme.a1b2c.tmprl.cloud:7233',
    namespace: 'acme.a1b2c',
    uiUrl: 'https://cloud.temporal.io/namespaces/acme.a1b2c',
    apiKey: { existingSecret: 'temporal-cloud', item: 'key' },
  },
  agent: { model: 'claude-opus-4-1', apiKey: { existingSecret: 'anthropic', item: 'api-key' } },
  policy: { mutatingVerbs: 'two-person', devvmCommands: 'allowlist', toolCallsPerMessage: 12 },
  approvals: { expiryMinutes: 5 },
  lease: { holdMinutes: 0 },
  auth: {
    mode: 'proxy',
    proxy: { header: 'x-auth-request-user', trustedCidrs: ['10.42.0.0/16'], secret: { existingSecret: 'bg-proxy', item: 'shared' } },
    operators: ['alice', 'bob'],
  },
  metrics: { token: { existingSecret: 'bg-metrics', item: 'scrape-token' } },
  worker: { separate: true },
  identity: { existingSecret: 'bg-identity' },
  versioning: { enabled: true, deploymentName: 'breakglass-prod' },
  recording: { redactOutput: true },
  codec: { existingSecret: 'bg-codec', keys: [{ id: 'key-2026-12', item: 'new' }, { id: 'key-2026-06', item: 'old' }], webUiOrigins: ['https://temporal.example.internal'] },
  persistence: { enabled: true, storageClass: 'fast', size: '5Gi' },
  ingress: {
    enabled: true,
    className: 'nginx',
    host: 'breakglass.example.internal',
    tlsSecretName: 'breakglass-tls',
    annotations: {
      'nginx.ingress.kubernetes.io/auth-url': 'https://oauth2.example.internal/oauth2/auth',
      'nginx.ingress.kubernetes.io/auth-response-headers': 'X-Auth-Request-User',
    },
  },
  networkPolicy: {
    ingress: {
      // Another controller: its labels replace the defaults (null drops a default label).
      fromProxy: {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'edge' } },
        podSelector: { matchLabels: { 'app.kubernetes.io/name': null, 'app.kubernetes.io/instance': 'edge-nginx' } },
      },
      from: [PROMETHEUS_PEER],
    },
    egress: { pve: { cidrs: ['10.20.0.2/32'] }, temporal: { cidrs: ['0.0.0.0/0'] } },
  },
};

/** Self-hosted Temporal in the cluster with mTLS, token auth, everything in one pod. */
const SELF_HOSTED = {
  devvm: { host: '192.168.50.10' },
  pve: { host: '192.168.50.2' },
  temporal: {
    address: 'temporal-frontend.temporal.svc.cluster.local:7233',
    tls: { enabled: true, existingSecret: 'temporal-mtls', serverName: 'temporal-frontend' },
  },
  auth: { mode: 'token', tokens: [{ operator: 'alice', sha256: HASH_ALICE }] },
  networkPolicy: {
    egress: {
      temporal: {
        peers: [
          {
            namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'temporal' } },
            podSelector: { matchLabels: { 'app.kubernetes.io/component': 'frontend' } },
          },
        ],
      },
    },
  },
};

const DNS_RULE: PolicyRule = {
  to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } }],
  ports: [
    { protocol: 'UDP', port: 53 },
    { protocol: 'TCP', port: 53 },
  ],
};
const ANTHROPIC_RULE: PolicyRule = {
  to: [{ ipBlock: { cidr: '160.79.104.0/23' } }, { ipBlock: { cidr: '153.61.224.0/22' } }, { ipBlock: { cidr: '2607:6bc0::/48' } }],
  ports: [{ protocol: 'TCP', port: 443 }],
};

const POD_SECURITY = { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, fsGroupChangePolicy: 'OnRootMismatch', seccompProfile: { type: 'RuntimeDefault' } };
const CONTAINER_SECURITY = {
  runAsNonRoot: true,
  runAsUser: 10001,
  runAsGroup: 10001,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  privileged: false,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

/** Every pod: hardened, no token, secrets read-only and never world-readable, /tmp writable. */
function expectHardenedPod(pod: PodSpec): void {
  expect(pod.automountServiceAccountToken).toBe(false);
  expect(pod.enableServiceLinks).toBe(false);
  expect(pod.securityContext).toEqual(POD_SECURITY);
  expect(pod.containers).toHaveLength(1);
  const container = pod.containers[0] as Container;
  expect(container.securityContext).toEqual(CONTAINER_SECURITY);
  expect(container.resources?.limits?.memory).toBeTruthy();
  expect(container.resources?.requests?.cpu).toBeTruthy();
  expect(mount(container, 'tmp')).toEqual({ name: 'tmp', mountPath: '/tmp' });
  expect(volume(pod, 'tmp')?.emptyDir).toBeTruthy();
  expect(mount(container, 'config')?.readOnly).toBe(true);
  for (const v of pod.volumes.filter((v) => v.secret)) {
    expect(v.secret?.defaultMode, `${v.name}: 0440`).toBe(0o440);
    expect(mount(container, v.name)?.readOnly, `${v.name} mounted read-only`).toBe(true);
  }
}

/** Secrets only by reference: nothing secret is rendered, anywhere. */
function expectNoSecretMaterial(docs: Manifest[], rendered: string): void {
  expect(docs.filter((doc) => doc.kind === 'Secret')).toEqual([]);
  expect(rendered).not.toMatch(/BEGIN [A-Z ]*PRIVATE KEY|sk-ant-|^\s*stringData:/m);
  expect(docs.filter((doc) => doc.data !== undefined).map((doc) => doc.kind)).toEqual(docs.filter((doc) => doc.kind === 'ConfigMap').map(() => 'ConfigMap'));
  for (const configMap of docs.filter((doc) => doc.kind === 'ConfigMap')) {
    expect(Object.keys(configMap.data ?? {})).toEqual(['config.json']);
    const config = JSON.parse(configMap.data?.['config.json'] as string) as Record<string, unknown>;
    const walk = (node: unknown, path: string): void => {
      if (Array.isArray(node)) node.forEach((item, index) => walk(item, `${path}[${index}]`));
      else if (node && typeof node === 'object') for (const [key, value] of Object.entries(node)) walk(value, path ? `${path}.${key}` : key);
      else if (/(^|\.)(apiKey|token|password|secret|privateKey)$/i.test(path)) throw new Error(`ConfigMap carries a secret at ${path}`);
      else if (/File$/.test(path) && node !== null) expect(node, path).toMatch(/^\/etc\/breakglass\//);
    };
    walk(config, '');
    for (const entry of (config.auth as { tokens: { sha256: string }[] }).tokens) expect(entry.sha256).toMatch(/^[0-9a-f]{64}$/);
  }
}

/**
 * NOTES.txt as `helm install` prints it. `helm template` skips NOTES and `helm install --dry-run`
 * wants a cluster here, so a scratch copy of the chart renders the same file through `tpl`.
 */
async function renderNotes(values?: object): Promise<string> {
  const chart = join(scratch, `notes-chart-${valuesCount++}`);
  await cp(CHART, chart, { recursive: true });
  await cp(join(CHART, 'templates/NOTES.txt'), join(chart, 'notes-probe.txt'));
  await writeFile(
    join(chart, 'templates/notes-probe.yaml'),
    'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-probe\ndata:\n  notes: {{ tpl (.Files.Get "notes-probe.txt") . | quote }}\n',
  );
  const result = await helm(['template', RELEASE, chart, '--namespace', NAMESPACE, '--show-only', 'templates/notes-probe.yaml', ...(await valuesArgs(values))]);
  if (result.code !== 0) throw new Error(result.stderr);
  return (parseAllDocuments(result.stdout)[0]?.toJS() as Manifest).data?.notes as string;
}

/** The config the app would load in a pod: the ConfigMap plus the Deployment's environment. */
async function loadRendered(docs: Manifest[], deployment: Deployment) {
  const configMap = one(docs, 'ConfigMap', `${RELEASE}-breakglass`);
  const text = configMap.data?.['config.json'] as string;
  // The pod's /etc/breakglass is a temporary directory here, with the Anthropic key the loader reads.
  const etc = await mkdtemp(join(scratch, 'etc-'));
  await mkdir(join(etc, 'anthropic'));
  await writeFile(join(etc, 'anthropic/api-key'), 'test-anthropic-key\n');
  // Secrets as the pod mounts them (the proxy secret and metrics token: the console pod only).
  const mounts = deployment.spec.template.spec.containers[0]?.volumeMounts.map((m) => m.name) ?? [];
  if (mounts.includes('proxy-secret')) {
    await mkdir(join(etc, 'proxy-secret'));
    await writeFile(join(etc, 'proxy-secret/secret'), `${PROXY_SECRET}\n`);
  }
  if (mounts.includes('identity')) {
    await mkdir(join(etc, 'identity'));
    await writeFile(join(etc, 'identity/key'), 'test-identity-key-0123456789abcdef0123\n');
  }
  if (mounts.includes('codec-keys')) {
    await mkdir(join(etc, 'codec'));
    for (const id of ['key-2026-12', 'key-2026-06']) await writeFile(join(etc, 'codec', id), `${Buffer.alloc(32, id.length).toString('base64')}\n`);
  }
  if (mounts.includes('metrics-token')) {
    await mkdir(join(etc, 'metrics-token'));
    await writeFile(join(etc, 'metrics-token/token'), 'test-metrics-token-0123456789\n');
  }
  const file = JSON.parse(text.replaceAll('/etc/breakglass/', `${etc}/`)) as Record<string, unknown>;
  const env = envOf(deployment.spec.template.spec.containers[0] as Container);
  return loadConfig({ file, env: { ...env, BREAKGLASS_CONFIG: '' } });
}

beforeAll(async () => {
  if (!existsSync(HELM)) {
    await new Promise<void>((resolve, reject) =>
      execFile('sh', [join(ROOT, 'scripts/provision.sh'), 'helm'], { timeout: 900_000 }, (error) => (error ? reject(error) : resolve())),
    );
  }
  scratch = await mkdtemp(join(tmpdir(), 'bg-helm-'));
}, 900_000);

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('helm lint', () => {
  it('when linted with the default values, then it passes strictly', async () => {
    const result = await lint();
    expect(result.stderr + result.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    expect(result.code).toBe(0);
  });

  it('when linted with non-default values (separate worker, ingress, PVC, proxy auth, Temporal Cloud), then it passes strictly', async () => {
    for (const values of [NON_DEFAULT, SELF_HOSTED]) {
      const result = await lint(values);
      expect(result.code, result.stdout + result.stderr).toBe(0);
    }
  });
});

describe('helm template with the default values', () => {
  let docs: Manifest[];
  let rendered: string;
  let deployment: Deployment;

  beforeAll(async () => {
    rendered = (await template()).stdout;
    docs = await render();
    deployment = one<Deployment>(docs, 'Deployment', `${RELEASE}-breakglass`);
  });

  it('when rendered, then it is one console pod with its Service, ServiceAccount, ConfigMap and NetworkPolicy, and nothing else', () => {
    expect(kinds(docs)).toEqual(['ConfigMap/bg-breakglass', 'Deployment/bg-breakglass', 'NetworkPolicy/bg-breakglass', 'Service/bg-breakglass', 'ServiceAccount/bg-breakglass']);
  });

  it('when the pod runs, then server and worker share it, hardened, with probes on /healthz and /readyz', () => {
    const pod = deployment.spec.template.spec;
    expectHardenedPod(pod);
    expect(deployment.spec.replicas).toBe(1);
    const container = pod.containers[0] as Container;
    expect(envOf(container)).toMatchObject({ BREAKGLASS_ROLES: 'server,worker', BREAKGLASS_CONFIG: '/etc/breakglass/config/config.json', BREAKGLASS_DATA_DIR: '/data', HOST: '0.0.0.0', PORT: '8080' });
    // Unversioned unless asked for: no build id, sessions follow the patched() discipline only.
    expect(envOf(container).BREAKGLASS_BUILD_ID).toBeUndefined();
    expect(container.ports).toEqual([{ name: 'http', containerPort: 8080, protocol: 'TCP' }]);
    expect(container.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(container.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http' });
    expect(container.startupProbe?.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(container.image).toBe('registry.example.internal/breakglass:0.1.0');
    // No PVC by default: forensics copies go to an emptyDir.
    expect(volume(pod, 'data')?.emptyDir).toBeTruthy();
    expect(mount(container, 'data')?.mountPath).toBe('/data');
  });

  it('when the ServiceAccount is made, then it mounts no token (neither it nor the pod)', () => {
    expect(one(docs, 'ServiceAccount', `${RELEASE}-breakglass`).automountServiceAccountToken).toBe(false);
    expect(deployment.spec.template.spec.serviceAccountName).toBe(`${RELEASE}-breakglass`);
    expect(deployment.spec.template.spec.automountServiceAccountToken).toBe(false);
  });

  it('when secrets are needed, then they are existing Secrets mounted read-only by reference, never rendered', () => {
    expectNoSecretMaterial(docs, rendered);
    const pod = deployment.spec.template.spec;
    expect(volume(pod, 'ssh')?.secret).toEqual({
      secretName: 'breakglass-ssh',
      defaultMode: 0o440,
      items: [
        { key: 'devvm_id_ed25519', path: 'devvm_key' },
        { key: 'pve_id_ed25519', path: 'pve_key' },
        { key: 'known_hosts', path: 'known_hosts' },
      ],
    });
    // The agent is off without an Anthropic key Secret: nothing mounted for it.
    expect(volume(pod, 'anthropic')).toBeUndefined();
  });

  it('when the NetworkPolicy applies, then ingress is the HTTP port from the ingress controller pods only, and egress is DNS only (nothing else is configured yet)', () => {
    const policy = one<NetworkPolicy>(docs, 'NetworkPolicy', `${RELEASE}-breakglass`);
    expect(policy.spec.podSelector.matchLabels).toEqual(deployment.spec.template.metadata.labels);
    expect(policy.spec.policyTypes).toEqual(['Ingress', 'Egress']);
    // One rule, one peer: namespace AND pod selector in the same peer. A rule without `from`, or
    // an empty `from`, would admit every source.
    expect(policy.spec.ingress).toEqual([{ ports: [{ protocol: 'TCP', port: 8080 }], from: [INGRESS_NGINX_PEER] }]);
    for (const rule of policy.spec.ingress) expect(rule.from?.length, 'every ingress rule names its peers').toBeGreaterThan(0);
    expect(policy.spec.egress).toEqual([DNS_RULE]);
  });

  it('when token auth is used, then no proxy secret and no metrics token are mounted or configured', () => {
    const pod = deployment.spec.template.spec;
    expect(volume(pod, 'proxy-secret')).toBeUndefined();
    expect(volume(pod, 'metrics-token')).toBeUndefined();
    const config = JSON.parse(one(docs, 'ConfigMap', `${RELEASE}-breakglass`).data?.['config.json'] as string) as { auth: { proxy: Record<string, unknown> }; metrics?: unknown };
    expect(config.auth.proxy).toEqual({ header: 'x-forwarded-user', trustedCidrs: [], secretHeader: 'x-breakglass-proxy-secret' });
    expect(config.metrics).toBeUndefined();
  });

  it('when the app loads the rendered config, then it refuses to start naming the first value still to set', async () => {
    const missing = ['devvm.host', 'pve.host', 'temporal.address', 'auth.tokens'];
    const error = await loadRendered(docs, deployment).then(() => null, (e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect(missing).toContain((error as ConfigError).key);
    expect(await renderNotes()).toContain(`NOT READY: the console refuses to start until these values are set: ${missing.join(', ')}`);
    expect(await renderNotes(SELF_HOSTED)).not.toContain('NOT READY');
  });
});

describe('helm template with non-default values (separate worker, ingress, PVC, proxy auth, Temporal Cloud API key)', () => {
  let docs: Manifest[];
  let rendered: string;
  let console_: Deployment;
  let worker: Deployment;

  beforeAll(async () => {
    rendered = (await template(NON_DEFAULT)).stdout;
    docs = await render(NON_DEFAULT);
    console_ = one<Deployment>(docs, 'Deployment', `${RELEASE}-breakglass`);
    worker = one<Deployment>(docs, 'Deployment', `${RELEASE}-breakglass-worker`);
  });

  it('when rendered, then a worker Deployment, its NetworkPolicy, an Ingress and a PVC join the console, and still no Secret', () => {
    expect(kinds(docs)).toEqual([
      'ConfigMap/bg-breakglass',
      'Deployment/bg-breakglass',
      'Deployment/bg-breakglass-worker',
      'Ingress/bg-breakglass',
      'NetworkPolicy/bg-breakglass',
      'NetworkPolicy/bg-breakglass-worker',
      'PersistentVolumeClaim/bg-breakglass',
      'Service/bg-breakglass',
      'ServiceAccount/bg-breakglass',
    ]);
    expectNoSecretMaterial(docs, rendered);
  });

  it('when the worker is separate, then the console runs the server role without SSH keys and the worker runs the worker role with them', () => {
    const consolePod = console_.spec.template.spec;
    const workerPod = worker.spec.template.spec;
    expectHardenedPod(consolePod);
    expectHardenedPod(workerPod);
    const consoleContainer = consolePod.containers[0] as Container;
    const workerContainer = workerPod.containers[0] as Container;
    expect(envOf(consoleContainer).BREAKGLASS_ROLES).toBe('server');
    expect(envOf(workerContainer).BREAKGLASS_ROLES).toBe('worker');
    expect(console_.metadata.annotations?.['breakglass/roles']).toBe('server');
    // Different pods: the selectors must not overlap.
    expect(console_.spec.selector.matchLabels['app.kubernetes.io/component']).toBe('console');
    expect(worker.spec.selector.matchLabels['app.kubernetes.io/component']).toBe('worker');
    // SSH keys only where SSH happens.
    expect(volume(consolePod, 'ssh')).toBeUndefined();
    expect(mount(consoleContainer, 'ssh')).toBeUndefined();
    expect(volume(workerPod, 'ssh')?.secret).toEqual({
      secretName: 'bg-ssh',
      defaultMode: 0o440,
      items: [
        { key: 'devvm', path: 'devvm_key' },
        { key: 'pve', path: 'pve_key' },
      ],
    });
    // The worker serves no HTTP: no port, no HTTP probes.
    expect(workerContainer.ports).toBeUndefined();
    expect(workerContainer.livenessProbe).toBeUndefined();
    expect(consoleContainer.readinessProbe?.httpGet.path).toBe('/readyz');
    // Pulled by digest.
    expect(workerContainer.image).toBe(`ghcr.io/example/breakglass@sha256:${'0'.repeat(63)}1`);
    expect(consoleContainer.image).toBe(workerContainer.image);
  });

  it('when forensics persist, then the worker (which writes them) mounts the PVC and rolls with Recreate', () => {
    const pvc = one<Manifest & { spec: { accessModes: string[]; storageClassName: string; resources: { requests: { storage: string } } } }>(docs, 'PersistentVolumeClaim', `${RELEASE}-breakglass`);
    expect(pvc.spec).toEqual({ accessModes: ['ReadWriteOnce'], storageClassName: 'fast', resources: { requests: { storage: '5Gi' } } });
    expect(volume(worker.spec.template.spec, 'data')?.persistentVolumeClaim).toEqual({ claimName: `${RELEASE}-breakglass` });
    expect(worker.spec.strategy.type).toBe('Recreate');
    expect(volume(console_.spec.template.spec, 'data')?.emptyDir).toBeTruthy();
    expect(console_.spec.strategy.type).toBe('RollingUpdate');
  });

  it('when Temporal Cloud is used with an API key, then the key and the Anthropic key are mounted from their Secrets and TLS is on', () => {
    for (const pod of [console_.spec.template.spec, worker.spec.template.spec]) {
      expect(volume(pod, 'temporal-api-key')?.secret).toEqual({ secretName: 'temporal-cloud', defaultMode: 0o440, items: [{ key: 'key', path: 'api-key' }] });
      expect(volume(pod, 'anthropic')?.secret).toEqual({ secretName: 'anthropic', defaultMode: 0o440, items: [{ key: 'api-key', path: 'api-key' }] });
    }
    const config = JSON.parse(one(docs, 'ConfigMap', `${RELEASE}-breakglass`).data?.['config.json'] as string) as { temporal: Record<string, unknown> };
    expect(config.temporal).toEqual({
      address: 'acme.a1b2c.tmprl.cloud:7233',
      namespace: 'acme.a1b2c',
      taskQueue: 'breakglass',
      uiUrl: 'https://cloud.temporal.io/namespaces/acme.a1b2c',
      // TLS on (system roots, no client certificate): fields present but unset.
      tls: { caFile: null, certFile: null, keyFile: null, serverName: null },
      apiKeyFile: '/etc/breakglass/temporal-api-key/api-key',
      deployment: { name: 'breakglass-prod', promote: true },
    });
  });

  it('when auth.mode is proxy, then the shared secret is mounted from its Secret into the console pod only, and the config names the file', () => {
    const consolePod = console_.spec.template.spec;
    const consoleContainer = consolePod.containers[0] as Container;
    expect(volume(consolePod, 'proxy-secret')?.secret).toEqual({ secretName: 'bg-proxy', defaultMode: 0o440, items: [{ key: 'shared', path: 'secret' }] });
    expect(mount(consoleContainer, 'proxy-secret')).toEqual({ name: 'proxy-secret', mountPath: '/etc/breakglass/proxy-secret', readOnly: true });
    // The worker authenticates no one: it never holds the proxy's secret.
    expect(volume(worker.spec.template.spec, 'proxy-secret')).toBeUndefined();
    expect(mount(worker.spec.template.spec.containers[0] as Container, 'proxy-secret')).toBeUndefined();
    const config = JSON.parse(one(docs, 'ConfigMap', `${RELEASE}-breakglass`).data?.['config.json'] as string) as { auth: { proxy: Record<string, unknown> } };
    expect(config.auth.proxy).toEqual({ header: 'x-auth-request-user', trustedCidrs: ['10.42.0.0/16'], secretHeader: 'x-breakglass-proxy-secret', secretFile: '/etc/breakglass/proxy-secret/secret' });
  });

  it('when a metrics token Secret is named, then it is mounted into the console pod only and the config names it as metrics.tokenFile', () => {
    const consolePod = console_.spec.template.spec;
    expect(volume(consolePod, 'metrics-token')?.secret).toEqual({ secretName: 'bg-metrics', defaultMode: 0o440, items: [{ key: 'scrape-token', path: 'token' }] });
    expect(mount(consolePod.containers[0] as Container, 'metrics-token')).toEqual({ name: 'metrics-token', mountPath: '/etc/breakglass/metrics-token', readOnly: true });
    expect(volume(worker.spec.template.spec, 'metrics-token')).toBeUndefined();
    const config = JSON.parse(one(docs, 'ConfigMap', `${RELEASE}-breakglass`).data?.['config.json'] as string) as { metrics: unknown };
    expect(config.metrics).toEqual({ tokenFile: '/etc/breakglass/metrics-token/token' });
  });

  it('when console and worker run in separate pods, then both mount the shared identity key and the config names it', () => {
    for (const pod of [console_.spec.template.spec, worker.spec.template.spec]) {
      expect(volume(pod, 'identity')?.secret).toEqual({ secretName: 'bg-identity', defaultMode: 0o440, items: [{ key: 'key', path: 'key' }] });
      expect(mount(pod.containers[0] as Container, 'identity')).toEqual({ name: 'identity', mountPath: '/etc/breakglass/identity', readOnly: true });
    }
    const config = JSON.parse(one(docs, 'ConfigMap', `${RELEASE}-breakglass`).data?.['config.json'] as string) as { identity: unknown };
    expect(config.identity).toEqual({ keyFile: '/etc/breakglass/identity/key' });
  });

  it('when codec keys are named, then both pods mount them as one file per key id and the config lists them in order', () => {
    for (const pod of [console_.spec.template.spec, worker.spec.template.spec]) {
      expect(volume(pod, 'codec-keys')?.secret).toEqual({ secretName: 'bg-codec', defaultMode: 0o440, items: [{ key: 'new', path: 'key-2026-12' }, { key: 'old', path: 'key-2026-06' }] });
      expect(mount(pod.containers[0] as Container, 'codec-keys')).toEqual({ name: 'codec-keys', mountPath: '/etc/breakglass/codec', readOnly: true });
    }
    const config = JSON.parse(one(docs, 'ConfigMap', `${RELEASE}-breakglass`).data?.['config.json'] as string) as { codec: unknown };
    expect(config.codec).toEqual({
      enabled: true,
      compress: true,
      keys: [
        { id: 'key-2026-12', file: '/etc/breakglass/codec/key-2026-12' },
        { id: 'key-2026-06', file: '/etc/breakglass/codec/key-2026-06' },
      ],
      webUiOrigins: ['https://temporal.example.internal'],
    });
  });

  it('when versioning is on, then both pods poll as the image digest\'s build and each new build makes itself current', () => {
    for (const pod of [console_.spec.template.spec, worker.spec.template.spec]) expect(envOf(pod.containers[0] as Container).BREAKGLASS_BUILD_ID).toBe('0'.repeat(20));
    const config = JSON.parse(one(docs, 'ConfigMap', `${RELEASE}-breakglass`).data?.['config.json'] as string) as { temporal: { deployment: unknown } };
    expect(config.temporal.deployment).toEqual({ name: 'breakglass-prod', promote: true });
  });

  it('when installed, then NOTES lists the proxy, identity, metrics and codec Secrets to create', async () => {
    const notes = await renderNotes(NON_DEFAULT);
    expect(notes).toContain('Secret bg-codec: new, old (the payload codec keys; the first encrypts history)');
    expect(notes).toContain('Secret bg-identity: key (the key console and worker share to sign and check operator messages)');
    expect(notes).toContain('Secret bg-proxy: shared (the shared secret your proxy sends in x-breakglass-proxy-secret)');
    expect(notes).toContain('Secret bg-metrics: scrape-token (the bearer token Prometheus presents for /metrics)');
  });

  it('when the NetworkPolicies apply, then egress is exactly DNS, Temporal, the two SSH ports and the model API, and only where needed', () => {
    const consolePolicy = one<NetworkPolicy>(docs, 'NetworkPolicy', `${RELEASE}-breakglass`);
    const workerPolicy = one<NetworkPolicy>(docs, 'NetworkPolicy', `${RELEASE}-breakglass-worker`);
    const temporalRule: PolicyRule = { to: [{ ipBlock: { cidr: '0.0.0.0/0' } }], ports: [{ protocol: 'TCP', port: 7233 }] };
    // The console (server role): no SSH, no model API.
    expect(consolePolicy.spec.egress).toEqual([DNS_RULE, temporalRule]);
    // The proxy peer with the overridden labels, then the further peers (Prometheus).
    const edgeProxy: PolicyPeer = {
      namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'edge' } },
      podSelector: { matchLabels: { 'app.kubernetes.io/instance': 'edge-nginx' } },
    };
    expect(consolePolicy.spec.ingress).toEqual([{ ports: [{ protocol: 'TCP', port: 8080 }], from: [edgeProxy, PROMETHEUS_PEER] }]);
    // The worker: devvm by its IP literal on its SSH port, PVE by the configured CIDR.
    expect(workerPolicy.spec.podSelector.matchLabels['app.kubernetes.io/component']).toBe('worker');
    expect(workerPolicy.spec.ingress).toEqual([]);
    expect(workerPolicy.spec.egress).toEqual([
      DNS_RULE,
      temporalRule,
      { to: [{ ipBlock: { cidr: '10.20.0.12/32' } }], ports: [{ protocol: 'TCP', port: 2222 }] },
      { to: [{ ipBlock: { cidr: '10.20.0.2/32' } }], ports: [{ protocol: 'TCP', port: 22 }] },
      ANTHROPIC_RULE,
    ]);
  });

  it('when exposed, then the Ingress routes the host to the Service with TLS and the forward-auth annotations', () => {
    const ingress = one<Ingress>(docs, 'Ingress', `${RELEASE}-breakglass`);
    expect(ingress.spec.ingressClassName).toBe('nginx');
    expect(ingress.spec.tls).toEqual([{ hosts: ['breakglass.example.internal'], secretName: 'breakglass-tls' }]);
    expect(ingress.spec.rules[0]?.host).toBe('breakglass.example.internal');
    expect(ingress.spec.rules[0]?.http.paths[0]?.backend.service).toEqual({ name: `${RELEASE}-breakglass`, port: { name: 'http' } });
    expect(ingress.metadata.annotations?.['nginx.ingress.kubernetes.io/auth-url']).toBe('https://oauth2.example.internal/oauth2/auth');
  });

  it('when the app loads the rendered config with the console pod environment, then it accepts it as configured', async () => {
    const config = await loadRendered(docs, console_);
    expect(config.roles).toEqual({ server: true, worker: false });
    expect(config.auth).toMatchObject({ mode: 'proxy', proxy: { header: 'x-auth-request-user', secretHeader: 'x-breakglass-proxy-secret', secret: PROXY_SECRET }, operators: ['alice', 'bob'] });
    expect(config.auth.proxy.trustedCidrs.map(([network, bits]) => `${network.toString()}/${bits}`)).toEqual(['10.42.0.0/16']);
    expect(config.metrics.token).toBe('test-metrics-token-0123456789');
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(config.dataDir).toBe('/data');
    expect(config.devvm).toMatchObject({ host: '10.20.0.12', port: 2222, user: 'bg', knownHostsFile: null, fingerprints: [FP('B')] });
    expect(config.temporal.tls).toEqual({ caFile: null, certFile: null, keyFile: null, serverName: null });
    // The console pod knows an agent is configured but never reads its key; the worker does.
    expect(config.agent).toMatchObject({ model: 'claude-opus-4-1', apiKey: null, configured: true });
    expect(config.policy).toEqual({ mutatingVerbs: 'two-person', devvmCommands: 'allowlist', toolCallsPerMessage: 12 });
    expect(config.approvals).toEqual({ expiryMinutes: 5 });
    expect(config.lease).toEqual({ holdMinutes: 0 });
    const workerConfig = await loadRendered(docs, worker);
    expect(workerConfig.roles).toEqual({ server: false, worker: true });
    expect(workerConfig.agent).toMatchObject({ apiKey: 'test-anthropic-key', configured: true });
    expect(workerConfig.auth.proxy.secret).toBeNull();
    expect(workerConfig.metrics.token).toBeNull();
    // Both roles hold the whole key ring, the encrypting key first.
    for (const loaded of [config, workerConfig]) expect(loaded.codec.keys.map(({ id }) => id)).toEqual(['key-2026-12', 'key-2026-06']);
    expect(workerConfig.temporal.deployment).toEqual({ name: 'breakglass-prod', buildId: '0'.repeat(20), promote: true });
    expect(workerConfig.recording).toEqual({ redactOutput: true });
  });
});

describe('NetworkPolicy ingress without the proxy peer', () => {
  const ingressOf = async (values: object) => one<NetworkPolicy>(await render(values), 'NetworkPolicy', `${RELEASE}-breakglass`).spec.ingress;

  it('when fromProxy is off and no further peer is listed, then nothing may connect (no rule, never an open one)', async () => {
    expect(await ingressOf({ networkPolicy: { ingress: { fromProxy: { enabled: false } } } })).toEqual([]);
  });

  it('when fromProxy is off and Prometheus is listed, then only Prometheus reaches the HTTP port', async () => {
    expect(await ingressOf({ networkPolicy: { ingress: { fromProxy: { enabled: false }, from: [PROMETHEUS_PEER] } } })).toEqual([
      { ports: [{ protocol: 'TCP', port: 8080 }], from: [PROMETHEUS_PEER] },
    ]);
  });
});

describe('helm template with self-hosted Temporal over mTLS and token auth', () => {
  let docs: Manifest[];
  let deployment: Deployment;

  beforeAll(async () => {
    docs = await render(SELF_HOSTED);
    deployment = one<Deployment>(docs, 'Deployment', `${RELEASE}-breakglass`);
  });

  it('when mTLS is configured, then CA, certificate and key come from the TLS Secret and the config points at them', async () => {
    expect(volume(deployment.spec.template.spec, 'temporal-tls')?.secret).toEqual({
      secretName: 'temporal-mtls',
      defaultMode: 0o440,
      items: [
        { key: 'ca.crt', path: 'ca.crt' },
        { key: 'tls.crt', path: 'tls.crt' },
        { key: 'tls.key', path: 'tls.key' },
      ],
    });
    const config = await loadRendered(docs, deployment);
    expect(config.temporal.address).toBe('temporal-frontend.temporal.svc.cluster.local:7233');
    expect(config.temporal.tls).toEqual({
      caFile: expect.stringMatching(/temporal-tls\/ca\.crt$/),
      certFile: expect.stringMatching(/temporal-tls\/tls\.crt$/),
      keyFile: expect.stringMatching(/temporal-tls\/tls\.key$/),
      serverName: 'temporal-frontend',
    });
    expect(config.auth.tokens).toEqual([{ operator: 'alice', sha256: HASH_ALICE }]);
    expect(config.roles).toEqual({ server: true, worker: true });
  });

  it('when everything runs in one pod, then its egress is DNS, the Temporal frontend pods, both SSH hosts, and no model API without a key', () => {
    const policy = one<NetworkPolicy>(docs, 'NetworkPolicy', `${RELEASE}-breakglass`);
    expect(policy.spec.egress).toEqual([
      DNS_RULE,
      { to: SELF_HOSTED.networkPolicy.egress.temporal.peers, ports: [{ protocol: 'TCP', port: 7233 }] },
      { to: [{ ipBlock: { cidr: '192.168.50.10/32' } }], ports: [{ protocol: 'TCP', port: 22 }] },
      { to: [{ ipBlock: { cidr: '192.168.50.2/32' } }], ports: [{ protocol: 'TCP', port: 22 }] },
    ]);
  });
});

describe('bad values are refused, naming the value', () => {
  const schemaCases: [string, object, RegExp][] = [
    ['an unknown auth mode', { auth: { mode: 'anonymous' } }, /\/auth\/mode.*'token', 'proxy'/],
    ['the loopback-only lab mode', { auth: { mode: 'lab' } }, /\/auth\/mode/],
    ['an unknown mutation policy', { policy: { mutatingVerbs: 'yolo' } }, /\/policy\/mutatingVerbs/],
    ['a token instead of its hash', { auth: { tokens: [{ operator: 'alice', sha256: 'my-secret-token' }] } }, /\/auth\/tokens\/0\/sha256/],
    ['an unknown key', { debugShell: true }, /additional properties 'debugShell' not allowed/],
    ['a misspelt nested key', { networkPolicy: { egres: {} } }, /\/networkPolicy.*additional properties 'egres' not allowed/],
    ['running as root', { securityContext: { runAsUser: 0 } }, /\/securityContext\/runAsUser/],
    ['a privileged port', { port: 80 }, /\/port/],
    ['an SSH port out of range', { devvm: { port: 70000 } }, /\/devvm\/port/],
    ['a bad host key fingerprint', { pve: { fingerprints: ['MD5:aa:bb'] } }, /\/pve\/fingerprints\/0/],
    ['a CIDR without a prefix', { networkPolicy: { egress: { devvm: { cidrs: ['10.0.0.1'] } } } }, /\/networkPolicy\/egress\/devvm\/cidrs\/0/],
    ['a listen address that is loopback', { listenHost: '127.0.0.1' }, /\/listenHost/],
    ['a malformed image digest', { image: { digest: 'sha256:xyz' } }, /\/image\/digest/],
    ['a string where a number belongs', { target: { vmid: '102' } }, /\/target\/vmid/],
    ['the removed controllerNamespace (now fromProxy)', { networkPolicy: { ingress: { controllerNamespace: 'ingress-nginx' } } }, /\/networkPolicy\/ingress.*additional properties 'controllerNamespace' not allowed/],
    ['a pod selector that is not a LabelSelector', { networkPolicy: { ingress: { fromProxy: { podSelector: { app: 'nginx' } } } } }, /\/networkPolicy\/ingress\/fromProxy\/podSelector.*additional properties 'app' not allowed/],
    ['a bad proxy secret Secret name', { auth: { proxy: { secret: { existingSecret: 'Not_A_Name' } } } }, /\/auth\/proxy\/secret\/existingSecret/],
    ['a misspelt metrics token key', { metrics: { token: { existingSecrets: 'x' } } }, /\/metrics\/token.*additional properties 'existingSecrets' not allowed/],
    ['a deployment name with a dot', { versioning: { deploymentName: 'breakglass.v2' } }, /\/versioning\/deploymentName/],
    ['a codec key id with a space', { codec: { existingSecret: 'bg-codec', keys: [{ id: 'key a', item: 'a' }] } }, /\/codec\/keys\/0\/id/],
    ['a codec Web UI origin with a path', { codec: { webUiOrigins: ['https://temporal.example.com/namespaces'] } }, /\/codec\/webUiOrigins\/0/],
  ];

  it.each(schemaCases)('when the values carry %s, then lint and template fail naming the key', async (_what, values, message) => {
    const linted = await lint(values);
    expect(linted.code).not.toBe(0);
    expect(linted.stdout + linted.stderr).toMatch(message);
    const templated = await template(values);
    expect(templated.code).not.toBe(0);
    expect(templated.stderr).toMatch(message);
  });

  it('when --set gives an unknown auth mode, then helm lint fails naming auth.mode', async () => {
    const result = await helm(['lint', CHART, '--set', 'auth.mode=anonymous']);
    expect(result.code).not.toBe(0);
    expect(result.stdout + result.stderr).toMatch(/at '\/auth\/mode': value must be one of 'token', 'proxy'/);
  });

  const templateCases: [string, object, string][] = [
    ['an Ingress without a host', { ingress: { enabled: true } }, 'ingress.host: required when ingress.enabled is true'],
    ['an SSH host given by name with no CIDR for the policy', { devvm: { host: 'devvm.lan' } }, 'networkPolicy.egress.devvm.cidrs: required because devvm.host (devvm.lan) is not an IP address'],
    ['a Temporal address with no egress rule', { temporal: { address: 'temporal:7233' } }, 'networkPolicy.egress.temporal: set cidrs or peers'],
    ['a TLS Secret with TLS off', { temporal: { tls: { existingSecret: 'x' } } }, 'temporal.tls.enabled: must be true'],
    ['proxy auth without trusted proxies', { auth: { mode: 'proxy', operators: ['alice'] } }, 'auth.proxy.trustedCidrs and auth.operators'],
    ['proxy auth without the shared secret', { auth: { mode: 'proxy', operators: ['alice'], proxy: { trustedCidrs: ['10.0.0.0/8'] } } }, 'auth.proxy.secret.existingSecret: required when auth.mode is proxy'],
    ['the secret header the same as the identity header', { auth: { proxy: { header: 'X-User', secretHeader: 'x-user' } } }, 'auth.proxy.secretHeader: must differ from auth.proxy.header'],
    ['a separate worker without the shared identity key', { worker: { separate: true } }, 'identity.existingSecret: required when worker.separate is true'],
    ['a proxy peer without selectors', { networkPolicy: { ingress: { fromProxy: { namespaceSelector: null, podSelector: null } } } }, 'networkPolicy.ingress.fromProxy: set namespaceSelector and/or podSelector, or enabled: false'],
    ['codec keys without their Secret', { codec: { keys: [{ id: 'k1', item: 'k1' }] } }, 'codec.existingSecret: required when codec.keys is set'],
    ['a codec Secret without its keys listed', { codec: { existingSecret: 'bg-codec' } }, 'codec.keys: list the Secret\'s keys as { id, item }, the encrypting key first'],
    ['no known_hosts and no fingerprints', { ssh: { items: { knownHosts: '' } }, devvm: { host: '10.0.0.5' } }, 'ssh.items.knownHosts: empty'],
  ];

  it.each(templateCases)('when the values give %s, then helm template fails naming the value', async (_what, values, message) => {
    const result = await template(values);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(message);
  });
});
