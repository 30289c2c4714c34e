/**
 * nginx's lingering close, for a connection answered while its client may still be sending (a body
 * over the limit): closing it with unread bytes makes the kernel answer them with a reset, which
 * destroys the answer still in the client's receive buffer. So the answer goes out with a FIN, what
 * the client still sends is read and dropped, and the connection closes once the client closes it,
 * is quiet for LINGER_QUIET_MS, or has lingered LINGER_MS in all.
 */
import type { Socket } from 'node:net';
import { realClock, type Clock } from '../clock.ts';

/** nginx's lingering_timeout and lingering_time. */
export const LINGER_QUIET_MS = 5000;
export const LINGER_MS = 30_000;

export class Lingering {
  /** Connections lingering now, for a stop that will not wait for them. */
  private readonly sockets = new Set<Socket>();
  private readonly clock: Clock;

  constructor(clock: Clock = realClock) {
    this.clock = clock;
  }

  /** Ends the connection after what is written to it and drops what the client still sends. */
  close(socket: Socket): void {
    if (this.sockets.has(socket) || socket.destroyed) return;
    if (socket.readableEnded) {
      // The client has closed its side: nothing more is coming.
      socket.end(() => socket.destroy());
      return;
    }
    const { clock } = this;
    this.sockets.add(socket);
    socket.end();
    // Node's HTTP server parses from a 'data' listener once another is added; without it the server
    // sees nothing more, and the bytes go nowhere.
    socket.removeAllListeners('data');
    let heard = clock.now();
    socket.on('data', () => {
      heard = clock.now();
    });
    // Rearmed for what is left of the quiet time, rather than reset on every read.
    let quiet = clock.setTimeout(function check() {
      const left = heard + LINGER_QUIET_MS - clock.now();
      if (left <= 0) return socket.destroy();
      quiet = clock.setTimeout(check, left);
      quiet.unref();
    }, LINGER_QUIET_MS);
    quiet.unref();
    const limit = clock.setTimeout(() => socket.destroy(), LINGER_MS);
    limit.unref();
    socket.once('end', () => socket.destroy());
    socket.once('close', () => {
      clock.clearTimeout(quiet);
      clock.clearTimeout(limit);
      this.sockets.delete(socket);
    });
    socket.resume();
  }

  /** Node's HTTP server closes a connection after its last response with destroySoon(): this one lingers. */
  closeAfterResponse(socket: Socket): void {
    socket.destroySoon = () => this.close(socket);
  }

  /** For a stop: the answers have had their moment, the connections close now. */
  closeAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }
}
