/**
 * The hop from forkgate's proxy (the master, --balance proxy) to a serving unit, over a private unix
 * socket. One pooled connection carries requests of many clients in turn, so the client cannot travel
 * as a PROXY header (one per connection): it travels as a request header only the proxy sets and the
 * unit removes before the app sees the request.
 */
import type { Socket } from 'node:net';
import type { ProxiedPeer } from './proxy-protocol.ts';

export const PEER_HEADER = 'x-forkgate-peer';

/** "family address port" of the socket's peer; a unix socket client has no address and sends nothing. */
export function encodePeer(socket: Socket): string | null {
  const { remoteAddress, remotePort, remoteFamily } = socket;
  return remoteAddress ? `${remoteFamily} ${remoteAddress} ${remotePort ?? 0}` : null;
}

export function decodePeer(value: string): ProxiedPeer | null {
  const [family, address, port] = value.split(' ');
  if ((family !== 'IPv4' && family !== 'IPv6') || !address) return null;
  return { family, address, port: Number(port) };
}
