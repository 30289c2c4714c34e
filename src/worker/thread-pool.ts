/**
 * The units of a worker process with --threads: N worker_threads, each a full serving unit with its own
 * event loop and copy of the app (JavaScript runs in parallel: there is no GIL). Supervised here as the
 * arbiter supervises processes: a thread that dies or hangs past --timeout is replaced, a thread that
 * reached --max-requests is drained once its replacement is ready.
 */
import { getAsset, isSea } from 'node:sea';
import { Worker as Thread } from 'node:worker_threads';
import type { Settings } from '../config/settings.ts';
import { describeBootError, heartbeatInterval, NO_TRAFFIC, revivedError } from '../ipc/messages.ts';
import type { FromThreadMessage, SerializedError, ThreadData, ToThreadMessage, WorkerStats } from '../ipc/messages.ts';
import type { Logger } from '../log/logger.ts';
import type { AppShape } from './app-loader.ts';
import type { UnitBoot, Units } from './unit-runner.ts';
import { threadExited, threadReported, threadStarted } from '../metrics/worker-side.ts';

interface ServingThread {
  readonly thread: Thread;
  /** thread.threadId, kept: it reads -1 once the thread has exited. */
  readonly id: number;
  state: 'booting' | 'ready' | 'draining';
  retiring: boolean;
  lastHeartbeat: number;
  stats: WorkerStats;
  /** Proxy plan: the thread's unix socket, once it is ready. */
  endpoint: string | null;
}

export class ThreadPool implements Units {
  private readonly boot: UnitBoot;
  private readonly settings: Settings;
  private readonly logger: Logger;
  private readonly threads = new Set<ServingThread>();
  private started: { resolve: (shape: AppShape) => void; reject: (error: SerializedError) => void } | null = null;
  private onDrained: (() => void) | null = null;
  private draining = false;
  private shape: AppShape | null = null;
  private readonly onEndpointsChanged: (endpoints: string[]) => void;
  /** The endpoints the proxy was last told of (the worker's ready message tells the first ones). */
  private publishedEndpoints: readonly string[] = [];

  constructor(boot: UnitBoot, logger: Logger, onEndpointsChanged: (endpoints: string[]) => void) {
    this.boot = boot;
    this.settings = boot.settings;
    this.logger = logger;
    this.onEndpointsChanged = onEndpointsChanged;
  }

  start(): Promise<AppShape> {
    const promise = new Promise<AppShape>((resolve, reject) => {
      this.started = { resolve, reject: (error) => reject(revivedError(error)) };
    });
    this.manage();
    setInterval(() => this.murderThreads(), heartbeatInterval(this.settings.timeout)).unref();
    return promise;
  }

  offer(): void {
    // Settings resolution rejects --threads with the handoff plan: Node cannot move a socket into a thread.
    throw new Error('forkgate: a connection was handed to a threaded worker');
  }

  stats(): WorkerStats {
    let requests = 0;
    let inFlight = 0;
    let connections = 0;
    for (const { stats } of this.threads) {
      requests += stats.requests;
      inFlight += stats.inFlight;
      connections += stats.connections;
    }
    return { requests, inFlight, connections };
  }

  endpoints(): string[] {
    const endpoints: string[] = [];
    for (const { state, endpoint } of this.threads) if (state === 'ready' && endpoint) endpoints.push(endpoint);
    return endpoints;
  }

  drain(onDrained: () => void): void {
    this.draining = true;
    this.onDrained = onDrained;
    for (const serving of this.threads) this.drainThread(serving);
    if (this.threads.size === 0) onDrained();
  }

  reopenLogs(files: readonly string[]): void {
    this.logger.reopen(files);
    for (const { thread } of this.threads) thread.postMessage({ type: 'reopen-logs', files } satisfies ToThreadMessage);
  }

  flushLogs(): void {} // each thread flushes its own access log before it ends

  /** Keeps `threads` units that are neither retiring nor draining; drains retiring ones as fresh ones are ready. */
  private manage(): void {
    if (this.draining) return;
    const all = [...this.threads];
    const serving = all.filter((t) => t.state !== 'draining' && !t.retiring);
    for (let i = serving.length; i < this.settings.threads; i++) serving.push(this.spawnThread());
    const readyFresh = serving.filter((t) => t.state === 'ready').length;
    if (this.started && readyFresh === this.settings.threads) {
      this.started.resolve(this.shape!);
      this.started = null;
      this.publishedEndpoints = this.endpoints();
    }
    const retiring = all.filter((t) => t.retiring && t.state !== 'draining');
    const keep = Math.max(0, this.settings.threads - readyFresh);
    for (const serving of retiring.slice(0, Math.max(0, retiring.length - keep))) this.drainThread(serving);
  }

  private spawnThread(): ServingThread {
    const data: ThreadData = { role: 'forkgate-thread', boot: this.boot };
    const thread = new Thread(threadEntry(), { workerData: data, eval: isSea() });
    const serving: ServingThread = {
      thread,
      id: thread.threadId,
      state: 'booting',
      retiring: false,
      lastHeartbeat: Date.now(),
      stats: NO_TRAFFIC,
      endpoint: null,
    };
    this.threads.add(serving);
    threadStarted(serving.id, thread);
    thread.on('message', (message: FromThreadMessage) => this.onMessage(serving, message));
    thread.on('error', (error) => this.logger.error(`Thread ${serving.id} crashed`, error));
    thread.on('exit', (code) => this.onExit(serving, code));
    return serving;
  }

  private onMessage(serving: ServingThread, message: FromThreadMessage): void {
    serving.lastHeartbeat = Date.now();
    switch (message.type) {
      case 'ready':
        serving.state = 'ready';
        serving.endpoint = message.endpoint;
        this.shape = message.shape;
        this.logger.debug(`Thread ${serving.id} ready`);
        this.manage();
        this.publishEndpoints();
        return;
      case 'heartbeat':
        serving.stats = message.stats;
        return;
      case 'metrics':
        return threadReported(serving.id, message.report);
      case 'retire':
        this.logger.info(`Thread ${serving.id} ${message.reason}: replacing it`);
        serving.retiring = true;
        return this.manage();
      case 'boot-error':
        // Before the pool first served, the whole worker fails to boot and the master reports it once.
        if (this.started) this.started.reject(message.error);
        else this.logger.error(`Thread failed to boot:${describeBootError(message.error)}`);
        return;
    }
  }

  private onExit(serving: ServingThread, code: number): void {
    this.threads.delete(serving);
    threadExited(serving.id);
    this.publishEndpoints();
    if (this.draining) {
      if (this.threads.size === 0) this.onDrained?.();
      return;
    }
    if (this.started) return; // the boot error already failed the worker
    if (serving.state !== 'draining' || code !== 0) this.logger.error(`Thread ${serving.id} exited with code ${code}: replacing it`);
    this.manage();
  }

  private murderThreads(): void {
    const timeoutMs = this.settings.timeout * 1000;
    if (timeoutMs === 0) return;
    for (const serving of this.threads) {
      if (serving.state !== 'draining' && Date.now() - serving.lastHeartbeat > timeoutMs) {
        this.logger.critical(`THREAD TIMEOUT (thread ${serving.id}): event loop silent for ${this.settings.timeout} s`);
        serving.state = 'draining'; // not judged again; its exit brings a replacement
        this.publishEndpoints();
        void serving.thread.terminate();
      }
    }
  }

  /** Tells the proxy (--balance proxy) which threads take requests, when that changed; a draining pool takes none. */
  private publishEndpoints(): void {
    if (this.started || this.draining) return;
    const endpoints = this.endpoints();
    const published = this.publishedEndpoints;
    if (endpoints.length === published.length && endpoints.every((endpoint, i) => endpoint === published[i])) return;
    this.publishedEndpoints = endpoints;
    this.onEndpointsChanged(endpoints);
  }

  private drainThread(serving: ServingThread): void {
    if (serving.state === 'draining') return;
    serving.state = 'draining';
    // The proxy stops sending to it first, then it finishes what it has.
    this.publishEndpoints();
    serving.thread.postMessage({ type: 'drain' } satisfies ToThreadMessage);
  }
}

/**
 * Threads run the same bundle as the process, told apart by their workerData role: its file, or in the
 * single binary (where it is no file on disk) its source, embedded as an asset and run with eval.
 */
function threadEntry(): string {
  return isSea() ? getAsset('forkgate.cjs', 'utf8') : process.argv[1]!;
}
