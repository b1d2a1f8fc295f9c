/**
 * The image, checked without a Docker engine: static rules on the Dockerfile and .dockerignore,
 * and the production artifacts the image's build stage makes (scripts/build-dist.ts), run the
 * way the image runs them: `node dist/server.mjs` with the prebuilt workflow bundle, against a
 * real Temporal dev server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTemporalDev, type TemporalDev } from '../lab/temporal-dev.js';
import { buildDist, type DistResult } from '../scripts/build-dist.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const packageJson = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  engines: { node: string };
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

// ---- a small Dockerfile reader: continuation lines joined, comments dropped ----

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}
interface Stage {
  image: string;
  name: string | null;
  instructions: Instruction[];
}

function parseDockerfile(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending: { text: string; line: number } | null = null;
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && !pending)) return;
    const continues = line.endsWith('\\');
    const body = continues ? line.slice(0, -1) : line;
    pending = pending ? { text: `${pending.text} ${body}`, line: pending.line } : { text: body, line: index + 1 };
    if (!continues) {
      const match = /^(\S+)\s*(.*)$/s.exec(pending.text.trim());
      if (match) instructions.push({ keyword: (match[1] as string).toUpperCase(), args: (match[2] as string).replace(/\s+/g, ' ').trim(), line: pending.line });
      pending = null;
    }
  });
  return instructions;
}

function stagesOf(instructions: Instruction[]): Stage[] {
  const stages: Stage[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === 'FROM') {
      const words = instruction.args.split(' ').filter((word) => !word.startsWith('--'));
      const asIndex = words.findIndex((word) => word.toUpperCase() === 'AS');
      stages.push({ image: words[0] as string, name: asIndex >= 0 ? (words[asIndex + 1] ?? null) : null, instructions: [] });
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  return stages;
}

/** Exec-form (JSON array) arguments, or null for shell form. */
function execForm(args: string): string[] | null {
  try {
    const parsed: unknown = JSON.parse(args);
    return Array.isArray(parsed) && parsed.every((item) => typeof item === 'string') ? parsed : null;
  } catch {
    return null;
  }
}

/** COPY/ADD: flags, sources, destination. */
function copyParts(args: string): { flags: Record<string, string>; sources: string[]; dest: string } {
  const words = args.split(' ');
  const flags: Record<string, string> = {};
  while (words[0]?.startsWith('--')) {
    const [flag, value = ''] = (words.shift() as string).slice(2).split('=');
    flags[flag as string] = value;
  }
  const dest = words.pop() as string;
  return { flags, sources: words, dest };
}

// ---- .dockerignore, evaluated the way the builder does (last matching rule wins; a rule that
// matches a parent directory matches everything below it) ----

interface IgnoreRule {
  negate: boolean;
  regex: RegExp;
  pattern: string;
}

function ignoreRules(text: string): IgnoreRule[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const negate = line.startsWith('!');
      const pattern = (negate ? line.slice(1) : line).trim().replace(/^\/+/, '').replace(/\/+$/, '');
      let source = '';
      for (let i = 0; i < pattern.length; i++) {
        const char = pattern[i] as string;
        if (char === '*' && pattern[i + 1] === '*') {
          i++;
          if (pattern[i + 1] === '/') {
            i++;
            source += '(?:.*/)?';
          } else {
            source += '.*';
          }
        } else if (char === '*') {
          source += '[^/]*';
        } else if (char === '?') {
          source += '[^/]';
        } else {
          source += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
        }
      }
      return { negate, regex: new RegExp(`^${source}$`), pattern: line };
    });
}

function excludedFromContext(path: string, rules: IgnoreRule[]): boolean {
  const parts = path.split('/');
  const candidates = parts.map((_, index) => parts.slice(0, index + 1).join('/'));
  let excluded = false;
  for (const rule of rules) if (candidates.some((candidate) => rule.regex.test(candidate))) excluded = !rule.negate;
  return excluded;
}

function filesUnder(relativeDir: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
      const path = `${dir}/${entry.name}`;
      if (entry.name === 'node_modules' || entry.name === 'dist') continue;
      if (entry.isDirectory()) walk(path);
      else out.push(path);
    }
  };
  walk(relativeDir);
  return out;
}

const dockerfileText = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const instructions = parseDockerfile(dockerfileText);
const stages = stagesOf(instructions);
const finalStage = stages.at(-1) as Stage;
const stageNames = new Set(stages.map((stage) => stage.name).filter(Boolean));
const externalImages = stages.map((stage) => stage.image).filter((image) => !stageNames.has(image));
const rules = ignoreRules(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));
const all = (keyword: string, stage?: Stage) => (stage ? stage.instructions : instructions).filter((i) => i.keyword === keyword);
/** ENV/ARG as name → value ("NAME=value …", the legacy "ENV NAME value", or a bare "ARG NAME"). */
function variables(instruction: Instruction): [string, string][] {
  const words = instruction.args.match(/(?:[^\s"]+|"[^"]*")+/g) ?? [];
  const unquote = (text: string) => text.replace(/"/g, '');
  if (words.length > 0 && !(words[0] as string).includes('=')) {
    return instruction.keyword === 'ENV' ? [[words[0] as string, unquote(words.slice(1).join(' '))]] : words.map((word) => [word, '']);
  }
  return words.map((word) => {
    const at = word.indexOf('=');
    return at < 0 ? [word, ''] : [word.slice(0, at), unquote(word.slice(at + 1))];
  });
}
const envOf = (stage: Stage): Record<string, string> => Object.fromEntries(all('ENV', stage).flatMap(variables));

describe('Dockerfile (static)', () => {
  it('when it names base images, then every one is pinned to an exact version, the same in every stage', () => {
    expect(externalImages.length).toBeGreaterThan(0);
    for (const image of externalImages) {
      expect(image, `${image}: no build-arg indirection in FROM`).not.toContain('$');
      const [name, tag] = image.split('@')[0]!.split(':');
      expect(name, image).toBeTruthy();
      expect(tag, `${image}: a tag is required (never the implicit latest)`).toBeTruthy();
      expect(tag, `${image}: "latest" floats`).not.toMatch(/latest/i);
      // An exact MAJOR.MINOR.PATCH (a bare "20" or "20-slim" floats across releases).
      expect(tag, `${image}: tag must start with an exact x.y.z version`).toMatch(/^\d+\.\d+\.\d+(-[a-z0-9.-]+)?$/);
    }
    expect(new Set(externalImages).size, 'one base for all stages: node_modules are installed by the runtime Node').toBe(1);
  });

  it('when the base is chosen, then it is glibc Debian (the Temporal addon has no musl build) and the Node the package asks for', () => {
    const base = externalImages[0] as string;
    expect(base).toMatch(/^node:/);
    expect(base).not.toMatch(/alpine|musl/);
    expect(base).toMatch(/-(bookworm|trixie|bullseye)(-slim)?$/);
    const [major, minor] = (/:(\d+)\.(\d+)\.\d+/.exec(base) ?? []).slice(1).map(Number);
    const [needMajor, needMinor] = (/>=\s*(\d+)\.(\d+)/.exec(packageJson.engines.node) ?? []).slice(1).map(Number);
    expect(major).toBe(needMajor);
    expect(minor as number).toBeGreaterThanOrEqual(needMinor as number);
  });

  it('when the final stage runs, then it is a numeric non-root user and nothing switches back', () => {
    const users = all('USER', finalStage);
    expect(users.length).toBeGreaterThan(0);
    for (const user of users) {
      expect(user.args, 'numeric uid[:gid], so runAsNonRoot can verify it').toMatch(/^\d+(:\d+)?$/);
      expect(Number(user.args.split(':')[0])).toBeGreaterThan(0);
      expect(Number(user.args.split(':')[1] ?? 1)).toBeGreaterThan(0);
    }
    const lastUser = users.at(-1) as Instruction;
    expect(Number(lastUser.args.split(':')[0])).toBe(10001);
    // Nothing after the USER line needs root (no RUN, no package installs).
    const after = finalStage.instructions.filter((i) => i.line > lastUser.line);
    expect(after.filter((i) => i.keyword === 'RUN')).toEqual([]);
  });

  it('when files come in, then never through a remote ADD (or ADD at all)', () => {
    for (const add of all('ADD')) {
      expect(add.args, `line ${add.line}`).not.toMatch(/(https?|ftp|git):\/\/|git@/i);
    }
    expect(all('ADD'), 'COPY is enough; ADD also unpacks and fetches').toEqual([]);
  });

  it('when the image is built, then no secret is baked in (no secret ENV/ARG, no key files copied)', () => {
    const secretName = /(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)/i;
    const declared = [...all('ENV'), ...all('ARG')].flatMap((instruction) => variables(instruction).map(([name, value]) => ({ name, value, instruction })));
    expect(declared.map((d) => d.name)).toContain('BREAKGLASS_WORKFLOW_BUNDLE');
    for (const { name, value, instruction } of declared) {
      const where = `${instruction.keyword} ${name} (line ${instruction.line})`;
      expect(name, where).toMatch(/^[A-Za-z_][A-Za-z0-9_]*$/);
      if (secretName.test(name)) {
        expect(name, `${where}: only *_FILE paths may be named like a secret`).toMatch(/_FILE$/);
        expect(value, where).toMatch(/^\//);
      }
      expect(value, where).not.toMatch(/sk-ant-|PRIVATE KEY|^[A-Za-z0-9+/_-]{32,}={0,2}$/);
    }
    const keyLike = /(^|\/)(id_(rsa|ecdsa|ed25519)\S*|\S+\.pem|\S+\.key|known_hosts|\.env(\.\S+)?|secrets?)(\/|$)/;
    for (const copy of all('COPY')) {
      for (const source of copyParts(copy.args).sources) expect(source, `COPY on line ${copy.line}`).not.toMatch(keyLike);
    }
    expect(dockerfileText).not.toMatch(/sk-ant-|BEGIN [A-Z ]*PRIVATE KEY/);
  });

  it('when the container is checked, then a HEALTHCHECK asks /healthz with Node itself (no curl in slim)', () => {
    const checks = all('HEALTHCHECK', finalStage);
    expect(checks).toHaveLength(1);
    const args = (checks[0] as Instruction).args;
    expect(args).toMatch(/--interval=\d+s/);
    expect(args).toMatch(/--timeout=\d+s/);
    const command = execForm(args.replace(/^(--\S+\s+)*CMD\s+/, ''));
    expect(command?.[0]).toBe('node');
    expect(command?.join(' ')).toContain('/healthz');
    expect(args).not.toMatch(/\b(curl|wget)\b/);
  });

  it('when the final stage is assembled, then it holds production dependencies only', () => {
    const fromStage = (name: string) => stages.find((stage) => stage.name === name) as Stage;
    const copies = all('COPY', finalStage).map((c) => copyParts(c.args));
    const nodeModules = copies.filter((c) => c.sources.some((s) => s.includes('node_modules')));
    expect(nodeModules).toHaveLength(1);
    const source = fromStage(nodeModules[0]!.flags.from as string);
    const installs = all('RUN', source).filter((run) => /\bnpm (ci|install|i)\b/.test(run.args));
    expect(installs.length).toBeGreaterThan(0);
    for (const install of installs) expect(install.args, `line ${install.line}`).toMatch(/npm ci (\S+ )*--omit=dev/);
    // Nothing else installs packages in the final stage, and the whole context is never copied.
    expect(all('RUN', finalStage).filter((run) => /\bnpm (ci|install|i)\b|\byarn\b (add|install)/.test(run.args))).toEqual([]);
    for (const copy of copies) {
      if (!copy.flags.from) expect(copy.sources, 'the final stage copies only from build stages').toEqual([]);
      expect(copy.sources).not.toContain('.');
    }
    // devDependencies such as tsx or vite are not needed to start: the entrypoint is plain node.
    const entrypoint = execForm((all('ENTRYPOINT', finalStage)[0] as Instruction).args);
    expect(entrypoint?.[0]).toBe('node');
    expect(entrypoint?.at(-1)).toBe('dist/server.mjs');
    expect(all('CMD', finalStage)).toEqual([]);
  });

  it('when it starts, then the worker uses the prebuilt workflow bundle and the server finds the prebuilt UI', () => {
    const env = envOf(finalStage);
    const workdir = (all('WORKDIR', finalStage).at(-1) as Instruction).args;
    expect(workdir).toBe('/app');
    expect(env.BREAKGLASS_WORKFLOW_BUNDLE).toBe('/app/dist/workflow-bundle.js');
    expect(env.NODE_ENV).toBe('production');
    // The variable the server reads, and the UI path it resolves relative to its module.
    const start = readFileSync(join(ROOT, 'server/start.ts'), 'utf8');
    expect(start).toContain('process.env.BREAKGLASS_WORKFLOW_BUNDLE');
    expect(start).toMatch(/new URL\('\.\.\/ui\/dist', import\.meta\.url\)/);
    const copies = all('COPY', finalStage).map((c) => copyParts(c.args));
    expect(copies).toContainEqual(expect.objectContaining({ sources: ['/src/dist'], dest: './dist' }));
    expect(copies).toContainEqual(expect.objectContaining({ sources: ['/src/ui/dist'], dest: './ui/dist' }));
    // The worker loads the failure converter by path, relative to dist/ (server/payload-codec.ts).
    expect(copies).toContainEqual(expect.objectContaining({ sources: ['/src/workflows/encoded-failures.cjs'], dest: './workflows/encoded-failures.cjs' }));
    expect(readFileSync(join(ROOT, 'server/payload-codec.ts'), 'utf8')).toMatch(/new URL\('\.\.\/workflows\/encoded-failures\.cjs', import\.meta\.url\)/);
    const build = all('RUN', stages.find((stage) => stage.name === 'build')).map((run) => run.args).join('\n');
    expect(build).toContain('npm run build:ui');
    expect(build).toContain('scripts/build-dist.ts dist');
  });

  it('when the root filesystem is read-only, then the only writable places are the data dir and /tmp', () => {
    const env = envOf(finalStage);
    expect(env.BREAKGLASS_DATA_DIR).toBe('/data');
    const run = all('RUN', finalStage).map((r) => r.args).join('\n');
    expect(run).toMatch(/install -d -o 10001 -g 10001 -m 0750 \/data/);
    expect(all('EXPOSE', finalStage).map((e) => e.args)).toEqual(['8080']);
  });

  it('when the build context is sent, then .dockerignore lets in only what the Dockerfile copies', () => {
    const mustStayOut = [
      '.git/HEAD', 'node_modules/fastify/package.json', '.data/forensics/x.json', '.tools/bin/helm', 'dist/server.mjs',
      'ui/dist/index.html', 'ui/node_modules/x/index.js', 'coverage/index.html', 'test/helm.test.ts', 'server/app.test.ts',
      'lab/main.ts', 'host/pve/pve-dispatch', 'helm/breakglass/values.yaml', '.env', 'server/.env', 'server/.env.local',
      'id_ed25519', 'secrets/devvm_id_ed25519', 'server/id_rsa', 'server/tls.key', 'ca.pem', 'known_hosts', 'npm-debug.log',
    ];
    for (const path of mustStayOut) expect(excludedFromContext(path, rules), path).toBe(true);
    // Everything the build stages COPY from the context is let in.
    for (const stage of stages) {
      for (const copy of all('COPY', stage).map((c) => copyParts(c.args)).filter((c) => !c.flags.from)) {
        for (const source of copy.sources) {
          expect(existsSync(join(ROOT, source)), `${source} exists`).toBe(true);
          const files = statSync(join(ROOT, source)).isDirectory() ? filesUnder(source) : [source];
          const wanted = files.filter((file) => !/\.test\.ts$|\.log$/.test(file));
          expect(wanted.length, source).toBeGreaterThan(0);
          for (const file of wanted) expect(excludedFromContext(file, rules), `${file} (COPY ${source})`).toBe(false);
        }
      }
    }
  });
});

// ---- the artifacts themselves ----

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { env: NodeJS.ProcessEnv; cwd: string; timeoutMs?: number }): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The environment the image sets, pointed at the temporary /app. */
function imageEnv(app: string, extra: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, NODE_ENV: 'production', BREAKGLASS_WORKFLOW_BUNDLE: join(app, 'dist/workflow-bundle.js'), BREAKGLASS_DATA_DIR: join(app, 'data'), ...extra };
}

describe('image artifacts (scripts/build-dist.ts, run as the image runs them)', () => {
  let app: string;
  let dist: DistResult;

  beforeAll(async () => {
    // The image's layout: /app/{dist,ui/dist,node_modules}.
    app = await mkdtemp(join(tmpdir(), 'bg-image-'));
    dist = await buildDist(join(app, 'dist'), { quiet: true });
    await symlink(join(ROOT, 'node_modules'), join(app, 'node_modules'), 'dir');
    await mkdir(join(app, 'ui/dist'), { recursive: true });
    await writeFile(join(app, 'ui/dist/index.html'), '<!doctype html><title>ui-dist-marker</title>\n');
    // The failure converter the worker loads by path, where the image's COPY puts it.
    await mkdir(join(app, 'workflows'));
    await copyFile(join(ROOT, 'workflows/encoded-failures.cjs'), join(app, 'workflows/encoded-failures.cjs'));
    await mkdir(join(app, 'data'));
  }, 120_000);

  afterAll(async () => {
    if (app) await rm(app, { recursive: true, force: true });
  });

  it('when the server is bundled, then every package it loads at run time is a production dependency', () => {
    expect(dist.runtimePackages.length).toBeGreaterThan(0);
    for (const name of dist.runtimePackages) expect(Object.keys(packageJson.dependencies), `${name} is imported by dist/server.mjs`).toContain(name);
    expect(dist.runtimePackages).not.toContain('tsx');
  });

  it('when the server is bundled, then every source file it needs is in the image build context', () => {
    const copied = all('COPY', stages.find((stage) => stage.name === 'build'))
      .map((c) => copyParts(c.args))
      .filter((c) => !c.flags.from)
      .flatMap((c) => c.sources);
    expect(dist.sourceFiles).toContain('server/main.ts');
    for (const file of dist.sourceFiles) {
      expect(copied.some((source) => file === source || file.startsWith(`${source}/`)), `${file} is copied into the build stage`).toBe(true);
      expect(excludedFromContext(file, rules), `${file} passes .dockerignore`).toBe(false);
    }
  });

  it('when the workflow bundle is prebuilt, then it is self-contained workflow code', () => {
    const code = readFileSync(dist.workflowBundlePath, 'utf8');
    expect(code).toContain('breakglassSession');
    expect(code.length).toBeGreaterThan(10_000);
    expect(code).not.toMatch(/require\(["'](ssh2|fastify|@anthropic-ai\/sdk|node:fs)["']\)/);
  });

  it('when the config is bad, then `node dist/server.mjs` stops at once naming the key', async () => {
    const config = join(app, 'bad.json');
    await writeFile(config, JSON.stringify({ listen: { host: '0.0.0.0' }, auth: { mode: 'anonymous' } }));
    const exit = await run(process.execPath, ['dist/server.mjs'], { cwd: app, env: imageEnv(app, { BREAKGLASS_CONFIG: config }) });
    expect(exit.code).toBe(78);
    expect(exit.stderr).toContain('config: auth.mode: must be one of lab, token, proxy (got "anonymous")');

    const missing = await run(process.execPath, ['dist/server.mjs'], { cwd: app, env: imageEnv(app, { BREAKGLASS_CONFIG: join(app, 'nope.json') }) });
    expect(missing.code).toBe(78);
    expect(missing.stderr).toContain('config: BREAKGLASS_CONFIG: cannot read');

    // Valid but for history at rest: no codec keys and no explicit codec.enabled false.
    const endpoint = (host: string) => ({ host, keyFile: '/nonexistent/key', fingerprints: [`SHA256:${'A'.repeat(43)}`] });
    const plain = join(app, 'plain.json');
    await writeFile(plain, JSON.stringify({ temporal: { address: '127.0.0.1:1' }, auth: { mode: 'token', tokens: [{ operator: 'a', sha256: 'a'.repeat(64) }] }, devvm: endpoint('192.0.2.10'), pve: endpoint('192.0.2.2') }));
    const unencrypted = await run(process.execPath, ['dist/server.mjs'], { cwd: app, env: imageEnv(app, { BREAKGLASS_CONFIG: plain }) });
    expect(unencrypted.code).toBe(78);
    expect(unencrypted.stderr).toContain('config: codec.keys: required');
    expect(unencrypted.stderr).toContain('codec.enabled: false');
  });

  describe('against a real Temporal dev server', () => {
    let temporal: TemporalDev;
    let server: ChildProcess | null = null;
    let url = '';
    let port = '';
    let output = '';
    const token = 'image-artifact-test-token-0123456789';

    beforeAll(async () => {
      temporal = await startTemporalDev({ dataDir: join(app, 'temporal'), headless: true });
      const secrets = join(app, 'secrets');
      await mkdir(secrets);
      // Never read unless an activity runs: the worker only needs the paths to exist.
      await writeFile(join(secrets, 'key'), 'not-a-real-key\n', { mode: 0o600 });
      await writeFile(join(secrets, 'codec-key'), `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
      await writeFile(join(secrets, 'known_hosts'), '192.0.2.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n');
      const endpoint = (host: string) => ({ host, keyFile: join(secrets, 'key'), knownHostsFile: join(secrets, 'known_hosts') });
      const config = join(app, 'config.json');
      await writeFile(
        config,
        JSON.stringify({
          listen: { host: '127.0.0.1', port: 0 },
          temporal: { address: temporal.address, namespace: 'default', taskQueue: `image-${process.pid}-${Date.now()}` },
          auth: { mode: 'token', tokens: [{ operator: 'alice', sha256: createHash('sha256').update(token).digest('hex') }] },
          devvm: endpoint('192.0.2.10'),
          pve: endpoint('192.0.2.2'),
          codec: { keys: [{ id: 'image-key', file: join(secrets, 'codec-key') }] },
        }),
      );
      server = spawn(process.execPath, ['--enable-source-maps', 'dist/server.mjs'], { cwd: app, env: imageEnv(app, { BREAKGLASS_CONFIG: config }), stdio: ['ignore', 'pipe', 'pipe'] });
      server.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
      server.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const deadline = Date.now() + 60_000;
      while (!url) {
        const match = /breakglass console listening on (http:\/\/\S+)/.exec(output);
        if (match) url = match[1] as string;
        else if (server.exitCode !== null) throw new Error(`server exited ${server.exitCode}:\n${output}`);
        else if (Date.now() > deadline) throw new Error(`server did not listen:\n${output}`);
        else await new Promise((r) => setTimeout(r, 100));
      }
      port = new URL(url).port;
    }, 120_000);

    afterAll(async () => {
      if (server && server.exitCode === null) server.kill('SIGKILL');
      await temporal?.stop();
    });

    it('when it runs, then /healthz, /readyz (Temporal and worker) and the prebuilt UI answer', async () => {
      expect(await (await fetch(`${url}/healthz`)).json()).toEqual({ ok: true });
      const deadline = Date.now() + 30_000;
      let ready: { ready?: boolean; temporal?: boolean; worker?: boolean } = {};
      while (!ready.ready && Date.now() < deadline) {
        ready = (await (await fetch(`${url}/readyz`)).json()) as typeof ready;
        if (!ready.ready) await new Promise((r) => setTimeout(r, 250));
      }
      expect(ready).toMatchObject({ ready: true, temporal: true, worker: true, codec: 'encrypting with key "image-key" (1 key decrypt)' });
      expect(await (await fetch(`${url}/`)).text()).toContain('ui-dist-marker');
    });

    it('when a session opens, then the worker runs it from the prebuilt bundle', async () => {
      const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
      const created = await fetch(`${url}/api/sessions`, { method: 'POST', headers, body: JSON.stringify({ description: 'image artifact check' }) });
      expect(created.status).toBe(200);
      const { id } = (await created.json()) as { id: string };
      const deadline = Date.now() + 30_000;
      let state: { state?: { workflowId?: string; operator?: string } } = {};
      while (!state.state && Date.now() < deadline) {
        const response = await fetch(`${url}/api/sessions/${id}`, { headers });
        if (response.ok) state = (await response.json()) as typeof state;
        else await new Promise((r) => setTimeout(r, 250));
      }
      // The state comes from a workflow query, answered only by a worker running the bundle.
      expect(state.state).toMatchObject({ workflowId: id, operator: 'alice' });
      await fetch(`${url}/api/sessions/${id}/end`, { method: 'POST', headers, body: JSON.stringify({ reason: 'test over' }) }).catch(() => undefined);
    });

    it("when the image's HEALTHCHECK command runs, then it passes against the server and fails without one", async () => {
      const command = execForm(all('HEALTHCHECK', finalStage)[0]!.args.replace(/^(--\S+\s+)*CMD\s+/, '')) as string[];
      const healthy = await run(process.execPath, command.slice(1), { cwd: app, env: { PATH: process.env.PATH, PORT: port } });
      expect(healthy.code).toBe(0);
      // Port 1 on loopback: nothing listens there, the connection is refused at once.
      const unhealthy = await run(process.execPath, command.slice(1), { cwd: app, env: { PATH: process.env.PATH, PORT: '1' } });
      expect(unhealthy.code).toBe(1);
    });

    it('when it gets SIGTERM (a pod stopping), then it shuts down cleanly and quickly', async () => {
      const child = server as ChildProcess;
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 20_000))]);
      // 0, not a signal death: main.ts's SIGTERM handler closed the server and the worker.
      expect(code, output.slice(-2000)).toBe(0);
    });
  });
});
