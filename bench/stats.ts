/**
 * Summaries and the Markdown table. Every row is a measurement next to the baseline it is
 * compared with; both come from the same run on the same machine.
 */

export type Unit = 'ms' | 'B' | 'MiB';

export interface Summary {
  n: number;
  median: number;
  p95: number;
  min: number;
  max: number;
}

export interface Series {
  /** What was measured, in a few words. */
  what: string;
  unit: Unit;
  samples: number[];
  /** Shown in the n column instead of the sample count (e.g. steps behind a per-step figure). */
  count?: number;
}

export interface Row {
  id: string;
  title: string;
  measured: Series;
  baseline: Series | null;
  /** Single-figure rows (bytes per step) have no spread: only the median column is shown. */
  single?: boolean;
  note?: string;
}

/** Linear interpolation between closest ranks (the common "type 7" quantile). */
export function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const position = (sorted.length - 1) * q;
  const lower = Math.floor(position);
  const upper = Math.ceil(position);
  const low = sorted[lower] as number;
  const high = sorted[upper] as number;
  return low + (high - low) * (position - lower);
}

export function summarize(samples: readonly number[]): Summary {
  return {
    n: samples.length,
    median: quantile(samples, 0.5),
    p95: quantile(samples, 0.95),
    min: samples.length ? Math.min(...samples) : Number.NaN,
    max: samples.length ? Math.max(...samples) : Number.NaN,
  };
}

export function formatValue(value: number, unit: Unit): string {
  if (!Number.isFinite(value)) return '—';
  if (unit === 'ms') return value >= 10_000 ? `${(value / 1000).toFixed(1)} s` : value >= 100 ? `${Math.round(value)} ms` : `${value.toFixed(1)} ms`;
  if (unit === 'MiB') return `${value.toFixed(1)} MiB`;
  return value >= 10_000 ? `${(value / 1024).toFixed(1)} KiB` : `${Math.round(value)} B`;
}

export function formatRatio(measured: number, baseline: number): string {
  if (!Number.isFinite(measured) || !Number.isFinite(baseline) || baseline <= 0) return '—';
  const ratio = measured / baseline;
  return `${ratio >= 10 ? ratio.toFixed(0) : ratio.toFixed(ratio >= 1 ? 1 : 2)}×`;
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|');
}

/** The Markdown table: one line per row, ratios measured ÷ baseline (median and p95). */
export function markdownTable(rows: readonly Row[]): string {
  const header = [
    '| # | measurement | n | median | p95 | baseline (same run) | n | median | p95 | ratio median | ratio p95 |',
    '|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|',
  ];
  const lines = rows.map((row) => {
    const m = summarize(row.measured.samples);
    const b = row.baseline ? summarize(row.baseline.samples) : null;
    const single = row.single === true;
    return `| ${[
      row.id,
      cell(`${row.title}${row.note ? ` (${row.note})` : ''}`),
      String(row.measured.count ?? m.n),
      formatValue(m.median, row.measured.unit),
      single ? '—' : formatValue(m.p95, row.measured.unit),
      cell(row.baseline?.what ?? '—'),
      b ? String(row.baseline?.count ?? b.n) : '—',
      b && row.baseline ? formatValue(b.median, row.baseline.unit) : '—',
      b && row.baseline && !single ? formatValue(b.p95, row.baseline.unit) : '—',
      b ? formatRatio(m.median, b.median) : '—',
      b && !single ? formatRatio(m.p95, b.p95) : '—',
    ].join(' | ')} |`;
  });
  return [...header, ...lines].join('\n');
}

/** Repetitions scaled by BENCH_SCALE, never below `min`. */
export function scaled(base: number, scale: number, min = 1): number {
  return Math.max(min, Math.round(base * scale));
}
