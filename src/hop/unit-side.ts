/**
 * The hop's end in a unit behind forkgate's proxy. The proxy's front has applied the edge already
 * (limits, TLS, PROXY header, forwarding policy), so the unit takes every connection as it comes,
 * believes the forwarding headers and reads the client from PEER_HEADER. What it adds is its side of
 * the take-back: confirming requests it has in hand, and putting aside one the proxy withdrew.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { interceptRequests, type AppServer, type EmitRequest } from '../edge/app-server.ts';
import { configureParser } from '../edge/limits.ts';
import { prepareForwardingHeaders, prepareRequestHeaders } from '../edge/request-headers.ts';
import { presentClient } from './client-socket.ts';
import { AWAITING, decodeClient, PEER_HEADER, WITHDRAWAL_HEADER, type HopClient } from './protocol.ts';

/** The front enforced the limits; the unit's parser takes whatever it passed on. */
const NO_LIMITS = { limitRequestLine: 0, limitRequestFields: 0, limitRequestFieldSize: 0, limitRequestBody: 0, headersTimeout: 0 };

export class UnitSide {
  private readonly server: AppServer;
  /** Whether requests get ids (makesRequestIds): the front made one for each, which the unit echoes. */
  private readonly requestIds: boolean;
  /** The request read late on a connection, until it is looked at again. */
  private readonly lateRequests = new WeakMap<Socket, IncomingMessage>();
  /** Late requests the proxy took back. */
  private readonly withdrawn = new WeakSet<IncomingMessage>();
  /** The response to the request whose handler is running now, read on time and so not yet confirmed. */
  private running: ServerResponse | null = null;

  /** Configures the app's server; call before it is marked listening. */
  constructor(server: AppServer, requestIds: boolean) {
    this.server = server;
    this.requestIds = requestIds;
    configureParser(server, NO_LIMITS);
    interceptRequests(
      server,
      (event, req, res, emit) => this.onRequest(event, req, res, emit),
      (req) => {
        this.prepare(req, null, clientOf(req));
        return true;
      },
    );
    // A handler that ends the unit (process.exit, or a throw that crashes it) must not have its request
    // taken back for another unit to run: the confirmation goes out before the unit's sockets close.
    process.once('exit', () => {
      const res = this.running;
      if (res && !res.headersSent && !res.destroyed) res.writeProcessing();
    });
  }

  /** Takes a connection from the proxy's pool into the app's server. */
  accept(socket: Socket): void {
    this.server.emit('connection', socket);
  }

  private onRequest(event: string | symbol, req: IncomingMessage, res: ServerResponse, emit: EmitRequest): boolean {
    if (req.method === 'OPTIONS' && req.headers[WITHDRAWAL_HEADER] !== undefined) {
      this.withdraw(req, res);
      return true;
    }
    const client = clientOf(req);
    if (client && Date.now() - client.sentAt >= client.lateMs) {
      // Confirmed at once: a busy unit reads many requests late, and the one it runs must not be taken
      // back. Looked at again once the rest of this read is parsed, in case a withdrawal follows it.
      res.writeProcessing();
      this.lateRequests.set(req.socket, req);
      process.nextTick(() => this.serveLate(req, res, client, () => emit(event, req, res)));
      return true;
    }
    this.prepare(req, res, client);
    this.running = res;
    const handled = emit(event, req, res);
    this.running = null; // not on a throw: the crash it leads to ends the unit with this request running
    confirmStarted(res);
    return handled;
  }

  /**
   * The proxy took back the request before this one on the connection: put it aside, if not started.
   * Started, it has gone to another unit all the same, and its answer here reaches no one: the
   * connection ends after what is written, so its response closes rather than run on (a stream for good).
   */
  private withdraw(req: IncomingMessage, res: ServerResponse): void {
    const late = this.lateRequests.get(req.socket);
    if (!late) return void req.socket.end();
    this.withdrawn.add(late);
    res.writeHead(204).end();
  }

  /** A withdrawal that came right behind a late request has been read by now: another unit runs it. */
  private serveLate(req: IncomingMessage, res: ServerResponse, client: HopClient, emitRequest: () => void): void {
    this.lateRequests.delete(req.socket);
    if (this.withdrawn.has(req)) {
      res.writeHead(204).end();
      return;
    }
    this.prepare(req, res, client);
    emitRequest();
    confirmStarted(res);
  }

  /** Presents the request's client and applies the forwarding headers, and echoes the front's X-Request-Id. */
  private prepare(req: IncomingMessage, res: ServerResponse | null, client: HopClient | null): void {
    presentClient(req.socket, client);
    if (!this.requestIds) return prepareForwardingHeaders(req, true, PEER_HEADER);
    const id = prepareRequestHeaders(req, true, PEER_HEADER);
    res?.setHeader('x-request-id', id);
  }
}

function clientOf(req: IncomingMessage): HopClient | null {
  const header = req.headers[PEER_HEADER];
  return typeof header === 'string' ? decodeClient(header) : null;
}

/**
 * A request whose handler returned without answering (it awaits something) is confirmed awaiting: the
 * proxy never takes it back, and counts it as started, not as holding the unit. After the promise job
 * the handler queued first (one awaiting something settled has answered by then), and before anything
 * else the unit does.
 */
function confirmStarted(res: ServerResponse): void {
  if (res.writableEnded) return;
  queueMicrotask(() => {
    // writeProcessing's own path, which writes no header: straight on the socket, or after the head.
    if (!res.headersSent && !res.writableEnded && !res.destroyed) (res as RawWriter)._writeRaw(AWAITING, 'latin1');
  });
}

/** ServerResponse's raw write, behind writeProcessing() and writeContinue(). */
interface RawWriter extends ServerResponse {
  _writeRaw(data: string, encoding: BufferEncoding): boolean;
}
