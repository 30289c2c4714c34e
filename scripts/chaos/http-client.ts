/**
 * The chaos harness's HTTP/1.1 client: raw TCP, so that it knows exactly how many bytes of an answer
 * came before a connection failed (node:http's client does not say), can send bytes no well-behaved
 * client would (the fuzzer), and reads each response's unit from its x-worker-pid / x-worker-tid.
 */
import * as net from 'node:net';

export interface Response {
  status: number;
  reason: string;
  /** Lower-case names; a repeated field keeps every value. */
  headers: Map<string, string[]>;
  body: Buffer;
}

export function header(response: Response, name: string): string | undefined {
  return response.headers.get(name)?.[0];
}

/** The unit that answered: "pid/tid" (tid = pid for a worker process's main thread), or null. */
export function unitOf(response: Response): string | null {
  const pid = header(response, 'x-worker-pid');
  const tid = header(response, 'x-worker-tid');
  return pid && tid ? `${pid}/${tid}` : null;
}

/** Whether the server ends the connection after this response. */
export function closes(response: Response): boolean {
  return (header(response, 'connection') ?? '')
    .toLowerCase()
    .split(',')
    .some((token) => token.trim() === 'close');
}

const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');
/** Larger heads are taken for garbage: nothing forkgate or the fixture sends comes near. */
const MAX_HEAD = 256 * 1024;

type BodyState =
  | { kind: 'length'; remaining: number }
  | { kind: 'chunked'; phase: 'size' | 'data' | 'data-crlf' | 'trailers'; remaining: number }
  | { kind: 'close' };

/**
 * Incremental response parser: status line, fields, then a body framed by Content-Length, chunked, or
 * the connection's close (none after HEAD, 1xx, 204, 304). 1xx interim responses are skipped. What it
 * cannot parse sets `malformed` and stops it.
 */
export class ResponseParser {
  private buffer: Buffer = Buffer.alloc(0);
  private current: { response: Response; state: BodyState; chunks: Buffer[] } | null = null;
  /** Methods of the requests sent, oldest first: a HEAD's answer has no body. */
  private readonly methods: string[] = [];
  malformed: string | null = null;
  bytes = 0;

  expect(method: string): void {
    this.methods.push(method.toUpperCase());
  }

  /** Bytes of a response that has not completed yet. */
  get midResponse(): boolean {
    return this.current !== null || this.buffer.length > 0;
  }

  push(chunk: Buffer): Response[] {
    if (this.malformed) return [];
    this.bytes += chunk.length;
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const done: Response[] = [];
    for (;;) {
      const response = this.current ? this.readBody() : this.readHead();
      if (response === 'more' || this.malformed) return done;
      if (response) done.push(response);
    }
  }

  /** The connection ended: a close-delimited body is complete now. */
  end(): Response[] {
    if (this.current?.state.kind === 'close') {
      const response = this.finish();
      return [response];
    }
    return [];
  }

  /** Returns null when an interim response was skipped, 'more' when more bytes are needed. */
  private readHead(): Response | null | 'more' {
    const end = this.buffer.indexOf(HEAD_END);
    if (end < 0) {
      if (this.buffer.length > MAX_HEAD) this.malformed = 'response head too large';
      return 'more';
    }
    const lines = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
    this.buffer = this.buffer.subarray(end + 4);
    const status = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]!);
    if (!status) {
      this.malformed = `bad status line ${JSON.stringify(lines[0]!.slice(0, 80))}`;
      return 'more';
    }
    const headers = new Map<string, string[]>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0) {
        this.malformed = `bad header line ${JSON.stringify(line.slice(0, 80))}`;
        return 'more';
      }
      const name = line.slice(0, colon).trim().toLowerCase();
      headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
    }
    const response: Response = { status: Number(status[1]), reason: status[2] ?? '', headers, body: Buffer.alloc(0) };
    if (response.status >= 100 && response.status < 200 && response.status !== 101) return null;
    const method = this.methods.shift();
    const length = headers.get('content-length');
    let state: BodyState;
    if (method === 'HEAD' || response.status === 101 || response.status === 204 || response.status === 304) {
      state = { kind: 'length', remaining: 0 };
    } else if ((headers.get('transfer-encoding') ?? []).join(',').toLowerCase().includes('chunked')) {
      state = { kind: 'chunked', phase: 'size', remaining: 0 };
    } else if (length) {
      if (length.length > 1 && new Set(length).size > 1) {
        this.malformed = 'conflicting Content-Length in a response';
        return 'more';
      }
      const value = Number(length[0]);
      if (!Number.isSafeInteger(value) || value < 0) {
        this.malformed = `bad Content-Length ${length[0]}`;
        return 'more';
      }
      state = { kind: 'length', remaining: value };
    } else {
      state = { kind: 'close' };
    }
    this.current = { response, state, chunks: [] };
    return null;
  }

  private readBody(): Response | 'more' {
    const current = this.current!;
    const { state } = current;
    if (state.kind === 'close') {
      current.chunks.push(this.buffer);
      this.buffer = Buffer.alloc(0);
      return 'more';
    }
    if (state.kind === 'length') {
      const take = Math.min(state.remaining, this.buffer.length);
      current.chunks.push(this.buffer.subarray(0, take));
      this.buffer = this.buffer.subarray(take);
      state.remaining -= take;
      return state.remaining === 0 ? this.finish() : 'more';
    }
    for (;;) {
      if (state.phase === 'size' || state.phase === 'trailers') {
        const eol = this.buffer.indexOf(CRLF);
        if (eol < 0) return 'more';
        const line = this.buffer.subarray(0, eol).toString('latin1');
        this.buffer = this.buffer.subarray(eol + 2);
        if (state.phase === 'trailers') {
          if (line === '') return this.finish();
          continue;
        }
        const size = /^([0-9a-fA-F]{1,15})(?:;.*)?$/.exec(line);
        if (!size) {
          this.malformed = `bad chunk size ${JSON.stringify(line.slice(0, 40))}`;
          return 'more';
        }
        state.remaining = parseInt(size[1]!, 16);
        state.phase = state.remaining === 0 ? 'trailers' : 'data';
      } else if (state.phase === 'data') {
        const take = Math.min(state.remaining, this.buffer.length);
        current.chunks.push(this.buffer.subarray(0, take));
        this.buffer = this.buffer.subarray(take);
        state.remaining -= take;
        if (state.remaining > 0) return 'more';
        state.phase = 'data-crlf';
      } else {
        if (this.buffer.length < 2) return 'more';
        if (this.buffer[0] !== 13 || this.buffer[1] !== 10) {
          this.malformed = 'chunk data not followed by CRLF';
          return 'more';
        }
        this.buffer = this.buffer.subarray(2);
        state.phase = 'size';
      }
    }
  }

  private finish(): Response {
    const { response, chunks } = this.current!;
    this.current = null;
    response.body = Buffer.concat(chunks);
    return response;
  }
}

export type Failure = 'connect' | 'reset' | 'closed' | 'timeout' | 'malformed';

/** How one request on a connection ended. */
export interface Outcome {
  response?: Response;
  failure?: Failure;
  detail?: string;
  /** Bytes of this request's answer that came before the failure. */
  bytesReceived: number;
  /** The connection had carried an earlier request. */
  reused: boolean;
}

/**
 * A client connection that carries one request at a time (keep-alive), as a browser's or a load
 * balancer's does.
 */
export class HttpConnection {
  readonly socket: net.Socket;
  private readonly parser = new ResponseParser();
  private readonly ready: Promise<Failure | null>;
  private pending: { resolve: (outcome: Outcome) => void; reused: boolean; bytesBefore: number; timer: NodeJS.Timeout } | null = null;
  private ended: { failure: Failure; detail: string } | null = null;
  requests = 0;
  /** The unit that answered the last response on this connection. */
  unit: string | null = null;
  readonly openedAt = Date.now();
  /** The client's port, by which a unit's log names this connection. */
  localPort: number | undefined;

  constructor(port: number, host = '127.0.0.1') {
    this.socket = net.connect({ port, host, noDelay: true });
    this.ready = new Promise((resolve) => {
      this.socket.once('connect', () => {
        this.localPort = this.socket.localPort;
        resolve(null);
      });
      this.socket.once('error', () => resolve('connect'));
    });
    this.socket.on('data', (chunk: Buffer) => {
      const [response] = this.parser.push(chunk);
      if (response) this.settle({ response });
      else if (this.parser.malformed) this.fail('malformed', this.parser.malformed);
    });
    this.socket.on('error', (error: NodeJS.ErrnoException) => this.fail('reset', error.code ?? error.message));
    this.socket.on('close', () => {
      const [response] = this.parser.end();
      if (response) this.settle({ response });
      this.fail('closed', 'closed by the server');
    });
  }

  /** Resolves once the connection is made (true) or could not be (false). */
  async connected(): Promise<boolean> {
    return (await this.ready) === null;
  }

  get open(): boolean {
    return this.ended === null && !this.socket.destroyed;
  }

  /** Sends one request (its whole bytes) and resolves with its response or how it failed; never rejects. */
  async request(bytes: Buffer | string, method: string, timeoutMs: number): Promise<Outcome> {
    const reused = this.requests > 0;
    const connectFailure = await this.ready;
    if (connectFailure) return { failure: connectFailure, detail: this.ended?.detail, bytesReceived: 0, reused };
    if (this.ended) return { failure: this.ended.failure, detail: this.ended.detail, bytesReceived: 0, reused };
    this.requests++;
    this.parser.expect(method);
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.fail('timeout', `no answer in ${timeoutMs} ms`), timeoutMs);
      this.pending = { resolve, reused, bytesBefore: this.parser.bytes, timer };
      this.socket.write(bytes);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private settle(result: { response?: Response; failure?: Failure; detail?: string }): void {
    const pending = this.pending;
    if (!pending) return;
    this.pending = null;
    clearTimeout(pending.timer);
    if (result.response) this.unit = unitOf(result.response) ?? this.unit;
    pending.resolve({ ...result, bytesReceived: this.parser.bytes - pending.bytesBefore, reused: pending.reused });
    if (result.response && closes(result.response)) this.fail('closed', 'closed after its last response');
  }

  private fail(failure: Failure, detail: string): void {
    this.ended ??= { failure, detail };
    this.settle({ failure: this.ended.failure, detail: this.ended.detail });
    if (failure === 'timeout' || failure === 'malformed') this.socket.destroy();
  }
}

/** What came back on a raw connection: responses in order, then how it ended. */
export interface RawResult {
  responses: Response[];
  /** 'fin': closed by the server; 'reset': reset; null: still open when the harness stopped waiting. */
  end: 'fin' | 'reset' | null;
  malformed: string | null;
  /** No complete answer within the bound while one was still owed. */
  timedOut: boolean;
  bytes: number;
}

/**
 * Writes bytes on a new connection and reads what comes back until the server closes, `expect`
 * responses have come, one says Connection: close, or `timeoutMs` passes.
 */
export function rawExchange(
  port: number,
  bytes: Buffer,
  options: { methods: string[]; expect: number; timeoutMs: number },
): Promise<RawResult> {
  return new Promise((resolve) => {
    const parser = new ResponseParser();
    for (const method of options.methods) parser.expect(method);
    const responses: Response[] = [];
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
    let end: RawResult['end'] = null;
    let settled = false;
    const done = (timedOut: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ responses, end, malformed: parser.malformed, timedOut, bytes: parser.bytes });
    };
    const timer = setTimeout(() => done(true), options.timeoutMs);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => {
      responses.push(...parser.push(chunk));
      if (parser.malformed || responses.length >= options.expect || responses.some(closes)) done(false);
    });
    socket.on('error', () => {
      end = 'reset';
      done(false);
    });
    socket.on('close', () => {
      responses.push(...parser.end());
      end ??= 'fin';
      done(false);
    });
  });
}
