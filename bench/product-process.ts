/**
 * The product as its own process for the bench (server + worker in one process, as
 * `npm start` and the container run it): reads a spec file, calls startBreakglass, and stops
 * on SIGTERM or when its parent goes away. argv[2]: path of a JSON file
 * `{ config, demoAgent? }` written by bench/product.ts.
 */
import { readFileSync } from 'node:fs';
import { loadConfig } from '../server/config.js';
import { startBreakglass, type Running } from '../server/start.js';

interface Spec {
  config: Record<string, unknown>;
  demoAgent?: { baseURL: string; apiKey: string };
}

async function main(): Promise<void> {
  const specPath = process.argv[2];
  if (!specPath) throw new Error('usage: product-process.ts <spec.json>');
  const spec = JSON.parse(readFileSync(specPath, 'utf8')) as Spec;
  // Only the spec counts: nothing from this shell's environment (no stray API key or address).
  const config = loadConfig({ env: {}, file: spec.config });
  const running: Running = await startBreakglass(config, spec.demoAgent ? { demoAgent: spec.demoAgent } : {});
  process.stdout.write(`${JSON.stringify({ url: running.url })}\n`);

  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await running.close().catch(() => undefined);
    process.exit(code);
  };
  process.on('SIGTERM', () => void stop(0));
  process.on('SIGINT', () => void stop(0));
  // Never outlive the bench: if it dies without stopping us, we are re-parented.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void stop(0);
  }, 1_000).unref();
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
