import type { ServerResponse } from 'node:http';

/** nginx's status for a request whose client left before any answer came. */
const CLIENT_CLOSED = 499;

/** The status a finished request is logged and counted with: Node presets 200 on responses never sent. */
export function answeredStatus(res: ServerResponse): number {
  return res.headersSent ? res.statusCode : CLIENT_CLOSED;
}
