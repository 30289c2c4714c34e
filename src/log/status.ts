import type { ServerResponse } from 'node:http';

/** nginx's status for a request whose client left before any answer came. */
const CLIENT_CLOSED = 499;

/** Responses whose request forkgate's edge answered on the connection itself: with this status. */
const answeredRaw = new WeakMap<ServerResponse, number>();

/** The edge answered the request itself, writing on the connection: its response object never will. */
export function markAnsweredRaw(res: ServerResponse, status: number): void {
  answeredRaw.set(res, status);
}

/** The status a finished request is logged and counted with: Node presets 200 on responses never sent. */
export function answeredStatus(res: ServerResponse): number {
  return answeredRaw.get(res) ?? (res.headersSent ? res.statusCode : CLIENT_CLOSED);
}
