import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from './logger.ts';
import { LogSink } from './sink.ts';
import { answeredStatus } from './status.ts';

export interface AccessLogRecord {
  req: IncomingMessage;
  /** null for an answer written on the connection itself (a refused upgrade). */
  res: ServerResponse | null;
  /** As answered: 499 when the client left before any answer. */
  status: number;
  /** Date.now() at request start (ms). */
  startedAt: number;
  /** process.hrtime.bigint() delta. */
  durationNs: bigint;
  /** Response body bytes sent. */
  bodyBytes: number;
  remoteAddress: string | undefined;
  pid: number;
}

export const DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"';

type Atom = (record: AccessLogRecord) => string;

const NS_PER_SECOND = 1_000_000_000n;
const NS_PER_MS = 1_000_000n;
const NS_PER_US = 1_000n;

/** Gunicorn's atoms; anything not here (and not a `{name}i/o/e` lookup) renders '-'. */
const ATOMS: Record<string, Atom> = {
  h: (r) => r.remoteAddress ?? '-',
  l: () => '-',
  u: (r) => basicAuthUser(r.req),
  t: (r) => apacheTime(r.startedAt),
  r: (r) => escapeLogValue(`${r.req.method} ${r.req.url} HTTP/${r.req.httpVersion}`),
  m: (r) => valueOrDash(r.req.method),
  U: (r) => valueOrDash(pathOf(r.req.url ?? '')),
  q: (r) => escapeLogValue(queryOf(r.req.url ?? '')),
  H: (r) => `HTTP/${r.req.httpVersion}`,
  s: (r) => String(r.status),
  B: (r) => String(r.bodyBytes),
  b: (r) => (r.bodyBytes === 0 ? '-' : String(r.bodyBytes)),
  f: (r) => valueOrDash(r.req.headers.referer),
  a: (r) => valueOrDash(r.req.headers['user-agent']),
  T: (r) => String(r.durationNs / NS_PER_SECOND),
  D: (r) => String(r.durationNs / NS_PER_US),
  M: (r) => String(r.durationNs / NS_PER_MS),
  L: (r) => {
    const micros = r.durationNs / NS_PER_US;
    return `${micros / 1_000_000n}.${String(micros % 1_000_000n).padStart(6, '0')}`;
  },
  p: (r) => `<${r.pid}>`,
};

/** The format that writes one JSON object per request, for log pipelines, instead of a line of atoms. */
export const JSON_ACCESS_LOG_FORMAT = 'json';

/**
 * One request as a JSON object: the atoms' fields under readable names, numbers as numbers, absent
 * values as null (h, t, m, U, q, H, s, B, f, a, D and p, and the request id).
 */
function jsonRecord(r: AccessLogRecord): string {
  const { req } = r;
  const url = req.url ?? '';
  const query = queryOf(url);
  return JSON.stringify({
    remote_addr: r.remoteAddress ?? null,
    time: new Date(r.startedAt).toISOString(),
    method: req.method ?? null,
    path: pathOf(url),
    query: query || null,
    protocol: `HTTP/${req.httpVersion}`,
    status: r.status,
    bytes: r.bodyBytes,
    referer: req.headers.referer ?? null,
    user_agent: req.headers['user-agent'] ?? null,
    duration_us: Number(r.durationNs / NS_PER_US),
    pid: r.pid,
    request_id: valueOrNull(r.res?.getHeader('x-request-id') ?? req.headers['x-request-id']),
  });
}

function valueOrNull(value: string | string[] | number | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? value.join(', ') : String(value);
}

/** Whether the format logs X-Request-Id: json does, and so do `%({x-request-id}i)s` and `%({x-request-id}o)s`. */
export function accessLogUsesRequestId(format: string): boolean {
  if (format === JSON_ACCESS_LOG_FORMAT) return true;
  // `%%` is a literal percent, never the start of an atom.
  return format.split('%%').some((part) => /%\(\{x-request-id\}[io]\)/i.test(part));
}

/**
 * Compiles an access log format once into a function that renders one line (no newline) per request:
 * 'json', or Gunicorn's atoms (`%(name)s`, `%%`). A `%` that starts no atom is kept as text: a typo shows in the log
 * rather than stopping the worker.
 */
export function compileAccessLogFormat(format: string): (record: AccessLogRecord) => string {
  if (format === JSON_ACCESS_LOG_FORMAT) return jsonRecord;
  const parts: Atom[] = [];
  let text = '';
  let at = 0;
  while (at < format.length) {
    const percent = format.indexOf('%', at);
    if (percent === -1) {
      text += format.slice(at);
      break;
    }
    text += format.slice(at, percent);
    if (format[percent + 1] === '%') {
      text += '%';
      at = percent + 2;
      continue;
    }
    const close = format[percent + 1] === '(' ? format.indexOf(')', percent + 2) : -1;
    if (close === -1) {
      text += '%';
      at = percent + 1;
      continue;
    }
    if (text) parts.push(constant(text));
    text = '';
    parts.push(atom(format.slice(percent + 2, close)));
    at = close + 1;
    // Python's conversion letter: `s` as Gunicorn documents, `d` for the numeric atoms.
    if (format[at] === 's' || format[at] === 'd') at++;
  }
  if (text) parts.push(constant(text));

  return (record) => {
    let line = '';
    for (const part of parts) line += part(record);
    return line;
  };
}

function constant(text: string): Atom {
  return () => text;
}

/** `{name}i`, `{name}o` and `{name}e` match names case-insensitively; the letter atoms are case-sensitive. */
function atom(name: string): Atom {
  if (!name.startsWith('{')) return ATOMS[name] ?? (() => '-');
  const lookup = name.toLowerCase();
  const close = lookup.lastIndexOf('}');
  const key = lookup.slice(1, close);
  switch (close > 1 ? lookup.slice(close + 1) : '') {
    case 'i':
      return (r) => valueOrDash(r.req.headers[key]);
    case 'o':
      return (r) => valueOrDash(r.res ? (r.res.getHeader(key) ?? writtenHeader(r.res, key)) : undefined);
    case 'e': {
      // POSIX environment names are case-sensitive: find the real spelling once.
      const variable = Object.keys(process.env).find((k) => k.toLowerCase() === key) ?? key;
      return () => valueOrDash(process.env[variable]);
    }
    default:
      return () => '-';
  }
}

function valueOrDash(value: string | string[] | number | undefined): string {
  if (value === undefined) return '-';
  const text = Array.isArray(value) ? value.join(', ') : String(value);
  return text === '' ? '-' : escapeLogValue(text);
}

/**
 * `res.writeHead(status, headers)` without a prior setHeader() leaves getHeader() empty (Fastify and
 * Hono respond this way); the header block Node already wrote is then the only record of them.
 */
function writtenHeader(res: ServerResponse, name: string): string[] | undefined {
  const block = (res as unknown as { _header?: string | null })._header;
  if (!block) return undefined;
  const prefix = `${name}:`;
  const values = block
    .split('\r\n')
    .filter((line) => line.slice(0, prefix.length).toLowerCase() === prefix)
    .map((line) => line.slice(prefix.length).trim());
  return values.length > 0 ? values : undefined;
}

function pathOf(url: string): string {
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

function queryOf(url: string): string {
  const query = url.indexOf('?');
  return query === -1 ? '' : url.slice(query + 1);
}

function basicAuthUser(req: IncomingMessage): string {
  const authorization = req.headers.authorization;
  if (authorization?.slice(0, 6).toLowerCase() !== 'basic ') return '-';
  const credentials = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8');
  const colon = credentials.indexOf(':');
  return valueOrDash(colon === -1 ? credentials : credentials.slice(0, colon));
}

// Apache's %t uses English month names whatever the locale.
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** `[27/Nov/2026:06:41:58 +0000]`: local time with its UTC offset, as Gunicorn and Apache write it. */
function apacheTime(ms: number): string {
  const date = new Date(ms);
  const offset = -date.getTimezoneOffset();
  const sign = offset < 0 ? '-' : '+';
  const pad = (n: number) => String(n).padStart(2, '0');
  return (
    `[${pad(date.getDate())}/${MONTHS[date.getMonth()]}/${date.getFullYear()}:` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())} ` +
    `${sign}${pad(Math.floor(Math.abs(offset) / 60))}${pad(Math.abs(offset) % 60)}]`
  );
}

/**
 * Escapes what a client could use to forge or garble log lines, as Apache does: `"` and `\` get a
 * backslash, control characters (C0, DEL and C1, which includes the terminal's CSI) become `\xhh`.
 */
function escapeLogValue(value: string): string {
  let escaped = '';
  let copied = 0;
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    let replacement: string;
    if (code === 0x22) replacement = '\\"';
    else if (code === 0x5c) replacement = '\\\\';
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) replacement = `\\x${code.toString(16).padStart(2, '0')}`;
    else continue;
    escaped += value.slice(copied, i) + replacement;
    copied = i + 1;
  }
  return copied === 0 ? value : escaped + value.slice(copied);
}

/** When a request began, for its %(t)s and its duration. */
export interface RequestStart {
  readonly at: number;
  readonly ns: bigint;
}

export function requestStart(): RequestStart {
  return { at: Date.now(), ns: process.hrtime.bigint() };
}

/**
 * The access log of one process: a line per request as its response closes, whoever answered it (the
 * app, or forkgate's edge and proxy refusing it). batched: a worker's many lines go out once per
 * event-loop turn; the master's few at once.
 */
export class AccessLog {
  private readonly sink: LogSink;
  private readonly format: (record: AccessLogRecord) => string;

  constructor(settings: { accessLogfile: string; accessLogformat: string }, logger: Logger, batched: boolean) {
    this.sink = new LogSink(settings.accessLogfile, 1, {
      batched,
      onTrouble: (message) => logger.warning(`Access log ${message}`),
    });
    this.format = compileAccessLogFormat(settings.accessLogformat);
  }

  /** Logs the request once its response has closed, counting the body bytes written from now on. */
  track(req: IncomingMessage, res: ServerResponse, start: RequestStart = requestStart()): void {
    let bodyBytes = 0;
    const count = (chunk: unknown, encoding?: unknown) => {
      if (typeof chunk === 'string')
        bodyBytes += Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
      else if (chunk instanceof Uint8Array) bodyBytes += chunk.byteLength;
    };
    const write = res.write;
    const end = res.end;
    res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
      count(chunk, rest[0]);
      return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as ServerResponse['write'];
    res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]) {
      if (typeof chunk !== 'function') count(chunk, rest[0]);
      return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest);
    } as ServerResponse['end'];
    // Node sends no body for HEAD, 204 and 304, whatever the app wrote.
    const sent = () => ((res as ServerResponse & { _hasBody?: boolean })._hasBody === false ? 0 : bodyBytes);
    res.once('close', () => this.write(req, res, answeredStatus(res), sent(), start));
  }

  /** An answer written on the connection itself, with no response object. */
  answered(req: IncomingMessage, status: number, bodyBytes: number, start: RequestStart = requestStart()): void {
    this.write(req, null, status, bodyBytes, start);
  }

  /** USR1: reopens the file if it is among those moved; on failure, writes on to the old one. */
  reopen(files: readonly string[], logger: Logger): void {
    const failure = this.sink.reopenAmong(files);
    if (failure) logger.error(`Access log not reopened, writing on to the old file: ${failure.message}`);
  }

  flush(): void {
    this.sink.flush();
  }

  close(): void {
    this.sink.close();
  }

  private write(req: IncomingMessage, res: ServerResponse | null, status: number, bodyBytes: number, start: RequestStart): void {
    const record = {
      req,
      res,
      status,
      startedAt: start.at,
      durationNs: process.hrtime.bigint() - start.ns,
      bodyBytes,
      remoteAddress: req.socket.remoteAddress,
      pid: process.pid,
    };
    this.sink.write(`${this.format(record)}\n`);
  }
}
