/**
 * What the proxy (--balance proxy, --upstream) does with requests beyond relaying them, counted in the
 * master for /metrics: requests it answered itself (503 shed, 502), retried, took back, or queued.
 */
import { DURATION_BUCKETS } from './report.ts';

export const proxyCounts = {
  /** 503s by reason; every one from the start, so that rate() sees the first. */
  shed: new Map<string, number>(['queue full', 'queue timeout', 'stopping'].map((reason) => [reason, 0])),
  badGateway: 0,
  retries: 0,
  takenBack: 0,
  /** Time queued requests waited for a unit: per bucket of DURATION_BUCKETS, and one past the last. */
  queueWaitBuckets: DURATION_BUCKETS.map(() => 0).concat(0),
  queueWaitSum: 0,
};

export function countShed(reason: string): void {
  proxyCounts.shed.set(reason, (proxyCounts.shed.get(reason) ?? 0) + 1);
}

export function countBadGateway(): void {
  proxyCounts.badGateway++;
}

export function countRetry(): void {
  proxyCounts.retries++;
}

export function countTakenBack(): void {
  proxyCounts.takenBack++;
}

/** A queued request got a unit after waiting this long. */
export function countQueueWait(waitedMs: number): void {
  const seconds = waitedMs / 1000;
  let bucket = 0;
  while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]!) bucket++;
  proxyCounts.queueWaitBuckets[bucket]!++;
  proxyCounts.queueWaitSum += seconds;
}
