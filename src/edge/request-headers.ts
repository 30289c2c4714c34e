/**
 * The request headers forkgate vouches for: the forwarding headers a proxy in front sets (believed only
 * from --forwarded-allow-ips) and X-Request-Id.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** What only a trusted proxy may tell the app; from anyone else they are removed (X-Forwarded-For replaced). */
const PROXY_ONLY_HEADERS = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded'] as const;

/**
 * Applies the forwarding policy and X-Request-Id to the request and returns its id. From a trusted peer
 * the forwarding headers stand; from anyone else they are removed. Either way the app finds the client in
 * X-Forwarded-For: the trusted proxy's value, or else the peer itself. The id is the one the request came
 * with (a proxy in front may have set it), or a new one. `removed` is a header taken off whatever it says.
 */
export function prepareRequestHeaders(req: IncomingMessage, trusted: boolean, removed: string | null): string {
  const headers = req.headers;
  const peer = req.socket.remoteAddress;
  // Names to remove, then name-value pairs to add: the usual request only gets two added.
  const removals: string[] = [];
  const additions: string[] = [];
  if (removed !== null && headers[removed] !== undefined) removals.push(removed);
  if (!trusted) {
    for (const name of PROXY_ONLY_HEADERS) if (headers[name] !== undefined) removals.push(name);
    if (peer) additions.push('x-forwarded-for', peer);
  } else if (peer && headers['x-forwarded-for'] === undefined) {
    additions.push('x-forwarded-for', peer);
  }
  let id = headers['x-request-id'] as string | undefined;
  if (id === undefined) {
    id = randomUUID();
    additions.push('x-request-id', id);
  }
  if (removals.length > 0 || additions.length > 0) rewriteRequestHeaders(req, removals, additions);
  return id;
}

type HeaderInternals = {
  headers: IncomingMessage['headers'] | null;
  headersDistinct: IncomingMessage['headersDistinct'] | null;
  /** Sets rawHeaders and the count Node's lazy `headers`/`headersDistinct` getters read them by. */
  _addHeaderLines(raw: string[], count: number): void;
};

/**
 * Applies the changes to every view of the headers an app may read: `headers` (Express, Koa), and
 * `rawHeaders` (the fetch adapter builds its Headers from them) with `headersDistinct` derived anew.
 */
function rewriteRequestHeaders(req: IncomingMessage, removals: readonly string[], additions: readonly string[]): void {
  const headers = req.headers;
  let raw = req.rawHeaders;
  if (removals.length > 0) {
    raw = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (!removals.includes(req.rawHeaders[i]!.toLowerCase())) raw.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
    }
    for (const name of removals) delete headers[name];
  }
  for (let i = 0; i < additions.length; i += 2) {
    headers[additions[i]!] = additions[i + 1]!;
    raw.push(additions[i]!, additions[i + 1]!);
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
