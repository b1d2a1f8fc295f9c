/**
 * How many generated inputs the abuse suites run. `npm test` runs them at scale 1 (about 2,000
 * inputs per surface, under a minute each); `npm run abuse` sets ABUSE_SCALE=5 for the figures in
 * RELIABILITY.md (10,000 and more per surface). Per-test timeouts grow with the scale.
 */
const raw = process.env.ABUSE_SCALE ?? '1';
if (!/^[1-9]\d?$/.test(raw)) throw new Error(`ABUSE_SCALE: a whole number from 1 to 99 (got ${JSON.stringify(raw)})`);
export const ABUSE_SCALE = Number(raw);

/** A property's run count at this scale. */
export const scaled = (runs: number): number => runs * ABUSE_SCALE;
/** A test's timeout at this scale (the fixed set-up part plus the scaled part). */
export const scaledTimeout = (ms: number): number => ms * ABUSE_SCALE;
