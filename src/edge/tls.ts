/**
 * TLS termination in the worker (--certfile, --keyfile, --ca-certs, --cert-reqs). A tls.Server that
 * never listens does the server side of every handshake: Node's own handshake timeout, client
 * certificate checks and error handling, applied to the sockets forkgate feeds it.
 */
import { readFileSync } from 'node:fs';
import * as tls from 'node:tls';
import type { Settings } from '../config/settings.ts';

export type TlsSettings = Pick<Settings, 'certfile' | 'keyfile' | 'caCerts' | 'certReqs' | 'headersTimeout'>;

/** Null without --certfile. The files are read here, at worker boot: a HUP's new workers read them anew. */
export function createTlsTerminator(settings: TlsSettings): tls.Server | null {
  if (!settings.certfile) return null;
  return new tls.Server({
    ...secureContextOptions(settings),
    requestCert: settings.certReqs !== 'none',
    rejectUnauthorized: settings.certReqs === 'required',
    ALPNProtocols: ['http/1.1'],
    // What the HTTP server decides on a client's half-close needs the TLS socket to stay writable.
    allowHalfOpen: true,
    // A client that never finishes its handshake is a slowloris too.
    ...(settings.headersTimeout > 0 ? { handshakeTimeout: settings.headersTimeout * 1000 } : {}),
  });
}

/** The certificate, key and CA files' contents, read now. */
export function secureContextOptions(settings: TlsSettings): tls.SecureContextOptions {
  const cert = readSettingFile('certfile', settings.certfile!);
  return {
    cert,
    // Like Python's load_cert_chain, a certfile may carry the key too.
    key: settings.keyfile ? readSettingFile('keyfile', settings.keyfile) : cert,
    ...(settings.caCerts ? { ca: readSettingFile('ca-certs', settings.caCerts) } : {}),
  };
}

function readSettingFile(setting: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new Error(`--${setting} ${path}: ${(error as Error).message}`, { cause: error });
  }
}
