/**
 * TLS termination in the worker (--certfile, --keyfile, --ca-certs, --cert-reqs). A tls.Server that
 * never listens does the server side of every handshake: Node's own handshake timeout, client
 * certificate checks and error handling, applied to the sockets forkgate feeds it. Only the master
 * reads the files (readCertificates).
 */
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';
import { readSettingFile } from '../config/setting-file.ts';
import type { Settings } from '../config/settings.ts';
import { SettingError } from '../errors.ts';

export type TlsSettings = Pick<Settings, 'certfile' | 'keyfile' | 'caCerts' | 'certReqs' | 'headersTimeout'>;

/**
 * The PEM contents of the certificate files, as the master read and checked them at start or on the
 * last HUP that could serve. Workers are given these and never read the files: a replaced worker
 * serves what the master kept, and a key only root may read serves under --user, as with nginx.
 */
export interface Certificates {
  readonly cert: string;
  readonly key: string;
  readonly ca: string | null;
}

/** Null without certificates (no --certfile). */
export function createTlsTerminator(settings: TlsSettings, certificates: Certificates | null): tls.Server | null {
  if (!certificates) return null;
  return new tls.Server({
    ...secureContextOptions(certificates),
    requestCert: settings.certReqs !== 'none',
    rejectUnauthorized: settings.certReqs === 'required',
    ALPNProtocols: ['http/1.1'],
    // A client that never finishes its handshake is a slowloris too.
    ...(settings.headersTimeout > 0 ? { handshakeTimeout: settings.headersTimeout * 1000 } : {}),
  });
}

export function secureContextOptions({ cert, key, ca }: Certificates): tls.SecureContextOptions {
  return ca === null ? { cert, key } : { cert, key, ca };
}

/**
 * Reads the certificate, key and CA files now (at start, on HUP) and checks that they make a secure
 * context; null without --certfile. A file that cannot serve is a SettingError naming the setting,
 * the file and what is wrong with it.
 */
export function readCertificates(settings: TlsSettings): Certificates | null {
  const certfile = settings.certfile;
  if (!certfile) return null;
  const cert = readPem('certfile', certfile);
  check(() => tls.createSecureContext({ cert }), `--certfile ${certfile}: no PEM certificate in it`);
  // Like Python's load_cert_chain, a certfile may carry the key too.
  const key = settings.keyfile ? readPem('keyfile', settings.keyfile) : cert;
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
  if (!settings.caCerts) return { cert, key, ca: null };
  const ca = readPem('ca-certs', settings.caCerts);
  // A secure context ignores a CA file without a certificate; every client certificate would then fail.
  check(() => new X509Certificate(ca), `--ca-certs ${settings.caCerts}: no PEM certificate in it`);
  return { cert, key, ca };
}

/** As text, the form that travels to the workers over IPC; checked in that form too. */
function readPem(setting: string, path: string): string {
  return readSettingFile(setting, path).toString('utf8');
}

function check(attempt: () => unknown, problem: string): void {
  try {
    attempt();
  } catch (error) {
    throw new SettingError(`${problem} (${(error as Error).message})`);
  }
}
