import type { Settings } from '../../config/settings.ts';
import type { Certificates } from '../../edge/tls.ts';
import type { BackendLoad } from '../../proxy/dispatcher.ts';
import type { ListenPlan } from '../../ipc/messages.ts';
import type { SocketAccess, WorkerIdentity } from '../privileges.ts';
import type { Inheritance } from '../upgrade.ts';
import type { WorkerHandle } from '../worker-handle.ts';

/** What waits in the master, and where requests go (for /status and health). */
export interface BalancerLoad {
  /** Connections (round-robin) or requests (proxy) waiting in the master for a worker. */
  readonly queued: number;
  /** Proxy: the units or upstreams in rotation; takenBack: requests taken back from it while it was stuck. */
  readonly backends: readonly BackendLoad[];
}

/**
 * A load-balancing strategy, as Node's cluster has RoundRobinHandle and SharedHandle: the arbiter
 * tells it which workers may take work; the strategy decides how connections reach them.
 */
export interface Balancer {
  readonly mode: ListenPlan['mode'];
  /**
   * Binds what the master must bind; rejects with the OS error (address in use, permission). clients:
   * the mode and owner of the unix sockets it binds for clients; owner: the user the workers run as
   * (--user/--group), for what the master creates for them.
   */
  listen(clients: SocketAccess, owner: WorkerIdentity | null): Promise<void>;
  /** The addresses clients can reach, as URLs for the log ('http://127.0.0.1:8000', 'unix:/run/app.sock'). */
  urls(): string[];
  /** What a new worker does to receive connections. */
  listenPlan(): ListenPlan;
  /** What `server.address()` answers inside an app that called listen() itself. */
  appAddress(): import('node:net').AddressInfo | string | null;
  /** The worker is ready: it may be given connections. */
  add(worker: WorkerHandle): void;
  /** The ready worker's units (worker.endpoints) changed: a thread was replaced or retired. */
  unitsChanged(worker: WorkerHandle): void;
  /** The worker drains or has exited: it gets nothing more; what it had not acknowledged goes elsewhere. */
  remove(worker: WorkerHandle): void;
  /** A worker acknowledged (or refused) a handed-over connection. */
  accepted(worker: WorkerHandle, seq: number, ok: boolean, connections: number): void;
  /** A connection handed to the worker closed: it has this many open. */
  closed(worker: WorkerHandle, connections: number): void;
  /** What waits in the master, and the proxy's backends in rotation (for /status and health). */
  load(): BalancerLoad;
  /**
   * HUP brought new settings (bind and balance excepted: those take a restart) and the certificates
   * read with them; warns of what else takes a restart.
   */
  settingsChanged(settings: Settings, certificates: Certificates | null): void;
  /** USR1: the log files the master writes for the balancer (the proxy's access log), if among `files`, reopen. */
  reopenLogs(files: readonly string[]): void;
  /** What a USR2 successor takes over, and the listening descriptors it inherits (round-robin). */
  inheritance(): { inheritance: Inheritance; fds: number[] };
  /** A USR2 successor serves on the listening sockets now: stop listening, leaving unix socket files in place. */
  handOver(): void;
  /**
   * Stops accepting new connections; resolves once the balancer no longer needs the workers: at once
   * for round-robin and reuseport, once what it accepted is answered for the proxy. quick: drop what
   * is left now.
   */
  close(mode: 'graceful' | 'quick'): Promise<void>;
}
