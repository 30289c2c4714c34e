import type { Socket } from 'node:net';

/**
 * Admits at most `limit` connections into service; the rest wait here, accepted but unread, and are
 * admitted in arrival order as slots free. Nothing is ever dropped: that is the worker class contract.
 */
export class ConnectionGate {
  private readonly limit: number;
  private readonly admit: (socket: Socket) => void;
  private readonly waiting: Socket[] = [];
  private inService = 0;
  private onIdle: (() => void) | null = null;

  constructor(limit: number, admit: (socket: Socket) => void) {
    this.limit = limit;
    this.admit = admit;
  }

  /** Connections accepted and not yet closed, waiting ones included. */
  get open(): number {
    return this.inService + this.waiting.length;
  }

  offer(socket: Socket): void {
    if (this.inService < this.limit) this.serve(socket);
    else this.waiting.push(socket);
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
      const next = this.waiting.shift();
      if (next) this.serve(next);
      else if (this.open === 0) this.onIdle?.();
    });
    socket.setNoDelay(true);
    this.admit(socket);
  }
}
