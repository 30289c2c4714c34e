/**
 * The proxy's client side, in the master: an http.Server fed with the connections the master accepts,
 * behind the same HTTP edge the workers apply in the other modes (PROXY header, TLS, limits, forwarding
 * headers, X-Request-Id), with every request and upgrade sent on to a backend the dispatcher picks.
 */
import * as http from 'node:http';
import type * as net from 'node:net';
import type { Settings } from '../config/settings.ts';
import { afterAnswers, closeFreshConnections, markListening, trackConnections } from '../edge/app-server.ts';
import { Edge } from '../edge/edge.ts';
import type { Certificates } from '../edge/tls.ts';
import { makesRequestIds } from '../edge/request-headers.ts';
import type { AccessLog } from '../log/access-log.ts';
import type { Logger } from '../log/logger.ts';
import { Dispatcher, type Backend } from './dispatcher.ts';
import { declaresBody, Exchange, proxyFailures, type ExchangeContext } from './exchange.ts';
import { openTunnel } from './tunnel.ts';
import { hopConnectionCount } from '../hop/pool.ts';
import { refuseConnection } from '../edge/refusal.ts';
import { connectionBudget } from '../config/descriptors.ts';
import { count } from '../log/count.ts';
import { RecurringWarning } from '../log/recurring.ts';

/** How long a stopping proxy lets an idle keep-alive connection stay, as a draining worker does. */
const DRAIN_IDLE_MS = 1000;

export class FrontProxy {
  readonly dispatcher: Dispatcher;
  private readonly server: http.Server;
  private readonly edge: Edge;
  private readonly logger: Logger;
  private readonly keepAlive: boolean;
  private readonly gracefulTimeoutMs: number;
  private readonly context: ExchangeContext;
  /** Client connections open now, to know when a stop has finished them. */
  private readonly connections = new Set<net.Socket>();
  /** Client connections and connections to backends together: what the open-file limit leaves the master. */
  private readonly budget = connectionBudget();
  private readonly overBudget: RecurringWarning;
  private readonly tls: boolean;
  private stopping = false;
  /** Set while a graceful stop waits for the last connection to close. */
  private onDrained: (() => void) | null = null;

  constructor(settings: Settings, certificates: Certificates | null, logger: Logger, onBackendDown: (backend: Backend) => void) {
    this.logger = logger;
    this.tls = settings.certfile !== null;
    this.overBudget = new RecurringWarning(
      logger,
      (refused) =>
        `At the open-file limit: answered 503 ${count(refused, 'time')}, holding ${count(this.connections.size, 'client connection')} and ${hopConnectionCount()} to the backends (raise ulimit -n)`,
    );
    this.keepAlive = settings.keepAlive > 0;
    this.gracefulTimeoutMs = settings.gracefulTimeout * 1000;
    this.dispatcher = new Dispatcher(settings.queueLimit, settings.queueTimeout);
    this.context = {
      dispatcher: this.dispatcher,
      bufferSize: settings.bufferSize,
      logger,
      onBackendDown,
      overBudget: this.overBudget,
      failures: proxyFailures(logger),
      requestIds: makesRequestIds(settings),
      accessLog: null,
      logsEveryRequest: false,
    };
    // An upgrade request with a body is served as an ordinary request, its Upgrade ignored (RFC 9110
    // §7.8 allows it): the body is then framed and sent like any other, never left for the tunnel.
    this.server = http.createServer({ shouldUpgradeCallback: (req) => !declaresBody(req) }, (req, res) => this.onRequest(req, res));
    this.server.keepAliveTimeout = settings.keepAlive * 1000;
    this.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    this.edge = new Edge(this.server, settings, certificates, logger, { echoRequestId: false });
    trackConnections(this.server);
    markListening(this.server, null);
  }

  /**
   * Where the master's own answers (refusals, 502, 503, a client gone while queued) are logged; every
   * request's, in front of upstreams, which log nothing here.
   */
  logRequestsTo(accessLog: AccessLog | null, everyRequest: boolean): void {
    this.context.accessLog = accessLog;
    this.context.logsEveryRequest = everyRequest;
    this.edge.logRefusalsTo(accessLog);
  }

  /** HUP: a renewed certificate is served from the next handshake on. */
  renewCertificates(certificates: Certificates | null): void {
    this.edge.renewCertificates(certificates);
  }

  accept(socket: net.Socket): void {
    // Half the budget at most for clients: each request in flight takes a connection to a unit too.
    if (this.connections.size * 2 >= this.budget || this.connections.size + hopConnectionCount() >= this.budget) {
      this.overBudget.note();
      return refuseConnection(socket, this.tls);
    }
    this.connections.add(socket);
    socket.once('close', () => {
      this.connections.delete(socket);
      if (this.connections.size === 0) this.onDrained?.();
    });
    this.edge.accept(socket);
  }

  /**
   * graceful: requests on open connections are still served, each response closing its connection;
   * idle ones, those that have sent nothing yet, those not past TLS and those lingering after a
   * refusal are closed after a quiet second; resolves once every connection is gone (at most
   * --graceful-timeout), then refuses whatever still waits. quick: drops every connection now.
   */
  async close(mode: 'graceful' | 'quick'): Promise<void> {
    this.stopping = true;
    if (mode === 'graceful' && this.connections.size > 0) {
      this.server.keepAliveTimeout = Math.min(DRAIN_IDLE_MS, this.server.keepAliveTimeout || DRAIN_IDLE_MS);
      await new Promise<void>((resolve) => {
        const idleClose = setTimeout(() => {
          this.server.closeIdleConnections();
          closeFreshConnections(this.server);
          this.edge.closeUnserved();
        }, DRAIN_IDLE_MS);
        const deadline = setTimeout(() => this.onDrained?.(), this.gracefulTimeoutMs);
        this.onDrained = () => {
          this.onDrained = null;
          clearTimeout(idleClose);
          clearTimeout(deadline);
          resolve();
        };
      });
    }
    this.dispatcher.close();
    for (const socket of this.connections) socket.destroy();
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.stopping || !this.keepAlive) res.shouldKeepAlive = false;
    new Exchange(req, res, this.context).start();
  }

  private onUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    socket.on('error', () => {}); // Node has let go of the socket: its errors end only the tunnel
    // The requests pipelined before it are answered first.
    afterAnswers(socket, () => this.tunnel(req, socket, head));
  }

  private tunnel(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const cancel = this.dispatcher.acquire(
      (backend) => {
        let started = false;
        openTunnel(
          backend,
          req,
          socket,
          head,
          () => {
            started = true;
            this.dispatcher.started(backend);
          },
          (error) => {
            this.dispatcher.release(backend, started);
            if (error) this.logger.debug(`proxy: upgrade ${req.url} to ${backend.name} ended: ${error.message}`);
          },
        );
      },
      (reason) => {
        this.context.accessLog?.answered(req, 503, 0);
        socket.end(`HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
        this.context.failures.shed.note({ request: `upgrade ${req.url}`, cause: reason });
      },
    );
    socket.once('close', cancel);
  }
}
