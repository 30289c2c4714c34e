import type { Socket } from 'node:net';
import type { ServedSocket } from '../edge/app-server.ts';
import type { Logger } from '../log/logger.ts';

/**
 * A unit's kept-alive connections in the order they went idle, closed idle-longest first to admit one
 * that would wait behind them (as nginx reclaims "reusable" connections). Idleness is checked only when
 * one is to be closed, so a request costs no more than moving its connection to the end of the map.
 */
export class IdleConnections {
  /** Each connection with how many bytes it had read when its last response closed, in that order. */
  private readonly idle = new Map<ServedSocket, number>();
  private readonly logger: Logger;
  /** One 'close' listener shared by every connection (each its `this`). */
  private readonly forget: (this: Socket) => void;

  constructor(logger: Logger) {
    this.logger = logger;
    const idle = this.idle;
    this.forget = function (this: Socket) {
      idle.delete(this);
    };
  }

  /** A connection as the app's server sees it (after TLS): forgotten when it closes. */
  track(socket: Socket): void {
    socket.on('close', this.forget);
  }

  /** A response on the connection closed: the connection is idle unless it is closing or more follows. */
  answered(socket: Socket): void {
    if (!socket.writable) return; // closed, or closing after this response (Connection: close)
    this.idle.delete(socket);
    this.idle.set(socket, socket.bytesRead);
  }

  /** Closes the connection idle longest; false if none is idle. */
  closeIdleLongest(): boolean {
    for (const [socket, bytesRead] of this.idle) {
      this.idle.delete(socket);
      if (!isIdle(socket, bytesRead)) continue; // busy again: it comes back when its response closes
      this.logger.debug(`Closed the keep-alive connection from ${socket.remoteAddress ?? 'a unix socket'} idle longest, for a waiting one`);
      socket.destroy();
      return true;
    }
    return false;
  }
}

/**
 * Still between requests: nothing read since its response (not a byte of a new request, nor of an
 * upgrade), no pipelined response pending, and still in the HTTP server's hands.
 */
function isIdle(socket: ServedSocket, bytesReadWhenIdle: number): boolean {
  return socket.writable && socket.bytesRead === bytesReadWhenIdle && !socket._httpMessage && socket.parser != null;
}
