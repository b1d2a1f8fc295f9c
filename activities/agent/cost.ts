/**
 * An ESTIMATE of what a turn cost, for the session's running tally. Prices are public list
 * prices in USD per million tokens as known when this was written; they change, and invoices
 * are authoritative. Prompt-cache writes are priced at 1.25x input (5-minute cache) and cache
 * reads at 0.1x input. A model that is not in the table gives `null` (shown as "cost unknown"),
 * never a guess; a deployment can pass its own table.
 */
import type { AgentUsage } from './types.js';

export interface ModelPrice {
  /** USD per million input tokens. */
  input: number;
  /** USD per million output tokens. */
  output: number;
}

/** Keys match a model id exactly or as a prefix followed by `-` (dated snapshots). */
export const DEFAULT_PRICES: Readonly<Record<string, ModelPrice>> = {
  'claude-opus-4-6': { input: 5, output: 25 },
  'claude-opus-4-5': { input: 5, output: 25 },
  'claude-opus-4-1': { input: 15, output: 75 },
  'claude-opus-4-0': { input: 15, output: 75 },
  'claude-opus-4-20250514': { input: 15, output: 75 },
  'claude-sonnet-4-6': { input: 3, output: 15 },
  'claude-sonnet-4-5': { input: 3, output: 15 },
  'claude-sonnet-4-0': { input: 3, output: 15 },
  'claude-sonnet-4-20250514': { input: 3, output: 15 },
  'claude-haiku-4-5': { input: 1, output: 5 },
  'claude-3-5-haiku': { input: 0.8, output: 4 },
  'claude-3-haiku': { input: 0.25, output: 1.25 },
};

const CACHE_WRITE_FACTOR = 1.25;
const CACHE_READ_FACTOR = 0.1;

export function priceOf(model: string, prices: Readonly<Record<string, ModelPrice>> = DEFAULT_PRICES): ModelPrice | null {
  if (prices[model]) return prices[model];
  // Longest key first, so a more specific id wins.
  const key = Object.keys(prices)
    .sort((a, b) => b.length - a.length)
    .find((candidate) => model.startsWith(`${candidate}-`));
  return key ? (prices[key] ?? null) : null;
}

/** Estimated USD for one turn's usage, or null for a model without a known price. */
export function estimateCostUsd(model: string, usage: AgentUsage, prices: Readonly<Record<string, ModelPrice>> = DEFAULT_PRICES): number | null {
  const price = priceOf(model, prices);
  if (!price) return null;
  const perToken = (usd: number) => usd / 1_000_000;
  const cost =
    usage.inputTokens * perToken(price.input) +
    usage.cacheWriteTokens * perToken(price.input * CACHE_WRITE_FACTOR) +
    usage.cacheReadTokens * perToken(price.input * CACHE_READ_FACTOR) +
    usage.outputTokens * perToken(price.output);
  return Math.round(cost * 1_000_000) / 1_000_000;
}
