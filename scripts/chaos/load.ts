/**
 * The chaos harness's load: a few keep-alive connections, each sending GET /pid one request at a time
 * with a short gap, bounded in count and time. Every request is recorded with what the harness needs to
 * judge its failure: the unit its connection talked to before it was sent, when it was sent and ended,
 * and how it failed. Like a browser, a request on a reused connection that failed before any byte of
 * its answer came is sent once more on a new connection (the server may have closed the idle
 * connection as the request went out); both attempts are recorded, the first as retried.
 */
import { HttpConnection, unitOf, type Failure } from './http-client.ts';

/** The pause after a connection could not be made. */
const CONNECT_RETRY_MS = 100;

export interface RequestRecord {
  id: string;
  path: string;
  /** The unit that answered the previous request on this connection, if any. */
  unitBefore: string | null;
  /** The connection: when it was opened, and its client port. */
  connectedAt: number;
  localPort?: number;
  reused: boolean;
  sentAt: number;
  endedAt: number;
  status?: number;
  /** The unit that answered. */
  unit?: string | null;
  failure?: Failure;
  detail?: string;
  bytesReceived: number;
  /** Failed before any byte on a reused connection, and sent again as `${id}r`. */
  retried?: boolean;
  /** A request sent by the fault itself (a route that crashes or hangs its unit). */
  poison?: boolean;
}

export interface LoadOptions {
  port: number;
  connections: number;
  /** Stop after this many requests in all. */
  maxRequests: number;
  /** Stop after this long, whatever else happens. */
  maxMs: number;
  /** Pause between a response and the next request on a connection. */
  gapMs: number;
  requestTimeoutMs: number;
}

export class Load {
  readonly records: RequestRecord[] = [];
  private readonly options: LoadOptions;
  private stopping = false;
  private readonly finished: Promise<void>;
  private nextId = 1;
  private waiters: { test: () => boolean; resolve: () => void }[] = [];

  constructor(options: LoadOptions) {
    this.options = options;
    const deadline = Date.now() + options.maxMs;
    this.finished = Promise.all(Array.from({ length: options.connections }, () => this.loop(deadline))).then(() => this.notify(true));
  }

  get ok(): number {
    return this.records.filter((record) => record.status === 200).length;
  }

  /** Units that have answered so far. */
  units(): Set<string> {
    return new Set(this.records.flatMap((record) => (record.unit ? [record.unit] : [])));
  }

  /** Resolves once the test holds (checked after every response), or false when the load ends first. */
  until(test: () => boolean): Promise<boolean> {
    if (test()) return Promise.resolve(true);
    return new Promise((resolve) => this.waiters.push({ test, resolve: () => resolve(test()) }));
  }

  async stop(): Promise<RequestRecord[]> {
    this.stopping = true;
    await this.finished;
    return this.records;
  }

  private async loop(deadline: number): Promise<void> {
    let connection: HttpConnection | null = null;
    const more = () => !this.stopping && Date.now() < deadline && this.nextId <= this.options.maxRequests;
    while (more()) {
      if (!connection?.open) {
        connection?.close();
        connection = new HttpConnection(this.options.port);
      }
      const id = `L${this.nextId++}`;
      const record = await send(connection, id, '/pid', this.options.requestTimeoutMs);
      this.records.push(record);
      if (record.failure && record.reused && record.bytesReceived === 0 && (record.failure === 'reset' || record.failure === 'closed')) {
        record.retried = true;
        connection.close();
        connection = new HttpConnection(this.options.port);
        this.records.push(await send(connection, `${id}r`, '/pid', this.options.requestTimeoutMs));
      }
      this.notify(false);
      // A refused connection (no master listening) is tried again after a while, as a client would.
      const gap = record.failure === 'connect' ? CONNECT_RETRY_MS : this.options.gapMs;
      if (gap > 0 && more()) await new Promise((resolve) => setTimeout(resolve, gap));
    }
    connection?.close();
  }

  private notify(ended: boolean): void {
    this.waiters = this.waiters.filter((waiter) => {
      if (!ended && !waiter.test()) return true;
      waiter.resolve();
      return false;
    });
  }
}

/** One GET on the connection, recorded. */
export async function send(connection: HttpConnection, id: string, path: string, timeoutMs: number): Promise<RequestRecord> {
  const unitBefore = connection.unit;
  const sentAt = Date.now();
  const outcome = await connection.request(
    `GET ${path} HTTP/1.1\r\nHost: chaos\r\nx-chaos-id: ${id}\r\nx-request-id: ${id}\r\n\r\n`,
    'GET',
    timeoutMs,
  );
  return {
    id,
    path,
    unitBefore,
    connectedAt: connection.openedAt,
    localPort: connection.localPort,
    reused: outcome.reused,
    sentAt,
    endedAt: Date.now(),
    status: outcome.response?.status,
    unit: outcome.response ? unitOf(outcome.response) : undefined,
    failure: outcome.failure,
    detail: outcome.detail,
    bytesReceived: outcome.bytesReceived,
  };
}

/** A record counts as failed unless it got a 200, or was retried (its retry is a record of its own). */
export function failed(record: RequestRecord): boolean {
  return record.status !== 200 && !record.retried;
}
