/**
 * TLS termination in the worker (--certfile, --keyfile, --ca-certs, --cert-reqs). A tls.Server that
 * never listens does the server side of every handshake: Node's own handshake timeout, client
 * certificate checks and error handling, applied to the sockets forkgate feeds it.
 */
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';
import { readSettingFile } from '../config/setting-file.ts';
import type { Settings } from '../config/settings.ts';
import { SettingError } from '../errors.ts';

export type TlsSettings = Pick<Settings, 'certfile' | 'keyfile' | 'caCerts' | 'certReqs' | 'headersTimeout'>;

/** Null without --certfile. The files are read here, at worker boot: a HUP's new workers read them anew. */
export function createTlsTerminator(settings: TlsSettings): tls.Server | null {
  if (!settings.certfile) return null;
  return new tls.Server({
    ...secureContextOptions(settings),
    requestCert: settings.certReqs !== 'none',
    rejectUnauthorized: settings.certReqs === 'required',
    ALPNProtocols: ['http/1.1'],
    // A client that never finishes its handshake is a slowloris too.
    ...(settings.headersTimeout > 0 ? { handshakeTimeout: settings.headersTimeout * 1000 } : {}),
  });
}

/** Reads and checks the certificate files now (at start, on HUP), before anything depends on them. */
export function checkCertificates(settings: TlsSettings): void {
  if (settings.certfile) secureContextOptions(settings);
}

/**
 * The certificate, key and CA files' contents, read now and checked to make a secure context: a file
 * that cannot serve is a SettingError naming the setting, the file and what is wrong with it.
 */
export function secureContextOptions(settings: TlsSettings): tls.SecureContextOptions {
  const certfile = settings.certfile!;
  const cert = readSettingFile('certfile', certfile);
  check(() => tls.createSecureContext({ cert }), `--certfile ${certfile}: no PEM certificate in it`);
  // Like Python's load_cert_chain, a certfile may carry the key too.
  const key = settings.keyfile ? readSettingFile('keyfile', settings.keyfile) : cert;
  check(
    () => tls.createSecureContext({ key }),
    settings.keyfile
      ? `--keyfile ${settings.keyfile}: no unencrypted PEM private key in it`
      : `--certfile ${certfile}: no unencrypted PEM private key in it, and no --keyfile given`,
  );
  check(
    () => tls.createSecureContext({ cert, key }),
    settings.keyfile
      ? `--keyfile ${settings.keyfile}: not the private key of the certificate in --certfile ${certfile}`
      : `--certfile ${certfile}: its private key is not its certificate's`,
  );
  if (!settings.caCerts) return { cert, key };
  const ca = readSettingFile('ca-certs', settings.caCerts);
  // A secure context ignores a CA file without a certificate; every client certificate would then fail.
  check(() => new X509Certificate(ca), `--ca-certs ${settings.caCerts}: no PEM certificate in it`);
  return { cert, key, ca };
}

function check(attempt: () => unknown, problem: string): void {
  try {
    attempt();
  } catch (error) {
    throw new SettingError(`${problem} (${(error as Error).message})`);
  }
}
