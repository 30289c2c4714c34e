/** The app's server as forkgate drives it: fed accepted connections, never listening itself. */
import type * as http from 'node:http';
import type * as https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export type AppServer = http.Server | https.Server;

/** Emits a request event to the server's listeners, as the server itself would have. */
export type EmitRequest = (event: string | symbol, req: http.IncomingMessage, res: http.ServerResponse) => boolean;

/** Events that bring the app a request with a response to write, and those that hand it the socket. */
const REQUEST_EVENTS = new Set<string | symbol>(['request', 'checkContinue', 'checkExpectation']);
const SOCKET_EVENTS = new Set<string | symbol>(['upgrade', 'connect']);

/**
 * Puts forkgate in front of the server's listeners: Node emits a request to all of them at once, and a
 * request forkgate refuses must reach none, forkgate's own included. onRequest emits the request when
 * it will; onSocket says whether an upgrade (or CONNECT) goes on. Returns the emit that skips them.
 */
export function interceptRequests(
  server: AppServer,
  onRequest: (event: string | symbol, req: http.IncomingMessage, res: http.ServerResponse, emit: EmitRequest) => boolean,
  onSocket: (req: http.IncomingMessage, socket: Socket) => boolean,
): EmitRequest {
  const emit = server.emit as (this: AppServer, ...args: unknown[]) => boolean;
  const emitRequest: EmitRequest = (event, req, res) => emit.call(server, event, req, res);
  // Runs for every event of the server: `arguments` passed on as they are costs no array per call.
  server.emit = function (this: AppServer, event: string | symbol, first?: unknown, second?: unknown): boolean {
    if (REQUEST_EVENTS.has(event)) return onRequest(event, first as http.IncomingMessage, second as http.ServerResponse, emitRequest);
    if (SOCKET_EVENTS.has(event) && !onSocket(first as http.IncomingMessage, second as Socket)) return true;
    // biome-ignore lint/complexity/noArguments: a rest parameter would allocate an array on every event
    return emit.apply(this, arguments as unknown as unknown[]);
  } as AppServer['emit'];
  return emitRequest;
}

/**
 * What Node's http.Server keeps on a connection it serves: internal, but what its own
 * closeIdleConnections() reads to tell an idle connection.
 */
export interface ServedSocket extends Socket {
  /**
   * The server's parser, with the request it is reading; null once the server has let go of the
   * connection (upgrade, CONNECT).
   */
  parser?: { incoming: http.IncomingMessage | null } | null;
  /** The response being written; a pipelined request's response waits behind it. */
  _httpMessage?: http.ServerResponse | null;
}

/** Per server, each connection it serves with the bytes it had read when handed over (TLS: cleartext). */
const handedOver = new WeakMap<AppServer, Map<Socket, number>>();

/** Follows the server's connections for closeFreshConnections(); call before any is handed over. */
export function trackConnections(server: AppServer): void {
  const connections = new Map<Socket, number>();
  handedOver.set(server, connections);
  const forget = function (this: Socket) {
    connections.delete(this);
  };
  server.on('connection', (socket: Socket) => {
    connections.set(socket, socket.bytesRead);
    socket.on('close', forget); // a close comes once: no per-connection wrapper, as once() would make
  });
}

/**
 * For a graceful stop, beside Node's closeIdleConnections(): closes the connections that have sent
 * nothing since they came, which it leaves open (its header timer runs on them), so a client that only
 * connected (a browser's preconnect, an idle pooled socket) does not hold the stop until
 * --graceful-timeout. A connection that sent part of a request is left to its timeouts.
 */
export function closeFreshConnections(server: AppServer): void {
  for (const [socket, bytesRead] of handedOver.get(server) ?? []) {
    if (socket.bytesRead === bytesRead && !(socket as ServedSocket)._httpMessage) socket.destroy();
  }
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

/** Runs once the responses Node is writing on the connection, for requests read before now, are done. */
export function afterAnswers(socket: Socket, then: () => void): void {
  // The response Node is writing on the connection; the next pipelined one follows it there.
  const answering = (socket as ServedSocket)._httpMessage;
  if (!answering) return then();
  answering.once('close', () => {
    if (!socket.destroyed) afterAnswers(socket, then);
  });
}
