/**
 * The hop from forkgate's proxy (the master, --balance proxy) to a serving unit, over a private unix
 * socket. One pooled connection carries requests of many clients in turn, so the client cannot travel
 * as a PROXY header (one per connection): it travels as a request header only the proxy sets and the
 * unit removes before the app sees the request. It says who the client is and whether it came over TLS,
 * so the app reads req.socket.remoteAddress, .encrypted and .authorized as in the other modes.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ProxiedPeer } from './proxy-protocol.ts';

export const PEER_HEADER = 'x-forkgate-peer';

export interface HopClient {
  /** Null for a client on a unix socket. */
  readonly peer: ProxiedPeer | null;
  /** Null without TLS; else whether its certificate was verified (--cert-reqs). */
  readonly tls: { readonly authorized: boolean } | null;
}

/** "family address port" ("unix - 0" without an address), then " tls authorized|unauthorized" over TLS. */
export function encodeClient(socket: Socket): string {
  const { remoteAddress, remotePort, remoteFamily } = socket;
  const peer = remoteAddress ? `${remoteFamily} ${remoteAddress} ${remotePort ?? 0}` : 'unix - 0';
  const tls = socket as Partial<TLSSocket>;
  return tls.encrypted ? `${peer} tls ${tls.authorized ? 'authorized' : 'unauthorized'}` : peer;
}

export function decodeClient(value: string): HopClient | null {
  const [family, address, port, tls, authorized] = value.split(' ');
  if (!address) return null;
  const peer: ProxiedPeer | null =
    (family === 'IPv4' || family === 'IPv6') && address !== '-' ? { family, address, port: Number(port) } : null;
  return { peer, tls: tls === 'tls' ? { authorized: authorized === 'authorized' } : null };
}
