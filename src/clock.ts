/** Time as the dispatcher and the recurring warnings read and schedule it; tests drive a clock of their own. */
export interface Clock {
  /** Milliseconds, monotonic: performance.now(), the scale the hop's pool stamps requests on. */
  now(): number;
  setTimeout(callback: () => void, ms: number): Timeout;
  clearTimeout(timeout: Timeout): void;
  /** Runs the callback once the event loop has done the reads at hand. */
  setImmediate(callback: () => void): void;
}

/** A scheduled callback, as the clock that scheduled it knows it. */
export interface Timeout {
  /** The pending callback keeps no process alive. */
  unref(): void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (timeout) => clearTimeout(timeout as NodeJS.Timeout),
  setImmediate: (callback) => void setImmediate(callback),
};
