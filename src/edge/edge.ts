/**
 * The HTTP edge: what forkgate does between a client (or the proxy in front) and the app, the same for
 * connections handed over by the master and accepted with SO_REUSEPORT, in processes and threads.
 * Per connection: the PROXY header, TLS, whether its forwarding headers are believed. Per request,
 * before the app sees it: the limits, the forwarding headers, X-Request-Id.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ProxyProtocolMode, Settings } from '../config/settings.ts';
import type { Logger } from '../log/logger.ts';
import type { AppServer } from '../worker/app-loader.ts';
import { compileAddressMatcher, type AddressMatcher } from '../config/addresses.ts';
import { decodeClient, LATE_MS, PEER_HEADER, peerCertificate, peerX509Certificate, WITHDRAWAL_HEADER, type HopClient } from '../hop/protocol.ts';
import { configureParser, limitChunkedBody, requestLimitCheck, type LimitSettings, type Rejection } from './limits.ts';
import type { ProxiedPeer } from './proxy-protocol.ts';
import { readProxyHeader } from './read-proxy-header.ts';
import { prepareRequestHeaders } from './request-headers.ts';
import { createTlsTerminator, secureContextOptions, type TlsSettings } from './tls.ts';

export type EdgeSettings = LimitSettings &
  TlsSettings &
  Pick<Settings, 'forwardedAllowIps' | 'proxyProtocol' | 'proxyAllowFrom'>;

/** Events that bring the app a request with a response to write, and those that hand it the socket. */
const REQUEST_EVENTS = new Set<string | symbol>(['request', 'checkContinue', 'checkExpectation']);
const SOCKET_EVENTS = new Set<string | symbol>(['upgrade', 'connect']);

/**
 * Behind forkgate's own proxy the master has applied the edge already: a unit then takes every
 * connection as it comes, believes the forwarding headers and reads the client from PEER_HEADER.
 */
const INTERNAL_HOP: EdgeSettings = {
  limitRequestLine: 0,
  limitRequestFields: 0,
  limitRequestFieldSize: 0,
  limitRequestBody: 0,
  headersTimeout: 0,
  certfile: null,
  keyfile: null,
  caCerts: null,
  certReqs: 'none',
  forwardedAllowIps: ['*'],
  proxyProtocol: 'off',
  proxyAllowFrom: [],
};

export interface EdgeOptions {
  /** The unit serves forkgate's proxy, which applied the settings already. */
  readonly internalHop?: boolean;
  /** False in the proxy, which adds the id to the response head it relays itself (one header edit less). */
  readonly echoRequestId?: boolean;
}

export class Edge {
  private readonly server: AppServer;
  private readonly internalHop: boolean;
  private readonly echoRequestId: boolean;
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
  private readonly bodyLimit: number;
  /** Behind forkgate's proxy: the request read late on a connection, until it is looked at again. */
  private readonly lateRequests = new WeakMap<Socket, IncomingMessage>();
  /** Late requests the proxy took back. */
  private readonly withdrawn = new WeakSet<IncomingMessage>();

  /** Configures the server (the app's, or the proxy's in the master); call before it is marked listening. */
  constructor(server: AppServer, edgeSettings: EdgeSettings, logger: Logger, options: EdgeOptions = {}) {
    const { internalHop = false, echoRequestId = true } = options;
    const settings = internalHop ? INTERNAL_HOP : edgeSettings;
    this.server = server;
    this.internalHop = internalHop;
    this.echoRequestId = echoRequestId;
    this.logger = logger;
    this.proxyProtocol = settings.proxyProtocol;
    this.proxyAllowed = compileAddressMatcher(settings.proxyAllowFrom);
    this.headersTimeoutMs = settings.headersTimeout * 1000;
    this.forwardingTrusted = settings.forwardedAllowIps.includes('*') ? null : compileAddressMatcher(settings.forwardedAllowIps);
    this.checkLimits = requestLimitCheck(settings);
    this.bodyLimit = settings.limitRequestBody;
    this.tls = createTlsTerminator(settings);
    this.tls?.on('secureConnection', (socket: TLSSocket) => {
      // A TLS socket reports the TCP peer. The client a PROXY header named is on the socket it wraps,
      // which Node keeps as _parent (internal, but there since 0.11, and the only way back to it).
      if (this.proxyProtocol !== 'off') presentPeer(socket, peerOf((socket as TLSSocket & { _parent: Socket })._parent));
      this.deliver(socket);
    });
    this.tls?.on('tlsClientError', (error: Error, socket: TLSSocket) =>
      this.logger.debug(`TLS handshake with ${socket.remoteAddress ?? 'a unix socket'} failed: ${error.message}`),
    );
    configureParser(server, settings);
    this.interceptRequests();
    // Node drops a CONNECT without a listener unanswered; behind forkgate's proxy the master answered it.
    if (!internalHop) server.on('connect', (req: IncomingMessage, socket: Socket) => this.refuseConnect(req, socket));
  }

  /** Reads the certificate files anew (HUP) for the handshakes to come; an unreadable file keeps the old ones. */
  reloadCertificates(settings: TlsSettings): void {
    if (!this.tls || !settings.certfile) return;
    try {
      this.tls.setSecureContext(secureContextOptions(settings));
    } catch (error) {
      this.logger.error(`Keeping the current certificate: ${(error as Error).message}`);
    }
  }

  /** Takes a new connection through the PROXY header and TLS (as configured) into the app's server. */
  accept(socket: Socket): void {
    if (this.proxyProtocol === 'off') return this.terminate(socket);
    const policy = { mode: this.proxyProtocol, allowed: this.proxyAllowed(socket.remoteAddress), timeoutMs: this.headersTimeoutMs };
    readProxyHeader(
      socket,
      policy,
      (source) => {
        if (source) presentPeer(socket, source);
        this.terminate(socket);
        if (!this.tls) socket.resume(); // the reader left it paused; the HTTP parser now listens
      },
      (reason) => this.logger.debug(`Closed the connection from ${socket.remoteAddress ?? 'a unix socket'}: ${reason}`),
    );
  }

  private terminate(socket: Socket): void {
    if (this.tls) this.tls.emit('connection', socket); // 'secureConnection' delivers it once the handshake is done
    else this.deliver(socket);
  }

  /** Hands the connection, as the app will see it, to the app's server. */
  private deliver(socket: Socket): void {
    if (this.forwardingTrusted?.(socket.remoteAddress)) this.trustedConnections.add(socket);
    this.server.emit('connection', socket);
  }

  /**
   * Node's server emits a request to all its listeners at once; a request the edge refuses must reach
   * none of them, forkgate's own included, so the check sits in front of emit.
   */
  private interceptRequests(): void {
    const edge = this;
    const emit = this.server.emit as (this: AppServer, ...args: unknown[]) => boolean;
    // Runs for every event of the server: `arguments` passed on as they are costs no array per call.
    this.server.emit = function (this: AppServer, event: string | symbol, first?: unknown, second?: unknown): boolean {
      if (REQUEST_EVENTS.has(event)) {
        const req = first as IncomingMessage;
        const res = second as ServerResponse;
        if (!edge.internalHop) return edge.admitRequest(req, res, null) ? emit.apply(this, arguments as unknown as unknown[]) : true;
        if (req.method === 'OPTIONS' && req.headers[WITHDRAWAL_HEADER] !== undefined) {
          edge.withdraw(req, res);
          return true;
        }
        const client = hopClientOf(req);
        if (client && Date.now() - client.sentAt >= LATE_MS) {
          // Confirmed in hand at once: a busy unit reads many requests late, and the proxy must not
          // take back the one it runs (it may have done so already: see below). Then looked at again
          // once the rest of this read is parsed, before anything else runs.
          res.writeProcessing();
          edge.lateRequests.set(req.socket, req);
          process.nextTick(() => edge.serveLate(req, res, client, () => emit.call(this, event, req, res)));
          return true;
        }
        if (!edge.admitRequest(req, res, client)) return true;
        const handled = emit.apply(this, arguments as unknown as unknown[]);
        confirmStarted(res);
        return handled;
      } else if (SOCKET_EVENTS.has(event)) {
        if (!edge.admitUpgrade(first as IncomingMessage, second as Socket)) return true;
      }
      return emit.apply(this, arguments as unknown as unknown[]);
    } as AppServer['emit'];
  }

  /** The proxy took back the request before this one on the connection: put it aside, if not started. */
  private withdraw(req: IncomingMessage, res: ServerResponse): void {
    const late = this.lateRequests.get(req.socket);
    if (late) this.withdrawn.add(late);
    res.writeHead(204).end();
  }

  /**
   * Behind forkgate's proxy, a request read late, looked at again once the rest of its read is parsed:
   * a withdrawal that came right behind it (the unit was busy while both came) has been seen by now,
   * and then another unit runs it.
   */
  private serveLate(req: IncomingMessage, res: ServerResponse, client: HopClient, emitRequest: () => void): void {
    this.lateRequests.delete(req.socket);
    if (this.withdrawn.has(req)) {
      res.writeHead(204).end();
      return;
    }
    if (this.admitRequest(req, res, client)) emitRequest();
  }

  private admitRequest(req: IncomingMessage, res: ServerResponse, client: HopClient | null): boolean {
    const rejection = this.checkLimits?.(req) ?? (this.internalHop ? null : framingProblem(req));
    if (rejection) {
      this.logRejection(req, rejection);
      res.writeHead(rejection.status, { 'content-type': 'text/plain', connection: 'close' });
      res.end(`${rejection.reason}\n`);
      return false;
    }
    // An upgrade served as an ordinary request leaves Node's parser stopped at it: whatever the client
    // pipelined behind it would wait for the keep-alive timeout, so the connection ends with this answer.
    if (req.headers.upgrade !== undefined && !this.internalHop) res.shouldKeepAlive = false;
    const id = this.prepareHeaders(req, client);
    if (this.echoRequestId) res.setHeader('x-request-id', id);
    if (this.bodyLimit && req.headers['transfer-encoding'] !== undefined) {
      limitChunkedBody(req, this.bodyLimit, (exceeded) => {
        this.logRejection(req, exceeded);
        // Only the response in service may be answered: an earlier pipelined one may still be writing.
        if (!res.headersSent && res.socket) req.socket.write(rawResponse(exceeded));
        req.socket.destroySoon();
      });
    }
    return true;
  }

  private admitUpgrade(req: IncomingMessage, socket: Socket): boolean {
    const rejection = this.checkLimits?.(req) ?? (this.internalHop ? null : framingProblem(req));
    if (rejection) {
      this.refuseSocket(req, socket, rejection);
      return false;
    }
    this.prepareHeaders(req, this.internalHop ? hopClientOf(req) : null);
    return true;
  }

  /** forkgate serves HTTP, it is no forward proxy: a CONNECT the app does not take gets an answer. */
  private refuseConnect(req: IncomingMessage, socket: Socket): void {
    if (this.server.listenerCount('connect') > 1) return;
    this.refuseSocket(req, socket, { status: 405, reason: 'CONNECT is not supported here' });
  }

  private refuseSocket(req: IncomingMessage, socket: Socket, rejection: Rejection): void {
    this.logRejection(req, rejection);
    // Node has let go of an upgrade's socket: its errors are nobody's but ours, and end nothing but it.
    socket.on('error', () => {});
    socket.write(rawResponse(rejection));
    socket.destroySoon();
  }

  /** Applies the forwarding policy and X-Request-Id to the request; returns its id. */
  private prepareHeaders(req: IncomingMessage, client: HopClient | null): string {
    // A pooled connection serves many clients in turn: each request names its own.
    if (this.internalHop) presentClient(req.socket, client);
    const trusted = !this.forwardingTrusted || this.trustedConnections.has(req.socket);
    return prepareRequestHeaders(req, trusted, this.internalHop ? PEER_HEADER : null);
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
  if (req.httpVersionMinor === 0 && req.headers['transfer-encoding'] !== undefined) {
    return { status: 400, reason: 'Transfer-Encoding in an HTTP/1.0 request' };
  }
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host' && ++hosts > 1) return { status: 400, reason: 'more than one Host header' };
  }
  return null;
}

function hopClientOf(req: IncomingMessage): HopClient | null {
  const header = req.headers[PEER_HEADER];
  return typeof header === 'string' ? decodeClient(header) : null;
}

/**
 * Behind forkgate's proxy: a request whose handler returned without answering (it awaits something)
 * is confirmed started with an interim 102, so the proxy never takes it back. Confirmed after the
 * promise job the handler queued first (a handler that awaits something already settled has answered
 * by then), and before anything else the unit does: a confirmation held back by a busy unit would let
 * the proxy take back a request that has started.
 */
function confirmStarted(res: ServerResponse): void {
  if (res.writableEnded) return;
  queueMicrotask(() => {
    if (!res.headersSent && !res.writableEnded && !res.destroyed) res.writeProcessing();
  });
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

/** Behind forkgate's proxy: the client of the request in service on each pooled connection. */
const hopClients = new WeakMap<Socket, HopClient | null>();

/**
 * Where the app reads the client on a pooled connection: the request's client (none: a unix socket).
 * Defined once per connection; each request then only records its client.
 */
const HOP_CLIENT_ADDRESS: PropertyDescriptorMap = {
  remoteAddress: { configurable: true, get(this: Socket) { return hopClients.get(this)?.peer?.address; } },
  remotePort: { configurable: true, get(this: Socket) { return hopClients.get(this)?.peer?.port; } },
  remoteFamily: { configurable: true, get(this: Socket) { return hopClients.get(this)?.peer?.family; } },
};
/**
 * Only where clients come over TLS: apps tell HTTPS by `'encrypted' in req.socket`. A front serves
 * TLS on every bind or on none, so a connection's first client tells for all it will carry. Mutual TLS
 * apps read the client's certificate as on a TLS socket of their own.
 */
const HOP_CLIENT_TLS: PropertyDescriptorMap = {
  encrypted: { configurable: true, get: () => true },
  authorized: { configurable: true, get(this: Socket) { return hopClients.get(this)?.tls?.authorized; } },
  getPeerCertificate: { configurable: true, value(this: Socket) { return peerCertificate(hopClients.get(this)?.tls?.certificate ?? null); } },
  getPeerX509Certificate: { configurable: true, value(this: Socket) { return peerX509Certificate(hopClients.get(this)?.tls?.certificate ?? null); } },
};

/** Behind forkgate's proxy: the client the request names, else none (the hop is a unix socket). */
function presentClient(socket: Socket, client: HopClient | null): void {
  if (!hopClients.has(socket)) {
    Object.defineProperties(socket, HOP_CLIENT_ADDRESS);
    if (client?.tls) Object.defineProperties(socket, HOP_CLIENT_TLS);
  }
  hopClients.set(socket, client);
}

/** A response written straight to the socket, for when there is no ServerResponse to write it with. */
function rawResponse({ status, reason }: Rejection): string {
  const body = `${reason}\n`;
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}

/**
 * Node's http.Server starts tracking connections (idle keep-alive closing, header and request
 * timeouts) on 'listening'. A server forkgate feeds with emit('connection') never listens, so it is told
 * it does; address() answers what an app would have seen.
 */
export function markListening(server: AppServer, address: AddressInfo | string | null): void {
  if (server.listening) return;
  Object.defineProperty(server, 'listening', { configurable: true, get: () => true });
  server.address = () => address;
  server.emit('listening');
}
