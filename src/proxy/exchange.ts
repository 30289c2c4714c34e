/**
 * One request through the proxy: read the body (up to --buffer-size), wait for a unit, send the request
 * over the unit's pool, relay the response. A request that never reached a unit goes to another; any
 * other failure is a 502 (or a cut response). Every outcome gives the unit back exactly once.
 */
import type * as http from 'node:http';
import type * as net from 'node:net';
import { encodeClient, PEER_HEADER } from '../hop/protocol.ts';
import { OVER_LIMIT } from '../edge/refusal.ts';
import type { Logger } from '../log/logger.ts';
import type { RecurringWarning } from '../log/recurring.ts';
import type { Backend, Dispatcher, QueueRefusal } from './dispatcher.ts';
import type { HopRequest, ResponseHead } from '../hop/pool.ts';
import { countBadGateway, countRetry, countShed } from '../metrics/proxy-counts.ts';

/** Headers of one connection, not of the message (RFC 9110 §7.6.1), and those meant for this proxy. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Methods a client may repeat without changing the outcome (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
/**
 * The proxy answered Expect: 100-continue itself, and frames the body itself; the client's claim to be
 * the peer is never passed on.
 */
const NOT_FORWARDED = new Set([...HOP_BY_HOP, 'expect', 'content-length', PEER_HEADER]);
const CRLF = Buffer.from('\r\n');
/** A first body chunk up to this size goes out in one write with the response head (see onData). */
const SMALL_CHUNK = 16 * 1024;

/**
 * Errors that mean the connection to the backend could not be made: the request never reached it. A
 * reset before the connection opened: the backend stopped listening with it still unaccepted.
 */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'EACCES', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);
/**
 * The backend closed an open connection with the request unread: the kernel resets such a close (a write
 * after it fails with EPIPE). One that read the request and then closed or died ends it cleanly.
 */
const UNREAD_ERRORS = new Set(['ECONNRESET', 'EPIPE']);
/**
 * A backend that resets every new connection must not keep a request going round. A pooled connection's
 * reset does not count: it discards the backend's idle connections, so the next try opens a new one.
 */
const MAX_UNREAD_TRIES = 3;

export interface ExchangeContext {
  readonly dispatcher: Dispatcher;
  readonly bufferSize: number;
  readonly logger: Logger;
  /** The backend refused a connection: take it out of rotation. */
  readonly onBackendDown: (backend: Backend) => void;
  /** Notes a 503 for want of descriptors (EMFILE, ENFILE). */
  readonly overBudget: RecurringWarning;
}

export class Exchange {
  private readonly req: http.IncomingMessage;
  private readonly res: http.ServerResponse;
  private readonly context: ExchangeContext;
  private chunks: Buffer[] = [];
  /** The whole body is in `chunks`: the request can be sent again. */
  private bodyComplete = false;
  /** The attempt in progress: its request to the backend, and how it gives the backend's slot back. */
  private upstream: HopRequest | null = null;
  private releaseAttempt: (() => void) | null = null;
  private cancelWait: () => void = () => {};
  private clientGone = false;
  /** Tries on new connections that a backend reset with the request unread (see MAX_UNREAD_TRIES). */
  private unreadTries = 0;
  /** When the request first asked for a unit: --queue-timeout bounds its whole wait, retries included. */
  private waitingSince: number | null = null;
  /** Taken back from a stuck unit: once, so that no request chases busy units around. */
  private takenBack = false;

  constructor(req: http.IncomingMessage, res: http.ServerResponse, context: ExchangeContext) {
    this.req = req;
    this.res = res;
    this.context = context;
  }

  start(): void {
    this.res.once('close', () => {
      if (this.res.writableFinished) return;
      this.clientGone = true;
      this.cancelWait();
      this.upstream?.abort();
      this.releaseAttempt?.();
    });
    const { req } = this;
    if (!declaresBody(req)) {
      this.bodyComplete = true;
      this.dispatch();
    } else if (this.context.bufferSize === 0) {
      this.dispatch();
    } else {
      this.readBody();
    }
  }

  /** Reads the body, up to --buffer-size, before a unit is taken: a slow upload holds no unit. */
  private readBody(): void {
    const { req } = this;
    let size = 0;
    const onData = (chunk: Buffer) => {
      this.chunks.push(chunk);
      size += chunk.length;
      if (size <= this.context.bufferSize) return;
      // Too large to hold: the rest streams to the unit.
      req.off('data', onData).off('end', onEnd).pause();
      this.dispatch();
    };
    const onEnd = () => {
      this.bodyComplete = true;
      this.dispatch();
    };
    req.on('data', onData).on('end', onEnd);
  }

  /** Waits for a unit (or takes one now); after an attempt on `previous`, another if there is one. */
  private dispatch(previous?: Backend): void {
    if (this.clientGone) return;
    this.waitingSince ??= this.context.dispatcher.clock.now();
    this.cancelWait = this.context.dispatcher.acquire(
      (backend) => this.send(backend),
      (reason) => this.refuse(reason),
      { avoid: previous, since: this.waitingSince },
    );
  }

  private send(backend: Backend): void {
    const { req, res, context } = this;
    if (this.clientGone) return context.dispatcher.release(backend);
    let released = false;
    /** The response's body has begun: its head went out with the first chunk. */
    let bodyStarted = false;
    const release = (takenBack = false) => {
      if (released) return;
      released = true;
      this.upstream = null;
      this.releaseAttempt = null;
      if (takenBack) context.dispatcher.releaseTakenBack(backend);
      else context.dispatcher.release(backend);
    };
    this.releaseAttempt = release;
    const streamed = !this.bodyComplete;
    // A body read in full goes with its length; one that streams keeps the client's length, or is chunked.
    const length = this.chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    const hasBody = length > 0 || req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    const contentLength = streamed ? (req.headers['content-length'] ?? null) : hasBody ? String(length) : null;
    const chunkedOut = streamed && contentLength === null;
    const head = this.requestHead(backend, contentLength, chunkedOut);
    const body = streamed || length === 0 ? Buffer.from(head, 'latin1') : Buffer.concat([Buffer.from(head, 'latin1'), ...this.chunks]);
    const upstream = backend.pool.request(body, req.method !== 'HEAD', {
      onInterim: () => context.dispatcher.progress(backend),
      takeBack: () => {
        if (released || this.takenBack || !this.bodyComplete || !IDEMPOTENT.has(req.method!)) return false;
        if (!upstream.withdraw()) return false;
        this.takenBack = true;
        release(true);
        context.logger.debug(`proxy: ${req.method} ${req.url} waited behind a busy ${backend.name}: sent to another unit`);
        this.dispatch(backend);
        return true;
      },
      onHead: (response) => {
        context.dispatcher.progress(backend);
        this.relayHead(response, upstream);
      },
      onData: (chunk) => {
        // Node writes the pending head and a first chunk given as a string in one write(), a Buffer in a
        // writev() of two; latin1 keeps the bytes as they are.
        const data = !bodyStarted && chunk.length <= SMALL_CHUNK ? chunk.toString('latin1') : chunk;
        bodyStarted = true;
        if (!res.write(data, 'latin1') && res.writableLength > context.bufferSize) upstream.pause();
      },
      onEnd: () => {
        release();
        res.end();
      },
      onError: (error: NodeJS.ErrnoException, { connected, reused, bytesReceived, headReceived }) => {
        release();
        if (this.clientGone) return;
        if (headReceived) {
          // The unit went away mid-response: the client must not take a cut body for a whole one.
          return res.destroy();
        }
        const code = error.code ?? '';
        if (code === 'EMFILE' || code === 'ENFILE') {
          context.overBudget.note();
          return respond(res, 503, OVER_LIMIT, {
            'retry-after': '1',
            'x-request-id': req.headers['x-request-id'],
          });
        }
        const refused = !connected && CONNECT_ERRORS.has(code);
        // Unread, it never ran: a repeatable one goes to another. A request the backend read is never
        // retried: it may be what killed its unit, and must not take down the pool.
        const unread =
          !refused &&
          !bytesReceived &&
          UNREAD_ERRORS.has(code) &&
          IDEMPOTENT.has(req.method!) &&
          (reused || this.unreadTries < MAX_UNREAD_TRIES);
        if (refused) context.onBackendDown(backend);
        // A refusing backend leaves rotation, so each retry goes to another one, or waits for one.
        if ((refused || unread) && this.bodyComplete) {
          if (unread && reused) backend.pool.discardIdle();
          else if (unread) this.unreadTries++;
          context.logger.debug(`proxy: ${req.method} ${req.url} did not reach ${backend.name} (${error.message}): trying another`);
          countRetry();
          return this.dispatch(backend);
        }
        context.logger.warning(
          `proxy: ${req.method} ${req.url} (request ${req.headers['x-request-id']}) to ${backend.name} failed: ${error.message}`,
        );
        countBadGateway();
        respond(res, 502, 'Bad Gateway: the server behind forkgate failed to answer', { 'x-request-id': req.headers['x-request-id'] });
      },
    });
    this.upstream = upstream;
    if (streamed) this.streamBody(upstream, chunkedOut);
    else upstream.end();
  }

  /**
   * The rest of a body too large to hold, as it comes, no faster than the unit takes it (chunked when
   * the client gave no length). Read to its end even after the attempt, to keep the client in step.
   */
  private streamBody(upstream: HopRequest, chunked: boolean): void {
    const { req } = this;
    let full = false;
    const send = (chunk: Buffer) => {
      const framed = chunked ? Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, CRLF]) : chunk;
      if (upstream.write(framed) || full) return;
      full = true;
      req.pause();
      upstream.whenDrained(() => {
        full = false;
        req.resume();
      });
    };
    for (const chunk of this.chunks) send(chunk);
    this.chunks = [];
    req.on('data', (chunk: Buffer) => {
      if (chunk.length > 0) send(chunk);
    });
    req.once('end', () => {
      if (chunked) upstream.write('0\r\n\r\n');
      upstream.end();
    });
    if (!full) req.resume();
  }

  /**
   * Sends the response head on, then relays the body reading up to --buffer-size ahead of the client
   * (onData above), so the unit is free as soon as it has answered, however slowly the client reads.
   */
  private relayHead(response: ResponseHead, upstream: HopRequest): void {
    const { req, res } = this;
    const headers = forwardedHeaders(response.rawHeaders, HOP_BY_HOP);
    // The edge gave every request an id; a unit echoes it, an upstream may not.
    if (!headers.some((name, index) => index % 2 === 0 && name.length === 12 && name.toLowerCase() === 'x-request-id')) {
      headers.push('X-Request-Id', req.headers['x-request-id'] as string);
    }
    res.writeHead(response.status, response.reason, headers);
    res.on('drain', () => upstream.resume());
    leaveWithClient(req.socket, res);
  }

  private requestHead(backend: Backend, contentLength: string | null, chunked: boolean): string {
    const { req } = this;
    let head = `${req.method} ${req.url} HTTP/1.1\r\n`;
    const headers = forwardedHeaders(req.rawHeaders, NOT_FORWARDED, connectionTokens(req.headers.connection));
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    // An HTTP/1.0 client may leave Host out; HTTP/1.1 servers require one.
    if (req.headers.host === undefined) head += `Host: ${'host' in backend.target ? backend.target.host : 'localhost'}\r\n`;
    if (contentLength !== null) head += `Content-Length: ${contentLength}\r\n`;
    if (chunked) head += 'Transfer-Encoding: chunked\r\n';
    // The client travels to forkgate's own units only: internal headers never leave forkgate.
    return backend.ours ? `${head}${PEER_HEADER}: ${encodeClient(req.socket)}\r\n\r\n` : `${head}\r\n`;
  }

  private refuse(reason: QueueRefusal): void {
    if (this.clientGone) return;
    this.context.logger.warning(`proxy: ${this.req.method} ${this.req.url} answered 503: ${reason}`);
    countShed(reason);
    respond(this.res, 503, `Service Unavailable: ${reason}`, { 'retry-after': '1', 'x-request-id': this.req.headers['x-request-id'] });
  }
}

/** Per client connection: the responses relayed to it and not finished yet. */
const relaying = new WeakMap<net.Socket, number>();

/**
 * A client that closes while an answer is under way is leaving (nginx's 499), and takes the upstream
 * requests along; one that half-closes before still gets its answer. One listener per connection.
 */
function leaveWithClient(socket: net.Socket, res: http.ServerResponse): void {
  const relayed = relaying.get(socket);
  if (relayed === undefined) socket.once('end', () => relaying.get(socket)! > 0 && socket.destroy());
  relaying.set(socket, (relayed ?? 0) + 1);
  res.once('finish', () => relaying.set(socket, relaying.get(socket)! - 1));
}

/** Whether the request says a body follows (a length other than 0, or a transfer coding). */
export function declaresBody(req: http.IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
}

/** The raw header list without the names in `skip` (lower case) or named by the Connection header. */
export function forwardedHeaders(raw: readonly string[], skip: ReadonlySet<string>, alsoSkip?: ReadonlySet<string>): string[] {
  const kept: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (skip.has(name) || alsoSkip?.has(name)) continue;
    kept.push(raw[i]!, raw[i + 1]!);
  }
  return kept;
}

/** What the edge vouched for: a client's Connection header may not strip it on the way to the unit. */
const VOUCHED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded', 'x-request-id']);

/** Header names a Connection header lists are hop-by-hop too (except what the edge vouched for). */
function connectionTokens(connection: string | undefined): ReadonlySet<string> | undefined {
  if (!connection) return undefined;
  const tokens = connection
    .toLowerCase()
    .split(',')
    .map((token) => token.trim());
  if (tokens.length === 1 && (tokens[0] === 'keep-alive' || tokens[0] === 'close')) return undefined;
  return new Set(tokens.filter((token) => !VOUCHED.has(token)));
}

function respond(res: http.ServerResponse, status: number, message: string, headers: http.OutgoingHttpHeaders = {}): void {
  const body = `${message}\n`;
  res.writeHead(status, { ...headers, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
