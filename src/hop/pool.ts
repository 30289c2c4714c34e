/**
 * The proxy's side of the hop: an HTTP/1.1 client for its backends (units, --upstream servers), with
 * keep-alive connections per backend, one request at a time on each (why not node:http's client:
 * docs/architecture.md). The parser takes what RFC 9112 allows a server to send: chunked,
 * Content-Length or close-delimited bodies, none after HEAD, 1xx, 204 and 304, interim 1xx skipped.
 * Anything else fails the request (502).
 */
import * as net from 'node:net';
import { HopClosedError, HopParseError } from '../errors.ts';
import { AWAITING_HEADER, WITHDRAWAL } from './protocol.ts';

/** Largest response head accepted (status line and header fields). */
const MAX_HEAD_BYTES = 64 * 1024;
const CRLF_CRLF = Buffer.from('\r\n\r\n');
/** An idle connection is not reused within this margin of the keep-alive timeout its server announced. */
const KEEP_ALIVE_MARGIN_MS = 1000;

export type HopTarget = { readonly socketPath: string } | { readonly host: string; readonly port: number };

/** A new connection to a backend. */
export function connectTo(target: HopTarget): net.Socket {
  return 'socketPath' in target ? net.connect(target.socketPath) : net.connect({ host: target.host, port: target.port, noDelay: true });
}

export interface ResponseHead {
  readonly status: number;
  readonly reason: string;
  /** Field names and values in turn, as sent. */
  readonly rawHeaders: string[];
  /** Where the body ends is marked (a length, chunked, or no body), not left to the connection's close. */
  readonly delimited: boolean;
  /** The body comes chunked (as sent, it keeps that framing). */
  readonly chunked: boolean;
  /**
   * A body is coming and none of it came with the head (an app that sent its head first, as for server-
   * sent events): the head should reach the client now rather than with the body's first bytes.
   */
  readonly bodyLater: boolean;
}

/**
 * decoded: onData gets the body's content (chunk framing and trailers removed). as-sent: onData gets the
 * body's bytes as they came, framing and trailers included, for a relay that keeps the backend's framing.
 */
export type BodyMode = 'decoded' | 'as-sent';

export interface HopHandler {
  /**
   * An interim 1xx came (other than 101): the backend has the request in hand; `awaiting`: a unit of
   * forkgate's says its handler returned without answering (AWAITING_HEADER).
   */
  onInterim?(awaiting: boolean): void;
  /**
   * The unit is stuck and nothing of the response has come for `ageMs`: take the request back and send
   * it elsewhere, if it may go. Returns whether it did.
   */
  takeBack?(ageMs: number): boolean;
  /** The response head came: how its body is to be handed on. */
  onHead(head: ResponseHead): BodyMode;
  /**
   * Upgrade requests only: the backend switched protocols. The socket is the caller's from now on;
   * `rest` holds what the backend sent after its 101 head.
   */
  onUpgrade?(head: ResponseHead, socket: net.Socket, rest: Buffer): void;
  onData(chunk: Buffer): void;
  onEnd(): void;
  /** The exchange failed; detail says how far it got. */
  onError(error: Error, detail: HopFailure): void;
}

export interface HopFailure {
  /** Whether the connection had been opened: if not, the request never reached the backend. */
  readonly connected: boolean;
  /** The connection had carried an earlier request: it came from the pool. */
  readonly reused: boolean;
  /** Any byte of this response came back. */
  readonly bytesReceived: boolean;
  /** The response had started: its head was handed on. */
  readonly headReceived: boolean;
}

/**
 * One request on a connection. Every method does nothing once the request is over, so a late call (a
 * client's drain or departure after its response) never touches the connection's next request.
 */
export interface HopRequest {
  /**
   * Body bytes, already framed as the head said (raw, or chunked by the caller); strings are latin1.
   * Returns false when the connection's buffer is full: wait for whenDrained. Once the request is over
   * (answered, failed), what is written is dropped.
   */
  write(data: Buffer | string): boolean;
  whenDrained(callback: () => void): void;
  /** The request is fully written: only then may its connection carry another. */
  end(): void;
  /** Slow client: stop reading the response for now. */
  pause(): void;
  resume(): void;
  /** The client left: drop the connection (its response can no longer be relayed, nor the connection reused). */
  abort(): void;
  /**
   * Takes the request back from a unit of forkgate's: a withdrawal follows it on the connection, both
   * answers are dropped and the connection stays pooled. False once any byte of the response has come,
   * or while the request is not fully written.
   */
  withdraw(): boolean;
}

/** Reads a withdrawn request's answer and the withdrawal's, and drops them. */
const DROP: HopHandler = { onHead: () => 'as-sent', onData() {}, onEnd() {}, onError() {} };

/** Connections open to backends in every pool, each a descriptor of the master's (its open-file budget). */
let openConnections = 0;

export function hopConnectionCount(): number {
  return openConnections;
}

/** The keep-alive connections to one backend. */
export class HopPool {
  private readonly target: HopTarget;
  private readonly idle: HopConnection[] = [];
  /** Every open connection, idle or busy. */
  private readonly open = new Set<HopConnection>();
  private closed = false;

  constructor(target: HopTarget) {
    this.target = target;
  }

  /**
   * Sends the request head (latin1) and the body if it is all in hand, in one write, on an idle
   * connection or a new one. expectBody: false for HEAD. An upgrade request gives handler.onUpgrade.
   */
  request(head: string, body: Buffer | null, expectBody: boolean, handler: HopHandler): HopRequest {
    const now = Date.now();
    let connection: HopConnection | undefined;
    for (connection = this.idle.pop(); connection && !connection.usableAt(now); connection = this.idle.pop()) connection.destroy();
    if (!connection) {
      const opened = new HopConnection(
        this.target,
        (idle) => this.onIdle(idle),
        () => this.onGone(opened),
      );
      this.open.add(opened);
      connection = opened;
    }
    return connection.send(head, body, expectBody, handler);
  }

  /**
   * For a stuck unit: offers back the requests waiting behind the one it is most likely busy with (the
   * oldest), those sent `stuckMs` ago or more. Each request's handler decides whether it goes.
   */
  takeBackWaiting(now: number, stuckMs: number): void {
    const [, ...waiting] = this.unanswered();
    for (const { sentAt, handler } of waiting) if (now - sentAt >= stuckMs) handler.takeBack?.(now - sentAt);
  }

  /** The requests out on this pool with nothing of their response back yet, oldest first. */
  unanswered(): { readonly sentAt: number; readonly handler: HopHandler }[] {
    const waiting: { sentAt: number; handler: HopHandler }[] = [];
    for (const connection of this.open) {
      const handler = connection.unansweredHandler();
      if (handler) waiting.push({ sentAt: connection.sentAt, handler });
    }
    return waiting.sort((a, b) => a.sentAt - b.sentAt);
  }

  /** Closes the idle connections; busy ones close once their response is done. */
  close(): void {
    this.closed = true;
    this.discardIdle();
  }

  /** Closes the idle connections and goes on: the next request opens a new one. */
  discardIdle(): void {
    for (const connection of this.idle.splice(0)) connection.destroy();
  }

  private onIdle(connection: HopConnection): void {
    if (this.closed) return connection.destroy();
    this.idle.push(connection);
  }

  /** Closed (idle or not), or upgraded: no longer the pool's. */
  private onGone(connection: HopConnection): void {
    this.open.delete(connection);
    const index = this.idle.indexOf(connection);
    if (index >= 0) this.idle.splice(index, 1);
  }
}

/** One request on a connection: acts only while the connection still carries it. */
class ConnectionRequest implements HopRequest {
  private readonly connection: HopConnection;
  private readonly generation: number;

  constructor(connection: HopConnection, generation: number) {
    this.connection = connection;
    this.generation = generation;
  }

  write(data: Buffer | string): boolean {
    return this.connection.isCurrent(this.generation) ? this.connection.write(data) : true;
  }

  whenDrained(callback: () => void): void {
    if (this.connection.isCurrent(this.generation)) this.connection.whenDrained(callback);
    else callback(); // over: what is still written is dropped, and must not wait
  }

  end(): void {
    this.connection.endRequest(this.generation);
  }

  pause(): void {
    if (this.connection.isCurrent(this.generation)) this.connection.pause();
  }

  resume(): void {
    if (this.connection.isCurrent(this.generation)) this.connection.resume();
  }

  abort(): void {
    if (this.connection.isCurrent(this.generation)) this.connection.abort();
  }

  withdraw(): boolean {
    return this.connection.isCurrent(this.generation) && this.connection.withdraw();
  }
}

type State = 'head' | 'fixed' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'until-close' | 'done' | 'upgraded';

const EMPTY = Buffer.alloc(0);

class HopConnection {
  private readonly socket: net.Socket;
  private readonly toPool: (connection: HopConnection) => void;
  private handler: HopHandler | null = null;
  private expectBody = true;
  private state: State = 'done';
  private pending: Buffer | null = null;
  /** The current response's body goes to the handler as sent (BodyMode). */
  private bodyAsSent = false;
  private remaining = 0;
  private reusable = false;
  private connected = false;
  private bytesReceived = false;
  private headReceived = false;
  /** The request's last byte is written; until then the connection cannot carry another. */
  private requestEnded = false;
  /** The response ended inside the current read; finished once the read is parsed. */
  private responseDone = false;
  /** Increments per request: a handle acts only while it names the current one. */
  private generation = 0;
  /** Requests sent on it so far. */
  private requests = 0;
  /** How long it may stay idle and be reused: the server's announced keep-alive timeout, less a margin. */
  private idleLimitMs = Infinity;
  private idleSince = 0;
  /** Withdrawn: the answers still to come after the current one (the withdrawal's). */
  private answersToDrop = 0;
  /** Leaves the pool for good: closed, or upgraded. */
  private readonly onGone: () => void;
  /** When the current request went out: a request waits in the socket until it has connected. */
  sentAt = 0;

  constructor(target: HopTarget, toPool: (connection: HopConnection) => void, onGone: () => void) {
    this.toPool = toPool;
    openConnections++;
    this.onGone = () => {
      openConnections--;
      onGone();
    };
    this.socket = connectTo(target);
    this.socket.once('connect', () => {
      this.connected = true;
      this.sentAt = performance.now();
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (error) => this.fail(error));
    this.socket.on('close', () => {
      this.onGone();
      this.onClose();
    });
  }

  /** The handler of the request out on it, if nothing of its response has come back. */
  unansweredHandler(): HopHandler | null {
    return this.handler !== DROP && !this.bytesReceived ? this.handler : null;
  }

  usableAt(now: number): boolean {
    return !this.socket.destroyed && now - this.idleSince < this.idleLimitMs;
  }

  send(head: string, body: Buffer | null, expectBody: boolean, handler: HopHandler): HopRequest {
    this.handler = handler;
    this.expectBody = expectBody;
    this.state = 'head';
    this.bytesReceived = false;
    this.headReceived = false;
    this.requestEnded = false;
    this.answersToDrop = 0;
    this.requests++;
    this.sentAt = this.connected ? performance.now() : Infinity;
    if (body) {
      this.socket.cork();
      this.socket.write(head, 'latin1');
      this.socket.write(body);
      this.socket.uncork();
    } else {
      this.socket.write(head, 'latin1');
    }
    return new ConnectionRequest(this, ++this.generation);
  }

  /** Whether `generation` names the request out on the connection now. */
  isCurrent(generation: number): boolean {
    return this.generation === generation && this.handler !== null;
  }

  write(data: Buffer | string): boolean {
    return this.socket.write(data, 'latin1');
  }

  /** Calls back once the socket takes writes again, or is gone (a backend that answered before the whole body came). */
  whenDrained(callback: () => void): void {
    const done = () => {
      this.socket.off('drain', done).off('close', done);
      callback();
    };
    this.socket.once('drain', done).once('close', done);
  }

  endRequest(generation: number): void {
    if (this.generation === generation) this.requestEnded = true;
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  abort(): void {
    this.handler = null;
    this.destroy();
  }

  withdraw(): boolean {
    if (this.bytesReceived || !this.requestEnded) return false;
    this.generation++;
    this.handler = DROP;
    this.answersToDrop = 1;
    this.socket.write(WITHDRAWAL);
    return true;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (!this.handler) {
      // Bytes while idle: nothing may come between responses.
      this.destroy();
      return;
    }
    this.bytesReceived = true;
    let leftover: Buffer;
    try {
      leftover = this.parse(chunk);
      while (this.responseDone && this.answersToDrop > 0) {
        // A withdrawn request's answer is done; the withdrawal's follows, maybe in this read.
        this.answersToDrop--;
        this.responseDone = false;
        this.state = 'head';
        this.expectBody = true;
        leftover = this.parse(leftover);
      }
    } catch (error) {
      return this.fail(error as Error);
    }
    // Only now, with the read parsed: what the handler does on the response's end (release the unit,
    // which may hand this connection to the next request) can no longer mix with these bytes.
    if (this.responseDone) this.finish(leftover.length > 0);
  }

  /**
   * Runs the read through the states until the response is complete; returns what is left of it. A body
   * handed on as sent goes in one piece per read: the bytes its states consumed.
   */
  private parse(input: Buffer): Buffer {
    let data: Buffer = this.pending ? Buffer.concat([this.pending, input]) : input;
    this.pending = null;
    let bodyFrom: Buffer | null = null;
    read: while (data.length > 0 && this.handler && !this.responseDone && this.state !== 'upgraded') {
      if (bodyFrom === null && this.bodyAsSent && this.state !== 'head') bodyFrom = data;
      switch (this.state) {
        case 'head': {
          const end = data.indexOf(CRLF_CRLF);
          if (end < 0) {
            if (data.length > MAX_HEAD_BYTES) throw new HopParseError(`response head larger than ${MAX_HEAD_BYTES} bytes`);
            this.pending = data;
            data = EMPTY;
            break read;
          }
          const head = data.toString('latin1', 0, end);
          data = data.subarray(end + 4);
          this.onHead(head, data);
          break;
        }
        case 'fixed': {
          data = this.relayBody(data);
          if (this.remaining === 0) this.complete();
          break;
        }
        case 'chunk-size': {
          const end = data.indexOf('\r\n');
          if (end < 0) {
            if (data.length > 1024) throw new HopParseError('chunk size line too long');
            this.pending = data;
            data = EMPTY;
            break read;
          }
          const line = data.toString('latin1', 0, end);
          data = data.subarray(end + 2);
          const size = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/.exec(line);
          if (!size) throw new HopParseError(`invalid chunk size line '${line.slice(0, 40)}'`);
          this.remaining = parseInt(size[1]!, 16);
          this.state = this.remaining === 0 ? 'trailers' : 'chunk-data';
          break;
        }
        case 'chunk-data': {
          data = this.relayBody(data);
          if (this.remaining === 0) this.state = 'chunk-end';
          break;
        }
        case 'chunk-end': {
          if (data.length < 2) {
            this.pending = data;
            data = EMPTY;
            break read;
          }
          if (data[0] !== 13 || data[1] !== 10) throw new HopParseError('chunk not followed by CRLF');
          data = data.subarray(2);
          this.state = 'chunk-size';
          break;
        }
        case 'trailers': {
          // Decoded, trailer fields are not relayed (the client side has sent its head already).
          const end = data.indexOf('\r\n');
          if (end < 0) {
            if (data.length > MAX_HEAD_BYTES) throw new HopParseError('trailers too long');
            this.pending = data;
            data = EMPTY;
            break read;
          }
          data = data.subarray(end + 2);
          if (end === 0) this.complete();
          break;
        }
        case 'until-close':
          if (!this.bodyAsSent) this.handler.onData(data);
          data = EMPTY;
          break;
      }
    }
    if (bodyFrom && this.handler) {
      const consumed = bodyFrom.length - data.length - (this.pending?.length ?? 0);
      if (consumed > 0) this.handler.onData(bodyFrom.subarray(0, consumed));
    }
    return data;
  }

  /** Takes up to `remaining` bytes of body (a fixed length, or a chunk), handed on if decoded; returns the rest of the read. */
  private relayBody(data: Buffer): Buffer {
    const take = Math.min(this.remaining, data.length);
    this.remaining -= take;
    if (!this.bodyAsSent) this.handler!.onData(data.subarray(0, take));
    return data.subarray(take);
  }

  private onHead(text: string, rest: Buffer): void {
    const lines = text.split('\r\n');
    const status = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0]!);
    if (!status) throw new HopParseError(`invalid status line '${lines[0]!.slice(0, 60)}'`);
    const [, minor, code] = status;
    const statusCode = Number(code);
    const rawHeaders: string[] = [];
    let contentLength: number | null = null;
    let chunked = false;
    let transferEncoded = false;
    let connectionClose = minor === '0';
    let awaiting = false;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const colon = line.indexOf(':');
      if (colon <= 0 || line[0] === ' ' || line[0] === '\t') throw new HopParseError(`invalid header line '${line.slice(0, 60)}'`);
      const name = line.slice(0, colon);
      const value = line.slice(colon + 1).trim();
      rawHeaders.push(name, value);
      switch (name.toLowerCase()) {
        case AWAITING_HEADER:
          awaiting = true;
          break;
        case 'content-length':
          if (!/^\d{1,15}$/.test(value) || (contentLength !== null && contentLength !== Number(value))) {
            throw new HopParseError(`invalid Content-Length '${value}'`);
          }
          contentLength = Number(value);
          break;
        case 'transfer-encoding':
          transferEncoded = true;
          chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
          break;
        case 'connection': {
          const tokens = value.toLowerCase();
          if (/(?:^|,)\s*close\s*(?:,|$)/.test(tokens)) connectionClose = true;
          else if (minor === '0' && /(?:^|,)\s*keep-alive\s*(?:,|$)/.test(tokens)) connectionClose = false;
          break;
        }
        case 'keep-alive': {
          const timeout = /(?:^|,)\s*timeout=(\d+)/i.exec(value);
          if (timeout) this.idleLimitMs = Math.max(0, Number(timeout[1]) * 1000 - KEEP_ALIVE_MARGIN_MS);
          break;
        }
      }
    }
    const delimited =
      !this.expectBody || statusCode === 204 || statusCode === 304 || chunked || (!transferEncoded && contentLength !== null);
    const bodyLater = rest.length === 0 && this.expectBody && statusCode !== 204 && statusCode !== 304 && contentLength !== 0;
    const head = { status: statusCode, reason: status[3] ?? '', rawHeaders, chunked, delimited, bodyLater };
    if (statusCode === 101) {
      const handler = this.handler!;
      if (!handler.onUpgrade) throw new HopParseError('101 Switching Protocols to a request that asked for no upgrade');
      // The socket now speaks another protocol: it leaves this connection, and the pool, for good.
      this.state = 'upgraded';
      this.handler = null;
      this.socket.removeAllListeners('data').removeAllListeners('error').removeAllListeners('close');
      this.onGone();
      handler.onUpgrade(head, this.socket, rest);
      return;
    }
    if (statusCode >= 100 && statusCode < 200) {
      // Interim (100 Continue, 102 Processing, 103 Early Hints): the final response follows.
      this.handler!.onInterim?.(awaiting);
      return;
    }
    if (transferEncoded && contentLength !== null) {
      // Transfer-Encoding wins (RFC 9112 §6.3); the length must not travel on with a re-framed body.
      for (let i = rawHeaders.length - 2; i >= 0; i -= 2) if (rawHeaders[i]!.toLowerCase() === 'content-length') rawHeaders.splice(i, 2);
      contentLength = null;
    }
    this.headReceived = true;
    this.bodyAsSent = this.handler!.onHead(head) === 'as-sent';
    this.reusable = !connectionClose;
    if (!this.expectBody || statusCode === 204 || statusCode === 304) {
      this.complete();
    } else if (chunked) {
      this.state = 'chunk-size';
    } else if (transferEncoded) {
      this.state = 'until-close'; // another coding: only the close says where it ends
      this.reusable = false;
    } else if (contentLength !== null) {
      this.remaining = contentLength;
      this.state = 'fixed';
      if (contentLength === 0) this.complete();
    } else {
      this.state = 'until-close';
      this.reusable = false;
    }
  }

  /** The response is complete; finish() follows once the current read is parsed. */
  private complete(): void {
    this.state = 'done';
    this.responseDone = true;
  }

  /**
   * Gives the connection back (or closes it), then tells the handler, so a request it starts may take
   * this connection. Not back after a partly written request, stray bytes or a declined upgrade: the
   * backend could read what follows as part of them.
   */
  private finish(strayBytes: boolean): void {
    const handler = this.handler!;
    this.handler = null;
    this.responseDone = false;
    if (strayBytes || !this.requestEnded || handler.onUpgrade) {
      this.destroy();
    } else if (!this.reusable) {
      this.socket.end();
    } else {
      this.socket.resume(); // a slow client may have paused the response's last read
      this.idleSince = Date.now();
      this.toPool(this);
    }
    handler.onEnd();
  }

  private onClose(): void {
    if (this.state === 'until-close' && this.handler) {
      this.complete();
      return this.finish(false);
    }
    if (this.handler) this.fail(new HopClosedError());
  }

  private fail(error: Error): void {
    const handler = this.handler;
    this.handler = null;
    this.socket.destroy();
    handler?.onError(error, {
      connected: this.connected,
      reused: this.requests > 1,
      bytesReceived: this.bytesReceived,
      headReceived: this.headReceived,
    });
  }
}
