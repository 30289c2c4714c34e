/** A clock that moves only when a test advances it: timers and immediates run in order, at their time. */
import type { Clock, Timeout } from '../../src/clock.ts';

interface Timer extends Timeout {
  readonly at: number;
  readonly callback: () => void;
}

export class ManualClock implements Clock {
  private time: number;
  private timers: Timer[] = [];
  private immediates: (() => void)[] = [];

  constructor(start = 1000) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  setTimeout(callback: () => void, ms: number): Timeout {
    const timer: Timer = { at: this.time + Math.max(0, ms), callback, unref() {} };
    this.timers.push(timer);
    return timer;
  }

  clearTimeout(timeout: Timeout): void {
    this.timers = this.timers.filter((timer) => timer !== timeout);
  }

  /** Timers set and not yet run nor cleared. */
  pendingTimers(): number {
    return this.timers.length;
  }

  setImmediate(callback: () => void): void {
    this.immediates.push(callback);
  }

  /** Moves time on by ms: each timer due runs at its own time (first set first among equals), each followed by the immediates it queued. */
  advance(ms: number): void {
    const end = this.time + ms;
    this.runImmediates();
    for (;;) {
      const due = this.timers.filter((timer) => timer.at <= end);
      if (due.length === 0) break;
      const next = due.reduce((first, timer) => (timer.at < first.at ? timer : first));
      this.timers = this.timers.filter((timer) => timer !== next);
      this.time = next.at;
      next.callback();
      this.runImmediates();
    }
    this.time = end;
  }

  private runImmediates(): void {
    while (this.immediates.length > 0) this.immediates.shift()!();
  }
}
