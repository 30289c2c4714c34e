/**
 * One request through the proxy: read the body (up to --buffer-size), wait for a unit, send the request
 * over the unit's pool, relay the response. A request that never reached a unit goes to another; any
 * other failure is a 502 (or a cut response). Every outcome gives the unit back exactly once.
 */
import type * as http from 'node:http';
import { encodeClient, lateMark, PEER_HEADER } from '../hop/protocol.ts';
import { OVER_LIMIT } from '../edge/refusal.ts';
import { requestStart, type AccessLog, type RequestStart } from '../log/access-log.ts';
import { answeredStatus } from '../log/status.ts';
import type { Logger } from '../log/logger.ts';
import { RecurringWarning } from '../log/recurring.ts';
import type { Backend, Dispatcher, QueueRefusal } from './dispatcher.ts';
import type { BodyMode, HopFailure, HopHandler, HopRequest, ResponseHead } from '../hop/pool.ts';
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
  /** Whether requests get ids (makesRequestIds): the edge gave each one. */
  readonly requestIds: boolean;
  /** Notes a 503 for want of descriptors (EMFILE, ENFILE). */
  readonly overBudget: RecurringWarning;
  /** Notes a 502 and a 503 (the queue full or timed out): one line for a burst of them. */
  readonly failures: ProxyFailures;
  /** Where the proxy's own answers are logged; the units log those they give. */
  accessLog: AccessLog | null;
  /** Upstreams log nothing here: every request is logged by the proxy. */
  logsEveryRequest: boolean;
}

export class Exchange {
  private readonly req: http.IncomingMessage;
  private readonly res: http.ServerResponse;
  readonly context: ExchangeContext;
  private chunks: Buffer[] = [];
  /** The whole body is in `chunks`: the request can be sent again. */
  private bodyComplete = false;
  /** The attempt in progress. */
  private attempt: Attempt | null = null;
  private cancelWait: () => void = () => {};
  private clientGone = false;
  /** Tries on new connections that a backend reset with the request unread (see MAX_UNREAD_TRIES). */
  private unreadTries = 0;
  /** When the request first asked for a unit: --queue-timeout bounds its whole wait, retries included. */
  private waitingSince: number | null = null;
  /** Taken back from a stuck unit: once, so that no request chases busy units around. */
  private takenBack = false;
  /** The X-Request-Id the edge gave the request, where requests get ids. */
  private readonly requestId: string | null;
  /** When it came, where the proxy's own answers are logged. */
  private readonly arrivedAt: RequestStart | null;
  /** A unit's response head went to the client: the unit logs the request. */
  private relayed = false;

  constructor(req: http.IncomingMessage, res: http.ServerResponse, context: ExchangeContext) {
    this.req = req;
    this.res = res;
    this.context = context;
    this.requestId = context.requestIds ? (req.headers['x-request-id'] as string) : null;
    this.arrivedAt = context.accessLog ? requestStart() : null;
  }

  start(): void {
    if (this.context.logsEveryRequest) this.context.accessLog?.track(this.req, this.res, this.arrivedAt!);
    this.res.once('close', () => {
      if (this.res.writableFinished) return;
      this.clientGone = true;
      this.cancelWait();
      const attempt = this.attempt;
      // Gone before any unit had the request: only the proxy knows of it.
      if (!attempt && !this.relayed && !this.context.logsEveryRequest)
        this.context.accessLog?.answered(this.req, answeredStatus(this.res), 0, this.arrivedAt!);
      attempt?.upstream?.abort();
      attempt?.release(false);
    });
    const { req } = this;
    if (!declaresBody(req)) {
      this.bodyComplete = true;
      this.dispatch();
      return;
    }
    if (this.context.bufferSize === 0) {
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
    const { req, context } = this;
    if (this.clientGone) return context.dispatcher.release(backend, false);
    const streamed = !this.bodyComplete;
    // A body read in full goes with its length; one that streams keeps the client's length, or is chunked.
    const body = streamed || this.chunks.length === 0 ? null : this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const hasBody = body !== null || req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    const contentLength = streamed ? (req.headers['content-length'] ?? null) : hasBody ? String(body?.length ?? 0) : null;
    const chunkedOut = streamed && contentLength === null;
    const attempt = new Attempt(this, backend, lateMark(context.dispatcher.stuck.ms));
    this.attempt = attempt;
    const head = this.requestHead(backend, contentLength, chunkedOut, attempt.lateMs);
    attempt.upstream = backend.pool.request(head, body, req.method !== 'HEAD', attempt);
    if (streamed) this.streamBody(attempt.upstream, chunkedOut);
    else attempt.upstream.end();
  }

  /** An attempt ended: its slot goes back to the dispatcher. */
  release(attempt: Attempt, takenBack: boolean): void {
    if (this.attempt === attempt) this.attempt = null;
    if (takenBack) this.context.dispatcher.releaseTakenBack(attempt.backend);
    else this.context.dispatcher.release(attempt.backend, attempt.started);
  }

  /** The unit has not started the request: it goes to another, once, if repeating it is safe. */
  takeBack(attempt: Attempt): boolean {
    const { req } = this;
    if (this.takenBack || !this.bodyComplete || !IDEMPOTENT.has(req.method!)) return false;
    if (!attempt.upstream!.withdraw()) return false;
    this.takenBack = true;
    attempt.release(true);
    this.context.logger.debug(`proxy: ${req.method} ${req.url} waited behind a busy ${attempt.backend.name}: sent to another unit`);
    this.dispatch(attempt.backend);
    return true;
  }

  /**
   * Sends the response head on, then relays the body reading up to --buffer-size ahead of the client
   * (Attempt.onData), so the unit is free as soon as it has answered, however slowly the client reads.
   * A body whose end is marked goes to an HTTP/1.1 client as the unit framed it, its head written here;
   * any other through Node's framing.
   */
  relayHead(response: ResponseHead, attempt: Attempt): BodyMode {
    const { req, res } = this;
    this.relayed = true;
    const asSent = response.delimited && req.httpVersionMajor === 1 && req.httpVersionMinor === 1;
    // A unit echoes the request's id, an upstream may not.
    const addId =
      this.requestId !== null &&
      !attempt.backend.ours &&
      !response.rawHeaders.some((name, index) => index % 2 === 0 && name.toLowerCase() === 'x-request-id');
    if (asSent) {
      writeHeadAsSent(res, response, addId ? this.requestId : null);
    } else {
      const headers = forwardedHeaders(response.rawHeaders, HOP_BY_HOP);
      if (addId) headers.push('X-Request-Id', this.requestId!);
      res.writeHead(response.status, response.reason, headers);
    }
    if (response.bodyLater) res.flushHeaders();
    return asSent ? 'as-sent' : 'decoded';
  }

  /** A chunk of the response's body, as relayHead chose; a client this far behind holds the unit's reads back. */
  relayData(chunk: Buffer | string, upstream: HopRequest): void {
    const { res } = this;
    if (res.write(chunk, 'latin1') || res.writableLength <= this.context.bufferSize) return;
    upstream.pause();
    res.once('drain', () => upstream.resume());
  }

  relayEnd(): void {
    this.res.end();
  }

  /** The attempt failed: try another unit if the request never reached this one, else a 502. */
  failed(attempt: Attempt, error: NodeJS.ErrnoException, { connected, reused, bytesReceived, headReceived }: HopFailure): void {
    const { req, res, context } = this;
    const { backend } = attempt;
    if (this.clientGone) return;
    if (headReceived) {
      // The unit went away mid-response: the client must not take a cut body for a whole one.
      res.destroy();
      return;
    }
    const code = error.code ?? '';
    if (code === 'EMFILE' || code === 'ENFILE') {
      context.overBudget.note();
      return this.answer(503, OVER_LIMIT, { 'retry-after': '1' });
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
    context.failures.badGateway.note({ request: `${this.describe()} to ${backend.name}`, cause: error.message });
    countBadGateway();
    this.answer(502, 'Bad Gateway: the server behind forkgate failed to answer');
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

  private requestHead(backend: Backend, contentLength: string | null, chunked: boolean, lateMs: number): string {
    const { req } = this;
    let head = `${req.method} ${req.url} HTTP/1.1\r\n`;
    const raw = req.rawHeaders;
    const listed = connectionTokens(req.headers.connection);
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      if (!NOT_FORWARDED.has(name) && !listed?.has(name)) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    // An HTTP/1.0 client may leave Host out; HTTP/1.1 servers require one.
    if (req.headers.host === undefined) head += `Host: ${'host' in backend.target ? backend.target.host : 'localhost'}\r\n`;
    if (contentLength !== null) head += `Content-Length: ${contentLength}\r\n`;
    if (chunked) head += 'Transfer-Encoding: chunked\r\n';
    // The client travels to forkgate's own units only: internal headers never leave forkgate.
    return backend.ours ? `${head}${PEER_HEADER}: ${encodeClient(req.socket, lateMs)}\r\n\r\n` : `${head}\r\n`;
  }

  private refuse(reason: QueueRefusal): void {
    if (this.clientGone) return;
    this.context.failures.shed.note({ request: this.describe(), cause: reason });
    countShed(reason);
    this.answer(503, `Service Unavailable: ${reason}`, { 'retry-after': '1' });
  }

  /** The request, for the error log: its method, URL and id. */
  private describe(): string {
    return `${this.req.method} ${this.req.url}${this.requestId ? ` (request ${this.requestId})` : ''}`;
  }

  /** An answer of the proxy's own, with the request's id where requests get ids. */
  private answer(status: number, message: string, headers: http.OutgoingHttpHeaders = {}): void {
    const { req, res } = this;
    if (!this.context.logsEveryRequest) this.context.accessLog?.track(req, res, this.arrivedAt!);
    const body = `${message}\n`;
    const id = this.requestId === null ? {} : { 'x-request-id': this.requestId };
    res.writeHead(status, { ...headers, ...id, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }
}

/** The warnings for requests the proxy answers 502 and 503, each told by its latest request. */
export interface ProxyFailures {
  readonly badGateway: RecurringWarning<FailedRequest>;
  readonly shed: RecurringWarning<FailedRequest>;
}

interface FailedRequest {
  readonly request: string;
  readonly cause: string;
}

export function proxyFailures(logger: Pick<Logger, 'warning'>): ProxyFailures {
  const warning = (status: number, verb: string) =>
    new RecurringWarning<FailedRequest>(logger, (times, { request, cause }) =>
      times === 1 ? `proxy: ${request} ${verb}: ${cause}` : `proxy: ${times} requests answered ${status}, the latest ${request}: ${cause}`,
    );
  return { badGateway: warning(502, 'failed'), shed: warning(503, 'answered 503') };
}

/** One try of an exchange on one backend: the handler of its request on the hop. */
class Attempt implements HopHandler {
  readonly backend: Backend;
  /** The late mark sent with the request: it may be taken back only once twice as old (lateMark). */
  readonly lateMs: number;
  upstream: HopRequest | null = null;
  private readonly exchange: Exchange;
  private released = false;
  /** The unit has shown a sign of the request: an interim answer or the response head. */
  started = false;
  /** The response's body has begun: its head went out with the first chunk. */
  private bodyStarted = false;

  constructor(exchange: Exchange, backend: Backend, lateMs: number) {
    this.exchange = exchange;
    this.backend = backend;
    this.lateMs = lateMs;
  }

  /** Gives the backend's slot back, once. */
  release(takenBack: boolean): void {
    if (this.released) return;
    this.released = true;
    this.exchange.release(this, takenBack);
  }

  /** A unit confirmed it has the request in hand: progress, but the request holds the unit until it awaits or answers. */
  onInterim(awaiting: boolean): void {
    if (awaiting) this.signOfProgress();
    else this.exchange.context.dispatcher.progress(this.backend);
  }

  takeBack(ageMs: number): boolean {
    return !this.released && ageMs >= 2 * this.lateMs && this.exchange.takeBack(this);
  }

  onHead(head: ResponseHead): BodyMode {
    this.signOfProgress();
    return this.exchange.relayHead(head, this);
  }

  onData(chunk: Buffer): void {
    // Node writes the pending head and a first chunk given as a string in one write(), a Buffer in a
    // writev() of two; latin1 keeps the bytes as they are.
    const data = !this.bodyStarted && chunk.length <= SMALL_CHUNK ? chunk.toString('latin1') : chunk;
    this.bodyStarted = true;
    this.exchange.relayData(data, this.upstream!);
  }

  onEnd(): void {
    this.release(false);
    this.exchange.relayEnd();
  }

  onError(error: Error, failure: HopFailure): void {
    this.release(false);
    this.exchange.failed(this, error, failure);
  }

  private signOfProgress(): void {
    const { dispatcher } = this.exchange.context;
    if (this.started) return dispatcher.progress(this.backend);
    this.started = true;
    dispatcher.started(this.backend);
  }
}

/**
 * Writes the response head itself, Node's framing left out: the body follows as the unit framed it
 * (a length, or chunked with any trailers). Sets what ServerResponse.writeHead would have, for the
 * server's keep-alive handling (Node's own fields, the same since its first releases).
 */
function writeHeadAsSent(res: http.ServerResponse, response: ResponseHead, requestId: string | null): void {
  const { status, reason, rawHeaders, chunked } = response;
  let head = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    // The framing travels as the unit chose it, with the trailers it announces; the rest of the
    // connection's fields are this one's.
    if (!HOP_BY_HOP.has(lower) || (chunked && (lower === 'transfer-encoding' || lower === 'trailer'))) {
      head += `${name}: ${rawHeaders[i + 1]}\r\n`;
    }
  }
  if (requestId !== null) head += `X-Request-Id: ${requestId}\r\n`;
  const raw = res as RawResponse;
  if (res.shouldKeepAlive) {
    const timeout = raw._keepAliveTimeout;
    head += timeout
      ? `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(timeout / 1000)}\r\n\r\n`
      : 'Connection: keep-alive\r\n\r\n';
  } else {
    raw._last = true;
    head += 'Connection: close\r\n\r\n';
  }
  res.statusCode = status;
  res.statusMessage = reason;
  raw.chunkedEncoding = false;
  if (status === 204 || status === 304) raw._hasBody = false;
  raw._header = head;
  raw._headerSent = false;
}

/** ServerResponse's fields behind writeHead(). */
interface RawResponse extends http.ServerResponse {
  _header: string | null;
  _headerSent: boolean;
  _last: boolean;
  _hasBody: boolean;
  _keepAliveTimeout: number;
  chunkedEncoding: boolean;
}

/** Whether the request says a body follows (a length other than 0, or a transfer coding). */
export function declaresBody(req: http.IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
}

/** The raw header list without the names in `skip` (lower case). */
export function forwardedHeaders(raw: readonly string[], skip: ReadonlySet<string>): string[] {
  const kept: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (skip.has(name)) continue;
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
