/**
 * The request headers forkgate vouches for: the forwarding headers a proxy in front sets (believed only
 * from --forwarded-allow-ips) and X-Request-Id (where requests get ids).
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Settings } from '../config/settings.ts';
import { accessLogUsesRequestId } from '../log/access-log.ts';

/** What only a trusted proxy may tell the app; from anyone else they are removed (X-Forwarded-For replaced). */
const PROXY_ONLY_HEADERS = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded'] as const;

export type RequestIdSettings = Pick<Settings, 'requestId' | 'accessLogfile' | 'accessLogformat'>;

/**
 * Whether requests get an X-Request-Id: asked for, or named by the access log (as nginx makes $request_id
 * only where it is used).
 */
export function makesRequestIds(settings: RequestIdSettings): boolean {
  return settings.requestId || (settings.accessLogfile !== null && accessLogUsesRequestId(settings.accessLogformat));
}

/**
 * Applies the forwarding policy and X-Request-Id to the request and returns its id. From a trusted peer
 * the forwarding headers stand; from anyone else they are removed. Either way the app finds the client in
 * X-Forwarded-For: the trusted proxy's value, or else the peer itself. The id is the one the request came
 * with (a proxy in front may have set it), or a new one. `removed` is a header taken off whatever it says.
 */
export function prepareRequestHeaders(req: IncomingMessage, trusted: boolean, removed: string | null): string {
  return prepare(req, trusted, removed, true)!;
}

/** The same without X-Request-Id: one the request has is the app's like any other header. */
export function prepareForwardingHeaders(req: IncomingMessage, trusted: boolean, removed: string | null): void {
  prepare(req, trusted, removed, false);
}

function prepare(req: IncomingMessage, trusted: boolean, removed: string | null, withId: boolean): string | undefined {
  const headers = req.headers;
  // The usual request has nothing to remove and at most the peer and an id to add: no lists for those.
  let removals: string[] | null = removed !== null && headers[removed] !== undefined ? [removed] : null;
  if (!trusted) {
    for (const name of PROXY_ONLY_HEADERS) {
      if (headers[name] === undefined) continue;
      removals ??= [];
      removals.push(name);
    }
  }
  const peer = req.socket.remoteAddress;
  const forwardedFor = peer && (!trusted || headers['x-forwarded-for'] === undefined) ? peer : null;
  const given = withId ? (headers['x-request-id'] as string | undefined) : undefined;
  const newId = withId && given === undefined ? randomUUID() : null;
  if (removals !== null || forwardedFor !== null || newId !== null) rewriteRequestHeaders(req, removals, forwardedFor, newId);
  return given ?? newId ?? undefined;
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
function rewriteRequestHeaders(
  req: IncomingMessage,
  removals: readonly string[] | null,
  forwardedFor: string | null,
  requestId: string | null,
): void {
  const headers = req.headers;
  let raw = req.rawHeaders;
  if (removals !== null) {
    raw = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (!removals.includes(req.rawHeaders[i]!.toLowerCase())) raw.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
    }
    for (const name of removals) delete headers[name];
  }
  if (forwardedFor !== null) {
    headers['x-forwarded-for'] = forwardedFor;
    raw.push('x-forwarded-for', forwardedFor);
  }
  if (requestId !== null) {
    headers['x-request-id'] = requestId;
    raw.push('x-request-id', requestId);
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
