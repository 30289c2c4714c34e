/**
 * A quantile (0 to 1), in milliseconds, of requests counted in histogram buckets (not cumulative; one
 * past the last bound for the rest), interpolated within its bucket as PromQL's histogram_quantile
 * does; null when the buckets hold nothing. Self-contained: the dashboard page embeds its source.
 */
export function quantileMs(bounds: readonly number[], buckets: readonly number[], q: number): number | null {
  const total = buckets.reduce((sum, count) => sum + count, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    const count = buckets[i]!;
    if (count > 0 && seen + count >= rank) {
      if (i >= bounds.length) return bounds[bounds.length - 1]! * 1000;
      const lower = i === 0 ? 0 : bounds[i - 1]!;
      return (lower + (bounds[i]! - lower) * ((rank - seen) / count)) * 1000;
    }
    seen += count;
  }
  return bounds[bounds.length - 1]! * 1000;
}
