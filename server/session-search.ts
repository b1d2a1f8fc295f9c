/**
 * Finding sessions through Temporal visibility: the words a session is found by, and the list
 * filter turned into a visibility query. Every value that reaches the query is either from a
 * closed set or made of letters and digits only, so nothing typed can change the query's shape.
 * Search attributes are not encrypted by the payload codec: with codec keys, the words are stored
 * (and searched) as keyed hashes, so a secret typed into a description stays out of the database.
 */
import { createHmac } from 'node:crypto';
import type { Outcome } from '../workflows/session-types.js';

export const LIST_OUTCOMES = ['open', 'recovered', 'ended', 'cancelled', 'failed'] as const satisfies readonly (Outcome | 'open')[];
export type ListOutcome = (typeof LIST_OUTCOMES)[number];

/** How far back the list looks. */
export const LIST_SINCE = { '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000, '30d': 30 * 86_400_000 } as const;
export type ListSince = keyof typeof LIST_SINCE;

/** An operator name the query may carry (no quotes, backslashes or control characters). */
export const OPERATOR_FILTER_PATTERN = "^[^'\"\\\\\\u0000-\\u001f]{1,200}$";

export interface ListFilter {
  outcome?: ListOutcome;
  operator?: string;
  since?: ListSince;
  /** Words of the description, or the start of a session id. */
  search?: string;
}

const MAX_WORDS = 40;
const MAX_WORD = 64;
const MAX_SEARCH_WORDS = 6;

/** Lowercased words of letters and digits, each once, in order. */
export function words(text: string): string[] {
  const seen = new Set<string>();
  for (const word of text.toLowerCase().split(/[^\p{L}\p{N}]+/u)) {
    if (word.length >= 2 && word.length <= MAX_WORD) seen.add(word);
  }
  return [...seen];
}

/** The key words are hashed with, derived from a codec key (so no new secret to mount). */
export function searchKeyFrom(codecKey: Buffer): Buffer {
  return createHmac('sha256', codecKey).update('breakglass search words v1').digest();
}

/** A word as stored: itself without a key, else 96 bits of its keyed hash. */
const stored = (word: string, key: Buffer | null) => (key ? `h${createHmac('sha256', key).update(word).digest('hex').slice(0, 24)}` : word);

/** What a session is found by: its description's words and the last part of its id. */
export function searchWords(id: string, description: string, key: Buffer | null = null): string[] {
  const suffix = id.split('-').at(-1) ?? '';
  return [...new Set([...words(suffix), ...words(description)])].slice(0, MAX_WORDS).map((word) => stored(word, key));
}

/** An id as typed: its own characters only (ids are `bg-…` of letters, digits and dashes). */
const ID_PREFIX = /^[a-z0-9][a-z0-9-]{1,99}$/;

/**
 * The visibility query for `base` narrowed by `filter` (`now` for the time window). `keys`: the
 * search keys of every codec key in the ring, so sessions written under an older key are found.
 */
export function listQuery(base: string, filter: ListFilter, now = Date.now(), keys: Buffer[] = []): string {
  const parts = [base];
  // Open means running: a terminated or timed-out run never wrote its outcome.
  if (filter.outcome === 'open') parts.push(`ExecutionStatus = 'Running'`);
  else if (filter.outcome) parts.push(`BreakglassOutcome = '${filter.outcome}'`);
  if (filter.operator) {
    // The route validates it already; the query never trusts that it did.
    if (!new RegExp(OPERATOR_FILTER_PATTERN, 'u').test(filter.operator)) throw new Error('operator filter: quotes, backslashes and control characters are not allowed');
    parts.push(`BreakglassOperator = '${filter.operator}'`);
  }
  if (filter.since) parts.push(`StartTime > '${new Date(now - LIST_SINCE[filter.since]).toISOString()}'`);
  const search = filter.search?.trim().toLowerCase() ?? '';
  if (search) {
    // A whole id (or its start) is one term; otherwise every word must be in the description.
    const terms = ID_PREFIX.test(search) && search.startsWith('bg-') ? [] : words(search).slice(0, MAX_SEARCH_WORDS);
    if (terms.length === 0 && ID_PREFIX.test(search)) parts.push(`WorkflowId STARTS_WITH '${search}'`);
    else if (terms.length === 0) parts.push(`BreakglassWords = ''`);
    for (const term of terms) {
      const forms = keys.length > 0 ? keys.map((key) => stored(term, key)) : [term];
      parts.push(forms.length === 1 ? `BreakglassWords = '${forms[0]}'` : `(${forms.map((form) => `BreakglassWords = '${form}'`).join(' OR ')})`);
    }
  }
  return parts.join(' AND ');
}
