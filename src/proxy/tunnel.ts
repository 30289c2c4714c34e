/**
 * An upgrade (WebSocket or any protocol switch) through the proxy: sent to the unit like any request,
 * whose app answers the handshake; only a 101 lets bytes flow both ways, untouched, until either side
 * closes. A declined upgrade's answer is relayed and the client's connection closed.
 */
import type { IncomingMessage } from 'node:http';
import type * as net from 'node:net';
import { encodeClient, PEER_HEADER } from '../hop/protocol.ts';
import type { Backend } from './dispatcher.ts';
import { forwardedHeaders } from './exchange.ts';
import type { ResponseHead } from '../hop/pool.ts';

const ONLY_OURS = new Set([PEER_HEADER]);
/** A declined upgrade's answer is relayed close-delimited: these framing headers no longer apply. */
const REFRAMED = new Set(['connection', 'keep-alive', 'content-length', 'transfer-encoding']);

/**
 * Calls onStarted when the unit answers (it switched, or declined), and onEnd once, when the tunnel is
 * closed (or could not be opened, or the upgrade was declined).
 */
export function openTunnel(
  backend: Backend,
  req: IncomingMessage,
  client: net.Socket,
  head: Buffer,
  onStarted: () => void,
  onEnd: (error: Error | null) => void,
): void {
  const headers = forwardedHeaders(req.rawHeaders, ONLY_OURS);
  // An upgrade is never taken back: the unit does not look at its late mark.
  if (backend.ours) headers.push(PEER_HEADER, encodeClient(req.socket, 0));
  let text = `${req.method} ${req.url} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  text += '\r\n';

  let ended = false;
  const end = (error: Error | null) => {
    if (ended) return;
    ended = true;
    onEnd(error);
  };
  client.pause(); // nothing from the client reaches the unit before it has agreed to switch
  const upstream = backend.pool.request(text, null, true, {
    onUpgrade: (response, socket, rest) => {
      onStarted();
      client.write(responseHead(response, new Set()));
      if (rest.length > 0) client.write(rest);
      if (head.length > 0) socket.write(head);
      socket.on('error', () => client.destroy());
      client.on('error', () => socket.destroy());
      socket.on('close', () => {
        client.destroy();
        end(null);
      });
      client.on('close', () => socket.destroy());
      socket.pipe(client);
      client.pipe(socket);
      client.resume();
    },
    onHead: (response) => {
      onStarted();
      client.write(responseHead(response, REFRAMED));
      return 'decoded';
    },
    onData: (chunk) => client.write(chunk),
    onEnd: () => {
      client.end();
      end(null);
    },
    onError: (error, { headReceived }) => {
      if (headReceived || !client.writable) client.destroy();
      else client.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      end(error);
    },
  });
  upstream.end();
  client.once('close', () => {
    upstream.abort();
    end(null);
  });
}

/** The unit's head as the client gets it; a declined upgrade's answer ends with the connection. */
function responseHead({ status, reason, rawHeaders }: ResponseHead, skip: ReadonlySet<string>): string {
  let text = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (!skip.has(rawHeaders[i]!.toLowerCase())) text += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  }
  return `${text}${status === 101 ? '' : 'Connection: close\r\n'}\r\n`;
}
