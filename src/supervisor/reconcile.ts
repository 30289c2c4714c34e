/**
 * The supervision rules, once, for worker processes and for threads: from the units there are, the
 * number wanted and the time, what to do now. Pure: the arbiter and the thread pool carry the plan out
 * (spawn and kill a process, or start and terminate a thread).
 */
import type { BootBackOff, Unit } from './unit.ts';

export interface Policy {
  /** Heartbeat timeout, --timeout (0: none). */
  readonly timeoutMs: number;
  /** A unit not heard from yet may still be starting its runtime: it gets at least this long. */
  readonly startGraceMs: number;
  /** Resident memory beyond which a ready unit is replaced, --max-memory (0: no limit). */
  readonly maxMemoryBytes: number;
}

export interface Pool<U extends Unit> {
  readonly units: Iterable<U>;
  readonly target: number;
  readonly now: number;
  readonly policy: Policy;
  readonly backOff: BootBackOff;
  /** The pool is stopping: its units are drained by the stop, and only deadlines still apply. */
  readonly stopping: boolean;
}

export interface Plan<U extends Unit> {
  /** Kill: silent past the timeout. */
  readonly hung: U[];
  /** Kill: still draining past the deadline. */
  readonly overstayed: U[];
  /** Retire: over the memory limit (counted as retiring in the rest of the plan). */
  readonly overMemory: U[];
  /** Units to start. */
  readonly spawn: number;
  /** Stop giving them work and let them finish. */
  readonly drain: U[];
  /** Units are missing and the back-off holds every start until then; null when nothing waits. */
  readonly startAt: number | null;
  /** Fresh units serving (ready, neither retiring nor draining) once the plan is carried out. */
  readonly ready: number;
}

/**
 * Keeps `target` fresh units (neither retiring nor draining), and never takes one away before a
 * replacement serves: a retiring unit drains only as fresh units become ready, the newest kept longest.
 */
export function reconcile<U extends Unit>({ units, target, now, policy, backOff, stopping }: Pool<U>): Plan<U> {
  const all = [...units].sort((a, b) => a.id - b.id);
  const hung: U[] = [];
  const overstayed: U[] = [];
  const overMemory: U[] = [];
  for (const unit of all) {
    if (unit.killedFor) continue;
    if (unit.state === 'draining') {
      if (now > unit.drainDeadline) overstayed.push(unit);
    } else if (policy.maxMemoryBytes > 0 && unit.state === 'ready' && unit.rss > policy.maxMemoryBytes) {
      overMemory.push(unit);
    } else if (policy.timeoutMs > 0) {
      const silenceMs = unit.heard ? policy.timeoutMs : Math.max(policy.timeoutMs, policy.startGraceMs);
      if (now - unit.lastHeartbeat > silenceMs) hung.push(unit);
    }
  }
  if (stopping) return { hung, overstayed, overMemory, spawn: 0, drain: [], startAt: null, ready: 0 };

  const retiring = (unit: U) => unit.state === 'retiring' || overMemory.includes(unit);
  let fresh = all.filter((unit) => (unit.state === 'booting' || unit.state === 'ready') && !retiring(unit));
  const missing = target - fresh.length;
  // While a crash loop is recent, one at a time.
  const spawn = Math.max(0, Math.min(missing, backOff.startsAllowed(now)));
  const startAt = missing > 0 && spawn === 0 ? backOff.nextStartAt : null;

  // Fewer wanted: those still booting go first (they serve nothing yet), newest first, then the oldest.
  const byUsefulness = [...fresh.filter((unit) => unit.state === 'booting').reverse(), ...fresh.filter((unit) => unit.state === 'ready')];
  const drain = byUsefulness.slice(0, Math.max(0, -missing));
  fresh = fresh.filter((unit) => !drain.includes(unit));
  const ready = fresh.filter((unit) => unit.state === 'ready').length;

  // A retiring unit that never served goes at once; a spent one once any fresh unit serves; the others
  // as fresh units become ready, the newest kept longest.
  const replaceable = all.filter(retiring);
  const keepable = replaceable.filter((unit) => unit.readyAt !== null && !(unit.retiredFor === 'spent' && ready > 0));
  const kept = keepable.slice(Math.max(0, keepable.length - (target - ready)));
  drain.push(...replaceable.filter((unit) => !kept.includes(unit)));
  return { hung, overstayed, overMemory, spawn, drain, startAt, ready };
}
