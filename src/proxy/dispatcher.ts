/**
 * Which unit takes the next request: the least busy, counted by the proxy itself (it sees every request
 * start and end). A unit stuck on something long ranks after every unit making progress, and what it
 * has not started is taken back (docs/architecture.md, "proxy"). When every unit is at capacity,
 * requests wait here, first come first served, within --queue-limit and --queue-timeout.
 */
import { HopPool, type HopTarget } from '../hop/pool.ts';
import { realClock, type Clock, type Timeout } from '../clock.ts';
import { StuckThreshold } from './stuck-threshold.ts';
import { countQueueWait, countTakenBack } from '../metrics/proxy-counts.ts';

/** One place requests can go: a worker's unit (process or thread) or an --upstream server. */
export interface Backend {
  /** For the log: the unit's socket path or the upstream's URL. */
  readonly name: string;
  readonly target: HopTarget;
  /** The keep-alive connections to this backend. */
  readonly pool: HopPool;
  /** Requests (and tunnels) it may have at once: 1 for sync units. */
  capacity: number;
  /** A unit of forkgate's, which may have requests taken back (an --upstream server may not). */
  readonly ours: boolean;
  inFlight: number;
  /**
   * Of those, requests it has shown no sign of having started (no interim answer, no response head):
   * only these can wait behind something long. One whose handler awaits, and an open tunnel, cannot.
   */
  unstarted: number;
  /** When it last showed progress, or got a request to start while it had none. */
  lastProgressAt: number;
  /** It has answered a request: a unit just started is slow at first, not stuck. */
  answered: boolean;
  /** Requests taken back from it so far (for /status). */
  takenBack: number;
}

/** A backend as it enters rotation: nothing in flight, nothing answered yet. */
export function newBackend(name: string, target: HopTarget, capacity: number, ours: boolean): Backend {
  return {
    name,
    target,
    pool: new HopPool(target),
    capacity,
    ours,
    inFlight: 0,
    unstarted: 0,
    lastProgressAt: 0,
    answered: false,
    takenBack: 0,
  };
}

/** A backend in rotation, as /status shows it. */
export interface BackendLoad {
  readonly name: string;
  readonly inFlight: number;
  readonly capacity: number;
  readonly takenBack: number;
}

export type QueueRefusal = 'queue full' | 'queue timeout' | 'stopping';

interface Waiter {
  readonly grant: (backend: Backend) => void;
  readonly refuse: (reason: QueueRefusal) => void;
  timer: Timeout | null;
  /** When the request first asked for a backend (the clock's time). */
  readonly since: number;
}

export class Dispatcher {
  readonly clock: Clock;
  /** When a unit with requests in flight counts as stuck, from the gaps between its signs of progress. */
  readonly stuck = new StuckThreshold();
  private backends: Backend[] = [];
  private readonly queue: Waiter[] = [];
  private readonly queueLimit: number;
  private readonly queueTimeoutMs: number;
  private cursor = 0;
  private closed = false;
  /** Armed while units of forkgate's have requests in flight: looks for stuck ones. */
  private stuckCheck: Timeout | null = null;

  constructor(queueLimit: number, queueTimeoutSeconds: number, clock: Clock = realClock) {
    this.clock = clock;
    this.queueLimit = queueLimit;
    this.queueTimeoutMs = queueTimeoutSeconds * 1000;
  }

  add(backend: Backend): void {
    this.backends.push(backend);
    this.serveQueue();
  }

  /** Takes the backend out of rotation; what it has in flight finishes (or fails) on its own. */
  remove(backend: Backend): void {
    this.backends = this.backends.filter((other) => other !== backend);
  }

  /** A new --worker-connections for the backend (an upstream's, on reload): more room serves the queue. */
  setCapacity(backend: Backend, capacity: number): void {
    backend.capacity = capacity;
    this.serveQueue();
  }

  has(backend: Backend): boolean {
    return this.backends.includes(backend);
  }

  /** For /status: what waits here, and each backend in rotation with its requests in flight. */
  load(): { readonly queued: number; readonly backends: readonly BackendLoad[] } {
    return {
      queued: this.queue.length,
      backends: this.backends.map(({ name, inFlight, capacity, takenBack }) => ({ name, inFlight, capacity, takenBack })),
    };
  }

  /**
   * Calls grant with a backend now or once one frees up, or refuse. avoid: a backend just tried, passed
   * over if there is another; since: when the request first asked (clock.now()), from which
   * --queue-timeout runs. Returns a cancel function for a client that leaves while it waits.
   */
  acquire(
    grant: (backend: Backend) => void,
    refuse: (reason: QueueRefusal) => void,
    { avoid, since = this.clock.now() }: { avoid?: Backend; since?: number } = {},
  ): () => void {
    const backend = this.closed ? null : this.pick(avoid);
    if (backend) {
      this.take(backend);
      grant(backend);
      return noop;
    }
    if (this.closed) {
      refuse('stopping');
      return noop;
    }
    if (this.queue.length >= this.queueLimit) {
      refuse('queue full');
      return noop;
    }
    const waiter: Waiter = { grant, refuse, timer: null, since };
    waiter.timer = this.clock.setTimeout(
      () => {
        this.dequeue(waiter);
        refuse('queue timeout');
      },
      Math.max(0, since + this.queueTimeoutMs - this.clock.now()),
    );
    this.queue.push(waiter);
    return () => {
      if (this.dequeue(waiter)) this.clock.clearTimeout(waiter.timer!);
    };
  }

  /** The backend's first sign of a request: it confirmed it started it, or began answering it. */
  started(backend: Backend): void {
    this.noteProgress(backend);
    backend.unstarted--;
  }

  /** A later sign of progress on a request it has started. */
  progress(backend: Backend): void {
    this.noteProgress(backend);
  }

  /** The request is over; `started`: the backend had shown a sign of it (started was called). */
  release(backend: Backend, started: boolean): void {
    this.noteProgress(backend);
    backend.inFlight--;
    if (!started) backend.unstarted--;
    backend.answered = true;
    this.serveQueue();
  }

  /** A request taken back from the backend: its slot is free, but the backend made no progress. */
  releaseTakenBack(backend: Backend): void {
    backend.inFlight--;
    backend.unstarted--;
    backend.takenBack++;
    countTakenBack();
  }

  /** No more requests are taken: those waiting are refused. */
  close(): void {
    this.closed = true;
    if (this.stuckCheck) this.clock.clearTimeout(this.stuckCheck);
    for (const waiter of this.queue.splice(0)) {
      this.clock.clearTimeout(waiter.timer!);
      waiter.refuse('stopping');
    }
  }

  /**
   * Takes back what waits on stuck units when another unit could take it. Runs after the loop's reads
   * (an immediate), so that a response or confirmation already at hand counts first. A unit that has
   * answered nothing yet is starting, slow rather than stuck.
   */
  private checkStuck(): void {
    this.clock.setImmediate(() => {
      this.stuckCheck = null;
      const now = this.clock.now();
      const stuckMs = this.stuck.ms;
      if (this.backends.some((backend) => backend.inFlight < backend.capacity && !isStuck(backend, now, stuckMs))) {
        for (const backend of this.backends) {
          if (backend.ours && backend.answered && isStuck(backend, now, stuckMs)) backend.pool.takeBackWaiting(now, stuckMs);
        }
      }
      if (!this.closed && this.backends.some((backend) => backend.ours && backend.unstarted > 0)) {
        this.stuckCheck = this.clock.setTimeout(() => this.checkStuck(), stuckMs / 2);
      }
    });
  }

  private noteProgress(backend: Backend): void {
    const now = this.clock.now();
    if (backend.unstarted > 0) this.stuck.record(now - backend.lastProgressAt);
    backend.lastProgressAt = now;
  }

  private take(backend: Backend): void {
    if (backend.unstarted === 0) backend.lastProgressAt = this.clock.now();
    backend.inFlight++;
    backend.unstarted++;
    if (backend.ours) this.stuckCheck ??= this.clock.setTimeout(() => this.checkStuck(), this.stuck.ms);
  }

  private serveQueue(): void {
    while (this.queue.length > 0) {
      const backend = this.pick();
      if (!backend) return;
      const waiter = this.queue.shift()!;
      this.clock.clearTimeout(waiter.timer!);
      this.take(backend);
      countQueueWait(this.clock.now() - waiter.since);
      waiter.grant(backend);
    }
  }

  /**
   * The least busy backend with room: one making progress, with the fewest in flight; if every one is
   * stuck (a loaded machine makes quick requests slow too), the one that progressed last. Ties rotate.
   */
  private pick(avoid?: Backend): Backend | null {
    const count = this.backends.length;
    const now = this.clock.now();
    const stuckMs = this.stuck.ms;
    let best: Backend | null = null;
    let bestIndex = 0;
    let bestStuck = true;
    for (let step = 0; step < count; step++) {
      const index = (this.cursor + step) % count;
      const backend = this.backends[index]!;
      if (backend.inFlight >= backend.capacity || (backend === avoid && count > 1)) continue;
      const stuck = isStuck(backend, now, stuckMs);
      if (best === null || (bestStuck && !stuck) || (stuck === bestStuck && less(backend, best, stuck))) {
        best = backend;
        bestIndex = index;
        bestStuck = stuck;
      }
    }
    if (best) this.cursor = (bestIndex + 1) % count;
    return best;
  }

  private dequeue(waiter: Waiter): boolean {
    const index = this.queue.indexOf(waiter);
    if (index < 0) return false;
    this.queue.splice(index, 1);
    return true;
  }
}

function isStuck(backend: Backend, now: number, stuckMs: number): boolean {
  return backend.unstarted > 0 && now - backend.lastProgressAt > stuckMs;
}

/** Whether a ranks before b, both making progress or both stuck. */
function less(a: Backend, b: Backend, stuck: boolean): boolean {
  if (stuck && a.lastProgressAt !== b.lastProgressAt) return a.lastProgressAt > b.lastProgressAt;
  return a.inFlight < b.inFlight;
}

function noop(): void {}
