/** The session list's visibility query: what a filter may add, and what typed text cannot. */
import { describe, expect, it } from 'vitest';
import { listQuery, searchKeyFrom, searchWords, words } from '../server/session-search.js';

const BASE = `WorkflowType = 'breakglassSession'`;
const NOW = Date.parse('2026-12-06T03:00:00Z');

describe('finding sessions', () => {
  it('when a session opens, then it is found by its description words and the last part of its id', () => {
    expect(searchWords('bg-20261206-0300-k7qm', "SSH to the devvm hangs since 02:40; it's DEAD, dead")).toEqual(['k7qm', 'ssh', 'to', 'the', 'devvm', 'hangs', 'since', '02', '40', 'it', 'dead']);
    expect(searchWords('bg-x-k7qm', 'ö'.repeat(65) + ' écrit').slice(1)).toEqual(['écrit']);
  });

  it('when filters are given, then each narrows the query; words must all match; an id is matched by its start', () => {
    expect(listQuery(BASE, {}, NOW)).toBe(BASE);
    expect(listQuery(BASE, { outcome: 'open', operator: 'alice@example.com', since: '24h', search: 'Disk FULL' }, NOW)).toBe(
      `${BASE} AND ExecutionStatus = 'Running' AND BreakglassOperator = 'alice@example.com' AND StartTime > '2026-12-05T03:00:00.000Z' AND BreakglassWords = 'disk' AND BreakglassWords = 'full'`,
    );
    expect(listQuery(BASE, { search: 'bg-20261206-03' }, NOW)).toBe(`${BASE} AND WorkflowId STARTS_WITH 'bg-20261206-03'`);
    expect(listQuery(BASE, { search: 'k7qm' }, NOW)).toBe(`${BASE} AND BreakglassWords = 'k7qm'`);
  });

  it('when the search or the operator carry quotes or query syntax, then they cannot change the query: words lose their punctuation, the operator is refused', () => {
    const attack = "x' OR WorkflowType != 'y";
    expect(listQuery(BASE, { search: attack }, NOW)).toBe(`${BASE} AND BreakglassWords = 'or' AND BreakglassWords = 'workflowtype'`);
    expect(listQuery(BASE, { search: "'' ; --" }, NOW)).toBe(`${BASE} AND BreakglassWords = ''`);
    expect(() => listQuery(BASE, { operator: attack }, NOW)).toThrow(/quotes/);
    expect(() => listQuery(BASE, { operator: 'a\\b' }, NOW)).toThrow(/backslashes/);
    expect(words("a'b")).toEqual([]);
  });

  it('when history is encrypted, then words are stored as keyed hashes and searched under every key of the ring', () => {
    const [a, b] = [searchKeyFrom(Buffer.alloc(32, 1)), searchKeyFrom(Buffer.alloc(32, 2))];
    const stored = searchWords('bg-x-k7qm', 'password hunter2 leaked', a);
    expect(stored).toHaveLength(4);
    expect(stored.join(' ')).not.toMatch(/password|hunter2|leaked|k7qm/);
    expect(stored.every((word) => /^h[0-9a-f]{24}$/.test(word))).toBe(true);
    // The same word under the same key is the same token; under another key it is not.
    expect(searchWords('bg-x-k7qm', 'hunter2', a)[1]).toBe(stored[2]);
    expect(searchWords('bg-x-k7qm', 'hunter2', b)[1]).not.toBe(stored[2]);
    const query = listQuery(BASE, { search: 'hunter2' }, NOW, [b, a]);
    expect(query).not.toContain('hunter2');
    expect(query).toBe(`${BASE} AND (BreakglassWords = '${searchWords('x', 'hunter2', b)[0]}' OR BreakglassWords = '${stored[2]}')`);
  });
});
