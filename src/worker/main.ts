/**
 * A worker process: waits for the master's boot message, starts its units (one, or a pool of threads),
 * receives connections (handed over by the master, or accepted with SO_REUSEPORT), reports heartbeats,
 * and drains on request.
 */
import { registerHooks } from 'node:module';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Settings } from '../config/settings.ts';
import { heartbeatInterval, isProtocolMessage, NO_TRAFFIC, sendToMaster, serializeError, type MasterMessage } from '../ipc/messages.ts';
import { ExitCode } from '../errors.ts';
import { Logger } from '../log/logger.ts';
import { outliveOutputReaders } from '../log/sink.ts';
import { handoffCapacity, usesThreads } from './classes/index.ts';
import { ThreadPool } from './thread-pool.ts';
import { processTitle } from '../process-title.ts';
import { UnitRunner, type Units } from './unit-runner.ts';
import { loadWorkerHooks, runHook, type Hooks, type WorkerInfo } from '../hooks.ts';
import { printWarningsWithForkgateHint } from './warnings.ts';
import { answerMaster, sendLastReport } from '../metrics/worker-side.ts';

type BootMessage = Extract<MasterMessage, { type: 'boot' }>;

/** How stale the round-robin master's count of a keep-alive worker's connections may grow. */
const CLOSED_REPORT_MS = 50;

export async function runWorker(): Promise<void> {
  printWarningsWithForkgateHint();
  const boot = await nextBootMessage();
  const { settings } = boot;
  process.title = processTitle(settings, 'worker');
  let logger: Logger;
  try {
    logger = new Logger(settings.errorLogfile, settings.logLevel);
  } catch (error) {
    // With no error log to write to, the master reports it (in its own) as the boot failure it is.
    return sendToMaster({ type: 'boot-error', error: serializeError(error) }, () => process.exit(ExitCode.bootFailure));
  }
  await new Worker(boot, logger).start();
}

class Worker {
  private readonly boot: BootMessage;
  private readonly settings: Settings;
  private readonly logger: Logger;
  private readonly info: WorkerInfo;
  private hooks: Hooks = {};
  /** Set once the hooks are loaded, before the app is. */
  private units: Units | null = null;
  private ready = false;
  private draining = false;
  /**
   * How this worker tells the round-robin master that connections closed: at once where the master hands
   * it no more than it serves (it must hear of room as it comes), at most every CLOSED_REPORT_MS where
   * it takes any number (the master's least-loaded pick needs fresh counts, not one message per close).
   */
  private readonly closedReport: 'at-once' | 'coalesced' | null;
  private closedReportTimer: NodeJS.Timeout | null = null;

  constructor(boot: BootMessage, logger: Logger) {
    this.boot = boot;
    this.settings = boot.settings;
    this.logger = logger;
    this.info = { pid: process.pid, id: boot.workerId, generation: boot.generation };
    this.closedReport = boot.listen.mode !== 'handoff' ? null : handoffCapacity(boot.settings) === Infinity ? 'coalesced' : 'at-once';
  }

  async start(): Promise<void> {
    process.on('message', (message: unknown, socket?: Socket) => {
      if (isProtocolMessage<MasterMessage>(message)) this.onMessage(message, socket);
    });
    // Gunicorn's worker signals: TERM drains, INT and QUIT stop at once. The terminal's Ctrl-C reaches
    // every process of the group; the master decides what happens to the pool.
    process.on('SIGTERM', () => this.drain());
    process.on('SIGINT', () => this.quit());
    process.on('SIGQUIT', () => this.quit());
    process.on('SIGHUP', () => {});
    // SIGUSR1 is left to Node: it starts the inspector, through which the master reads a hung stack.
    // The master is gone (even killed with SIGKILL): finish what is in flight and leave no orphan.
    process.on('disconnect', () => this.drain());
    process.on('uncaughtException', (error, origin) => this.crash(error, origin));
    // However it ends (an app's own process.exit too), the lines of the requests it answered are written.
    process.on('exit', () => this.units?.flushLogs());
    outliveOutputReaders();

    let rss = 0;
    const heartbeat = () => {
      // Reading it opens a /proc file: out of descriptors (EMFILE), the last reading stands.
      try {
        rss = process.memoryUsage.rss();
      } catch {}
      sendToMaster({ type: 'heartbeat', stats: this.units?.stats() ?? NO_TRAFFIC, rss });
    };
    setInterval(heartbeat, heartbeatInterval(this.settings.timeout)).unref();
    sendToMaster({ type: 'started', inspectorPort: await reserveInspectorPort() });
    const loadedFiles = this.settings.reload ? recordLoadedFiles() : null;
    try {
      this.hooks = await loadWorkerHooks(this.settings.config);
      await runHook(this.hooks, 'postFork', this.logger, this.info);
      const supervisor = {
        retire: (reason: string) => sendToMaster({ type: 'retire', reason }),
        serving: () => sendToMaster({ type: 'serving' }),
      };
      const onEndpointsChanged = (endpoints: string[]) => {
        if (this.ready && !this.draining) sendToMaster({ type: 'endpoints', endpoints });
      };
      this.units = usesThreads(this.settings)
        ? new ThreadPool(this.boot, this.logger, onEndpointsChanged, supervisor.serving)
        : new UnitRunner(this.boot, this.logger, this.hooks, supervisor);
      const shape = await this.units.start();
      await runHook(this.hooks, 'postWorkerInit', this.logger, this.info);
      this.ready = true;
      sendToMaster({ type: 'ready', shape, loadedFiles: loadedFiles ? [...loadedFiles] : [], endpoints: this.units.endpoints() });
    } catch (error) {
      this.failBoot(error);
    }
  }

  private reportClosed(): void {
    const report = () => sendToMaster({ type: 'closed', connections: this.units!.stats().connections });
    if (this.closedReport === 'at-once') return report();
    this.closedReportTimer ??= setTimeout(() => {
      this.closedReportTimer = null;
      report();
    }, CLOSED_REPORT_MS).unref();
  }

  private onMessage(message: MasterMessage, socket: Socket | undefined): void {
    switch (message.type) {
      case 'connection': {
        if (!socket) return;
        if (this.draining || !this.ready || !this.units) {
          socket.destroy(); // our copy only: the master still holds the connection and re-balances it
          sendToMaster({ type: 'accepted', seq: message.seq, ok: false, connections: 0 });
          return;
        }
        this.units.offer(socket);
        sendToMaster({ type: 'accepted', seq: message.seq, ok: true, connections: this.units.stats().connections });
        if (this.closedReport) socket.once('close', () => this.reportClosed());
        return;
      }
      case 'drain':
        return this.drain();
      case 'reopen-logs':
        // The units reopen this process's error log along with their access logs.
        return this.units ? this.units.reopenLogs(message.files) : this.logger.reopen(message.files);
      case 'collect-metrics':
        return void answerMaster(message.seq, this.settings);
      case 'boot':
        return;
    }
  }

  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    if (!this.ready || !this.units) return this.exit(0); // still booting: nothing is in flight
    // The master kills a worker that overstays --graceful-timeout; without a master, the worker does.
    setTimeout(() => this.exit(0), this.settings.gracefulTimeout * 1000).unref();
    this.units.drain(() => void runHook(this.hooks, 'workerExit', this.logger, this.info).then(() => this.exit(0)));
  }

  private quit(): void {
    void runHook(this.hooks, 'workerInt', this.logger, this.info).then(() => this.exit(0));
  }

  private failBoot(error: unknown): void {
    if (process.connected) {
      // The master prints the error once for the whole pool; exit once the message is on its way.
      sendToMaster({ type: 'boot-error', error: serializeError(error) }, () => process.exit(ExitCode.bootFailure));
    } else {
      this.logger.error('Worker failed to boot', error);
      process.exit(ExitCode.bootFailure);
    }
  }

  private crash(error: Error, origin: NodeJS.UncaughtExceptionOrigin): void {
    if (!this.ready && !this.draining) return this.failBoot(error);
    this.logger.error(`Worker crashed: ${origin === 'unhandledRejection' ? 'unhandled promise rejection' : 'uncaught exception'}`, error);
    this.exit(ExitCode.runtimeFailure);
  }

  private exit(code: number): void {
    this.logger.close();
    // A crashed worker leaves at once: it must not serve on while it reports.
    if (code === 0) sendLastReport(this.settings, null, () => process.exit(code));
    else process.exit(code);
  }
}

/**
 * Picks a free loopback port for the inspector that SIGUSR1 would start (Node's default, 9229, would be
 * shared by every worker). Nothing listens on it until the master asks for a hung worker's stack.
 */
async function reserveInspectorPort(): Promise<number | null> {
  const probe = createServer();
  try {
    await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    process.debugPort = port;
    return port;
  } catch {
    return null; // no loopback: a hang is still killed, only without its stack
  } finally {
    probe.close();
  }
}

/** --reload: every file of the app that require() or import loads from here on (node_modules aside). */
function recordLoadedFiles(): Set<string> {
  const files = new Set<string>();
  registerHooks({
    load(url, context, nextLoad) {
      if (url.startsWith('file:') && !url.includes('/node_modules/')) files.add(fileURLToPath(url));
      return nextLoad(url, context);
    },
  });
  return files;
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
