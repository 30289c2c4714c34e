/** Raw-socket clients and fixtures for the HTTP edge tests: malformed input, PROXY headers, certificates. */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';

/** An X-Request-Id forkgate made: a version 4 UUID. */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export interface Exchange {
  /** Everything the server wrote before the connection closed. */
  received: string;
  /** The connection ended with a reset rather than a FIN. */
  reset: boolean;
}

/**
 * Writes the payload on a fresh connection and resolves once the server closes it. The client never
 * closes first (unless `end`), so a resolved exchange proves the server closed the connection.
 */
export function exchange(
  url: string,
  payload: string | Buffer | readonly (string | Buffer)[],
  options: { end?: boolean } = {},
): Promise<Exchange> {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname, () => {
    for (const part of Array.isArray(payload) ? payload : [payload]) socket.write(part);
    if (options.end) socket.end();
  });
  return collect(socket, 'the server kept the connection open').closed;
}

/**
 * What comes back on a connection: so far (`sofar`), and all of it once it closes (`closed`, rejected if
 * it is still open after 15 s, with `stuck` and what came). A reset is noted, not an error.
 */
export function collect(socket: net.Socket, stuck: string): { sofar: () => Exchange; closed: Promise<Exchange> } {
  const chunks: Buffer[] = [];
  let reset = false;
  const sofar = () => ({ received: Buffer.concat(chunks).toString('latin1'), reset });
  const closed = new Promise<Exchange>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNRESET' || error.code === 'EPIPE') reset = true;
      else reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(sofar());
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${stuck}; it sent: ${sofar().received.slice(0, 200)}`));
    }, 15_000);
  });
  return { sofar, closed };
}

/** The status code of the first response in an exchange, or null if the server sent nothing. */
export function statusOf({ received }: Exchange): number | null {
  const match = /^HTTP\/1\.1 (\d{3}) /.exec(received);
  return match ? Number(match[1]) : null;
}

/** The JSON body of the edge-echo fixture's response. */
export interface Echo {
  remoteAddress: string;
  remotePort: number;
  remoteFamily: string;
  encrypted: boolean;
  hasEncrypted: boolean;
  authorized: boolean | null;
  peerCN: string | null;
  peerFingerprint: string | null;
  headers: Record<string, string>;
  rawHeaders: string[];
  bodyBytes: number;
  /** Which serving thread answered (0: the process's main thread). */
  threadId: number;
}

export function echoOf({ received }: Exchange): Echo {
  return JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4)) as Echo;
}

const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** A PROXY v2 header: the command (0 LOCAL, 1 PROXY), the family/transport byte, then the address block. */
export function proxyV2(command: number, familyTransport: number, body: Buffer): Buffer {
  const fixed = Buffer.alloc(4);
  fixed[0] = 0x20 | command;
  fixed[1] = familyTransport;
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIGNATURE, fixed, body]);
}

/** A v2 address block for TCP over IPv4 (family/transport 0x11). */
export function ipv4Block(source: string, destination: string, sourcePort: number, destinationPort: number): Buffer {
  const block = Buffer.alloc(12);
  Buffer.from(source.split('.').map(Number)).copy(block, 0);
  Buffer.from(destination.split('.').map(Number)).copy(block, 4);
  block.writeUInt16BE(sourcePort, 8);
  block.writeUInt16BE(destinationPort, 10);
  return block;
}

/** A v2 address block for TCP over IPv6 (family/transport 0x21), from 32-digit hex addresses. */
export function ipv6Block(sourceHex: string, destinationHex: string, sourcePort: number, destinationPort: number): Buffer {
  const block = Buffer.alloc(36);
  Buffer.from(sourceHex, 'hex').copy(block, 0);
  Buffer.from(destinationHex, 'hex').copy(block, 16);
  block.writeUInt16BE(sourcePort, 32);
  block.writeUInt16BE(destinationPort, 34);
  return block;
}

export interface Certificates {
  /** The files: a CA, a server certificate for 127.0.0.1 it signed, a client certificate it signed. */
  readonly files: { ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string };
  readonly ca: Buffer;
  readonly clientCert: Buffer;
  readonly clientKey: Buffer;
}

/** Makes a throwaway CA and the certificates it signs with openssl, or says why it cannot. */
export function makeCertificates(dir: string): Certificates | string {
  const openssl = (...args: string[]) => spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  const probe = openssl('version');
  if (probe.error || probe.status !== 0) return 'openssl is not installed';
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const steps = [
    ['req', '-x509', ...key, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=forkgate test CA'],
    ['req', ...key, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'],
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.pem',
      '-days',
      '1',
      '-extfile',
      'server.ext',
    ],
    ['req', ...key, '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=client'],
    ['x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '1'],
  ];
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\n');
  for (const step of steps) {
    const result = openssl(...step);
    if (result.status !== 0) throw new Error(`openssl ${step.join(' ')} failed:\n${result.stderr}`);
  }
  const files = {
    ca: join(dir, 'ca.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client.key'),
  };
  return { files, ca: readFileSync(files.ca), clientCert: readFileSync(files.clientCert), clientKey: readFileSync(files.clientKey) };
}
