/**
 * Behind forkgate's proxy one pooled connection carries the requests of many clients in turn: the app
 * reads each request's client from the socket, as in the other modes (req.socket.remoteAddress,
 * .encrypted, .authorized, .getPeerCertificate()).
 */
import { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import type { HopClient } from './protocol.ts';

/** The client of the request in service on each pooled connection. */
const clients = new WeakMap<Socket, HopClient | null>();

/** Defined once per connection; each request then only records its client. */
const CLIENT_ADDRESS: PropertyDescriptorMap = {
  remoteAddress: {
    configurable: true,
    get(this: Socket) {
      return clients.get(this)?.peer?.address;
    },
  },
  remotePort: {
    configurable: true,
    get(this: Socket) {
      return clients.get(this)?.peer?.port;
    },
  },
  remoteFamily: {
    configurable: true,
    get(this: Socket) {
      return clients.get(this)?.peer?.family;
    },
  },
};
/**
 * Only where clients come over TLS: apps tell HTTPS by `'encrypted' in req.socket`. A front serves TLS
 * on every bind or on none, so a connection's first client tells for all it will carry.
 */
const CLIENT_TLS: PropertyDescriptorMap = {
  encrypted: { configurable: true, get: () => true },
  authorized: {
    configurable: true,
    get(this: Socket) {
      return clients.get(this)?.tls?.authorized;
    },
  },
  getPeerCertificate: {
    configurable: true,
    value(this: Socket) {
      return peerCertificate(clients.get(this)?.tls?.certificate ?? null);
    },
  },
  getPeerX509Certificate: {
    configurable: true,
    value(this: Socket) {
      return peerX509Certificate(clients.get(this)?.tls?.certificate ?? null);
    },
  },
};

/** The client the request names, else none (the hop itself is a unix socket). */
export function presentClient(socket: Socket, client: HopClient | null): void {
  if (!clients.has(socket)) {
    Object.defineProperties(socket, CLIENT_ADDRESS);
    if (client?.tls) Object.defineProperties(socket, CLIENT_TLS);
  }
  clients.set(socket, client);
}

/**
 * The client's certificate as TLSSocket.getPeerCertificate() shows it, for the fields of the certificate
 * itself (no issuer chain, no public key details); {} when the client sent none.
 */
function peerCertificate(certificate: string | null): object {
  const x509 = peerX509Certificate(certificate);
  if (!x509) return {};
  return {
    subject: distinguishedName(x509.subject),
    issuer: distinguishedName(x509.issuer),
    subjectaltname: x509.subjectAltName,
    ca: x509.ca,
    valid_from: x509.validFrom,
    valid_to: x509.validTo,
    fingerprint: x509.fingerprint,
    fingerprint256: x509.fingerprint256,
    fingerprint512: x509.fingerprint512,
    serialNumber: x509.serialNumber,
    raw: x509.raw,
  };
}

/** The client's certificate as TLSSocket.getPeerX509Certificate() gives it; undefined when it sent none. */
function peerX509Certificate(certificate: string | null): X509Certificate | undefined {
  return certificate ? new X509Certificate(Buffer.from(certificate, 'base64')) : undefined;
}

/** "CN=client\nO=acme" (X509Certificate) → { CN: 'client', O: 'acme' }; a repeated key gives an array. */
function distinguishedName(text: string): Record<string, string | string[]> {
  const name: Record<string, string | string[]> = Object.create(null);
  for (const line of text.split('\n')) {
    const at = line.indexOf('=');
    if (at <= 0) continue;
    const key = line.slice(0, at);
    const value = line.slice(at + 1);
    const known = name[key];
    name[key] = known === undefined ? value : [...(Array.isArray(known) ? known : [known]), value];
  }
  return name;
}
