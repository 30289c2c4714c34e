/**
 * What travels on the hop from the proxy to a unit besides plain HTTP/1.1: each request's client (a
 * pooled connection carries many, so no PROXY header can name it) and when it was sent, the withdrawal
 * that takes a request back, and the timings both sides keep (docs/architecture.md, "proxy").
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ProxiedPeer } from '../edge/proxy-protocol.ts';

/** Set by the proxy on requests to its own units only, removed by the unit before the app sees them. */
export const PEER_HEADER = 'x-forkgate-peer';

/**
 * The late mark the proxy sends with a request: half the stuck threshold at the time, in whole ms. A
 * request read that long after it was sent may have been taken back meanwhile: the unit confirms it and
 * looks again before running it. The proxy takes back only requests older than twice their mark, so
 * with Date.now()'s millisecond steps every request it may have taken back reads as late.
 */
export function lateMark(stuckMs: number): number {
  return Math.floor(stuckMs / 2);
}

/**
 * The unit's confirmation that a request's handler returned without answering: it awaits something, and
 * the unit's event loop is free. A plain 102 says only that the unit has the request in hand.
 */
export const AWAITING_HEADER = 'x-forkgate-awaiting';
export const AWAITING = `HTTP/1.1 102 Processing\r\n${AWAITING_HEADER}: 1\r\n\r\n`;

export const WITHDRAWAL_HEADER = 'x-forkgate-withdrawal';
/** Takes back the request before it on the connection, if the unit has not started it. */
export const WITHDRAWAL = `OPTIONS * HTTP/1.1\r\nHost: forkgate\r\n${WITHDRAWAL_HEADER}: previous\r\n\r\n`;

export interface HopClient {
  /** When the proxy sent the request (Date.now()). */
  readonly sentAt: number;
  /** Read this many ms after sentAt or later, the request may have been taken back (lateMark). */
  readonly lateMs: number;
  /** Null for a client on a unix socket. */
  readonly peer: ProxiedPeer | null;
  /**
   * Null without TLS; else whether its certificate was verified (--cert-reqs), and the certificate
   * (DER, base64) if it sent one.
   */
  readonly tls: { readonly authorized: boolean; readonly certificate: string | null } | null;
}

/** Per client connection: its certificate, base64, encoded once for all its requests ('' for none). */
const encodedCertificates = new WeakMap<Socket, string>();

/**
 * "sentAt lateMs family address port" ("unix - 0" without an address), then " tls
 * authorized|unauthorized" over TLS, and the client's certificate if it sent one. Call as the request
 * goes out: a retry is sent anew.
 */
export function encodeClient(socket: Socket, lateMs: number): string {
  const { remoteAddress, remotePort, remoteFamily } = socket;
  const peer = remoteAddress ? `${remoteFamily} ${remoteAddress} ${remotePort ?? 0}` : 'unix - 0';
  const tls = socket as Partial<TLSSocket>;
  if (!tls.encrypted) return `${Date.now()} ${lateMs} ${peer}`;
  let certificate = encodedCertificates.get(socket);
  if (certificate === undefined) {
    certificate = tls.getPeerX509Certificate?.()?.raw.toString('base64') ?? '';
    encodedCertificates.set(socket, certificate);
  }
  return `${Date.now()} ${lateMs} ${peer} tls ${tls.authorized ? 'authorized' : 'unauthorized'}${certificate ? ` ${certificate}` : ''}`;
}

export function decodeClient(value: string): HopClient | null {
  const [sentAt, lateMs, family, address, port, tls, authorized, certificate] = value.split(' ');
  if (!address) return null;
  const peer: ProxiedPeer | null =
    (family === 'IPv4' || family === 'IPv6') && address !== '-' ? { family, address, port: Number(port) } : null;
  return {
    sentAt: Number(sentAt),
    lateMs: Number(lateMs),
    peer,
    tls: tls === 'tls' ? { authorized: authorized === 'authorized', certificate: certificate || null } : null,
  };
}
