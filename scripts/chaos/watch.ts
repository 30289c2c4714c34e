/**
 * Watches a running forkgate from outside every 50 ms: whether a master is alive, whether the pool is
 * at its size (from /status, checked against /proc; from the master's child processes in /proc when
 * /status does not answer), and when each unit a fault hit was seen gone.
 */
import { isAlive } from '../../src/proc.ts';
import { isRunning, poolFromProc, unitAlive, workerThreads, type ChaosServer, type PoolStatus } from './server.ts';
import type { FaultedUnit } from './verdict.ts';

const TICK_MS = 50;

export interface PoolShape {
  workers: number;
  /** Serving threads per worker process (1: the process is the unit). */
  threads: number;
  /** --max-memory in bytes: a worker over it is not counted as serving. */
  maxMemoryBytes?: number;
}

interface Sample {
  at: number;
  full: boolean;
  /** Workers ready, running and not retiring (null: the pool could not be read). */
  serving: number | null;
  masterAlive: boolean;
}

export class PoolWatch {
  private readonly server: ChaosServer;
  private readonly shape: PoolShape;
  private readonly samples: Sample[] = [];
  /** Units that must be gone before the pool counts as full again (a hung or stopped unit still shows as ready). */
  readonly mustBeGone = new Set<string>();
  /** A USR2 replaced the master: the pool is full only once a new master serves it and the first has left. */
  requireNewMaster = false;
  /** When each watched unit was first seen gone (its thread or process no longer alive). */
  readonly goneAt = new Map<string, number>();
  /** The units the fault took down, and since when: what the verdict excuses failures for. */
  readonly faulted: FaultedUnit[] = [];
  private readonly watched = new Set<string>();
  /** Poison requests sent, by id: every unit the fixture logs receiving one counts as faulted from then on. */
  private readonly poisons = new Map<string, { sentAt: number; mustGo: boolean; units: Set<string> }>();
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private listeners: (() => void)[] = [];

  constructor(server: ChaosServer, shape: PoolShape) {
    this.server = server;
    this.shape = shape;
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), TICK_MS);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** A unit ("pid/tid"; "pid/pid" for a whole process) the fault hits now; mustGo: it still shows as serving until replaced. */
  fault(unit: string, since: number, mustGo = false): void {
    this.faulted.push({ unit, since });
    if (mustGo) this.mustBeGone.add(unit);
    this.watched.add(unit);
    this.checkUnits(Date.now());
  }

  /** A request sent to take down whichever unit receives it (however late, and however many do). */
  poison(id: string, sentAt: number, mustGo: boolean): void {
    this.poisons.set(id, { sentAt, mustGo, units: new Set() });
    this.checkPoisons();
  }

  /** The units that received a poison request so far. */
  poisoned(id: string): string[] {
    this.checkPoisons();
    return [...(this.poisons.get(id)?.units ?? [])];
  }

  /** Whether a master was alive at every sample so far. */
  get masterAlwaysAlive(): boolean {
    return this.samples.every((sample) => sample.masterAlive);
  }

  /** No master for the last half second: nothing will fill the pool. */
  private masterGone(): boolean {
    const recent = this.samples.slice(-10);
    return recent.length === 10 && recent.every((sample) => !sample.masterAlive);
  }

  /** The longest stretch since `from` in which a master was alive and no worker was serving, in ms. */
  longestEmpty(from: number): number {
    let longest = 0;
    let since: number | null = null;
    for (const sample of this.samples) {
      if (sample.at < from) continue;
      if (sample.masterAlive && sample.serving === 0) since ??= sample.at;
      else since = null;
      if (since !== null) longest = Math.max(longest, sample.at - since);
    }
    return longest;
  }

  /** Whether a sample within `marginMs` of `at` found a master alive and no worker serving. */
  emptyNear(at: number, marginMs: number): boolean {
    return this.samples.some((sample) => Math.abs(sample.at - at) <= marginMs && sample.masterAlive && sample.serving === 0);
  }

  /** Whether some sample since `from` found the pool short. */
  dippedSince(from: number): boolean {
    return this.samples.some((sample) => sample.at >= from && !sample.full);
  }

  /** The first sample at or after `from` that finds the pool full, within `timeoutMs`; null if none did. */
  async fullAfter(from: number, timeoutMs: number): Promise<number | null> {
    const deadline = from + timeoutMs;
    for (;;) {
      const sample = this.samples.find((candidate) => candidate.at >= from && candidate.full);
      if (sample) return sample.at;
      if (Date.now() > deadline || !this.timer || this.masterGone()) return null;
      await new Promise<void>((resolve) => this.listeners.push(resolve));
    }
  }

  /** Waits (bounded) until a faulted unit is gone; returns whether it went. */
  async untilGone(unit: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.goneAt.has(unit) && Date.now() < deadline && this.timer) {
      await new Promise<void>((resolve) => this.listeners.push(resolve));
    }
    return this.goneAt.has(unit);
  }

  private async tick(): Promise<void> {
    if (this.ticking) return; // a slow /status answer: skip a beat rather than pile up
    this.ticking = true;
    try {
      const now = Date.now();
      this.checkPoisons();
      this.checkUnits(now);
      const masterAlive = this.server.anyMasterAlive();
      const status = masterAlive ? ((await this.server.status(500)) ?? poolFromProc(this.server.masterPid(), this.shape.workers)) : null;
      this.server.remember();
      const serving = status
        ? status.workers.filter((worker) => worker.state === 'ready' && !worker.retiring && isRunning(worker.pid)).length
        : null;
      this.samples.push({ at: now, full: status !== null && this.isFull(status), serving, masterAlive });
    } finally {
      this.ticking = false;
      for (const listener of this.listeners.splice(0)) listener();
    }
  }

  private checkPoisons(): void {
    if (this.poisons.size === 0) return;
    const receipts = this.server.readReceipts();
    for (const [id, poison] of this.poisons) {
      for (const { unit } of receipts.get(id) ?? []) {
        if (poison.units.has(unit)) continue;
        poison.units.add(unit);
        this.fault(unit, poison.sentAt, poison.mustGo);
      }
    }
  }

  private checkUnits(now: number): void {
    for (const unit of this.watched) if (!this.goneAt.has(unit) && !unitAlive(unit)) this.goneAt.set(unit, now);
  }

  private isFull(status: PoolStatus): boolean {
    const { workers, threads, maxMemoryBytes } = this.shape;
    if (status.target !== workers) return false;
    const serving = status.workers.filter((worker) => worker.state === 'ready' && !worker.retiring);
    if (serving.length !== workers) return false;
    for (const worker of serving) {
      if (!isRunning(worker.pid)) return false; // dead but not yet reaped, or stopped
      if (maxMemoryBytes && worker.rssBytes > maxMemoryBytes) return false;
      if (threads > 1 && workerThreads(worker.pid).length !== threads) return false;
    }
    for (const unit of this.mustBeGone) if (unitAlive(unit)) return false;
    if (this.requireNewMaster && (status.master.pid === this.server.pid || isAlive(this.server.pid))) return false;
    return true;
  }
}
