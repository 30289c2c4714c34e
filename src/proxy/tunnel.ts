/**
 * An upgrade (WebSocket, or any protocol switch) through the proxy: the request head goes to the unit
 * on a connection of its own, then bytes flow both ways untouched until either side closes. The unit
 * answers the handshake itself, so the app's own upgrade handling (ws, socket.io) works as it would
 * without the proxy.
 */
import * as net from 'node:net';
import type { IncomingMessage } from 'node:http';
import { encodeClient, PEER_HEADER } from '../edge/internal-hop.ts';
import type { Backend } from './dispatcher.ts';
import { forwardedHeaders } from './exchange.ts';

const ONLY_OURS = new Set([PEER_HEADER]);

/** Calls onEnd once, when the tunnel is closed (or could not be opened). */
export function openTunnel(backend: Backend, req: IncomingMessage, client: net.Socket, head: Buffer, onEnd: (error: Error | null) => void): void {
  const headers = forwardedHeaders(req.rawHeaders, ONLY_OURS);
  headers.push(PEER_HEADER, encodeClient(req.socket));
  let text = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  text += '\r\n';

  const upstream = 'socketPath' in backend.target ? net.connect(backend.target.socketPath) : net.connect(backend.target.port, backend.target.host);
  let connected = false;
  let ended = false;
  const end = (error: Error | null) => {
    if (ended) return;
    ended = true;
    if (!connected && error && client.writable) {
      client.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    } else {
      client.destroy();
    }
    upstream.destroy();
    onEnd(error);
  };
  upstream.on('error', end);
  client.on('error', end);
  upstream.on('close', () => end(null));
  client.on('close', () => end(null));
  upstream.on('connect', () => {
    connected = true;
    upstream.write(text);
    if (head.length > 0) upstream.write(head);
    upstream.pipe(client);
    client.pipe(upstream);
  });
}
