/**
 * /metrics for the whole pool, in the master. A scrape asks every worker for its report over IPC
 * (waiting COLLECT_MS at most: a worker busy past it counts with its last report) and serves, through
 * prom-client, forkgate's own metrics and the app's prom-client metrics summed over the workers
 * (AggregatorRegistry.aggregate). Counters never go backwards: what an exited worker last reported
 * stays in a retired total, the last report of a worker that exits once drained comes as it exits, and
 * per-worker series are labelled by the worker's slot (the lowest number no serving worker holds), which a
 * replacement takes over, not by its pid.
 */
import type { Registry } from 'prom-client';
import { formatUpstream, type Settings } from '../config/settings.ts';
import type { BalancerLoad } from '../master/balance/balancer.ts';
import type { EndpointSocket } from '../master/upgrade.ts';
import type { WorkerHandle } from '../master/worker-handle.ts';
import type { Exit, RetireReason } from '../supervisor/unit.ts';
import type { BindAddress } from '../config/bind.ts';
import type { Logger } from '../log/logger.ts';
import { aggregate, sumMetrics } from './aggregate.ts';
import { MetricsEndpoint } from './endpoint.ts';
import { proxyCounts } from './proxy-counts.ts';
import { metricsWanted } from './recorder.ts';
import { statsdFor, type Statsd } from './statsd.ts';
import {
  addCounts,
  countersOnly,
  DURATION_BUCKETS,
  NO_COUNTS,
  type MetricJson,
  type MetricsJson,
  type RequestCounts,
  type WorkerReport,
} from './report.ts';

/** How long a scrape waits for the workers' reports. */
const COLLECT_MS = 1000;
/** A report that comes this long after its worker's exit is ignored (its exit was folded into the totals). */
const LATE_REPORT_MS = 5000;

/** Restarts the dashboard lists. */
const RECENT_RESTARTS = 20;

export interface PoolSnapshot {
  /** Date.now() when taken. */
  readonly at: number;
  /** Requests answered since the master started; durationBuckets as RequestCounts has them. */
  readonly requests: number;
  readonly durationBuckets: readonly number[];
  readonly target: number;
  readonly queued: number;
  readonly restarts: readonly { readonly at: number; readonly slot: number; readonly pid: number; readonly reason: RestartReason }[];
  readonly workers: readonly {
    readonly slot: number;
    readonly pid: number;
    readonly state: string;
    readonly requests: number;
    readonly rssBytes: number;
    readonly cpuSeconds: number;
    readonly eventLoopUtilization: number;
    readonly uptimeSeconds: number;
  }[];
}

/** Why a worker was replaced, as forkgate_worker_restarts_total labels it. */
const RESTART_REASONS = ['crash', 'killed', 'timeout', 'max-requests', 'max-memory', 'reload'] as const;
export type RestartReason = (typeof RESTART_REASONS)[number];

export interface PoolView {
  workers(): Iterable<WorkerHandle>;
  /** The pool size asked for. */
  target(): number;
  load(): BalancerLoad;
  settings(): Settings;
}

interface Ledger {
  readonly slot: number;
  report: WorkerReport | null;
  /** When the worker exited; its report is folded into the retired totals LATE_REPORT_MS later. */
  exitedAt: number | null;
}

interface SlotTotals {
  requests: number;
  cpuSeconds: number;
}

export class PoolMetrics {
  private readonly pool: PoolView;
  private readonly slots = new Map<WorkerHandle, number>();
  private readonly ledgers = new Map<number, Ledger>();
  private retiredCounts: RequestCounts = NO_COUNTS;
  private readonly retiredSlots = new Map<number, SlotTotals>();
  private retiredApp: MetricsJson[] = [];
  private appFolded: Promise<void> = Promise.resolve();
  /** Every reason from the start, at 0: rate() and increase() see the first restart. */
  private readonly restarts = new Map<RestartReason, number>(RESTART_REASONS.map((reason) => [reason, 0]));
  private bootFailures = 0;
  private recentRestarts: PoolSnapshot['restarts'] = [];
  private seq = 0;
  private readonly waiting = new Map<number, () => void>();
  private collecting: Promise<void> | null = null;
  private masterRegistry: Promise<Registry> | null = null;
  private endpoint: MetricsEndpoint | null = null;
  private statsd: Statsd | null = null;

  constructor(pool: PoolView) {
    this.pool = pool;
  }

  /** The master's own process metrics (prom-client's defaults, named forkgate_master_*) from now on. */
  start(): void {
    this.masterRegistry ??= import('prom-client').then(({ Registry, collectDefaultMetrics }) => {
      const registry = new Registry();
      collectDefaultMetrics({ register: registry, prefix: 'forkgate_master_' });
      return registry;
    });
  }

  /**
   * --metrics-bind, or in a USR2 successor the descriptor its predecessor handed over; false (the error
   * logged) when the address cannot be bound.
   */
  async listen(address: BindAddress, inheritedFd: number | undefined, logger: Logger): Promise<boolean> {
    this.start();
    try {
      this.endpoint = await MetricsEndpoint.start(address, inheritedFd, () => this.exposition());
    } catch (error) {
      logger.error(`Cannot serve metrics: ${(error as Error).message}`);
      return false;
    }
    logger.info(`Metrics at: ${this.endpoint.url()}`);
    return true;
  }

  close(): void {
    this.endpoint?.close();
  }

  /** The --metrics-bind listening socket, for a USR2 successor to inherit. */
  socket(): EndpointSocket | null {
    return this.endpoint?.socket() ?? null;
  }

  /** USR2: the successor serves --metrics-bind from now on. */
  handOver(): void {
    this.endpoint?.handOver();
  }

  workerSpawned(worker: WorkerHandle): void {
    if (metricsWanted(this.pool.settings())) this.start();
    if (!this.statsd) {
      this.statsd = statsdFor(this.pool.settings());
      this.statsd?.beforeFlush(() => this.statsd!.gauge('gunicorn.workers', [...this.pool.workers()].length));
    }
    const taken = new Set(this.slotHolders().map((holder) => this.slots.get(holder)));
    let slot = 1;
    while (taken.has(slot)) slot++;
    this.slots.set(worker, slot);
    this.ledgers.set(worker.pid, { slot, report: null, exitedAt: null });
  }

  /**
   * The workers holding their slot: a retiring or draining one gives it up to its replacement (their
   * counts add up in the slot's counters; its gauges show the replacement).
   */
  private slotHolders(): WorkerHandle[] {
    return [...this.slots.keys()].filter((worker) => worker.state !== 'draining' && worker.state !== 'retiring');
  }

  reported(worker: WorkerHandle, seq: number | null, report: WorkerReport): void {
    const ledger = this.ledgers.get(worker.pid);
    if (ledger) ledger.report = report;
    if (seq !== null) this.waiting.get(seq)?.();
  }

  /** stopping: the pool is stopping, and no worker is replaced. */
  workerExited(worker: WorkerHandle, exit: Exit, stopping: boolean): void {
    this.slots.delete(worker);
    this.foldExited(); // those gone a while: without scrapes the ledgers would grow with every restart
    const ledger = this.ledgers.get(worker.pid);
    if (ledger) ledger.exitedAt = Date.now();
    this.waiting.get(-worker.pid)?.();
    if (stopping) return;
    if (exit.cause === 'boot-failure' && worker.readyAt === null) {
      this.bootFailures++;
      return;
    }
    const reason = restartReason(worker, exit);
    if (!reason) return;
    this.restarts.set(reason, (this.restarts.get(reason) ?? 0) + 1);
    this.recentRestarts = [
      ...this.recentRestarts.slice(1 - RECENT_RESTARTS),
      { at: Date.now(), slot: ledger?.slot ?? 0, pid: worker.pid, reason },
    ];
  }

  /** The pool as the dashboard shows it, collected now: totals since start, each worker, recent restarts. */
  async snapshot(): Promise<PoolSnapshot> {
    await this.collect();
    this.foldExited();
    let counts = this.retiredCounts;
    for (const ledger of this.ledgers.values()) if (ledger.report) counts = addCounts(counts, ledger.report.counts);
    const now = Date.now();
    return {
      at: now,
      requests: requestTotal(counts),
      durationBuckets: counts.durationBuckets,
      target: this.pool.target(),
      queued: this.pool.load().queued,
      restarts: this.recentRestarts,
      workers: [...this.slots]
        .sort(([, a], [, b]) => a - b)
        .map(([worker, slot]) => {
          const report = this.ledgers.get(worker.pid)?.report;
          return {
            slot,
            pid: worker.pid,
            state: worker.state,
            requests: report ? requestTotal(report.counts) : 0,
            rssBytes: worker.rss,
            cpuSeconds: report?.cpuSeconds ?? 0,
            eventLoopUtilization: report?.eventLoopUtilization ?? 0,
            uptimeSeconds: (now - worker.startedAt) / 1000,
          };
        }),
    };
  }

  /** The exposition (Prometheus text format) and its content type. */
  async exposition(): Promise<{ contentType: string; text: string }> {
    this.start();
    await this.collect();
    this.foldExited();
    await this.appFolded;
    const app = [...this.retiredApp];
    // An exited worker's gauges are gone with it; its counters stay until they join the retired totals.
    for (const ledger of this.ledgers.values()) {
      if (ledger.report) app.push(...(ledger.exitedAt === null ? ledger.report.app : ledger.report.app.map(countersOnly)));
    }
    // An app's metric named like forkgate's own would make the exposition ambiguous: forkgate's is kept.
    const appMetrics = app.map((metrics) => metrics.filter((metric) => !metric.name.startsWith('forkgate_')));
    const { Registry } = await import('prom-client');
    const registry = Registry.merge([await this.masterRegistry!, await aggregate([this.ownMetrics(), ...appMetrics])]);
    return { contentType: registry.contentType, text: await registry.metrics() };
  }

  /** Asks every worker that serves for its report; resolves once all answered or COLLECT_MS passed. */
  private collect(): Promise<void> {
    this.collecting ??= this.askWorkers().finally(() => (this.collecting = null));
    return this.collecting;
  }

  private async askWorkers(): Promise<void> {
    const asked: Promise<void>[] = [];
    for (const worker of this.pool.workers()) {
      if (worker.state === 'booting' || !worker.child.connected) continue;
      const seq = ++this.seq;
      asked.push(
        new Promise<void>((done) => {
          const finish = () => {
            clearTimeout(timer);
            this.waiting.delete(seq);
            this.waiting.delete(-worker.pid);
            done();
          };
          const timer = setTimeout(finish, COLLECT_MS);
          this.waiting.set(seq, finish);
          this.waiting.set(-worker.pid, finish); // it exits meanwhile
          worker.send({ type: 'collect-metrics', seq });
        }),
      );
    }
    await Promise.all(asked);
  }

  /** Reports of workers gone for LATE_REPORT_MS join the retired totals (counters and histograms only). */
  private foldExited(): void {
    const now = Date.now();
    for (const [pid, ledger] of this.ledgers) {
      if (ledger.exitedAt === null || now - ledger.exitedAt < LATE_REPORT_MS) continue;
      this.ledgers.delete(pid);
      const report = ledger.report;
      if (!report) continue;
      this.retiredCounts = addCounts(this.retiredCounts, report.counts);
      const slot = this.retiredSlots.get(ledger.slot) ?? { requests: 0, cpuSeconds: 0 };
      slot.requests += requestTotal(report.counts);
      slot.cpuSeconds += report.cpuSeconds;
      this.retiredSlots.set(ledger.slot, slot);
      for (const metrics of report.app) this.retiredApp.push(countersOnly(metrics));
    }
    if (this.retiredApp.length > 1) {
      // Summed into one, in turn: a scrape waits for the sum, so it never sees part of the retired totals.
      this.appFolded = this.appFolded.then(async () => {
        const parts = this.retiredApp.splice(0);
        this.retiredApp.unshift(
          ...(await sumMetrics(parts).then(
            (sum) => [sum],
            () => parts,
          )),
        );
      });
    }
  }

  private ownMetrics(): MetricJson[] {
    const holders = new Set(this.slotHolders().map((worker) => this.ledgers.get(worker.pid)));
    let counts = this.retiredCounts;
    const perSlot = new Map<number, SlotTotals>();
    for (const [slot, totals] of this.retiredSlots) perSlot.set(slot, { ...totals });
    const utilization: MetricJson['values'][number][] = [];
    for (const ledger of this.ledgers.values()) {
      if (!ledger.report) continue;
      counts = addCounts(counts, ledger.report.counts);
      const slot = perSlot.get(ledger.slot) ?? { requests: 0, cpuSeconds: 0 };
      slot.requests += requestTotal(ledger.report.counts);
      slot.cpuSeconds += ledger.report.cpuSeconds;
      perSlot.set(ledger.slot, slot);
      if (holders.has(ledger)) utilization.push({ labels: { worker: ledger.slot }, value: ledger.report.eventLoopUtilization });
    }
    const workers = [...this.pool.workers()];
    const states = { booting: 0, ready: 0, retiring: 0, draining: 0 };
    let inFlight = 0;
    let connections = 0;
    for (const worker of workers) {
      if (worker.state !== 'exited') states[worker.state]++;
      inFlight += worker.stats.inFlight;
      connections += worker.stats.connections;
    }
    const load = this.pool.load();
    const settings = this.pool.settings();
    const slots = [...perSlot].sort(([a], [b]) => a - b);
    const live = this.slotHolders().sort((a, b) => this.slots.get(a)! - this.slots.get(b)!);
    return [
      counter(
        'forkgate_http_requests_total',
        'Requests the app answered, by method and status code.',
        Object.entries(counts.requests).map(([key, value]) => {
          const [method, code] = key.split(' ');
          return { labels: { method: method!, code: code! }, value };
        }),
      ),
      histogram(
        'forkgate_http_request_duration_seconds',
        'Time from a request reaching the app to its response closing, in seconds.',
        counts.durationBuckets,
        counts.durationSum,
      ),
      gauge('forkgate_http_requests_in_flight', 'Requests the workers are answering now.', [{ labels: {}, value: inFlight }]),
      gauge('forkgate_http_connections', 'Client connections the workers hold open now.', [{ labels: {}, value: connections }]),
      gauge(
        'forkgate_workers',
        'Worker processes by state (retiring: serving until its replacement is ready).',
        Object.entries(states).map(([state, value]) => ({ labels: { state }, value })),
      ),
      gauge('forkgate_workers_target', 'The pool size asked for.', [{ labels: {}, value: this.pool.target() }]),
      counter(
        'forkgate_worker_restarts_total',
        'Workers replaced, by reason: crash, killed (by a signal forkgate did not send), timeout, max-requests, max-memory, reload.',
        [...this.restarts].map(([reason, value]) => ({ labels: { reason }, value })),
      ),
      counter('forkgate_worker_boot_failures_total', 'Workers that exited before they were ready.', [
        { labels: {}, value: this.bootFailures },
      ]),
      counter(
        'forkgate_worker_requests_total',
        'Requests answered per worker slot (a replacement takes over the slot of the worker it replaces).',
        slots.map(([slot, totals]) => ({ labels: { worker: slot }, value: totals.requests })),
      ),
      counter(
        'forkgate_worker_cpu_seconds_total',
        'CPU time (user and system) per worker slot, in seconds.',
        slots.map(([slot, totals]) => ({ labels: { worker: slot }, value: totals.cpuSeconds })),
      ),
      gauge(
        'forkgate_worker_resident_memory_bytes',
        "Each live worker's resident memory (RSS, all its threads), by slot.",
        live.map((worker) => ({ labels: { worker: this.slots.get(worker)! }, value: worker.rss })),
      ),
      gauge(
        'forkgate_worker_event_loop_utilization',
        "Share of the time since the previous scrape the event loop of each live worker's main thread was busy, by slot.",
        utilization,
      ),
      gauge(
        'forkgate_worker_uptime_seconds',
        'How long each live worker has run, by slot.',
        live.map((worker) => ({ labels: { worker: this.slots.get(worker)! }, value: (Date.now() - worker.startedAt) / 1000 })),
      ),
      gauge('forkgate_queue_length', 'Connections (round-robin) or requests (--balance proxy) waiting in the master for a worker.', [
        { labels: {}, value: load.queued },
      ]),
      gauge('forkgate_backends', '--balance proxy and --upstream: units or upstreams in rotation (healthy).', [
        { labels: {}, value: load.backends.length },
      ]),
      ...(settings.balance === 'proxy' || settings.upstream.length > 0 ? proxyMetrics(settings, load) : []),
    ];
  }
}

function requestTotal(counts: RequestCounts): number {
  let total = 0;
  for (const value of Object.values(counts.requests)) total += value;
  return total;
}

function counter(name: string, help: string, values: MetricJson['values']): MetricJson {
  return { name, help, type: 'counter', aggregator: 'sum', values };
}

function gauge(name: string, help: string, values: MetricJson['values']): MetricJson {
  return { name, help, type: 'gauge', aggregator: 'sum', values };
}

function histogram(name: string, help: string, buckets: readonly number[], sum: number): MetricJson {
  const values: MetricJson['values'][number][] = [];
  let cumulative = 0;
  DURATION_BUCKETS.forEach((le, i) => {
    cumulative += buckets[i]!;
    values.push({ metricName: `${name}_bucket`, labels: { le }, value: cumulative });
  });
  cumulative += buckets[DURATION_BUCKETS.length]!;
  values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: cumulative });
  values.push({ metricName: `${name}_sum`, labels: {}, value: sum });
  values.push({ metricName: `${name}_count`, labels: {}, value: cumulative });
  return { name, help, type: 'histogram', aggregator: 'sum', values };
}

/** What the proxy counted in the master, and whether each --upstream is in rotation. */
function proxyMetrics(settings: Settings, load: BalancerLoad): MetricJson[] {
  const inRotation = new Set(load.backends.map((backend) => backend.name));
  return [
    counter(
      'forkgate_proxy_shed_total',
      'Requests the proxy answered 503 itself, by reason: queue full, queue timeout, stopping.',
      [...proxyCounts.shed].map(([reason, value]) => ({ labels: { reason }, value })),
    ),
    counter('forkgate_proxy_bad_gateway_total', 'Requests the proxy answered 502: the unit or upstream failed to answer.', [
      { labels: {}, value: proxyCounts.badGateway },
    ]),
    counter('forkgate_proxy_retries_total', 'Requests sent again to another backend: the first never reached its backend.', [
      { labels: {}, value: proxyCounts.retries },
    ]),
    counter('forkgate_proxy_taken_back_total', 'Requests taken back from a unit stuck on another request, and sent to one that moves.', [
      { labels: {}, value: proxyCounts.takenBack },
    ]),
    histogram(
      'forkgate_proxy_queue_wait_seconds',
      'How long requests that found every backend busy waited in the queue, in seconds.',
      proxyCounts.queueWaitBuckets,
      proxyCounts.queueWaitSum,
    ),
    gauge(
      'forkgate_upstream_up',
      '--upstream: 1 while the upstream is in rotation, 0 while it is out (refusing, or failing --upstream-health).',
      settings.upstream.map((upstream) => ({
        labels: { upstream: formatUpstream(upstream) },
        value: inRotation.has(formatUpstream(upstream)) ? 1 : 0,
      })),
    ),
  ];
}

/** Why a worker that was serving exited, or null when nobody replaces it for a reason (TTOU). */
function restartReason(worker: WorkerHandle, exit: Exit): RestartReason | null {
  switch (exit.cause) {
    case 'hung':
      return 'timeout';
    case 'killed':
      return 'killed';
    case 'crashed':
    case 'boot-failure': // one that was ready: a crash loop, replaced with back-off
      return 'crash';
    case 'drained':
    case 'overstayed':
      return worker.retiredFor === null ? null : RETIRE_REASONS[worker.retiredFor];
  }
}

const RETIRE_REASONS: Record<RetireReason, RestartReason> = { spent: 'max-requests', 'over-memory': 'max-memory', reload: 'reload' };
