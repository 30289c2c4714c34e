/**
 * The HTTP edge: what forkgate does between a client and the app (or the proxy's front), the same for
 * connections handed over by the master and accepted with SO_REUSEPORT, in processes and threads.
 * Per connection: the PROXY header, TLS, whether its forwarding headers are believed. Per request,
 * before the app sees it: the limits, the forwarding headers, X-Request-Id (where requests get ids).
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { compileAddressMatcher, type AddressMatcher } from '../config/addresses.ts';
import type { ProxyProtocolMode, Settings } from '../config/settings.ts';
import type { AccessLog } from '../log/access-log.ts';
import { markAnsweredRaw } from '../log/status.ts';
import type { Logger } from '../log/logger.ts';
import { afterAnswers, interceptRequests, type AppServer, type ServedSocket } from './app-server.ts';
import { configureParser, limitChunkedBody, requestLimitCheck, type LimitSettings, type Rejection } from './limits.ts';
import { Lingering } from './linger.ts';
import type { ProxiedPeer } from './proxy-protocol.ts';
import { readProxyHeader } from './read-proxy-header.ts';
import { makesRequestIds, prepareForwardingHeaders, prepareRequestHeaders, type RequestIdSettings } from './request-headers.ts';
import { createTlsTerminator, secureContextOptions, type Certificates, type TlsSettings } from './tls.ts';

export type EdgeSettings = LimitSettings &
  TlsSettings &
  RequestIdSettings &
  Pick<Settings, 'forwardedAllowIps' | 'proxyProtocol' | 'proxyAllowFrom'>;

export interface EdgeOptions {
  /** False in the proxy, which adds the id to the response head it relays itself (one header edit less). */
  readonly echoRequestId?: boolean;
  /**
   * False for a sync worker: a refused client that lingers would hold its one connection, and so the
   * worker, for the lingering bounds; the connection closes at once (the answer may be lost).
   */
  readonly linger?: boolean;
  /** Where the requests it refuses are logged, as the app's are. */
  readonly accessLog?: AccessLog | null;
}

export class Edge {
  private readonly server: AppServer;
  private readonly echoRequestId: boolean;
  private readonly requestIds: boolean;
  private readonly logger: Logger;
  private readonly proxyProtocol: ProxyProtocolMode;
  private readonly proxyAllowed: AddressMatcher;
  private readonly headersTimeoutMs: number;
  private readonly tls: ReturnType<typeof createTlsTerminator>;
  /** null: every peer's forwarding headers are believed (--forwarded-allow-ips '*'). */
  private readonly forwardingTrusted: AddressMatcher | null;
  /** The connections (as the app sees them) whose peer is in --forwarded-allow-ips. */
  private readonly trustedConnections = new WeakSet<Socket>();
  private readonly checkLimits: ReturnType<typeof requestLimitCheck>;
  /** Accepted connections still in their PROXY header or TLS handshake, not yet the app server's. */
  private readonly arriving = new Set<Socket>();
  /** One 'close' listener shared by every arriving connection (each its `this`). */
  private readonly forgetArriving: (this: Socket) => void;
  private readonly bodyLimit: number;
  /** Connections refused while their client may still be sending, closing once it has the answer. */
  private readonly lingering: Lingering | null;
  private accessLog: AccessLog | null;

  /**
   * Configures the server (the app's, or the proxy's in the master); call before it is marked listening.
   * With certificates (the master's, never read here) it terminates TLS.
   */
  constructor(
    server: AppServer,
    settings: EdgeSettings,
    certificates: Certificates | null,
    logger: Logger,
    { echoRequestId = true, linger = true, accessLog = null }: EdgeOptions = {},
  ) {
    this.accessLog = accessLog;
    this.lingering = linger ? new Lingering() : null;
    this.server = server;
    const arriving = this.arriving;
    this.forgetArriving = function (this: Socket) {
      arriving.delete(this);
    };
    this.echoRequestId = echoRequestId;
    this.requestIds = makesRequestIds(settings);
    this.logger = logger;
    this.proxyProtocol = settings.proxyProtocol;
    this.proxyAllowed = compileAddressMatcher(settings.proxyAllowFrom);
    this.headersTimeoutMs = settings.headersTimeout * 1000;
    this.forwardingTrusted = settings.forwardedAllowIps.includes('*') ? null : compileAddressMatcher(settings.forwardedAllowIps);
    this.checkLimits = requestLimitCheck(settings);
    this.bodyLimit = settings.limitRequestBody;
    this.tls = createTlsTerminator(settings, certificates);
    this.tls?.on('secureConnection', (socket: TLSSocket) => {
      // A TLS socket reports the TCP peer. The client a PROXY header named is on the socket it wraps,
      // which Node keeps as _parent (internal, but there since 0.11, and the only way back to it).
      const wrapped = (socket as TLSSocket & { _parent: Socket })._parent;
      if (this.proxyProtocol !== 'off') presentPeer(socket, peerOf(wrapped));
      this.arriving.delete(wrapped);
      this.deliver(socket);
    });
    this.tls?.on('tlsClientError', (error: Error, socket: TLSSocket) =>
      this.logger.debug(`TLS handshake with ${socket.remoteAddress ?? 'a unix socket'} failed: ${error.message}`),
    );
    configureParser(server, settings);
    const emitAdmitted = interceptRequests(
      server,
      (event, req, res, emit) => (this.admitRequest(req, res) ? emit(event, req, res) : true),
      (req, socket) => this.admitUpgrade(req, socket),
    );
    // With a listener, Node leaves Expect: 100-continue to it: a request the limits refuse gets its
    // answer instead of an invitation to send the body. An app's own listener decides for itself.
    server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      if (server.listenerCount('checkContinue') > 1) return;
      res.writeContinue();
      emitAdmitted('request', req, res);
    });
    // Node drops a CONNECT without a listener unanswered.
    server.on('connect', (req: IncomingMessage, socket: Socket) => this.refuseConnect(req, socket));
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => this.onClientError(error, socket));
  }

  logRefusalsTo(accessLog: AccessLog | null): void {
    this.accessLog = accessLog;
  }

  /** HUP: the certificates the master read anew serve the handshakes to come. */
  renewCertificates(certificates: Certificates | null): void {
    if (this.tls && certificates) this.tls.setSecureContext(secureContextOptions(certificates));
  }

  /** Takes a new connection through the PROXY header and TLS (as configured) into the app's server. */
  accept(socket: Socket): void {
    if (this.proxyProtocol === 'off' && !this.tls) return this.deliver(socket);
    this.arriving.add(socket);
    socket.once('close', this.forgetArriving);
    if (this.proxyProtocol === 'off') return this.terminate(socket);
    const policy = { mode: this.proxyProtocol, allowed: this.proxyAllowed(socket.remoteAddress), timeoutMs: this.headersTimeoutMs };
    readProxyHeader(
      socket,
      policy,
      (source) => {
        if (source) presentPeer(socket, source);
        if (!this.tls) this.arriving.delete(socket);
        this.terminate(socket);
        if (!this.tls) socket.resume(); // the reader left it paused; the HTTP parser now listens
      },
      (reason) => this.logger.debug(`Closed the connection from ${socket.remoteAddress ?? 'a unix socket'}: ${reason}`),
    );
  }

  /**
   * For a graceful stop: closes the connections the app's server does not serve, so none holds the stop:
   * those still in their PROXY header or TLS handshake (a client that connected and went silent), and
   * those lingering after a refusal.
   */
  closeUnserved(): void {
    for (const socket of this.arriving) socket.destroy();
    this.lingering?.closeAll();
  }

  /** After its answer, a connection whose client may still be sending. */
  private closeRefused(socket: Socket): void {
    if (this.lingering) this.lingering.close(socket);
    else socket.destroySoon();
  }

  private terminate(socket: Socket): void {
    if (!this.tls) return this.deliver(socket);
    this.tls.emit('connection', socket); // 'secureConnection' delivers it once the handshake is done
  }

  /** Hands the connection, as the app will see it, to the app's server. */
  private deliver(socket: Socket): void {
    if (this.forwardingTrusted?.(socket.remoteAddress)) this.trustedConnections.add(socket);
    this.server.emit('connection', socket);
  }

  private admitRequest(req: IncomingMessage, res: ServerResponse): boolean {
    const rejection = this.checkLimits?.(req) ?? framingProblem(req);
    if (rejection) {
      this.logRejection(req, rejection);
      this.accessLog?.track(req, res);
      this.lingering?.closeAfterResponse(req.socket);
      res.writeHead(rejection.status, { 'content-type': 'text/plain', connection: 'close' });
      res.end(`${rejection.reason}\n`);
      return false;
    }
    // An upgrade served as an ordinary request leaves Node's parser stopped at it: whatever the client
    // pipelined behind it would wait for the keep-alive timeout, so the connection ends with this answer.
    if (req.headers.upgrade !== undefined) res.shouldKeepAlive = false;
    const id = this.prepareHeaders(req);
    if (id !== undefined && this.echoRequestId) res.setHeader('x-request-id', id);
    if (this.bodyLimit && req.headers['transfer-encoding'] !== undefined) {
      limitChunkedBody(req, this.bodyLimit, (exceeded) => {
        this.logRejection(req, exceeded);
        // Only the response in service may be answered: an earlier pipelined one may still be writing.
        if (!res.headersSent && res.socket) {
          markAnsweredRaw(res, exceeded.status);
          req.socket.write(rawResponse(exceeded));
        }
        this.closeRefused(req.socket);
      });
    }
    return true;
  }

  private admitUpgrade(req: IncomingMessage, socket: Socket): boolean {
    const rejection = this.checkLimits?.(req) ?? framingProblem(req);
    if (rejection) {
      this.refuseSocket(req, socket, rejection);
      return false;
    }
    this.prepareHeaders(req);
    return true;
  }

  /** forkgate serves HTTP, it is no forward proxy: a CONNECT the app does not take gets an answer. */
  private refuseConnect(req: IncomingMessage, socket: Socket): void {
    if (this.server.listenerCount('connect') > 1) return;
    this.refuseSocket(req, socket, { status: 405, reason: 'CONNECT is not supported here' });
  }

  /**
   * Bytes Node's parser refuses (or a request that timed out): the requests read before them are
   * answered first, as nginx answers a pipeline, then this one, and the connection closes. Node's own
   * handler would write the 400 over an answer still to come and drop the connection at once.
   */
  private onClientError(error: NodeJS.ErrnoException, socket: Socket): void {
    if (this.server.listenerCount('clientError') > 1 || failedConnections.has(socket)) return; // the app's, or told already
    failedConnections.add(socket);
    if (error.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
    const status = CLIENT_ERROR_STATUS[error.code ?? ''] ?? 400;
    this.logger.debug(`Invalid request from ip=${socket.remoteAddress}: ${status} ${error.code ?? error.message}`);
    socket.on('error', () => {});
    const answer = rawResponse({ status, reason: STATUS_CODES[status]! });
    const reading = (socket as ServedSocket).parser?.incoming;
    if (reading && !reading.complete) {
      // Inside a request's body (a bad chunk): it can never be whole, so it is answered now, as Node does.
      const answering = (socket as ServedSocket)._httpMessage;
      if (answering && !answering.headersSent) markAnsweredRaw(answering, status);
      if (!answering?.headersSent) socket.write(answer);
      return this.closeRefused(socket);
    }
    afterAnswers(socket, () => {
      socket.write(answer);
      this.closeRefused(socket);
    });
  }

  private refuseSocket(req: IncomingMessage, socket: Socket, rejection: Rejection): void {
    this.logRejection(req, rejection);
    // Node has let go of an upgrade's socket: its errors are nobody's but ours, and end nothing but it.
    socket.on('error', () => {});
    this.accessLog?.answered(req, rejection.status, Buffer.byteLength(`${rejection.reason}\n`));
    socket.write(rawResponse(rejection));
    this.closeRefused(socket);
  }

  /** Applies the forwarding policy and, where requests get ids, X-Request-Id; returns the id. */
  private prepareHeaders(req: IncomingMessage): string | undefined {
    const trusted = !this.forwardingTrusted || this.trustedConnections.has(req.socket);
    if (this.requestIds) return prepareRequestHeaders(req, trusted, null);
    prepareForwardingHeaders(req, trusted, null);
    return undefined;
  }

  private logRejection(req: IncomingMessage, rejection: Rejection): void {
    this.logger.debug(`Invalid request from ip=${req.socket.remoteAddress}: ${rejection.status} ${rejection.reason}`);
  }
}

/**
 * What RFC 9112 calls faulty that Node's parser lets through: more than one Host field (§3.2; Node
 * refuses a missing one itself), and Transfer-Encoding in an HTTP/1.0 request (§6.1), as nginx does.
 */
function framingProblem(req: IncomingMessage): Rejection | null {
  // Node's parser takes HTTP/2.0 and HTTP/0.9 request lines too; this server speaks HTTP/1.x only, and a
  // request line of another version is malformed here, as in Gunicorn.
  if (req.httpVersionMajor !== 1) return { status: 400, reason: `HTTP/${req.httpVersion} request line: HTTP/1.x only` };
  if (req.httpVersionMinor === 0 && req.headers['transfer-encoding'] !== undefined) {
    return { status: 400, reason: 'Transfer-Encoding in an HTTP/1.0 request' };
  }
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host' && ++hosts > 1)
      return { status: 400, reason: 'more than one Host header' };
  }
  return null;
}

function peerOf(socket: Socket): ProxiedPeer {
  return { address: socket.remoteAddress!, port: socket.remotePort!, family: socket.remoteFamily as ProxiedPeer['family'] };
}

/**
 * The app, the access log and the forwarding policy read the client from the socket, so the client a
 * PROXY header names replaces the proxy's address there.
 */
function presentPeer(socket: Socket, peer: ProxiedPeer): void {
  Object.defineProperties(socket, {
    remoteAddress: { value: peer.address, configurable: true },
    remotePort: { value: peer.port, configurable: true },
    remoteFamily: { value: peer.family, configurable: true },
  });
}

/** The answers Node's own clientError handler gives, by error code; any other is a 400. */
const CLIENT_ERROR_STATUS: Readonly<Record<string, number>> = {
  HPE_HEADER_OVERFLOW: 431,
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
  ERR_HTTP_REQUEST_TIMEOUT: 408,
};

/** Connections whose bytes the parser refused: it reports each later read of them again. */
const failedConnections = new WeakSet<Socket>();

/** A response written straight to the socket, for when there is no ServerResponse to write it with. */
function rawResponse({ status, reason }: Rejection): string {
  const body = `${reason}\n`;
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}
