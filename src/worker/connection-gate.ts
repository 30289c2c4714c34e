import type { Socket } from 'node:net';

/** A connection waiting for a slot, with the listener that takes it out of the queue if it closes first. */
interface Waiting {
  readonly socket: Socket;
  readonly leave: () => void;
}

/**
 * Admits at most `limit` connections into service; the rest wait, accepted but unread, in arrival
 * order. Nothing is dropped (the worker class contract); with keep-alive, `closeIdle` frees the slot of
 * the connection idle longest for a waiting one.
 */
export class ConnectionGate {
  private readonly limit: number;
  private readonly admit: (socket: Socket) => void;
  private readonly closeIdle: (() => boolean) | null;
  private readonly waiting: Waiting[] = [];
  private inService = 0;
  /** Idle connections closed for waiting ones and not gone yet: the slots about to free. */
  private closing = 0;
  private onIdle: (() => void) | null = null;

  constructor(limit: number, admit: (socket: Socket) => void, closeIdle: (() => boolean) | null = null) {
    this.limit = limit;
    this.admit = admit;
    this.closeIdle = closeIdle;
  }

  /** Connections accepted and not yet closed, waiting ones included. */
  get open(): number {
    return this.inService + this.waiting.length;
  }

  offer(socket: Socket): void {
    if (this.inService < this.limit) return this.serve(socket);
    // A client may give up while it waits: its reset is no error of the worker's, and its place is freed.
    const entry: Waiting = {
      socket,
      leave: () => {
        this.waiting.splice(this.waiting.indexOf(entry), 1);
        if (this.open === 0) this.onIdle?.();
      },
    };
    socket.on('error', ignoreWhileWaiting);
    socket.once('close', entry.leave);
    this.waiting.push(entry);
    this.makeRoom();
  }

  /**
   * Closes idle connections, one for each waiting connection no slot is about to free for. Called when
   * one has to wait, and by the unit whenever a connection goes idle: it may be the only one.
   */
  makeRoom(): void {
    while (this.waiting.length > this.closing && this.closeIdle?.()) this.closing++;
  }

  /** Calls back once every connection has closed (at once if none is open). */
  whenIdle(callback: () => void): void {
    this.onIdle = callback;
    if (this.open === 0) callback();
  }

  private serve(socket: Socket): void {
    this.inService++;
    socket.once('close', () => {
      this.inService--;
      if (this.closing > 0) this.closing--; // any slot that frees serves a waiting connection
      const next = this.waiting.shift();
      if (next) {
        next.socket.off('error', ignoreWhileWaiting);
        next.socket.off('close', next.leave);
        this.serve(next.socket);
      } else if (this.open === 0) {
        this.onIdle?.();
      }
    });
    socket.setNoDelay(true);
    this.admit(socket);
  }
}

/** A waiting connection's error (a reset) is followed by its 'close', which frees its place. */
function ignoreWhileWaiting(): void {}
