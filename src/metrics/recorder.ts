/**
 * Counts the requests a serving unit answers, on the path every request takes in every balance mode,
 * for /metrics and statsd. One per thread (each has its own copy of this module): a per-request cost of
 * two clock reads and a few array increments, nothing allocated.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Settings } from '../config/settings.ts';
import { DURATION_BUCKETS, type RequestCounts } from './report.ts';
import { statsdFor, statsdRequestObserver } from './statsd.ts';
import { answeredStatus } from '../log/status.ts';

/** When the request came (performance.now()), kept on its response. */
const STARTED = Symbol('forkgate.started');

type TimedResponse = ServerResponse & { [STARTED]?: number };

/** Status codes past this are counted as this (HTTP defines none above 599). */
const MAX_STATUS = 999;

/** Told of each request as it ends: method, status, duration in seconds. */
export type RequestObserver = (method: string, status: number, seconds: number) => void;

export class RequestRecorder {
  /** Per method, a count per status code; Node's parser gives the same string for a method each time. */
  private readonly byMethod = new Map<string, Float64Array>();
  private readonly buckets = new Float64Array(DURATION_BUCKETS.length + 1);
  private durationSum = 0;
  private readonly observers: RequestObserver[] = [];

  started(res: ServerResponse): void {
    (res as TimedResponse)[STARTED] = performance.now();
  }

  done(res: ServerResponse): void {
    const started = (res as TimedResponse)[STARTED];
    if (started === undefined) return;
    const seconds = (performance.now() - started) / 1000;
    const method = (res.req as IncomingMessage).method ?? 'GET';
    let statuses = this.byMethod.get(method);
    if (!statuses) {
      statuses = new Float64Array(MAX_STATUS + 1);
      this.byMethod.set(method, statuses);
    }
    const status = answeredStatus(res);
    statuses[status > 0 && status < MAX_STATUS ? status : MAX_STATUS]!++;
    let bucket = 0;
    while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]!) bucket++;
    this.buckets[bucket]!++;
    this.durationSum += seconds;
    for (const observe of this.observers) observe(method, status, seconds);
  }

  /** Statsd: told of every request as it ends. */
  observe(observer: RequestObserver): void {
    this.observers.push(observer);
  }

  counts(): RequestCounts {
    const requests: Record<string, number> = {};
    for (const [method, statuses] of this.byMethod) {
      for (let status = 0; status <= MAX_STATUS; status++) if (statuses[status]! > 0) requests[`${method} ${status}`] = statuses[status]!;
    }
    return { requests, durationBuckets: Array.from(this.buckets), durationSum: this.durationSum };
  }
}

let recorder: RequestRecorder | null = null;

/** Whether anything reads the metrics: the admin endpoint, --metrics-bind or statsd. */
export function metricsWanted(settings: Pick<Settings, 'adminBind' | 'metricsBind' | 'statsdHost'>): boolean {
  return settings.adminBind !== null || settings.metricsBind !== null || settings.statsdHost !== null;
}

/** This thread's recorder; null when nothing reads the metrics, so nothing is counted. */
export function recorderFor(settings: Settings): RequestRecorder | null {
  if (!metricsWanted(settings)) return null;
  if (!recorder) {
    recorder = new RequestRecorder();
    const statsd = statsdFor(settings);
    if (statsd) recorder.observe(statsdRequestObserver(statsd));
  }
  return recorder;
}

/** This thread's recorder, if its unit records. */
export function activeRecorder(): RequestRecorder | null {
  return recorder;
}
