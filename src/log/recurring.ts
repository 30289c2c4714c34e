import { count } from './count.ts';
import type { Logger } from './logger.ts';

/**
 * A warning for a condition that may recur thousands of times a second (connections refused at the
 * open-file limit): logged at once, then at most once per interval with how often it happened since,
 * described by its latest occurrence.
 */
export class RecurringWarning<Detail = void> {
  private readonly logger: Logger;
  private readonly describe: (count: number, detail: Detail) => string;
  private readonly intervalMs: number;
  private count = 0;
  private loggedAt = -Infinity;

  constructor(logger: Logger, describe: (count: number, detail: Detail) => string, intervalMs = 10_000) {
    this.logger = logger;
    this.describe = describe;
    this.intervalMs = intervalMs;
  }

  note(detail: Detail): void {
    this.count++;
    const now = performance.now();
    if (now - this.loggedAt < this.intervalMs) return;
    this.logger.warning(this.describe(this.count, detail));
    this.count = 0;
    this.loggedAt = now;
  }
}

/**
 * A listening socket whose accept() fails (ENOBUFS, ENOMEM; EMFILE where libuv does not handle it)
 * only misses that connection: logged, at most every 10 s, never fatal.
 */
export function acceptFailures(logger: Logger): RecurringWarning<Error> {
  return new RecurringWarning(logger, (failures, error) => `Accepting a connection failed ${count(failures, 'time')}: ${error.message}`);
}
