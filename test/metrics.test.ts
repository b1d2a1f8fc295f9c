/**
 * /metrics cannot be turned into load on Temporal: however often it is scraped, the session
 * counts come from one look (five visibility counts) per 15 s.
 */
import type { Client } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../server/metrics.js';

describe('the sessions metric', () => {
  it('when /metrics is scraped many times at once and in a row, then Temporal is asked once per outcome, and the counts are shown', async () => {
    const queries: string[] = [];
    const client = {
      workflow: {
        count: async (query: string) => {
          queries.push(query);
          await new Promise((r) => setTimeout(r, 50));
          return { count: query.includes("'recovered'") ? 3 : 1 };
        },
      },
    } as unknown as Client;
    const metrics = createMetrics();
    metrics.watchSessions(client, 'default');
    const scrapes = await Promise.all(Array.from({ length: 10 }, () => metrics.registry.metrics()));
    for (let i = 0; i < 20; i++) scrapes.push(await metrics.registry.metrics());
    expect(queries).toHaveLength(5);
    for (const text of scrapes) expect(text).toMatch(/breakglass_sessions\{outcome="recovered"\} 3/);
  });
});
