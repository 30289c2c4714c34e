import type { Socket } from 'node:net';

const BODY = 'Service Unavailable: too many connections (open-file limit)\n';
const UNAVAILABLE =
  'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\n' +
  `Content-Length: ${BODY.length}\r\n\r\n${BODY}`;
/** How long a refused client has to read its answer before the connection is dropped. */
const LINGER_MS = 1000;

/**
 * Answers a connection forkgate cannot take (its open-file budget is spent) with a 503 and closes it,
 * unread. What the client sent is read and dropped until it closes: a close with unread data would
 * reset the connection before the answer is read (nginx's lingering close). Over TLS an answer takes a
 * handshake, so the connection is only closed.
 */
export function refuseConnection(socket: Socket, tls: boolean): void {
  socket.on('error', () => {});
  if (tls) return void socket.destroy();
  socket.end(UNAVAILABLE);
  socket.resume();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}
