import { realClock, type Clock, type Timeout } from '../clock.ts';
import { count } from './count.ts';
import type { Logger } from './logger.ts';

/**
 * A warning for a condition that may recur thousands of times a second (connections refused at the
 * open-file limit): logged at once, then at most once per interval with how often it happened since,
 * described by its latest occurrence. What happened within an interval is logged when it ends, so a
 * burst is told in full even if nothing follows it.
 */
export class RecurringWarning<Detail = void> {
  private readonly logger: Pick<Logger, 'warning'>;
  private readonly describe: (count: number, detail: Detail) => string;
  private readonly intervalMs: number;
  private readonly clock: Clock;
  /** Occurrences not logged yet, and the latest of them. */
  private count = 0;
  private latest: { readonly detail: Detail } | null = null;
  private loggedAt = -Infinity;
  private timer: Timeout | null = null;

  constructor(
    logger: Pick<Logger, 'warning'>,
    describe: (count: number, detail: Detail) => string,
    intervalMs = 10_000,
    clock: Clock = realClock,
  ) {
    this.logger = logger;
    this.describe = describe;
    this.intervalMs = intervalMs;
    this.clock = clock;
  }

  note(detail: Detail): void {
    this.count++;
    this.latest = { detail };
    const wait = this.loggedAt + this.intervalMs - this.clock.now();
    if (wait <= 0) return this.log();
    if (this.timer) return;
    this.timer = this.clock.setTimeout(() => this.log(), wait);
    this.timer.unref();
  }

  private log(): void {
    // A note may come at the interval's end before its timer does.
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.logger.warning(this.describe(this.count, this.latest!.detail));
    this.count = 0;
    this.latest = null;
    this.loggedAt = this.clock.now();
  }
}

/**
 * A listening socket whose accept() fails (ENOBUFS, ENOMEM; EMFILE where libuv does not handle it)
 * only misses that connection: logged, at most every 10 s, never fatal.
 */
export function acceptFailures(logger: Logger): RecurringWarning<Error> {
  return new RecurringWarning(logger, (failures, error) => `Accepting a connection failed ${count(failures, 'time')}: ${error.message}`);
}
