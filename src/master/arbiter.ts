/**
 * The master: one supervision loop, shaped like Gunicorn's arbiter. Signal handlers and child events
 * only queue what happened and wake the loop; the loop handles the queued signals, then always runs the
 * same chores: reapWorkers (exits), then manageWorkers, which reconciles the pool we have with the pool
 * we want (src/supervisor/reconcile.ts) and carries the plan out: kill the hung and the overstaying,
 * retire the over-memory, spawn, drain.
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { formatBindAddress } from '../config/bind.ts';
import { effectiveCpuCount } from '../config/cpu.ts';
import { connectionBudget, openFileLimit } from '../config/descriptors.ts';
import { workerEnvironment } from '../config/env-file.ts';
import { applyThreads, resolveSettings, type ResolvedSettings, type SettingSources } from '../config/load.ts';
import { fixedUntilRestart, formatUpstream, restartNotice, type Settings } from '../config/settings.ts';
import { readCertificates, type Certificates } from '../edge/tls.ts';
import { ExitCode, ListenError, SettingError } from '../errors.ts';
import { isAlive } from '../proc.ts';
import { describeBootError, isProtocolMessage, type SerializedError, type WorkerMessage } from '../ipc/messages.ts';
import { count } from '../log/count.ts';
import type { Logger } from '../log/logger.ts';
import { statsdFor } from '../metrics/statsd.ts';
import { unwritableFile } from '../log/sink.ts';
import { VERSION } from '../version.ts';
import { loadAppOnce } from '../worker/unit-runner.ts';
import { workerClassFor } from '../worker/classes/index.ts';
import { createBalancer, type Balancer } from './balance/index.ts';
import { AdminEndpoint, type AdminActions, type PoolStatus, type ResizeOutcome } from './admin.ts';
import {
  handOverLogFile,
  prepareWorkerIdentity,
  resolveSocketAccess,
  workerLogFiles,
  type SocketAccess,
  type WorkerIdentity,
} from './privileges.ts';
import { Reloader } from './reloader.ts';
import { captureBlockedStack } from './stack-dump.ts';
import { inheritanceFrom, notifyPredecessor, startSuccessor, type Inheritance, type UpgradedMessage } from './upgrade.ts';
import { runHook, type HookName, type Hooks, type MasterInfo, type WorkerInfo } from '../hooks.ts';
import { spawnWorkerProcess, START_GRACE_MS } from './worker-process.ts';
import { processTitle } from '../process-title.ts';
import { WorkerHandle } from './worker-handle.ts';
import { reconcile, type Policy } from '../supervisor/reconcile.ts';
import { BootBackOff } from '../supervisor/unit.ts';
import { PoolMetrics } from '../metrics/pool-metrics.ts';

const HANDLED_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU', 'SIGUSR1', 'SIGUSR2'] as const;
type HandledSignal = (typeof HANDLED_SIGNALS)[number];

/** How often the loop wakes on its own to check heartbeats and deadlines. */
const TICK_MS = 250;
/** How long the master may spend reading a hung worker's stack before it kills the worker anyway. */
const STACK_BUDGET_MS = 2000;
/** After a quick stop (INT, QUIT) workers get this long to exit before SIGKILL. */
const QUICK_STOP_MS = 1000;
/** TTIN and POST /workers/... stop at the larger of --workers and this many per CPU: no runaway fork. */
const MAX_WORKERS_PER_CPU = 4;
/** Node's exit code for an option it does not know, or a bad value. */
const NODE_INVALID_ARGUMENT = 9;

interface WorkerExit {
  readonly worker: WorkerHandle;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export class Arbiter {
  private readonly sources: SettingSources;
  private settings: Settings;
  /** The certificate files' contents as the start or the last HUP read them: every worker serves these. */
  private certificates: Certificates | null;
  /** What the workers start with, -e aside: the master's environment over the --env-file files (HUP reads them again). */
  private workerEnv: NodeJS.ProcessEnv;
  private readonly logger: Logger;
  private readonly balancer: Balancer;
  /** Set in a USR2 successor: the sockets its predecessor handed over. */
  private readonly inherited: Inheritance | null;
  /** --upstream: the proxy fronts other servers and there is no pool to keep (fixed until a restart). */
  private readonly frontsUpstreams: boolean;
  private readonly workers = new Set<WorkerHandle>();
  /** What the loop is asked to do, by the signal that asks for it, and the line that says who asked. */
  private readonly signalQueue: { signal: HandledSignal; note: string }[] = [];
  private readonly exits: WorkerExit[] = [];
  private readonly bootErrors = new Map<WorkerHandle, SerializedError>();
  /** Why workers could not be started at all (no process came to be), for reapWorkers. */
  private readonly failedSpawns: string[] = [];
  private readonly signalListeners = new Map<HandledSignal, () => void>();
  private target: number;
  private generation = 1;
  private nextWorkerId = 1;
  private wakeScheduled = false;
  private stopping: 'graceful' | 'quick' | null = null;
  private exitCode: number = ExitCode.ok;
  /** Set once the first full pool is ready: boot failures before it end the master (exit 3). */
  private poolReadyOnce = false;

  /** Whether the pool was ever ready: a stop before it is a failed start. */
  get served(): boolean {
    return this.poolReadyOnce;
  }
  private lastBootErrorShown: string | null = null;
  /** Boot failures after the pool served delay the next start (a worker that served and died: none). */
  private readonly backOff = new BootBackOff();
  /** Workers replaced after an exit the master did not ask for; and the last exit, for /status. */
  private restarts = 0;
  private lastExit: { pid: number; reason: string } | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private identity: WorkerIdentity | null = null;
  private admin: AdminEndpoint | null = null;
  /** A USR2 successor serves on this master's sockets now. */
  private handedOver = false;
  /** From TERM on: /readyz answers 503 (during --shutdown-delay the pool still serves). */
  private leaving = false;
  private readonly startedAt = Date.now();
  private successor: ChildProcess | null = null;
  private reloader: Reloader | null = null;
  private finish: (code: number) => void = () => {};
  /** Set by stop(): resolves once the balancer no longer needs the workers. */
  private balancerClosed: Promise<void> = Promise.resolve();
  private readonly metrics = new PoolMetrics({
    workers: () => this.workers,
    target: () => this.target,
    load: () => this.balancer.load(),
    settings: () => this.settings,
  });

  constructor(
    resolved: ResolvedSettings,
    sources: SettingSources,
    certificates: Certificates | null,
    workerEnv: NodeJS.ProcessEnv,
    logger: Logger,
  ) {
    this.sources = sources;
    this.settings = resolved.settings;
    this.certificates = certificates;
    this.workerEnv = workerEnv;
    this.logger = logger;
    this.frontsUpstreams = resolved.settings.upstream.length > 0;
    this.target = this.frontsUpstreams ? 0 : resolved.settings.workers;
    this.inherited = inheritanceFrom(sources.env);
    this.balancer = createBalancer(resolved.settings, certificates, logger, this.inherited);
    if (resolved.workersReason) logger.debug(resolved.workersReason);
    for (const warning of resolved.warnings) logger.warning(warning);
    // Only the master says so: each worker's client drops its datagrams the same way.
    const { statsdHost } = resolved.settings;
    statsdFor(resolved.settings)?.whenUnreachable((reason) =>
      logger.warning(
        `--statsd-host ${statsdHost!.host}:${statsdHost!.port}: cannot be reached (${reason}); its metrics are dropped until it can`,
      ),
    );
  }

  /**
   * The admin and metrics endpoints: on --admin-bind and --metrics-bind, or, in a USR2 successor, on its
   * predecessor's sockets whatever they say now. False if one cannot listen (said in the log).
   */
  private async serveEndpoints(): Promise<boolean> {
    const { settings, logger } = this;
    const inheritedAdmin = this.inherited?.admin;
    const adminBind = inheritedAdmin?.address ?? settings.adminBind;
    if (adminBind) {
      try {
        this.admin = await AdminEndpoint.start(adminBind, inheritedAdmin?.fd, settings.adminTokenFile, this.adminActions());
        logger.info(`Admin endpoint at: ${formatBindAddress(this.admin.address)}`);
      } catch (error) {
        logger.error(`Cannot serve the admin endpoint: ${(error as Error).message}`);
        return false;
      }
    }
    const inheritedMetrics = this.inherited?.metrics;
    const metricsBind = inheritedMetrics?.address ?? settings.metricsBind;
    return !metricsBind || (await this.metrics.listen(metricsBind, inheritedMetrics?.fd, logger));
  }

  /** A USR2 successor whose pool is ready: its predecessor's endpoints, then word that it serves. */
  private async takeOver(): Promise<void> {
    if (await this.serveEndpoints()) return notifyPredecessor(this.sources.env);
    this.exitCode = ExitCode.runtimeFailure; // the predecessor serves on
    this.stop('quick');
  }

  /** Serves until stopped; resolves with the process exit code. */
  async run(): Promise<number> {
    const { settings, logger } = this;
    this.retitle();
    logger.info(`Starting forkgate ${VERSION} on Node ${process.version}`);
    if (process.pid === 1) {
      // Signals reach us (we handle them all), but Node cannot wait() for processes it did not spawn.
      logger.warning(
        'forkgate is PID 1: orphaned grandchildren cannot be reaped from Node; run it under an init (docker run --init, tini)',
      );
    }
    await this.hook('onStarting', this.masterInfo());
    if (settings.umask !== null) process.umask(parseInt(settings.umask, 8)); // inherited by the workers
    let clientSockets: SocketAccess;
    try {
      if (settings.pid && !this.inherited) refuseRunningMaster(settings.pid);
      this.identity = prepareWorkerIdentity(settings);
      clientSockets = resolveSocketAccess(settings.socketMode, settings.socketGroup, this.identity);
    } catch (error) {
      logger.error((error as Error).message);
      return ExitCode.usage;
    }
    if (settings.preload && !(await this.preloadApp())) return ExitCode.bootFailure;
    try {
      await this.balancer.listen(clientSockets, this.identity);
    } catch (error) {
      const failure = error instanceof SettingError ? error : new ListenError(error as Error);
      logger.error(failure.message);
      await this.balancer.close('quick');
      return failure.exitCode;
    }
    // The workers (with --balance proxy, the master) terminate TLS when --certfile is set: clients reach https:// then.
    const scheme = (url: string) => (settings.certfile ? url.replace(/^http:/, 'https:') : url);
    for (const url of this.balancer.urls()) logger.info(`Listening at: ${scheme(url)} (${process.pid})`);
    if (this.frontsUpstreams) logger.info(`Proxying to: ${settings.upstream.map(formatUpstream).join(', ')}`);
    else logger.info(`Using worker class ${settings.workerClass}, balance ${balanceName(this.balancer)}`);
    const shortfall = descriptorShortfall(settings, this.balancer.mode === 'proxy', this.target);
    if (shortfall) logger.warning(shortfall);
    // A USR2 successor takes its predecessor's endpoints over once its pool is ready (tick), so that
    // health checks keep reaching a master that serves.
    if (!this.inherited && !(await this.serveEndpoints())) {
      await this.balancer.close('quick');
      return ExitCode.runtimeFailure;
    }

    for (const signal of HANDLED_SIGNALS) {
      const listener = () => this.queueSignal(signal);
      this.signalListeners.set(signal, listener);
      process.on(signal, listener);
    }
    if (settings.reload) {
      this.reloader = new Reloader((file) => this.queueSignal('SIGHUP', `${file} changed: reloading`));
      this.reloader.watch([...settings.reloadExtraFile, ...(settings.config ? [settings.config] : [])]);
    }
    this.ticker = setInterval(() => this.wake(), TICK_MS);
    const done = new Promise<number>((resolve) => (this.finish = resolve));
    this.wake();
    return done;
  }

  // ---- the loop ----

  private wake(): void {
    if (this.wakeScheduled) return;
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      this.loop();
    });
  }

  private loop(): void {
    for (const { signal, note } of this.signalQueue.splice(0)) {
      this.logger.info(note);
      this.handleSignal(signal);
    }
    this.reapWorkers();
    this.manageWorkers();
  }

  /** note: who asked, when it was not a signal (the file watcher, the admin endpoint, the shutdown delay). */
  private queueSignal(signal: HandledSignal, note = `Handling signal: ${signal.slice(3).toLowerCase()}`): void {
    this.signalQueue.push({ signal, note });
    this.wake();
  }

  private handleSignal(signal: HandledSignal): void {
    switch (signal) {
      case 'SIGTERM':
        if (this.leaving || this.settings.shutdownDelay === 0) return this.stop('graceful');
        // Load balancers see /readyz fail and stop sending; the pool serves on until they have.
        this.leaving = true;
        this.logger.info(`Shutdown delay: serving ${this.settings.shutdownDelay} s more before stopping`);
        setTimeout(() => this.queueSignal('SIGTERM', 'Shutdown delay over: stopping'), this.settings.shutdownDelay * 1000);
        return;
      case 'SIGINT':
      case 'SIGQUIT':
        return this.stop('quick');
      case 'SIGHUP':
        return void this.reload();
      case 'SIGTTIN':
        return void this.resize(this.target + 1);
      case 'SIGTTOU':
        return void this.resize(this.target - 1);
      case 'SIGUSR1':
        return this.reopenLogs();
      case 'SIGUSR2':
        return void this.upgrade();
    }
  }

  /** TTIN, TTOU and POST /workers/...: a pool of `workers`, from 1 to maxWorkers(); else the size stays, and why is logged. */
  private resize(workers: number): ResizeOutcome {
    if (this.frontsUpstreams) return this.refuseResize('no worker pool to resize: forkgate fronts --upstream servers');
    const { maximum, why } = this.maxWorkers();
    if (workers > maximum)
      return this.refuseResize(`pool size stays at ${this.target}: ${workers} is above the maximum, ${maximum} (${why})`);
    if (workers < 1) return this.refuseResize(`pool size stays at ${this.target}: ${workers} is below the minimum, 1`);
    const previous = this.target;
    this.setTarget(workers);
    this.logger.info(
      workers === previous ? `Pool size stays at ${workers}` : `Pool size ${workers > previous ? 'raised' : 'lowered'} to ${workers}`,
    );
    this.wake();
    return { target: workers, previous };
  }

  /** The size stays: `why` is logged as a sentence, and is the admin endpoint's answer as it is. */
  private refuseResize(why: string): ResizeOutcome {
    this.logger.info(`${why[0]!.toUpperCase()}${why.slice(1)}`);
    return { target: this.target, refused: why };
  }

  /** The largest pool TTIN and the admin endpoint may ask for: --workers, or 4 per CPU if more. */
  private maxWorkers(): { maximum: number; why: string } {
    const { cpus } = effectiveCpuCount();
    const perCpu = MAX_WORKERS_PER_CPU * cpus;
    if (this.settings.workers > perCpu) return { maximum: this.settings.workers, why: `--workers ${this.settings.workers}` };
    return { maximum: perCpu, why: `${MAX_WORKERS_PER_CPU} × ${count(cpus, 'CPU')}` };
  }

  private reapWorkers(): void {
    for (const cause of this.failedSpawns.splice(0)) if (!this.stopping) this.onBootFailure(cause, null, ExitCode.bootFailure);
    for (const { worker, code, signal } of this.exits.splice(0)) {
      const exit = worker.exited({ code, signal }, Date.now());
      this.workers.delete(worker);
      this.metrics.workerExited(worker, exit, this.stopping !== null);
      this.balancer.remove(worker);
      const bootError = this.bootErrors.get(worker);
      this.bootErrors.delete(worker);
      void this.hook('childExit', this.masterInfo(), { ...workerInfo(worker), code, signal });
      if (this.stopping) continue;
      this.lastExit = { pid: worker.pid, reason: exit.cause === 'hung' ? 'timeout' : describeExit(code, signal) };
      if (exit.restart) this.restarts++;
      switch (exit.cause) {
        case 'boot-failure': {
          if (this.refusedNodeOptions(worker, code)) {
            const report = ` Node refused its options (exit ${code}, its message is above): see --node-option`;
            this.onBootFailure(report, worker, ExitCode.usage);
            break;
          }
          const report = bootError ? describeBootError(bootError) : ` ${describeExit(code, signal)} before ${worker.failedBefore}`;
          this.onBootFailure(report, worker, bootError?.forkgate?.exitCode ?? ExitCode.bootFailure);
          break;
        }
        case 'killed':
          this.logger.error(`Worker (pid:${worker.pid}) was killed by ${signal}${signal === 'SIGKILL' ? ': perhaps out of memory?' : ''}`);
          break;
        case 'crashed':
          this.logger.error(`Worker (pid:${worker.pid}) ${describeExit(code, signal)}`);
          break;
        default:
          this.logger.info(`Worker exited (pid:${worker.pid})`);
      }
    }
  }

  /** Reconciles the pool we have with the pool we want, and carries the plan out. */
  private manageWorkers(): void {
    const plan = reconcile({
      units: this.workers,
      target: this.target,
      now: Date.now(),
      policy: this.policy(),
      backOff: this.backOff,
      stopping: this.stopping !== null,
    });
    for (const worker of plan.hung) void this.killHung(worker);
    for (const worker of plan.overstayed) this.killOverstayed(worker);
    for (const worker of plan.overMemory) this.retireOverMemory(worker);
    for (let i = 0; i < plan.spawn; i++) if (!this.spawnWorker()) break; // the next attempt waits for the failure's back-off
    for (const worker of plan.drain) this.drainWorker(worker);
    if (this.stopping) {
      if (this.workers.size === 0 && this.ticker) void this.shutDown();
    } else if (!this.poolReadyOnce && plan.ready >= this.target) {
      this.poolReadyOnce = true;
      // The pid file names a master that serves: a USR2 successor takes it over only now.
      if (this.settings.pid) this.writePidFile(this.settings.pid);
      if (this.target > 0) this.logger.info(`Ready: ${count(plan.ready, 'worker')} serving`);
      else this.logger.info(`Ready: proxying to ${count(this.settings.upstream.length, 'upstream')}`);
      if (this.inherited) void this.takeOver();
      void this.hook('whenReady', this.masterInfo());
    }
  }

  private policy(): Policy {
    return { timeoutMs: this.settings.timeout * 1000, startGraceMs: START_GRACE_MS, maxMemoryBytes: this.settings.maxMemory * 2 ** 20 };
  }

  /** Silent past --timeout: logs where its JavaScript is stuck (file:line), then kills and so replaces it. */
  private async killHung(worker: WorkerHandle): Promise<void> {
    worker.condemn('hung');
    const port = worker.inspectorPort;
    // Node's "Debugger attached." follows on the worker's own stderr, which the master does not read: this says why.
    const reading = port ? '; reading its stack through the inspector' : '';
    this.logger.critical(`WORKER TIMEOUT (pid:${worker.pid}): event loop silent for ${this.settings.timeout} s${reading}`);
    // Nothing more for it while its stack is read; what it was sent and never took goes elsewhere at its exit.
    this.balancer.remove(worker);
    const stack = port ? await captureBlockedStack(worker.pid, port, STACK_BUDGET_MS) : null;
    this.logger.critical(
      stack ? `Worker (pid:${worker.pid}) was blocked at:\n${stack}` : `Worker (pid:${worker.pid}): its stack could not be read`,
    );
    await this.hook('workerAbort', this.masterInfo(), { ...workerInfo(worker), stack });
    worker.kill('SIGKILL');
    this.wake();
  }

  /** Still draining past its deadline (--graceful-timeout, or a quick stop's). */
  private killOverstayed(worker: WorkerHandle): void {
    worker.condemn('overstayed');
    this.logger.warning(`Worker (pid:${worker.pid}) still busy after the stop deadline: killing it`);
    worker.kill('SIGKILL');
  }

  /** Over --max-memory: it serves on until its replacement does. */
  private retireOverMemory(worker: WorkerHandle): void {
    this.logger.warning(`Worker (pid:${worker.pid}) uses ${Math.round(worker.rss / 2 ** 20)} MiB, over --max-memory: replacing it`);
    worker.retire('over-memory');
  }

  // ---- workers ----

  /** Starts a worker; null if no process could be started (the cause is queued in failedSpawns). */
  private spawnWorker(): WorkerHandle | null {
    const settings = this.settings;
    const id = this.nextWorkerId++;
    void this.hook('preFork', this.masterInfo(), { pid: 0, id, generation: this.generation });
    const failed = (cause: string) => {
      this.failedSpawns.push(`Cannot start a worker: ${cause}`);
      this.wake();
      return null;
    };
    try {
      // Logrotate may have moved them since (and not sent USR1 yet): the worker's user could not create them.
      if (this.identity) for (const file of workerLogFiles(settings)) handOverLogFile(file, this.identity);
    } catch (error) {
      return failed(`cannot create its log file: ${(error as Error).message}`);
    }
    let child: ChildProcess;
    try {
      child = spawnWorkerProcess(settings, this.workerEnv, this.identity);
    } catch (error) {
      return failed((error as Error).message);
    }
    if (child.pid === undefined) {
      // EACCES, ENOENT, EAGAIN...: Node emits the cause on the next tick, before the loop runs again.
      child.once('error', (error) => failed(describeSpawnFailure(error, settings.user)));
      return null;
    }
    const worker = new WorkerHandle(id, this.generation, child, Date.now());
    this.workers.add(worker);
    this.metrics.workerSpawned(worker);
    child.on('message', (message: unknown) => {
      if (isProtocolMessage<WorkerMessage>(message)) this.onWorkerMessage(worker, message);
    });
    child.once('exit', (code, signal) => {
      this.exits.push({ worker, code, signal });
      this.wake();
    });
    const listen = this.balancer.listenPlan();
    worker.send({
      type: 'boot',
      workerId: worker.id,
      generation: worker.generation,
      settings,
      // Behind the proxy the master terminates TLS: the key stays out of the processes that run the app.
      certificates: listen.mode === 'proxy' ? null : this.certificates,
      listen,
      appAddress: this.balancer.appAddress(),
    });
    this.logger.info(`Booting worker with pid: ${worker.pid}`);
    return worker;
  }

  private onWorkerMessage(worker: WorkerHandle, message: WorkerMessage): void {
    worker.heartbeat(Date.now());
    switch (message.type) {
      case 'ready':
        if (!worker.ready(Date.now())) return;
        worker.endpoints = message.endpoints;
        this.reloader?.watch(message.loadedFiles);
        this.logger.debug(`Worker (pid:${worker.pid}) ready, app shape: ${message.shape}`);
        if (this.stopping) this.drainWorker(worker);
        else this.balancer.add(worker);
        this.wake();
        return;
      case 'started':
        worker.nodeStarted = true;
        worker.inspectorPort = message.inspectorPort;
        return;
      case 'boot-error':
        this.bootErrors.set(worker, message.error);
        return;
      case 'heartbeat':
        worker.stats = message.stats;
        worker.rss = message.rss;
        return;
      case 'endpoints':
        worker.endpoints = message.endpoints;
        if (worker.state === 'ready') this.balancer.unitsChanged(worker);
        return;
      case 'accepted':
        this.balancer.accepted(worker, message.seq, message.ok, message.connections);
        return;
      case 'closed':
        this.balancer.closed(worker, message.connections);
        return;
      case 'metrics':
        return this.metrics.reported(worker, message.seq, message.report);
      case 'serving':
        worker.served();
        this.backOff.reset(); // a worker serves: the crash loop, if any, is over
        return;
      case 'retire':
        if (!worker.retire('spent')) return;
        this.logger.info(`Worker (pid:${worker.pid}) ${message.reason}: replacing it`);
        this.wake();
        return;
    }
  }

  private drainWorker(worker: WorkerHandle): void {
    if (!worker.drain(Date.now() + this.settings.gracefulTimeout * 1000)) return;
    this.balancer.remove(worker);
    worker.send({ type: 'drain' });
  }

  /** Node stopped the worker at its --node-option values, before running any of forkgate. */
  private refusedNodeOptions(worker: WorkerHandle, code: number | null): boolean {
    return code === NODE_INVALID_ARGUMENT && !worker.nodeStarted && this.settings.nodeOption.length > 0;
  }

  /**
   * A worker failed before it was ready (worker), or none could be started (null). detail says why,
   * after "Worker failed to boot (pid:N):" for a worker; exitCode is the master's if it gives up.
   */
  private onBootFailure(detail: string, worker: WorkerHandle | null, exitCode: number): void {
    const report = worker ? `Worker failed to boot (pid:${worker.pid}):${detail}` : detail;
    if (!this.poolReadyOnce) {
      this.logger.error(report);
      if (worker && exitCode === ExitCode.bootFailure) this.logger.error('Shutting down: the app cannot start');
      this.exitCode = exitCode;
      this.stop('quick');
      return;
    }
    // The pool served before (a reload or respawn failed): keep what serves, retry with back-off.
    if (detail !== this.lastBootErrorShown) this.logger.error(report);
    this.lastBootErrorShown = detail;
    const delay = this.backOff.failed(Date.now());
    this.logger.info(`Next worker start in ${delay} ms (failure ${this.backOff.failures} in a row)`);
  }

  // ---- whole-pool operations ----

  private async reload(): Promise<void> {
    let resolved: ResolvedSettings;
    try {
      resolved = await resolveSettings(this.sources);
    } catch (error) {
      this.logger.error(`Reload aborted, settings unchanged: ${(error as Error).message}`);
      return;
    }
    const next = resolved.settings;
    const fixed = fixedUntilRestart('always');
    const kept: Settings = { ...next, ...Object.fromEntries(fixed.map(({ key }) => [key, this.settings[key]])) };
    let workerEnv: NodeJS.ProcessEnv;
    let certificates: Certificates | null;
    try {
      // The balance mode and binds wait for a restart: the threads asked for must fit the running ones.
      applyThreads(kept, `the running --balance ${kept.balance}`);
      // A file that cannot serve keeps the old certificates, for new workers (the proxy's front) too.
      certificates = readCertificates(kept);
      workerEnv = workerEnvironment(kept.envFile, this.sources.env);
    } catch (error) {
      this.logger.error(`Reload aborted, settings unchanged: ${(error as Error).message}`);
      return;
    }
    const unwritable = unwritableFile('--access-logfile', next.accessLogfile);
    if (unwritable) {
      this.logger.error(`Reload aborted, settings unchanged: ${unwritable}`);
      return;
    }
    try {
      this.logger.configure(next.errorLogfile, next.logLevel);
    } catch (error) {
      this.logger.error(`Reload aborted, settings unchanged: --error-logfile: ${(error as Error).message}`);
      return;
    }
    const notice = restartNotice(fixed, this.settings, next);
    if (notice) this.logger.warning(notice);
    this.settings = kept;
    this.certificates = certificates;
    this.workerEnv = workerEnv;
    this.retitle();
    this.balancer.settingsChanged(this.settings, certificates);
    this.generation++;
    // New code deserves a fresh start: forget the back-off of the code it replaces.
    this.backOff.reset();
    await this.hook('onReload', this.masterInfo());
    if (!this.frontsUpstreams) this.setTarget(next.workers);
    for (const worker of this.workers) worker.retire('reload');
    this.logger.info(`Reloading: generation ${this.generation} with ${count(this.target, 'worker')}`);
    this.wake();
  }

  /**
   * USR1, after logrotate moved the log files: the master creates them afresh for the workers (whose user
   * may not create files there), then everyone reopens. A file that cannot be created is reported once,
   * and every process keeps writing to the old one.
   */
  private reopenLogs(): void {
    const files = workerLogFiles(this.settings).filter((file) => {
      try {
        handOverLogFile(file, this.identity);
        return true;
      } catch (error) {
        this.logger.error(`Log file not reopened, writing on to the old file: ${(error as Error).message}`);
        return false;
      }
    });
    this.logger.reopen(files);
    this.balancer.reopenLogs(files);
    for (const worker of this.workers) worker.send({ type: 'reopen-logs', files });
  }

  /** Checked at start; a file system that fails later (full, read-only) costs the file, not the master. */
  private writePidFile(file: string): void {
    try {
      fs.writeFileSync(file, `${process.pid}\n`);
    } catch (error) {
      this.logger.error(`--pid ${file}: cannot write it: ${(error as Error).message}`);
    }
  }

  /** A reload renames the master (--name), as it does the workers it starts. */
  private retitle(): void {
    process.title = processTitle(this.settings, 'master');
  }

  private stop(mode: 'graceful' | 'quick'): void {
    if (this.stopping === 'quick' || this.stopping === mode) return;
    this.stopping = mode;
    this.leaving = true;
    this.balancerClosed = this.balancer.close(mode);
    if (mode === 'graceful') {
      // The proxy still sends what its clients asked for to the workers: they drain once it is done.
      void this.balancerClosed.then(() => {
        for (const worker of this.workers) this.drainWorker(worker);
        this.wake();
      });
    } else {
      for (const worker of this.workers) {
        worker.drain(Date.now() + QUICK_STOP_MS);
        worker.kill('SIGQUIT');
      }
    }
    this.wake();
  }

  private async shutDown(): Promise<void> {
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
    await this.balancerClosed;
    await this.hook('onExit', this.masterInfo());
    for (const [signal, listener] of this.signalListeners) process.off(signal, listener);
    // Only this master's own: the file may name another by now (a successor, or the master whose failed
    // successor this one was).
    if (this.settings.pid) {
      for (const file of [this.settings.pid, `${this.settings.pid}.oldbin`]) {
        if (readPid(file) === process.pid) fs.rmSync(file, { force: true });
      }
    }
    this.admin?.close();
    this.metrics.close();
    this.reloader?.close();
    this.logger.info('Shutting down: Master');
    this.finish(this.exitCode);
  }

  /** USR2: start a successor master on the same sockets; leave once it serves (or serve on if it fails). */
  private async upgrade(): Promise<void> {
    if (this.successor || this.stopping) return this.logger.warning('USR2 ignored: an upgrade or a stop is under way');
    await this.hook('preExec', this.masterInfo());
    const pidFile = this.settings.pid;
    if (pidFile && fs.existsSync(pidFile)) fs.renameSync(pidFile, `${pidFile}.oldbin`);
    const { inheritance, fds } = this.balancer.inheritance();
    const endpoints = { admin: this.admin?.socket() ?? null, metrics: this.metrics.socket() };
    const successor = startSuccessor(inheritance, fds, endpoints, this.sources.env);
    this.successor = successor;
    this.logger.info(`Upgrading: started a new master (pid:${successor.pid})`);
    successor.on('message', (message: UpgradedMessage) => {
      if (message.type !== 'upgraded') return;
      this.logger.info(`New master (pid:${successor.pid}) is serving: this one stops`);
      this.handOverSockets();
      this.stop('graceful');
    });
    successor.once('exit', (code, signal) => {
      if (this.stopping) return;
      if (pidFile) {
        this.writePidFile(pidFile);
        fs.rmSync(`${pidFile}.oldbin`, { force: true });
      }
      this.successor = null;
      // Said once the pid file is back: whoever reads the line may act on the file at once.
      this.logger.error(`Upgrade failed: the new master ${describeExit(code, signal)} before it served; serving on`);
    });
  }

  /** The new master serves from now on: this one closes its copies of the listening sockets. */
  private handOverSockets(): void {
    this.handedOver = true;
    const admin = this.admin;
    this.admin = null;
    try {
      this.balancer.handOver();
      admin?.handOver();
      this.metrics.handOver();
    } catch (error) {
      this.logger.warning(`A unix socket's file could not be kept for the new master: ${(error as Error).message}`);
    }
  }

  private setTarget(workers: number): void {
    const previous = this.target;
    this.target = workers;
    if (workers !== previous) void this.hook('nworkersChanged', this.masterInfo(), workers, previous);
  }

  private masterInfo(): MasterInfo {
    return { pid: process.pid, generation: this.generation, workers: this.target };
  }

  /** The config file's hooks are part of the settings (HUP may bring new ones). */
  private hook<Name extends HookName>(name: Name, ...args: Parameters<NonNullable<Hooks[Name]>>): Promise<void> {
    return runHook(this.settings as Hooks, name, this.logger, ...args);
  }

  private adminActions(): AdminActions {
    // With --upstream there are no workers: serving means an upstream in rotation.
    // Once a USR2 successor serves, the address belongs to it: a check this master still answers (its
    // connection came before the hand-over) speaks for the successor, not for this draining pool.
    const serving = () =>
      this.handedOver ||
      (this.frontsUpstreams ? this.balancer.load().backends.length > 0 : [...this.workers].some((worker) => worker.serves));
    return {
      healthy: serving,
      ready: () => this.handedOver || (!this.leaving && this.poolReadyOnce && serving()),
      reload: (request) => this.queueSignal('SIGHUP', `Handling admin request: ${request}`),
      stop: (request) => this.queueSignal('SIGTERM', `Handling admin request: ${request}`),
      resize: (change, request) => {
        this.logger.info(`Handling admin request: ${request}`);
        return this.resize('to' in change ? change.to : this.target + change.by);
      },
      status: () => this.status(),
      metrics: () => this.metrics.exposition(),
      snapshot: () => this.metrics.snapshot(),
    };
  }

  private status(): PoolStatus {
    const now = Date.now();
    return {
      master: { pid: process.pid, version: VERSION, node: process.version, uptimeSeconds: Math.round((now - this.startedAt) / 1000) },
      generation: this.generation,
      target: this.target,
      balance: balanceName(this.balancer),
      ...this.balancer.load(),
      workerClass: this.settings.workerClass,
      threads: this.settings.threads,
      ready: !this.leaving && this.poolReadyOnce,
      restarts: this.restarts,
      lastExit: this.lastExit,
      workers: [...this.workers]
        .sort((a, b) => a.id - b.id)
        .map((worker) => ({
          pid: worker.pid,
          id: worker.id,
          generation: worker.generation,
          ...statusState(worker),
          ...worker.stats,
          rssBytes: worker.rss,
          uptimeSeconds: Math.round((now - worker.startedAt) / 1000),
        })),
    };
  }

  /** --preload: load the app once in the master, so a broken app fails before any worker starts. */
  private async preloadApp(): Promise<boolean> {
    try {
      await loadAppOnce(this.settings, (this.settings.timeout || 30) * 1000);
      return true;
    } catch (error) {
      this.logger.error('Failed to preload the app:', error);
      return false;
    }
  }
}

/**
 * Whether the open-file limit (which the workers inherit) holds the connections the settings allow:
 * beyond it, connections are answered 503. Behind the proxy the master holds them all: the clients'
 * and its own to every unit.
 */
function descriptorShortfall(settings: Settings, proxy: boolean, workers: number): string | null {
  const limit = openFileLimit();
  const budget = connectionBudget(limit);
  if (limit === null || budget === Infinity) return null;
  const advice = 'raise it (LimitNOFILE= in systemd, --ulimit nofile= with Docker)';
  const perUnit = workerClassFor(settings).connectionLimit;
  if (proxy) {
    const units = settings.upstream.length || workers * settings.threads;
    if (budget >= units * perUnit) return null;
    return `Open-file limit ${limit} (ulimit -n) leaves the master about ${count(budget, 'connection')}, clients' and its own to ${count(units, 'backend')}, which take ${count(units * perUnit, 'request')} at once: more are answered 503; ${advice}`;
  }
  const share = Math.floor(budget / settings.threads);
  if (share >= perUnit) return null;
  const unit = settings.threads > 1 ? 'each thread of a worker' : 'each worker';
  return `Open-file limit ${limit} (ulimit -n) leaves ${unit} about ${count(share, 'connection')}, fewer than --worker-connections ${perUnit}: more are answered 503; ${advice} or lower --worker-connections`;
}

function balanceName(balancer: Balancer): string {
  return balancer.mode === 'handoff' ? 'round-robin' : balancer.mode;
}

/** A pid file naming a live process is that master's, as Gunicorn has it: a second one would take it over. */
function refuseRunningMaster(file: string): void {
  const pid = readPid(file);
  if (!pid || pid === process.pid || !isAlive(pid)) return; // absent, or stale
  throw new SettingError(
    `--pid ${file}: already running as pid ${pid} (or the file is stale: remove it); stop that master or give this one another --pid file`,
  );
}

function readPid(file: string): number | null {
  try {
    return Number(fs.readFileSync(file, 'utf8').trim());
  } catch {
    return null;
  }
}

/** /status keeps retiring apart from the state: a retiring worker reads as ready (or booting) and retiring. */
function statusState(worker: WorkerHandle): { state: string; retiring: boolean } {
  if (worker.state !== 'retiring') return { state: worker.state, retiring: false };
  return { state: worker.readyAt === null ? 'booting' : 'ready', retiring: true };
}

function workerInfo(worker: WorkerHandle): WorkerInfo {
  return { pid: worker.pid, id: worker.id, generation: worker.generation };
}

/** Why spawn() failed; the one Node leaves unclear is --user's lack of access to the executable. */
function describeSpawnFailure(error: NodeJS.ErrnoException, user: string | null): string {
  if (error.code === 'EACCES' && user !== null) {
    return `user ${user} cannot run ${process.execPath} (EACCES): it must be executable by that user, and every directory above it searchable`;
  }
  return error.message;
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}
