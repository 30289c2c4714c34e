import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Settings } from '../config/settings.ts';
import type { WorkerStats } from '../ipc/messages.ts';
import { AccessLog } from '../log/access-log.ts';
import type { WorkerClass } from './classes/index.ts';
import { runHook, type Hooks, type WorkerInfo } from '../hooks.ts';
import type { Logger } from '../log/logger.ts';
import { ConnectionGate } from './connection-gate.ts';
import { IdleConnections } from './idle-connections.ts';
import { closeFreshConnections, markListening, trackConnections, type AppServer } from '../edge/app-server.ts';
import { Edge } from '../edge/edge.ts';
import type { Certificates } from '../edge/tls.ts';
import { makesRequestIds } from '../edge/request-headers.ts';
import { UnitSide } from '../hop/unit-side.ts';
import { refuseConnection } from '../edge/refusal.ts';
import { connectionBudget } from '../config/descriptors.ts';
import { count } from '../log/count.ts';
import { RecurringWarning } from '../log/recurring.ts';
import { recorderFor, type RequestRecorder } from '../metrics/recorder.ts';

/** How long a draining unit lets an idle keep-alive connection stay before closing it. */
const DRAIN_IDLE_MS = 1000;

export interface UnitSupervisor {
  /** Once, when the unit has served its --max-requests (+ jitter). */
  retire(reason: string): void;
  /** Once, at its first client (a connection, whatever it asks): from then on, its failing is a crash, not a failed boot. */
  serving(): void;
}

export interface ServingUnitOptions {
  readonly server: AppServer;
  readonly workerClass: WorkerClass;
  readonly settings: Settings;
  /** With these the edge terminates TLS. */
  readonly certificates: Certificates | null;
  readonly appAddress: AddressInfo | string | null;
  /** What the unit tells whoever supervises it (the master, or its worker's thread pool). */
  readonly supervisor: UnitSupervisor;
  readonly hooks: Pick<Hooks, 'preRequest' | 'postRequest'>;
  readonly workerInfo: WorkerInfo;
  readonly logger: Logger;
  /** The unit serves forkgate's proxy (--balance proxy) on a private unix socket. */
  readonly internalHop: boolean;
}

/**
 * One serving unit: the app's http.Server fed through the worker class's connection gate and the HTTP
 * edge (behind forkgate's proxy, the hop's unit side instead), with what forkgate adds to every request:
 * counting, keep-alive policy, draining and the access log.
 */
export class ServingUnit {
  private readonly server: AppServer;
  /** Behind the proxy even sync units keep connections alive: the proxy sends them one request at a time. */
  private readonly keepAlive: boolean;
  private readonly gate: ConnectionGate;
  /** The HTTP edge connections come through; none behind forkgate's proxy, which applied it. */
  private readonly edge: Edge | null;
  /** Kept-alive connections between requests, closed idle longest first for connections that wait. */
  private readonly idle: IdleConnections | null;
  private readonly retireAfter: number;
  private readonly supervisor: UnitSupervisor;
  /** A connection has come (its supervisor was told, once). */
  private clientCame = false;
  private readonly accessLog: AccessLog | null;
  private readonly options: ServingUnitOptions;
  /** The connections it may hold: its share of what the open-file limit leaves (threads share one). */
  private readonly budget: number;
  private readonly overBudget: RecurringWarning;
  private draining = false;
  private requests = 0;
  private inFlight = 0;
  private readonly recorder: RequestRecorder | null;
  /** The 'close' listener every response shares (the response is its `this`). */
  private readonly responseClosed: (this: ServerResponse) => void;

  constructor(options: ServingUnitOptions) {
    const { server, workerClass, settings } = options;
    this.options = options;
    this.server = server;
    this.keepAlive = workerClass.keepAlive || options.internalHop;
    // Not behind forkgate's proxy: its pooled connections can outnumber the limit for a moment (a request
    // taken back, a connection it dropped and replaced), and closing an idle one races its next request.
    this.idle = workerClass.keepAlive && !options.internalHop ? new IdleConnections(options.logger) : null;
    const unit = this;
    this.responseClosed = function (this: ServerResponse) {
      unit.responseDone(this);
    };
    this.supervisor = options.supervisor;
    this.recorder = recorderFor(settings);
    this.budget = Math.floor(connectionBudget() / settings.threads);
    this.overBudget = new RecurringWarning(
      options.logger,
      (refused) => `At the open-file limit: answered ${count(refused, 'new connection')} 503, holding ${this.gate.open} (raise ulimit -n)`,
    );
    this.retireAfter =
      settings.maxRequests > 0 ? settings.maxRequests + Math.floor(Math.random() * (settings.maxRequestsJitter + 1)) : Infinity;
    this.accessLog = settings.accessLogfile
      ? new AccessLog({ accessLogfile: settings.accessLogfile, accessLogformat: settings.accessLogformat }, options.logger, true)
      : null;

    server.keepAliveTimeout = settings.keepAlive * 1000;
    server.prependListener('request', (req, res) => this.onRequest(req, res));
    this.edge = options.internalHop
      ? null
      : new Edge(server, settings, options.certificates, options.logger, {
          linger: workerClass.connectionLimit > 1,
          accessLog: this.accessLog,
        });
    const entry = this.edge ?? new UnitSide(server, makesRequestIds(settings));
    const idle = this.idle;
    const admit = (socket: Socket) => {
      if (!this.clientCame) this.supervisor.serving();
      this.clientCame = true;
      entry.accept(socket);
    };
    this.gate = new ConnectionGate(workerClass.connectionLimit, admit, idle && (() => idle.closeIdleLongest()));
    if (idle) server.on('connection', (socket: Socket) => idle.track(socket));
    trackConnections(server);
    markListening(server, options.appAddress);
  }

  offer(socket: Socket): void {
    if (this.gate.open < this.budget) return this.gate.offer(socket);
    this.overBudget.note();
    refuseConnection(socket, this.options.certificates !== null);
  }

  stats(): WorkerStats {
    return { requests: this.requests, inFlight: this.inFlight, connections: this.gate.open };
  }

  /**
   * No new requests on kept-alive connections; calls back once every connection has closed. A busy one
   * closes after its next response (`Connection: close`); an idle one once quiet for DRAIN_IDLE_MS (or
   * its keep-alive timeout, if shorter), as closing it at once races a request the client may be sending;
   * one that has sent nothing yet, is still in its PROXY header or TLS handshake, or lingers after a
   * refusal, after DRAIN_IDLE_MS.
   */
  drain(onDrained: () => void): void {
    this.draining = true;
    const quiet = Math.min(DRAIN_IDLE_MS, this.server.keepAliveTimeout);
    this.server.keepAliveTimeout = quiet;
    setTimeout(() => this.server.closeIdleConnections(), quiet).unref();
    setTimeout(() => {
      closeFreshConnections(this.server);
      this.edge?.closeUnserved();
    }, DRAIN_IDLE_MS).unref();
    this.gate.whenIdle(onDrained);
  }

  reopenLogs(files: readonly string[]): void {
    this.accessLog?.reopen(files, this.options.logger);
  }

  flushLogs(): void {
    this.accessLog?.flush();
  }

  /** A response closed: one request less in flight, and its connection may have gone idle. */
  private responseDone(res: ServerResponse): void {
    this.inFlight--;
    this.recorder?.done(res);
    if (this.idle) {
      this.idle.answered(res.req.socket);
      this.gate.makeRoom();
    }
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.requests++;
    this.inFlight++;
    this.recorder?.started(res);
    // At its --max-requests, a unit's keep-alive connections close after their current response: their
    // clients' next requests go to a unit that may serve them.
    if (!this.keepAlive || this.draining || this.requests >= this.retireAfter) res.shouldKeepAlive = false;
    const { hooks, workerInfo, logger } = this.options;
    if (!this.accessLog && !hooks.preRequest && !hooks.postRequest) {
      res.on('close', this.responseClosed); // a response closes once; one shared listener, nothing per request
    } else {
      if (hooks.preRequest) void runHook(hooks, 'preRequest', logger, workerInfo, req);
      res.once('close', () => {
        this.responseDone(res);
        if (hooks.postRequest) void runHook(hooks, 'postRequest', logger, workerInfo, req, res);
      });
      this.accessLog?.track(req, res);
    }
    if (this.requests === this.retireAfter) this.supervisor.retire(`served ${this.requests} requests (--max-requests)`);
  }
}
