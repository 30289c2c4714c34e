/**
 * The units of a worker process with --threads: N worker_threads, each a full serving unit with its own
 * event loop and copy of the app (JavaScript runs in parallel: there is no GIL). Supervised by the same
 * rules as the arbiter's processes (src/supervisor/): a thread that dies or hangs past --timeout is
 * replaced, one that fails to boot is retried with back-off, one that reached --max-requests is drained
 * once a fresh one serves.
 */
import { getAsset, isSea } from 'node:sea';
import { Worker as Thread } from 'node:worker_threads';
import type { Settings } from '../config/settings.ts';
import { describeBootError, heartbeatInterval, NO_TRAFFIC, revivedError } from '../ipc/messages.ts';
import type { FromThreadMessage, SerializedError, ThreadData, ToThreadMessage, WorkerStats } from '../ipc/messages.ts';
import type { Logger } from '../log/logger.ts';
import type { AppShape } from '../ipc/messages.ts';
import { reconcile } from '../supervisor/reconcile.ts';
import { BootBackOff, Unit } from '../supervisor/unit.ts';
import type { UnitBoot, Units } from './unit-runner.ts';
import { threadExited, threadReported, threadStarted } from '../metrics/worker-side.ts';

class ServingThread extends Unit {
  readonly thread: Thread;
  stats: WorkerStats = NO_TRAFFIC;
  /** Proxy plan: the thread's unix socket, once it is ready. */
  endpoint: string | null = null;
  bootError: SerializedError | null = null;

  constructor(thread: Thread, now: number) {
    // threadId grows with every thread started, and is kept: it reads -1 once the thread has exited.
    super(thread.threadId, now);
    this.thread = thread;
  }
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
  private readonly onServing: () => void;
  /** Some thread has taken a request. */
  private servedYet = false;
  /** The endpoints the proxy was last told of (the worker's ready message tells the first ones). */
  private publishedEndpoints: readonly string[] = [];
  private readonly backOff = new BootBackOff();
  private lastBootErrorShown: string | null = null;
  /** Set while the back-off holds a start: the pool looks again then. */
  private wakeTimer: NodeJS.Timeout | null = null;

  /** onServing: once, at the worker's first client (whichever thread it came to). */
  constructor(boot: UnitBoot, logger: Logger, onEndpointsChanged: (endpoints: string[]) => void, onServing: () => void) {
    this.boot = boot;
    this.settings = boot.settings;
    this.logger = logger;
    this.onEndpointsChanged = onEndpointsChanged;
    this.onServing = onServing;
  }

  start(): Promise<AppShape> {
    const promise = new Promise<AppShape>((resolve, reject) => {
      this.started = { resolve, reject: (error) => reject(revivedError(error)) };
    });
    this.supervise();
    setInterval(() => this.supervise(), heartbeatInterval(this.settings.timeout)).unref();
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
    for (const serving of this.threads) if (serving.serves && serving.endpoint) endpoints.push(serving.endpoint);
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

  /**
   * Reconciles the threads there are with the `threads` wanted, and carries the plan out. Threads have
   * no drain deadline (the process's --graceful-timeout covers them) and no memory of their own.
   */
  private supervise(): void {
    const plan = reconcile({
      units: this.threads,
      target: this.settings.threads,
      now: Date.now(),
      policy: { timeoutMs: this.settings.timeout * 1000, startGraceMs: 0, maxMemoryBytes: 0 },
      backOff: this.backOff,
      stopping: this.draining,
    });
    for (const serving of plan.hung) this.terminateHung(serving);
    for (let i = 0; i < plan.spawn; i++) this.spawnThread();
    for (const serving of plan.drain) this.drainThread(serving);
    if (plan.startAt !== null) this.wakeAt(plan.startAt);
    if (this.started && plan.ready === this.settings.threads) {
      this.started.resolve(this.shape!);
      this.started = null;
      this.publishedEndpoints = this.endpoints();
    }
  }

  private wakeAt(time: number): void {
    if (this.wakeTimer) return;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.supervise();
    }, time - Date.now()).unref();
  }

  private spawnThread(): void {
    const data: ThreadData = { role: 'forkgate-thread', boot: this.boot };
    const thread = new Thread(threadEntry(), { workerData: data, eval: isSea() });
    const serving = new ServingThread(thread, Date.now());
    this.threads.add(serving);
    threadStarted(serving.id, thread);
    thread.on('message', (message: FromThreadMessage) => this.onMessage(serving, message));
    thread.on('error', (error) => this.logger.error(`Thread ${serving.id} crashed`, error));
    thread.on('exit', (code) => this.onExit(serving, code));
  }

  private onMessage(serving: ServingThread, message: FromThreadMessage): void {
    serving.heartbeat(Date.now());
    switch (message.type) {
      case 'ready':
        if (!serving.ready(Date.now())) return;
        serving.endpoint = message.endpoint;
        this.shape = message.shape;
        this.logger.debug(`Thread ${serving.id} ready`);
        this.supervise();
        this.publishEndpoints();
        return;
      case 'serving':
        serving.served();
        this.backOff.reset(); // a thread serves: the crash loop, if any, is over
        if (!this.servedYet) this.onServing();
        this.servedYet = true;
        return;
      case 'heartbeat':
        serving.stats = message.stats;
        return;
      case 'metrics':
        return threadReported(serving.id, message.report);
      case 'retire':
        if (!serving.retire('spent')) return;
        this.logger.info(`Thread ${serving.id} ${message.reason}: replacing it`);
        return this.supervise();
      case 'boot-error':
        serving.bootError = message.error;
        // Before the pool first served, the whole worker fails to boot and the master reports it once.
        this.started?.reject(message.error);
        return;
    }
  }

  private onExit(serving: ServingThread, code: number): void {
    const exit = serving.exited({ code }, Date.now());
    this.threads.delete(serving);
    threadExited(serving.id);
    this.publishEndpoints();
    if (this.draining) {
      if (this.threads.size === 0) this.onDrained?.();
      return;
    }
    if (this.started && serving.bootError) return; // it failed the worker's boot
    if (exit.cause === 'boot-failure') this.onBootFailure(serving, code);
    else if (exit.cause !== 'drained') this.logger.error(`Thread ${serving.id} exited with code ${code}: replacing it`);
    this.supervise();
  }

  /** The threads that serve go on; the next start waits. */
  private onBootFailure(serving: ServingThread, code: number): void {
    const detail = serving.bootError ? describeBootError(serving.bootError) : ` exited with code ${code} before ${serving.failedBefore}`;
    if (detail !== this.lastBootErrorShown) this.logger.error(`Thread failed to boot:${detail}`);
    this.lastBootErrorShown = detail;
    const delay = this.backOff.failed(Date.now());
    this.logger.info(`Next thread start in ${delay} ms (failure ${this.backOff.failures} in a row)`);
  }

  private terminateHung(serving: ServingThread): void {
    serving.condemn('hung');
    this.logger.critical(`THREAD TIMEOUT (thread ${serving.id}): event loop silent for ${this.settings.timeout} s`);
    this.publishEndpoints();
    void serving.thread.terminate();
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
    if (!serving.drain(Infinity)) return;
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
