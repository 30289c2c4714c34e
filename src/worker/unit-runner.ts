import * as net from 'node:net';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import type { AddressInfo } from 'node:net';
import type { Settings } from '../config/settings.ts';
import { nominalAddress } from '../config/bind.ts';
import type { Certificates } from '../edge/tls.ts';
import { ListenError } from '../errors.ts';
import { NO_TRAFFIC, type AppShape, type ListenPlan, type WorkerStats } from '../ipc/messages.ts';
import type { Hooks } from '../hooks.ts';
import type { Logger } from '../log/logger.ts';
import { acceptFailures, type RecurringWarning } from '../log/recurring.ts';
import { loadApp, parseAppSpec, type LoadedApp } from './app-loader.ts';
import { workerClassFor } from './classes/index.ts';
import { ServingUnit, type UnitSupervisor } from './serving-unit.ts';

/** What a worker process serves through: one unit in its own thread, or a pool of worker threads. */
export interface Units {
  /** Loads the app and starts accepting; resolves with the app's shape once every unit is ready. */
  start(): Promise<AppShape>;
  /** A connection handed over by the master (handoff plan only). */
  offer(socket: net.Socket): void;
  stats(): WorkerStats;
  /** Proxy plan: the unix sockets of the units taking requests now. */
  endpoints(): string[];
  /** Stops accepting, finishes what is in flight, calls back when every connection has closed. */
  drain(onDrained: () => void): void;
  /** USR1: the error and access logs among `files` open afresh. */
  reopenLogs(files: readonly string[]): void;
  flushLogs(): void;
}

/**
 * Loads the app outside any worker (--preload, in the master), with the address of the first bind,
 * which the app sees as its own (Fastify reads it when it listens).
 */
export function loadAppOnce(settings: Settings, listenWaitMs: number): Promise<LoadedApp> {
  return loadApp(parseAppSpec(settings.app!), {
    cwd: process.cwd(),
    address: nominalAddress(settings.bind[0]),
    listenWaitMs,
    onListenerError: () => {},
  });
}

export interface UnitBoot {
  readonly workerId: number;
  readonly generation: number;
  readonly settings: Settings;
  readonly certificates: Certificates | null;
  readonly listen: ListenPlan;
  readonly appAddress: AddressInfo | string | null;
}

/**
 * One serving unit in the current thread: loads the app, binds with SO_REUSEPORT when the plan says
 * so, and feeds every connection into the ServingUnit. A worker process without threads runs one;
 * with --threads every thread runs one.
 */
export class UnitRunner implements Units {
  private readonly boot: UnitBoot;
  private readonly logger: Logger;
  private readonly supervisor: UnitSupervisor;
  private readonly listeners: net.Server[] = [];
  private unit: ServingUnit | null = null;
  private readonly acceptFailed: RecurringWarning<Error>;
  private endpoint: string | null = null;

  private readonly hooks: Hooks;

  constructor(boot: UnitBoot, logger: Logger, hooks: Hooks, supervisor: UnitSupervisor) {
    this.boot = boot;
    this.logger = logger;
    this.hooks = hooks;
    this.supervisor = supervisor;
    this.acceptFailed = acceptFailures(logger);
  }

  async start(): Promise<AppShape> {
    const { settings, appAddress, listen } = this.boot;
    const app = await loadApp(parseAppSpec(settings.app!), {
      cwd: process.cwd(),
      address: appAddress,
      listenWaitMs: (settings.timeout || 30) * 1000,
      // As Gunicorn says it, with the request (the id, where requests get one, is in its headers).
      onListenerError: (error, req) => this.logger.error(`Error handling request${req ? ` ${req.method} ${req.url}` : ''}`, error),
    });
    const unit = new ServingUnit({
      server: app.server,
      workerClass: workerClassFor(settings),
      settings,
      certificates: this.boot.certificates,
      appAddress,
      supervisor: this.supervisor,
      hooks: this.hooks,
      workerInfo: { pid: process.pid, id: this.boot.workerId, generation: this.boot.generation },
      logger: this.logger,
      internalHop: listen.mode === 'proxy',
    });
    this.unit = unit;
    if (listen.mode === 'reuseport') {
      for (const address of listen.addresses) {
        await this.listen(unit, { host: address.host, port: address.port, backlog: listen.backlog, reusePort: true });
      }
    } else if (listen.mode === 'proxy') {
      // One socket per unit (process, or thread): the proxy counts and picks units, not processes.
      const endpoint = join(listen.directory, `${process.pid}-${threadId}.sock`);
      await this.listen(unit, { path: endpoint });
      this.endpoint = endpoint;
    }
    return app.shape;
  }

  private async listen(unit: ServingUnit, options: net.ListenOptions): Promise<void> {
    const server = net.createServer({ noDelay: true }, (socket) => unit.offer(socket));
    this.listeners.push(server);
    await new Promise<void>((resolve, reject) => {
      // Not the app failing: the master exits as when it cannot bind an address itself.
      const fail = (error: Error) => reject(new ListenError(error));
      server.once('error', fail);
      server.listen(options, () => {
        server.off('error', fail);
        resolve();
      });
    });
    server.on('error', (error) => this.acceptFailed.note(error));
  }

  endpoints(): string[] {
    return this.endpoint ? [this.endpoint] : [];
  }

  offer(socket: net.Socket): void {
    this.unit!.offer(socket);
  }

  stats(): WorkerStats {
    return this.unit?.stats() ?? NO_TRAFFIC;
  }

  drain(onDrained: () => void): void {
    this.endpoint = null;
    for (const server of this.listeners.splice(0)) server.close();
    if (this.unit) this.unit.drain(onDrained);
    else onDrained(); // still loading the app: nothing is in flight
  }

  reopenLogs(files: readonly string[]): void {
    this.logger.reopen(files);
    this.unit?.reopenLogs(files);
  }

  flushLogs(): void {
    this.unit?.flushLogs();
  }
}
