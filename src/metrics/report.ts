/**
 * What a serving unit and a worker process report to the master for /metrics, as plain data that
 * crosses the IPC channel and a thread's port: forkgate's own counts in a compact form (added up by
 * `addCounts`), the app's own prom-client metrics as its registry's JSON.
 */

/** One metric as a prom-client registry's getMetricsAsJSON() gives it (prom-client does not export the type). */
export interface MetricJson {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary';
  /** How AggregatorRegistry.aggregate combines the workers' values: sum when absent. */
  readonly aggregator?: string;
  readonly values: readonly {
    readonly value: number;
    readonly labels: Readonly<Record<string, string | number>>;
    readonly metricName?: string;
  }[];
}

/** A registry's metrics: what AggregatorRegistry.aggregate takes, one array per registry. */
export type MetricsJson = readonly MetricJson[];

/**
 * Upper bounds (seconds) of the request duration histogram: prom-client's defaults, and below them the
 * sub-millisecond and millisecond bounds a Node app's requests mostly fall in (with 5 ms lowest, every
 * fast app's p50 and p99 read 2.5 and 5 ms).
 */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** Counters only: each is the total since the unit started, so a later report never holds less. */
export interface RequestCounts {
  /** Requests answered, by "METHOD STATUS". */
  readonly requests: Record<string, number>;
  /** Per bucket of DURATION_BUCKETS (not cumulative), and one past the last for the rest. */
  readonly durationBuckets: number[];
  readonly durationSum: number;
}

export const NO_COUNTS: RequestCounts = { requests: {}, durationBuckets: DURATION_BUCKETS.map(() => 0).concat(0), durationSum: 0 };

/** One serving unit's report: a worker process without threads, or one thread. */
export interface UnitReport {
  readonly counts: RequestCounts;
  /** The app's default prom-client registry, if the app uses prom-client. */
  readonly app: MetricsJson | null;
}

/** A worker process's report: its units' counts added up, the app's metrics of each unit. */
export interface WorkerReport {
  readonly counts: RequestCounts;
  /** One entry per unit; with threads, one more for the threads that have exited (counters only). */
  readonly app: MetricsJson[];
  /** CPU time of the whole process, all its threads, in seconds. */
  readonly cpuSeconds: number;
  /** Share of the last interval the event loop of the worker's main thread was busy (0 to 1). */
  readonly eventLoopUtilization: number;
}

export function addCounts(a: RequestCounts, b: RequestCounts): RequestCounts {
  const requests = { ...a.requests };
  for (const [key, value] of Object.entries(b.requests)) requests[key] = (requests[key] ?? 0) + value;
  return {
    requests,
    durationBuckets: a.durationBuckets.map((value, i) => value + (b.durationBuckets[i] ?? 0)),
    durationSum: a.durationSum + b.durationSum,
  };
}

/** What survives a unit's exit: its counters and histograms (a gauge of a unit that is gone means nothing). */
export function countersOnly(metrics: MetricsJson): MetricsJson {
  return metrics.filter((metric) => metric.type === 'counter' || metric.type === 'histogram');
}
