import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { NO_TRAFFIC, sendToWorker, type MasterMessage, type WorkerStats } from '../ipc/messages.ts';

/**
 * booting: spawned, loading the app; ready: serving; draining: told to finish and exit.
 * (exited workers are removed from the pool at once.)
 */
export type WorkerState = 'booting' | 'ready' | 'draining';

/** The master's view of one worker process. */
export class WorkerHandle {
  /** Increases with every spawn: "oldest first" compares ids (Gunicorn's worker age). */
  readonly id: number;
  readonly generation: number;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly spawnedAt = Date.now();
  state: WorkerState = 'booting';
  /** Still serving, but to be drained as soon as a replacement is ready (reload, max-requests). */
  retiring = false;
  /** Served its --max-requests: drained as soon as any fresh worker serves, not only its replacement. */
  spent = false;
  lastHeartbeat = Date.now();
  /** Whether any message came yet: the heartbeat timeout applies from then on. */
  heard = false;
  drainDeadline = Infinity;
  stats: WorkerStats = NO_TRAFFIC;
  /** Resident memory of the whole worker process (all its threads), as its last heartbeat said. */
  rss = 0;
  /** Proxy plan: the unix sockets of the worker's serving units (one, or one per thread). */
  endpoints: readonly string[] = [];
  /** Loopback port of the inspector SIGUSR1 starts in this worker (for a hung worker's stack). */
  inspectorPort: number | null = null;
  /** Set once the heartbeat timeout fired: the worker is on its way out. */
  timedOut = false;
  /** Signal the master itself sent (timeout kill, forced stop), to tell it from an outside kill. */
  killedWith: NodeJS.Signals | null = null;

  constructor(id: number, generation: number, child: ChildProcess) {
    this.id = id;
    this.generation = generation;
    this.child = child;
    this.pid = child.pid!;
  }

  send(message: MasterMessage, socket?: Socket, onSent?: (error: Error | null) => void): void {
    sendToWorker(this.child, message, socket, onSent);
  }

  kill(signal: NodeJS.Signals): void {
    this.killedWith = signal;
    this.child.kill(signal);
  }
}
