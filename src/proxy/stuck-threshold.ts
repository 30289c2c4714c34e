/**
 * How long a busy unit may go without progress before it counts as stuck, judged against what the units
 * are doing now: twice the longest of the ordinary gaps between their signs of progress (the 99th
 * percentile of recent ones), never under STUCK_MIN_MS. On a quiet host quick requests leave gaps far
 * below the floor, and a unit burning the CPU is caught at the floor; on a slow or crowded host, where a
 * unit that is merely descheduled goes quiet for milliseconds, the threshold rises with those gaps and
 * ordinary requests are not taken back.
 */

/** The threshold on a quiet host: a 20 ms burn is caught this early. */
export const STUCK_MIN_MS = 4;
/** Past this a unit is stuck however slow the host: no ordinary gap is that long. */
const STUCK_MAX_MS = 100;
/** The threshold over the percentile: a gap twice the longest ordinary one is not ordinary. */
const GAP_FACTOR = 2;
const PERCENTILE = 0.99;

// Gaps counted in buckets a quarter of an octave wide, from 1/16 ms up: log-scale resolution to within
// 19 %, enough for a threshold, at the cost of one logarithm per gap.
const STEPS_PER_OCTAVE = 4;
const SMALLEST_MS = 1 / 16;
const BUCKETS = 4 * 12;
/** Gaps between two updates; each update then halves the counts, so older gaps fade. */
const UPDATE_EVERY = 256;

export class StuckThreshold {
  /** Milliseconds without progress after which a unit with requests in flight is stuck. */
  ms = STUCK_MIN_MS;
  private readonly counts = new Float64Array(BUCKETS);
  private total = 0;
  private sinceUpdate = 0;

  /** A busy unit showed progress this long after its previous sign of it (or after it became busy). */
  record(gapMs: number): void {
    const index = gapMs <= SMALLEST_MS ? 0 : Math.min(BUCKETS - 1, Math.floor(STEPS_PER_OCTAVE * Math.log2(gapMs / SMALLEST_MS)));
    this.counts[index]!++;
    this.total++;
    if (++this.sinceUpdate === UPDATE_EVERY) this.update();
  }

  private update(): void {
    this.sinceUpdate = 0;
    let below = this.total * PERCENTILE;
    let index = 0;
    while (index < BUCKETS - 1 && below > this.counts[index]!) below -= this.counts[index++]!;
    const gapMs = SMALLEST_MS * 2 ** ((index + 1) / STEPS_PER_OCTAVE); // the bucket's upper bound
    this.ms = Math.min(STUCK_MAX_MS, Math.max(STUCK_MIN_MS, GAP_FACTOR * gapMs));
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! /= 2;
    this.total /= 2;
  }
}
