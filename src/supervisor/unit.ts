/**
 * One supervised unit (a worker process, or a thread of one) as its supervisor sees it, and the back-off
 * between boot failures. Pure: every time is passed in, so a test drives it with numbers.
 */

/**
 * booting: started, loading the app; ready: serving; retiring: serving until a replacement serves
 * (reload, --max-requests, --max-memory); draining: taking nothing new, finishing what it has; exited.
 */
export type UnitState = 'booting' | 'ready' | 'retiring' | 'draining' | 'exited';

/** spent: served its --max-requests (it goes as soon as any fresh unit serves, not only its replacement). */
export type RetireReason = 'reload' | 'spent' | 'over-memory';

/** hung: silent past --timeout; overstayed: still draining past its deadline. */
export type KillReason = 'hung' | 'overstayed';

/**
 * boot-failure: died before it was ready, or failed on its own soon after, before any client came (a
 * crash loop); killed: by a signal its supervisor did not send; crashed: ended on its own while it
 * should serve (or failed while draining); drained: finished as it was asked to.
 */
export type ExitCause = 'boot-failure' | 'killed' | 'crashed' | 'drained' | KillReason;

/** How a unit ended: a thread has an exit code only. */
export interface Ending {
  readonly code: number | null;
  readonly signal?: NodeJS.Signals | null;
}

export interface Exit {
  readonly cause: ExitCause;
  /** It left while it should have served on, so it is replaced: a restart. */
  readonly restart: boolean;
}

export class Unit {
  /** Increases with every start: "oldest first" compares ids. */
  readonly id: number;
  readonly startedAt: number;
  private current: UnitState = 'booting';
  private readyAtTime: number | null = null;
  private retiredForReason: RetireReason | null = null;
  private killedForReason: KillReason | null = null;
  private drainUntil = Infinity;
  private heardAt: number;
  private heardYet = false;
  private servedYet = false;
  /** Resident memory, as it last reported it (0: not measured). */
  rss = 0;
  /** The signal its supervisor last sent, to tell its own kills from anyone else's. */
  signalSent: NodeJS.Signals | null = null;

  constructor(id: number, now: number) {
    this.id = id;
    this.startedAt = now;
    this.heardAt = now;
  }

  get state(): UnitState {
    return this.current;
  }

  /** When it first became ready; null while it never was. */
  get readyAt(): number | null {
    return this.readyAtTime;
  }

  get retiredFor(): RetireReason | null {
    return this.retiredForReason;
  }

  /** What a boot failure happened before, for the log: readiness, or (a crash loop) its first client. */
  get failedBefore(): string {
    return this.readyAtTime === null ? 'it was ready' : 'any client came';
  }

  /** Set once its supervisor decided to kill it: it is not judged again. */
  get killedFor(): KillReason | null {
    return this.killedForReason;
  }

  /** When it was last heard from (any message counts as a heartbeat); when it started, before that. */
  get lastHeartbeat(): number {
    return this.heardAt;
  }

  /** Whether anything came yet: until then it may still be starting its runtime (see the start grace). */
  get heard(): boolean {
    return this.heardYet;
  }

  /** When a draining unit is killed if it is still there (Infinity: never). */
  get drainDeadline(): number {
    return this.drainUntil;
  }

  /** Whether work may be sent to it: ready (retiring or not), and not on its way out. */
  get serves(): boolean {
    return this.readyAtTime !== null && (this.current === 'ready' || this.current === 'retiring') && this.killedForReason === null;
  }

  /** Its first client came (a connection, whatever it asks). */
  served(): void {
    this.servedYet = true;
  }

  heartbeat(now: number): void {
    this.heardAt = now;
    this.heardYet = true;
  }

  /** It says it serves. A unit retired while booting serves on until its replacement does. */
  ready(now: number): boolean {
    if (this.readyAtTime !== null || (this.current !== 'booting' && this.current !== 'retiring')) return false;
    this.readyAtTime = now;
    if (this.current === 'booting') this.moveTo('ready');
    return true;
  }

  /** Wants a replacement; keeps the first reason given. */
  retire(why: RetireReason): boolean {
    if (this.current !== 'booting' && this.current !== 'ready') return false;
    this.retiredForReason = why;
    this.moveTo('retiring');
    return true;
  }

  /** Takes nothing new and must be gone by the deadline; a second call only brings the deadline closer. */
  drain(deadline: number): boolean {
    this.drainUntil = Math.min(this.drainUntil, deadline);
    if (this.current === 'draining' || this.current === 'exited') return false;
    this.moveTo('draining');
    return true;
  }

  /** Its supervisor kills it (the kill may take a while: a hung worker's stack is read first). */
  condemn(why: KillReason): void {
    this.killedForReason ??= why;
  }

  /** It is gone: the one place an exit gets its cause. */
  exited(ending: Ending, now: number): Exit {
    const from = this.current;
    const signal = ending.signal ?? null;
    const clean = ending.code === 0 || (signal !== null && signal === this.signalSent);
    let cause: ExitCause;
    if (from === 'booting') cause = 'boot-failure';
    else if (signal !== null && signal !== this.signalSent) cause = 'killed';
    else if (this.killedForReason) cause = this.killedForReason;
    else if (from === 'draining' && clean) cause = 'drained';
    // Failed soon after it was ready, before any client came: a crash loop, never a poison request.
    else if (from === 'ready' && !clean && !this.servedYet && now - this.readyAtTime! < CRASH_LOOP_UPTIME_MS) cause = 'boot-failure';
    else cause = 'crashed';
    this.moveTo('exited');
    return { cause, restart: from !== 'draining' };
  }

  /** Every change of state goes through here. */
  private moveTo(state: UnitState): void {
    this.current = state;
  }
}

/** A unit that fails on its own this soon after it is ready, before any client came, failed to boot. */
const CRASH_LOOP_UPTIME_MS = 10_000;

/** After a boot failure the next start waits 500 ms, doubling up to 30 s (PM2's exp_backoff_restart_delay). */
const BACK_OFF_FIRST_MS = 500;
const BACK_OFF_MAX_MS = 30_000;
/** This long without a boot failure ends a crash loop. */
const QUIET_MS = 60_000;

/**
 * Boot failures in a row, and when the next start may be. Only boot failures count: a unit that served
 * and died is replaced at once (it may have died of a client's request, and a back-off would turn one bad
 * request into an outage). A unit that serves ends the crash loop, and so does new code (reload).
 */
export class BootBackOff {
  private count = 0;
  private lastFailureAt = -Infinity;
  private nextAt = -Infinity;

  /** Boot failures in a row. */
  get failures(): number {
    return this.count;
  }

  /** When the next start may be. */
  get nextStartAt(): number {
    return this.nextAt;
  }

  private inCrashLoop(now: number): boolean {
    return this.count > 0 && now - this.lastFailureAt < QUIET_MS;
  }

  /** A unit failed to boot: returns how long the next start waits. */
  failed(now: number): number {
    this.count = this.inCrashLoop(now) ? this.count + 1 : 1;
    this.lastFailureAt = now;
    const delay = Math.min(BACK_OFF_MAX_MS, BACK_OFF_FIRST_MS * 2 ** (this.count - 1));
    this.nextAt = now + delay;
    return delay;
  }

  reset(): void {
    this.count = 0;
    this.lastFailureAt = -Infinity;
    this.nextAt = -Infinity;
  }

  /** How many units may start at `now`: none before the next start, one at a time while a crash loop is recent. */
  startsAllowed(now: number): number {
    if (now < this.nextAt) return 0;
    return this.inCrashLoop(now) ? 1 : Infinity;
  }
}
