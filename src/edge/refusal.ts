import type { Socket } from 'node:net';

/** What a client refused for want of descriptors is told, here or in a 503 the proxy writes. */
export const OVER_LIMIT = 'Service Unavailable: too many connections (open-file limit)';
const BODY = `${OVER_LIMIT}\n`;
const UNAVAILABLE =
  'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\n' +
  `Content-Length: ${BODY.length}\r\n\r\n${BODY}`;

/**
 * Answers a connection forkgate cannot take (its open-file budget is spent) with a 503 and closes it
 * at once, unread: a burst of connections is accepted in one go, and each refusal must give its
 * descriptor back before the next accept. The answer is on its way before the close (a client that had
 * sent its request then sees the reset after the answer). Over TLS an answer takes a handshake, so the
 * connection is only closed.
 */
export function refuseConnection(socket: Socket, tls: boolean): void {
  socket.on('error', () => {});
  if (!tls) socket.write(UNAVAILABLE);
  socket.destroy();
}
