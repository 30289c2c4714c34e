/**
 * Gunicorn's request limits (--limit-request-line, --limit-request-fields, --limit-request-field-size)
 * plus a body limit and a header timeout. Node's parser enforces what it can: the size of the whole
 * header block and the number of fields (431), malformed input and Content-Length/Transfer-Encoding
 * conflicts (400), the header timeout (408). The limits it does not know are checked here, before the
 * app sees a request.
 */
import type { IncomingMessage } from 'node:http';
import type { Settings } from '../config/settings.ts';
import type { AppServer } from './app-server.ts';

export type LimitSettings = Pick<
  Settings,
  'limitRequestLine' | 'limitRequestFields' | 'limitRequestFieldSize' | 'limitRequestBody' | 'headersTimeout'
>;

export interface Rejection {
  readonly status: number;
  readonly reason: string;
}

/** Gunicorn's ceilings, which bound the header block where a limit is off (0). */
const MAX_REQUEST_LINE = 8190;
const MAX_HEADERS = 32768;
const MAX_HEADER_FIELD_SIZE = 8190;

/** Server knobs @types/node does not declare; Node reads them per connection and on 'listening'. */
type ParserKnobs = { maxHeaderSize: number; connectionsCheckingInterval: number };

/** Sets the app server's parser limits and header timeout; call before the server is marked listening. */
export function configureParser(server: AppServer, limits: LimitSettings): void {
  const knobs = server as AppServer & ParserKnobs;
  // Gunicorn's own header buffer bound: every field at its largest, each with its CRLF.
  knobs.maxHeaderSize =
    (limits.limitRequestLine || MAX_REQUEST_LINE) +
    (limits.limitRequestFields || MAX_HEADERS) * ((limits.limitRequestFieldSize || MAX_HEADER_FIELD_SIZE) + 2) +
    4;
  server.maxHeadersCount = limits.limitRequestFields; // 0 is no limit for Node too
  server.headersTimeout = limits.headersTimeout * 1000;
  if (limits.headersTimeout > 0) {
    // Node looks for expired headers every 30 s by default; a tenth of the timeout keeps the 408 on time.
    knobs.connectionsCheckingInterval = Math.min(knobs.connectionsCheckingInterval, Math.max(100, limits.headersTimeout * 100));
  }
}

/**
 * The check for the limits Node's parser does not enforce, or null when they are all off. The sizes are
 * of the text as sent: Node's parser decodes header bytes one to one (latin1), so length is bytes.
 */
export function requestLimitCheck(limits: LimitSettings): ((req: IncomingMessage) => Rejection | null) | null {
  const { limitRequestLine: line, limitRequestFieldSize: fieldSize, limitRequestBody: body } = limits;
  if (!line && !fieldSize && !body) return null;
  return (req) => {
    // "METHOD SP target SP HTTP/x.y" without its CRLF, as Gunicorn measures it.
    const lineLength = req.method!.length + req.url!.length + 10;
    if (line && lineLength > line) return { status: 414, reason: `request line is ${lineLength} bytes, more than ${line}` };
    if (fieldSize) {
      const raw = req.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        // "Name: value"
        const size = raw[i]!.length + 2 + raw[i + 1]!.length;
        if (size > fieldSize) return { status: 431, reason: `header field ${raw[i]} is ${size} bytes, more than ${fieldSize}` };
      }
    }
    if (body && Number(req.headers['content-length']) > body) {
      return { status: 413, reason: `Content-Length ${req.headers['content-length']} is more than ${body}` };
    }
    return null;
  };
}

/**
 * A chunked body has no length up front: its bytes are counted as Node's parser hands them to the
 * request, and the count passing the limit closes the connection (after a 413 if the response has not
 * started, lingering). The app never gets the bytes past the limit, nor an end that would pass for a
 * complete body.
 */
export function limitChunkedBody(req: IncomingMessage, limit: number, onExceeded: (rejection: Rejection) => void): void {
  let received = 0;
  let exceeded = false;
  const push = req.push;
  req.push = function (this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk) received += (chunk as Buffer).length;
    if (received <= limit) return push.call(this, chunk, encoding);
    if (!exceeded) {
      exceeded = true;
      onExceeded({ status: 413, reason: `chunked body passed ${limit} bytes` });
    }
    // Dropped, yet reported taken: false would have Node's parser stop reading a lingering connection.
    return true;
  };
}
