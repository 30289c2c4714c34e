/**
 * The hop from forkgate's proxy (the master, --balance proxy) to a serving unit, over a private unix
 * socket. One pooled connection carries requests of many clients in turn, so the client cannot travel
 * as a PROXY header (one per connection): it travels as a request header only the proxy sets and the
 * unit removes before the app sees the request. It says who the client is, whether it came over TLS and
 * with which certificate, so the app reads req.socket.remoteAddress, .encrypted, .authorized and
 * .getPeerCertificate() as in the other modes.
 *
 * It also says when the proxy sent the request. The proxy may take back a request a busy unit has not
 * started (src/proxy/dispatcher.ts): it sends WITHDRAWAL on the same connection, right behind it, and
 * the request to another unit. A request the unit has in hand is confirmed with an interim 102, after
 * which the proxy does not take it back: at once if the unit reads it late (a busy unit reads most
 * requests late, and the one it then runs is what it will be busy with), else when its handler returns
 * without answering (it awaits something). A request read late is also looked at again once the rest
 * of that read is parsed: if a withdrawal followed it (the unit was busy while both came), both are
 * answered 204 without the app, and the proxy drops the answers.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ProxiedPeer } from '../edge/proxy-protocol.ts';

export const PEER_HEADER = 'x-forkgate-peer';

/** A request read this long after the proxy sent it may have been taken back meanwhile. */
export const LATE_MS = 2;

export const WITHDRAWAL_HEADER = 'x-forkgate-withdrawal';
/** Takes back the request before it on the connection, if the unit has not started it. */
export const WITHDRAWAL = `OPTIONS * HTTP/1.1\r\nHost: forkgate\r\n${WITHDRAWAL_HEADER}: previous\r\n\r\n`;

export interface HopClient {
  /** When the proxy sent the request (Date.now()). */
  readonly sentAt: number;
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
 * "sentAt family address port" ("unix - 0" without an address), then " tls authorized|unauthorized"
 * over TLS, and the client's certificate if it sent one. Call as the request goes out: a retry is sent
 * anew.
 */
export function encodeClient(socket: Socket): string {
  const { remoteAddress, remotePort, remoteFamily } = socket;
  const peer = remoteAddress ? `${remoteFamily} ${remoteAddress} ${remotePort ?? 0}` : 'unix - 0';
  const tls = socket as Partial<TLSSocket>;
  if (!tls.encrypted) return `${Date.now()} ${peer}`;
  let certificate = encodedCertificates.get(socket);
  if (certificate === undefined) {
    certificate = tls.getPeerX509Certificate?.()?.raw.toString('base64') ?? '';
    encodedCertificates.set(socket, certificate);
  }
  return `${Date.now()} ${peer} tls ${tls.authorized ? 'authorized' : 'unauthorized'}${certificate ? ` ${certificate}` : ''}`;
}

export function decodeClient(value: string): HopClient | null {
  const [sentAt, family, address, port, tls, authorized, certificate] = value.split(' ');
  if (!address) return null;
  const peer: ProxiedPeer | null =
    (family === 'IPv4' || family === 'IPv6') && address !== '-' ? { family, address, port: Number(port) } : null;
  return {
    sentAt: Number(sentAt),
    peer,
    tls: tls === 'tls' ? { authorized: authorized === 'authorized', certificate: certificate || null } : null,
  };
}
