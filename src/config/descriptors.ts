/**
 * Open-file descriptors. Every connection takes one, and past the limit (RLIMIT_NOFILE, `ulimit -n`)
 * accept() fails with EMFILE, where libuv closes new connections unanswered and says nothing. So
 * forkgate keeps a reserve below the limit and answers 503 itself beyond its budget.
 */
import * as fs from 'node:fs';

/** The soft limit on open files (Node raises it to the hard limit at start), or null where /proc is silent. */
export function openFileLimit(): number | null {
  try {
    const limit = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
    return limit === undefined ? null : limit === 'unlimited' ? Infinity : Number(limit);
  } catch {
    return null;
  }
}

/** What the app and Node may open besides connections: a tenth of the limit, at least 16. */
export function reserveFor(limit: number): number {
  return Math.max(16, Math.ceil(limit / 10));
}

/**
 * How many connections this process may hold from now on: the limit, less the descriptors open now,
 * less the reserve. Infinity where the limit cannot be read.
 */
export function connectionBudget(limit = openFileLimit()): number {
  if (limit === null || limit === Infinity) return Infinity;
  let open: number;
  try {
    open = fs.readdirSync('/proc/self/fd').length;
  } catch {
    return Infinity;
  }
  return Math.max(0, limit - open - reserveFor(limit));
}
