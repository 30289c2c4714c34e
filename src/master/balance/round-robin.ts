import type * as net from 'node:net';
import type { BindAddress } from '../../config/bind.ts';
import type { ListenPlan } from '../../ipc/messages.ts';
import type { WorkerHandle } from '../worker-handle.ts';
import { MasterListeners } from '../listen.ts';
import type { SocketAccess } from '../privileges.ts';
import type { Inheritance } from '../upgrade.ts';
import type { Balancer, BalancerLoad } from './balancer.ts';
import { connectionBudget } from '../../config/descriptors.ts';
import { refuseConnection } from '../../edge/refusal.ts';
import type { Logger } from '../../log/logger.ts';
import type { Settings } from '../../config/settings.ts';
import { handoffCapacity } from '../../worker/classes/index.ts';
import { count } from '../../log/count.ts';
import { RecurringWarning } from '../../log/recurring.ts';

/**
 * The master owns the listening sockets, accepts, and hands each connection to the ready worker with
 * the fewest open connections (ties rotate). The master keeps its copy of a connection until the worker
 * acknowledges it; a refusal (the worker started draining) or a worker death sends it to another
 * worker, so reloads and recycling lose nothing. With no worker ready, or none with room (a sync worker
 * takes one connection at a time), connections wait here.
 */
export class RoundRobinBalancer implements Balancer {
  readonly mode = 'handoff' as const;
  private readonly listeners: MasterListeners;
  private readonly ready: WorkerHandle[] = [];
  /** Per worker: connections sent and not yet acknowledged, by sequence number. */
  private readonly unacknowledged = new Map<WorkerHandle, Map<number, net.Socket>>();
  /** Per worker: open connections as it last reported them. */
  private readonly reported = new Map<WorkerHandle, number>();
  private readonly waiting: net.Socket[] = [];
  private nextSeq = 1;
  private cursor = 0;
  /** The connections it may hold for the workers at once: what the open-file limit leaves the master. */
  private readonly budget = connectionBudget();
  private readonly overBudget: RecurringWarning;
  /** The workers terminate TLS: a refusal cannot be answered. */
  private readonly tls: boolean;
  /** Connections one worker may have at once (see handoffCapacity); the rest wait here. */
  private capacity: number;
  private gracefulTimeoutMs: number;
  /** Set while a graceful stop waits for the connections waiting here to go to workers. */
  private handedOut: (() => void) | null = null;

  constructor(addresses: readonly BindAddress[], settings: Settings, logger: Logger) {
    this.tls = settings.certfile !== null;
    this.capacity = handoffCapacity(settings);
    this.gracefulTimeoutMs = settings.gracefulTimeout * 1000;
    this.overBudget = new RecurringWarning(
      logger,
      (refused) =>
        `At the open-file limit: answered ${count(refused, 'new connection')} 503, holding ${this.held()} for the workers (raise ulimit -n)`,
    );
    const onConnection = (socket: net.Socket) => {
      socket.on('error', () => {}); // a reset while waiting here is the client's business
      if (this.held() < this.budget) return this.distribute(socket);
      this.overBudget.note();
      refuseConnection(socket, this.tls);
    };
    this.listeners = new MasterListeners(addresses, settings.backlog, { pauseOnConnect: true, noDelay: true }, onConnection, logger);
  }

  listen(clients: SocketAccess): Promise<void> {
    return this.listeners.listen(clients);
  }

  urls(): string[] {
    return this.listeners.urls();
  }

  listenPlan(): ListenPlan {
    return { mode: 'handoff' };
  }

  appAddress(): net.AddressInfo | string | null {
    return this.listeners.firstAddress();
  }

  add(worker: WorkerHandle): void {
    this.ready.push(worker);
    this.unacknowledged.set(worker, new Map());
    this.reported.set(worker, 0);
    this.distributeWaiting();
  }

  /** Connections waiting here go to workers with room, in arrival order. */
  private distributeWaiting(): void {
    for (const socket of this.waiting.splice(0)) this.distribute(socket);
    if (this.waiting.length === 0) this.handedOut?.();
  }

  remove(worker: WorkerHandle): void {
    this.dropFromRotation(worker);
    // A draining worker still answers for what it was sent; only a dead one's connections are reclaimed.
    // Dead is its exit status, not its IPC channel, which may still read as open when 'exit' comes.
    const { child } = worker;
    if (child.exitCode === null && child.signalCode === null && child.connected) return;
    const pending = this.unacknowledged.get(worker);
    this.unacknowledged.delete(worker);
    this.reported.delete(worker);
    for (const socket of pending?.values() ?? []) this.distribute(socket);
  }

  accepted(worker: WorkerHandle, seq: number, ok: boolean, connections: number): void {
    const socket = this.reclaim(worker, seq);
    if (!socket) return;
    if (ok) {
      this.reported.set(worker, connections);
      socket.destroy(); // closes the master's copy of the descriptor; the worker's copy carries on
    } else {
      this.distribute(socket);
    }
  }

  unitsChanged(): void {}

  closed(worker: WorkerHandle, connections: number): void {
    if (!this.reported.has(worker)) return;
    this.reported.set(worker, connections);
    this.distributeWaiting();
  }

  load(): BalancerLoad {
    return { queued: this.waiting.length, backends: [] };
  }
  settingsChanged(settings: Settings): void {
    this.capacity = handoffCapacity(settings);
    this.gracefulTimeoutMs = settings.gracefulTimeout * 1000;
    this.distributeWaiting();
  }

  reopenLogs(): void {} // the workers write every line

  handOver(): void {
    this.listeners.handOver();
  }

  inheritance(): { inheritance: Inheritance; fds: number[] } {
    const fds = this.listeners.fds();
    return { inheritance: { mode: 'handoff', addresses: this.listeners.origins() }, fds };
  }

  /**
   * graceful: what waits here was accepted (a sync pool's queue), so it goes to the workers before they
   * drain, a USR2 predecessor's too; for --graceful-timeout at most, while a worker is ready.
   */
  async close(mode: 'graceful' | 'quick'): Promise<void> {
    this.listeners.close();
    if (mode === 'graceful' && this.waiting.length > 0 && this.ready.length > 0) {
      await new Promise<void>((resolve) => {
        const deadline = setTimeout(() => this.handedOut?.(), this.gracefulTimeoutMs);
        this.handedOut = () => {
          this.handedOut = null;
          clearTimeout(deadline);
          resolve();
        };
      });
    }
    for (const socket of this.waiting.splice(0)) socket.destroy();
  }

  /**
   * Sends the connection to the least loaded ready worker, or keeps it waiting here. A worker whose IPC
   * channel fails is out of rotation at once (its exit follows), so a connection never loops on it.
   */
  private distribute(socket: net.Socket): void {
    let worker = this.leastLoaded();
    while (worker && !worker.child.connected) {
      this.dropFromRotation(worker);
      worker = this.leastLoaded();
    }
    if (!worker) {
      this.waiting.push(socket);
      return;
    }
    const seq = this.nextSeq++;
    this.unacknowledged.get(worker)!.set(seq, socket);
    worker.send({ type: 'connection', seq }, socket, (error) => {
      if (!error) return;
      this.dropFromRotation(worker);
      const returned = this.reclaim(worker, seq);
      if (returned) this.distribute(returned);
    });
  }

  /** No new connections; what it was sent and never acknowledged goes elsewhere once it has exited. */
  private dropFromRotation(worker: WorkerHandle): void {
    const index = this.ready.indexOf(worker);
    if (index >= 0) this.ready.splice(index, 1);
  }

  /** The master's copy of a connection sent to the worker, no longer waiting for its acknowledgement. */
  private reclaim(worker: WorkerHandle, seq: number): net.Socket | undefined {
    const pending = this.unacknowledged.get(worker);
    const socket = pending?.get(seq);
    pending?.delete(seq);
    return socket;
  }

  /** Connections the master holds: waiting here, or sent and not yet acknowledged. */
  private held(): number {
    let held = this.waiting.length;
    for (const pending of this.unacknowledged.values()) held += pending.size;
    return held;
  }

  private leastLoaded(): WorkerHandle | undefined {
    let best: WorkerHandle | undefined;
    let bestLoad = Infinity;
    const count = this.ready.length;
    for (let step = 0; step < count; step++) {
      const worker = this.ready[(this.cursor + step) % count]!;
      const load = this.reported.get(worker)! + this.unacknowledged.get(worker)!.size;
      if (load < bestLoad && load < this.capacity) {
        best = worker;
        bestLoad = load;
      }
    }
    if (best) this.cursor = (this.ready.indexOf(best) + 1) % count;
    return best;
  }
}
