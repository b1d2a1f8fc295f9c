import { expect } from 'vitest';

/**
 * Positions that must all exist and come in the order given: `{ forensics: 3, 'verb-result': 5 }`.
 * A plain `indexOf(a) < indexOf(b)` passes when `a` is missing (-1); this fails, naming it.
 */
export function expectOrdered(positions: Record<string, number>): void {
  const entries = Object.entries(positions);
  for (const [name, at] of entries) expect(at, `${name} is missing`).toBeGreaterThanOrEqual(0);
  for (let i = 1; i < entries.length; i++) {
    const [before, a] = entries[i - 1]!;
    const [after, b] = entries[i]!;
    expect(a, `${before} (at ${a}) should come before ${after} (at ${b})`).toBeLessThan(b);
  }
}

/** Each name present in `list`, first occurrences in this order. */
export function expectInOrder(list: readonly string[], ...names: string[]): void {
  expectOrdered(Object.fromEntries(names.map((name) => [name, list.indexOf(name)])));
}
