/**
 * A real deployment: `node --import tsx server/main.ts` (or the Docker image). Reads the config
 * (BREAKGLASS_CONFIG + environment), refuses to start on a bad value naming the key, and shuts
 * down gracefully on SIGTERM/SIGINT.
 */
import { Runtime } from '@temporalio/worker';
import { ConfigError, loadConfig } from './config.js';
import { startBreakglass } from './start.js';

let config;
try {
  config = loadConfig({ requireTemporal: true, requireCodecKeys: true });
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(78);
  }
  throw error;
}

if (config.metrics.sdkPrometheusAddress) {
  // The Temporal SDK's own metrics (task latencies, poll counts) on their own listener.
  Runtime.install({ telemetryOptions: { metrics: { prometheus: { bindAddress: config.metrics.sdkPrometheusAddress } } } });
}

const running = await startBreakglass(config, { logger: { level: process.env.LOG_LEVEL ?? 'info' } });
if (running.url) console.log(`breakglass console listening on ${running.url}`);

const shutdown = async (signal: string) => {
  console.log(`${signal}: shutting down`);
  await running.close();
  process.exit(0);
};
process.once('SIGTERM', () => void shutdown('SIGTERM'));
process.once('SIGINT', () => void shutdown('SIGINT'));
