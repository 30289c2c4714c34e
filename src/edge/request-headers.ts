/**
 * The request headers forkgate vouches for: the forwarding headers a proxy in front sets (believed only
 * from --forwarded-allow-ips) and X-Request-Id.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** Lower-case header name → its new value, or null to remove it. */
export type HeaderEdits = Map<string, string | null>;

/** What only a trusted proxy may tell the app; X-Forwarded-For is replaced rather than removed. */
const PROXY_ONLY_HEADERS = ['x-forwarded-proto', 'x-forwarded-host', 'forwarded'] as const;

/**
 * From a trusted peer the forwarding headers stand; from anyone else they are removed. Either way the
 * app finds the client in X-Forwarded-For: the trusted proxy's value, or else the peer itself.
 */
export function forwardingEdits(req: IncomingMessage, trusted: boolean, edits: HeaderEdits): void {
  const peer = req.socket.remoteAddress;
  if (trusted) {
    if (peer && req.headers['x-forwarded-for'] === undefined) edits.set('x-forwarded-for', peer);
    return;
  }
  for (const name of PROXY_ONLY_HEADERS) if (req.headers[name] !== undefined) edits.set(name, null);
  if (peer) edits.set('x-forwarded-for', peer);
}

/** The request's id: the one it came with (a proxy in front may have set it), or a new one. */
export function requestIdEdit(req: IncomingMessage, edits: HeaderEdits): string {
  const given = req.headers['x-request-id'];
  if (given !== undefined) return given as string;
  const id = randomUUID();
  edits.set('x-request-id', id);
  return id;
}

type HeaderInternals = {
  headers: IncomingMessage['headers'] | null;
  headersDistinct: IncomingMessage['headersDistinct'] | null;
  /** Sets rawHeaders and the count Node's lazy `headers`/`headersDistinct` getters read them by. */
  _addHeaderLines(raw: string[], count: number): void;
};

/**
 * Applies the edits to every view of the headers an app may read: `headers` (Express, Koa), and
 * `rawHeaders` (the fetch adapter builds its Headers from them) with `headersDistinct` derived anew.
 */
export function rewriteRequestHeaders(req: IncomingMessage, edits: HeaderEdits): void {
  const headers = req.headers;
  let raw = req.rawHeaders;
  // The usual edits only add headers the request lacks; anything else rebuilds the raw list.
  if (editsAnyPresent(headers, edits)) {
    raw = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (!edits.has(req.rawHeaders[i]!.toLowerCase())) raw.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
    }
  }
  for (const [name, value] of edits) {
    if (value === null) {
      delete headers[name];
    } else {
      headers[name] = value;
      raw.push(name, value);
    }
  }
  const internals = req as unknown as HeaderInternals;
  // With `headers` unset, _addHeaderLines only records the lines; the edited object is then put back.
  internals.headers = null;
  internals.headersDistinct = null;
  // An upgrade request is complete before its event, and Node files the lines of a complete message
  // as trailers: for this call it is not.
  const complete = req.complete;
  req.complete = false;
  internals._addHeaderLines(raw, raw.length);
  req.complete = complete;
  internals.headers = headers;
}

function editsAnyPresent(headers: IncomingMessage['headers'], edits: HeaderEdits): boolean {
  for (const name of edits.keys()) if (headers[name] !== undefined) return true;
  return false;
}
