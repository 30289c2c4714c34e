/**
 * prom-client's aggregation (AggregatorRegistry.aggregate: counters and histograms summed, gauges by
 * their `aggregator`), loaded when first used: a worker whose app has no prom-client never loads it.
 */
import type { Registry } from 'prom-client';
import type { MetricsJson } from './report.ts';

export async function aggregate(metrics: readonly MetricsJson[]): Promise<Registry> {
  const { AggregatorRegistry } = await import('prom-client');
  return AggregatorRegistry.aggregate(metrics as MetricsJson[] as object[]);
}

/** Several registries' metrics as one registry's. */
export async function sumMetrics(metrics: readonly MetricsJson[]): Promise<MetricsJson> {
  return (await (await aggregate(metrics)).getMetricsAsJSON()) as unknown as MetricsJson;
}
