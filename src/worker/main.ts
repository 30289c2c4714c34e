/**
 * A worker process: waits for the master's boot message, loads the app, receives connections (handed
 * over by the master, or accepted itself with SO_REUSEPORT), reports heartbeats, and drains on request.
 */
import * as net from 'node:net';
import type { Settings } from '../config/settings.ts';
import {
  isProtocolMessage,
  sendToMaster,
  serializeError,
  type ListenPlan,
  type MasterMessage,
} from '../ipc/messages.ts';
import { Logger } from '../log/logger.ts';
import { loadApp, parseAppSpec } from './app-loader.ts';
import { workerClassFor } from './classes/index.ts';
import { ServingUnit } from './serving-unit.ts';

type BootMessage = Extract<MasterMessage, { type: 'boot' }>;

/** How often a worker proves its event loop turns; the master allows --timeout of silence. */
export function heartbeatInterval(timeoutSeconds: number): number {
  return timeoutSeconds > 0 ? Math.min(1000, (timeoutSeconds * 1000) / 4) : 1000;
}

export async function runWorker(): Promise<void> {
  const boot = await nextBootMessage();
  const { settings } = boot;
  process.title = `${settings.name ?? 'forkgate'}: worker [${settings.app}]`;
  const logger = new Logger(settings.errorLogfile, settings.logLevel);
  const worker = new Worker(boot, logger);
  await worker.start();
}

class Worker {
  private readonly boot: BootMessage;
  private readonly settings: Settings;
  private readonly logger: Logger;
  private readonly listeners: net.Server[] = [];
  private unit: ServingUnit | null = null;
  private draining = false;

  constructor(boot: BootMessage, logger: Logger) {
    this.boot = boot;
    this.settings = boot.settings;
    this.logger = logger;
  }

  async start(): Promise<void> {
    process.on('message', (message: unknown, socket?: net.Socket) => {
      if (isProtocolMessage<MasterMessage>(message)) this.onMessage(message, socket);
    });
    // Gunicorn's worker signals: TERM drains, INT and QUIT stop at once. The terminal's Ctrl-C reaches
    // every process of the group; the master decides what happens to the pool.
    process.on('SIGTERM', () => this.drain());
    process.on('SIGINT', () => this.exit(0));
    process.on('SIGQUIT', () => this.exit(0));
    process.on('SIGHUP', () => {});
    process.on('SIGUSR1', () => this.reopenLogs());
    // The master is gone (even killed with SIGKILL): finish what is in flight and leave no orphan.
    process.on('disconnect', () => this.drain());
    process.on('uncaughtException', (error) => this.crash(error));

    this.startHeartbeat();
    let unit: ServingUnit;
    try {
      const app = await loadApp(parseAppSpec(this.settings.app!), {
        cwd: process.cwd(),
        address: this.boot.appAddress,
        listenWaitMs: (this.settings.timeout || 30) * 1000,
        onListenerError: (error) => this.logger.error('Error handling request', error),
      });
      unit = new ServingUnit({
        server: app.server,
        workerClass: workerClassFor(this.settings),
        settings: this.settings,
        appAddress: this.boot.appAddress,
        onRetire: (reason) => sendToMaster({ type: 'retire', reason }),
      });
      this.unit = unit;
      await this.listen(this.boot.listen, unit);
      sendToMaster({ type: 'ready', shape: app.shape });
    } catch (error) {
      this.failBoot(error);
    }
  }

  private onMessage(message: MasterMessage, socket: net.Socket | undefined): void {
    switch (message.type) {
      case 'connection': {
        if (!socket) return;
        if (this.draining || !this.unit) {
          socket.destroy(); // our copy only: the master still holds the connection and re-balances it
          sendToMaster({ type: 'accepted', seq: message.seq, ok: false, connections: 0 });
          return;
        }
        this.unit.offer(socket);
        sendToMaster({ type: 'accepted', seq: message.seq, ok: true, connections: this.unit.stats().connections });
        return;
      }
      case 'drain':
        return this.drain();
      case 'reopen-logs':
        return this.reopenLogs();
      case 'boot':
        return;
    }
  }

  private async listen(plan: ListenPlan, unit: ServingUnit): Promise<void> {
    if (plan.mode === 'handoff') return;
    for (const address of plan.addresses) {
      const server = net.createServer({ noDelay: true }, (socket) => unit.offer(socket));
      this.listeners.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: address.host, port: address.port, backlog: plan.backlog, reusePort: true }, resolve);
      });
    }
  }

  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    for (const server of this.listeners.splice(0)) server.close();
    const unit = this.unit;
    if (!unit) return this.exit(0); // still booting: nothing is in flight
    // The master kills a worker that overstays --graceful-timeout; without a master, the worker does.
    setTimeout(() => this.exit(0), this.settings.gracefulTimeout * 1000).unref();
    unit.drain(() => this.exit(0));
  }

  private reopenLogs(): void {
    this.logger.reopen();
    this.unit?.reopenLogs();
  }

  private startHeartbeat(): void {
    const every = heartbeatInterval(this.settings.timeout);
    setInterval(() => {
      const stats = this.unit?.stats() ?? { requests: 0, inFlight: 0, connections: 0 };
      sendToMaster({ type: 'heartbeat', stats });
    }, every).unref();
  }

  private failBoot(error: unknown): void {
    if (process.connected) {
      // The master prints the error once for the whole pool; exit once the message is on its way.
      sendToMaster({ type: 'boot-error', error: serializeError(error) }, () => process.exit(3));
    } else {
      this.logger.error('Worker failed to boot', error);
      process.exit(3);
    }
  }

  private crash(error: Error): void {
    if (!this.unit && !this.draining) return this.failBoot(error);
    this.logger.error('Worker crashed: uncaught exception', error);
    this.exit(1);
  }

  private exit(code: number): void {
    this.unit?.flushLogs();
    this.logger.close();
    process.exit(code);
  }
}

function nextBootMessage(): Promise<BootMessage> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown) => {
      if (isProtocolMessage<MasterMessage>(message) && message.type === 'boot') {
        process.off('message', onMessage);
        resolve(message);
      }
    };
    process.on('message', onMessage);
  });
}
