/**
 * Runs the Messages API stand-in on its own, for poking at it by hand:
 *   npx tsx lab/messages-api/main.ts --scenario io-stall --api-key sk-lab --port 8787
 * Then point the worker's model base URL at the printed URL.
 */
import { parseArgs } from 'node:util';
import { SCENARIOS } from './scenarios.js';
import { startMessagesApi } from './server.js';

const { values } = parseArgs({
  options: {
    scenario: { type: 'string', default: 'io-stall' },
    'api-key': { type: 'string', default: 'sk-lab-standin' },
    port: { type: 'string', default: '0' },
    'chunk-delay-ms': { type: 'string', default: '20' },
  },
});

const script = SCENARIOS[values.scenario];
if (!script) {
  console.error(`--scenario: one of ${Object.keys(SCENARIOS).join(', ')}`);
  process.exit(2);
}
const api = await startMessagesApi({
  apiKey: values['api-key'],
  script,
  port: Number(values.port),
  chunkDelayMs: Number(values['chunk-delay-ms']),
});
console.log(`messages-api stand-in (${values.scenario}) listening on ${api.url}`);
const shutdown = () => void api.stop().then(() => process.exit(0));
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);
