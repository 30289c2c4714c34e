/**
 * The HTTP edge: what forkgate does between a client (or the proxy in front) and the app, the same for
 * connections handed over by the master and accepted with SO_REUSEPORT, in processes and threads.
 * Per connection: the PROXY header, TLS, whether its forwarding headers are believed. Per request,
 * before the app sees it: the limits, the forwarding headers, X-Request-Id.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ProxyProtocolMode, Settings } from '../config/settings.ts';
import type { Logger } from '../log/logger.ts';
import type { AppServer } from '../worker/app-loader.ts';
import { compileAddressMatcher, type AddressMatcher } from './addresses.ts';
import { configureParser, limitChunkedBody, requestLimitCheck, type LimitSettings, type Rejection } from './limits.ts';
import type { ProxiedPeer } from './proxy-protocol.ts';
import { readProxyHeader } from './read-proxy-header.ts';
import { forwardingEdits, requestIdEdit, rewriteRequestHeaders, type HeaderEdits } from './request-headers.ts';
import { createTlsTerminator, type TlsSettings } from './tls.ts';

export type EdgeSettings = LimitSettings &
  TlsSettings &
  Pick<Settings, 'forwardedAllowIps' | 'proxyProtocol' | 'proxyAllowFrom'>;

/** Events that bring the app a request with a response to write, and those that hand it the socket. */
const REQUEST_EVENTS = new Set<string | symbol>(['request', 'checkContinue', 'checkExpectation']);
const SOCKET_EVENTS = new Set<string | symbol>(['upgrade', 'connect']);

export class Edge {
  private readonly server: AppServer;
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

  /** Configures the app's server; call before the server is marked listening. */
  constructor(server: AppServer, settings: EdgeSettings, logger: Logger) {
    this.server = server;
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
    const server = this.server;
    const emit = server.emit as (this: AppServer, event: string | symbol, ...args: unknown[]) => boolean;
    server.emit = ((event: string | symbol, ...args: unknown[]): boolean => {
      if (REQUEST_EVENTS.has(event)) {
        if (!this.admitRequest(args[0] as IncomingMessage, args[1] as ServerResponse)) return true;
      } else if (SOCKET_EVENTS.has(event)) {
        if (!this.admitUpgrade(args[0] as IncomingMessage, args[1] as Socket)) return true;
      }
      return emit.call(server, event, ...args);
    }) as AppServer['emit'];
  }

  private admitRequest(req: IncomingMessage, res: ServerResponse): boolean {
    const rejection = this.checkLimits?.(req);
    if (rejection) {
      this.logRejection(req, rejection);
      res.writeHead(rejection.status, { 'content-type': 'text/plain', connection: 'close' });
      res.end(`${rejection.reason}\n`);
      return false;
    }
    res.setHeader('x-request-id', this.prepareHeaders(req));
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
    const rejection = this.checkLimits?.(req);
    if (rejection) {
      this.logRejection(req, rejection);
      // Node has let go of an upgrade's socket: its errors are nobody's but ours, and end nothing but it.
      socket.on('error', () => {});
      socket.write(rawResponse(rejection));
      socket.destroySoon();
      return false;
    }
    this.prepareHeaders(req);
    return true;
  }

  /** Applies the forwarding policy and X-Request-Id to the request; returns its id. */
  private prepareHeaders(req: IncomingMessage): string {
    const edits: HeaderEdits = new Map();
    forwardingEdits(req, !this.forwardingTrusted || this.trustedConnections.has(req.socket), edits);
    const id = requestIdEdit(req, edits);
    if (edits.size > 0) rewriteRequestHeaders(req, edits);
    return id;
  }

  private logRejection(req: IncomingMessage, rejection: Rejection): void {
    this.logger.debug(`Invalid request from ip=${req.socket.remoteAddress}: ${rejection.status} ${rejection.reason}`);
  }
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

/** A response written straight to the socket, for when there is no ServerResponse to write it with. */
function rawResponse({ status, reason }: Rejection): string {
  const body = `${reason}\n`;
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}
