/**
 * Prometheus metrics (`GET /metrics`). Counters that activities feed (verbs, SSH errors, agent
 * tokens and cost) live in the process that runs the worker; session outcomes are read from
 * Temporal visibility at scrape time, so they are right whichever replica ran the sessions.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Client } from '@temporalio/client';

export const OUTCOMES = ['open', 'recovered', 'ended', 'cancelled', 'failed'] as const;

export interface ActivityObserver {
  verb(verb: string, outcome: string, seconds: number): void;
  sshError(target: 'pve' | 'devvm', kind: string): void;
  agentTurn(usage: { inputTokens: number; outputTokens: number; cacheReadTokens: number; cacheWriteTokens: number }, costUsd: number | null): void;
}

export interface Metrics {
  registry: Registry;
  observer: ActivityObserver;
  /** Counts sessions by outcome from Temporal visibility when scraped. */
  watchSessions(client: Client, namespace: string): void;
}

/** How long one look at the session counts serves scrapes. */
const SESSION_COUNT_TTL_MS = 15_000;

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'breakglass_process_' });
  const verbs = new Counter({ name: 'breakglass_verbs_total', help: 'PVE verbs run, by verb and outcome', labelNames: ['verb', 'outcome'], registers: [registry] });
  const latency = new Histogram({
    name: 'breakglass_verb_duration_seconds',
    help: 'Wall time of PVE verbs as the worker saw it (forensics included for mutating verbs)',
    labelNames: ['verb'],
    buckets: [0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320],
    registers: [registry],
  });
  const sshErrors = new Counter({ name: 'breakglass_ssh_errors_total', help: 'SSH failures by target and kind', labelNames: ['target', 'kind'], registers: [registry] });
  const tokens = new Counter({ name: 'breakglass_agent_tokens_total', help: 'Agent tokens by kind', labelNames: ['kind'], registers: [registry] });
  const cost = new Counter({ name: 'breakglass_agent_cost_usd_total', help: 'Estimated agent cost in USD (list prices)', registers: [registry] });
  let sessionSource: { client: Client; namespace: string } | null = null;
  const counts = new Map<string, number>();
  let countedAt = 0;
  let counting: Promise<void> | null = null;
  new Gauge({
    name: 'breakglass_sessions',
    help: 'Breakglass sessions by outcome (Temporal visibility, within retention)',
    labelNames: ['outcome'],
    registers: [registry],
    async collect() {
      if (!sessionSource) return;
      // Five visibility queries per look: scrapes (and anyone hammering /metrics) share one look
      // per SESSION_COUNT_TTL_MS, so the metric cannot be turned into load on Temporal.
      if (Date.now() - countedAt >= SESSION_COUNT_TTL_MS) counting ??= countSessions(sessionSource.client).finally(() => (counting = null));
      if (counting) await counting;
      for (const [outcome, count] of counts) this.set({ outcome }, count);
    },
  });

  /** Counts sessions by outcome; an outcome Temporal does not answer for keeps its last count. */
  async function countSessions(client: Client): Promise<void> {
    await Promise.all(
      OUTCOMES.map(async (outcome) => {
        try {
          // Sessions, not runs: an open one is running (its earlier runs were continued as new
          // or replaced by a reset, and keep their old 'open'); a closed one is its last run.
          const status = outcome === 'open' ? `ExecutionStatus = 'Running'` : `ExecutionStatus != 'ContinuedAsNew' AND ExecutionStatus != 'Terminated'`;
          const { count } = await client.workflow.count(`WorkflowType = 'breakglassSession' AND ${status} AND BreakglassOutcome = '${outcome}'`);
          counts.set(outcome, count);
        } catch {
          // Temporal unreachable: keep the last value; /readyz reports the outage.
        }
      }),
    );
    countedAt = Date.now();
  }

  return {
    registry,
    observer: {
      verb: (verb, outcome, seconds) => {
        verbs.inc({ verb, outcome });
        latency.observe({ verb }, seconds);
      },
      sshError: (target, kind) => sshErrors.inc({ target, kind }),
      agentTurn: (usage, costUsd) => {
        tokens.inc({ kind: 'input' }, usage.inputTokens);
        tokens.inc({ kind: 'output' }, usage.outputTokens);
        tokens.inc({ kind: 'cache_read' }, usage.cacheReadTokens);
        tokens.inc({ kind: 'cache_write' }, usage.cacheWriteTokens);
        if (costUsd) cost.inc(costUsd);
      },
    },
    watchSessions: (client, namespace) => {
      sessionSource = { client, namespace };
    },
  };
}
