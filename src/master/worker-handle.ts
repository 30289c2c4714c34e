import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { NO_TRAFFIC, sendToWorker, type MasterMessage, type WorkerStats } from '../ipc/messages.ts';
import { Unit } from '../supervisor/unit.ts';

/** The master's view of one worker process: a supervised unit, and the process behind it. */
export class WorkerHandle extends Unit {
  readonly generation: number;
  readonly child: ChildProcess;
  readonly pid: number;
  stats: WorkerStats = NO_TRAFFIC;
  /** Proxy plan: the unix sockets of the worker's serving units (one, or one per thread). */
  endpoints: readonly string[] = [];
  /** Loopback port of the inspector SIGUSR1 starts in this worker (for a hung worker's stack). */
  inspectorPort: number | null = null;
  /** Node got as far as running forkgate in it (its first message came). */
  nodeStarted = false;

  constructor(id: number, generation: number, child: ChildProcess, now: number) {
    super(id, now);
    this.generation = generation;
    this.child = child;
    this.pid = child.pid!;
  }

  send(message: MasterMessage, socket?: Socket, onSent?: (error: Error | null) => void): void {
    sendToWorker(this.child, message, socket, onSent);
  }

  kill(signal: NodeJS.Signals): void {
    this.signalSent = signal;
    this.child.kill(signal);
  }
}
