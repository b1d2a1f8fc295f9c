/**
 * Production artifacts for the container image (see the Dockerfile), written to one directory
 * (default `dist/`, or the first argument):
 *
 *   server.mjs          server/main.ts bundled by esbuild; npm packages stay external, so the
 *                       image's `npm ci --omit=dev` node_modules supplies them at run time.
 *   workflow-bundle.js  the Temporal workflow code, bundled ahead of time with the same webpack
 *                       hook the worker uses at start-up. The image points the worker at it with
 *                       BREAKGLASS_WORKFLOW_BUNDLE, so production never runs webpack or tsx.
 *
 *   npx tsx scripts/build-dist.ts [OUT_DIR]
 *
 * The output directory must sit next to `ui/`: the server serves `../ui/dist` relative to its
 * own module. `dist/` at the repository root is what the image uses (/app/dist, /app/ui/dist).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { bundleWorkflowCode } from '@temporalio/worker';
import { build } from 'esbuild';
import { FAILURE_CONVERTER_PATH } from '../server/payload-codec.js';
import { WORKFLOWS_PATH, bundlerOptions } from '../server/worker.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface DistResult {
  outDir: string;
  serverPath: string;
  workflowBundlePath: string;
  /** npm packages server.mjs imports at run time (they must be production dependencies). */
  runtimePackages: string[];
  /** Repository files bundled into server.mjs, relative to the root (the image must copy them). */
  sourceFiles: string[];
}

/** `@scope/name/sub` → `@scope/name`, `name/sub` → `name`. */
function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] as string);
}

export async function buildDist(outDir = join(ROOT, 'dist'), options: { quiet?: boolean } = {}): Promise<DistResult> {
  await mkdir(outDir, { recursive: true });
  const serverPath = join(outDir, 'server.mjs');
  const server = await build({
    absWorkingDir: ROOT,
    entryPoints: [join(ROOT, 'server/main.ts')],
    outfile: serverPath,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // Dependencies (incl. the Temporal native addon) load from node_modules, never inlined.
    packages: 'external',
    sourcemap: 'linked',
    // Class names stay readable in errors and stack traces (ConfigError, …).
    keepNames: true,
    logLevel: options.quiet ? 'silent' : 'warning',
    metafile: true,
  });
  const builtins = new Set([...builtinModules, ...builtinModules.map((name) => `node:${name}`)]);
  const runtimePackages = [
    ...new Set(
      Object.values(server.metafile.outputs)
        .flatMap((output) => output.imports)
        .filter((entry) => entry.external && !builtins.has(entry.path))
        .map((entry) => packageName(entry.path)),
    ),
  ].sort();
  const sourceFiles = Object.keys(server.metafile.inputs).filter((path) => !path.includes('node_modules/')).sort();

  // The same webpack hook as at worker start-up (sources import `./x.js`, the files are `.ts`).
  // Failures raised in workflow code are encoded payloads too, so the payload codec encrypts them.
  const { code } = await bundleWorkflowCode({
    workflowsPath: WORKFLOWS_PATH,
    failureConverterPath: FAILURE_CONVERTER_PATH,
    ...bundlerOptions,
    ...(options.quiet ? { logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} } } : {}),
  });
  const workflowBundlePath = join(outDir, 'workflow-bundle.js');
  await writeFile(workflowBundlePath, code);
  return { outDir, serverPath, workflowBundlePath, runtimePackages, sourceFiles };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const result = await buildDist(process.argv[2] ? resolve(process.argv[2]) : undefined);
  console.log(`build-dist: ${result.serverPath}, ${result.workflowBundlePath}; runtime packages: ${result.runtimePackages.join(' ')}`);
}
