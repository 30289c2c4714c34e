/**
 * How the commands reach the admin endpoint: the address and the token file come from --admin and
 * --admin-token-file, or else from the settings the master reads (config file, environment).
 */
import * as http from 'node:http';
import { formatBindAddress, parseBindAddress, type BindAddress } from '../config/bind.ts';
import { resolveSettings, type SettingSources } from '../config/load.ts';
import { AdminFailedError, AdminRefusedError, AdminUnreachableError, SettingError, UsageError } from '../errors.ts';
import { readAdminToken } from '../master/admin.ts';

/** How long a command waits for the endpoint's answer. */
const ANSWER_TIMEOUT_MS = 5000;

type AdminAddress = Exclude<BindAddress, { kind: 'fd' }>;

/** Where a command asks, and the token file its POSTs carry the token of. */
export interface AdminTarget {
  readonly address: AdminAddress;
  readonly tokenFile: string | null;
}

interface AdminOptions {
  admin?: string;
  'admin-token-file'?: string;
}

/** forActions: the token file is looked for too (GETs need none). */
export async function adminTarget(options: AdminOptions, sources: SettingSources, forActions: boolean): Promise<AdminTarget> {
  let address: BindAddress | null = null;
  if (options.admin !== undefined) {
    const parsed = parseBindAddress(options.admin);
    if (typeof parsed === 'string') throw new SettingError(`--admin: expected HOST:PORT or unix:PATH; ${parsed}`);
    address = parsed;
  }
  let tokenFile = options['admin-token-file'] ?? null;
  if (address === null || (forActions && tokenFile === null)) {
    // The same config file and environment the master reads tell where its endpoint is.
    const { settings } = await resolveSettings({ ...sources, argv: [] });
    address ??= settings.adminBind;
    tokenFile ??= settings.adminTokenFile;
  }
  if (!address || address.kind === 'fd') {
    throw new UsageError('no admin endpoint; pass --admin HOST:PORT or unix:PATH, or set admin-bind');
  }
  return { address, tokenFile };
}

/** The endpoint's JSON answer: as it came (text), and read (answer). */
export interface Answer {
  readonly text: string;
  readonly answer: Record<string, unknown>;
}

export function get(target: AdminTarget, path: string): Promise<Answer> {
  return ask(target, 'GET', path, {});
}

/** POST an action: over TCP the endpoint takes none without the token, so none is sent without one. */
export async function post(target: AdminTarget, path: string): Promise<Answer> {
  if (target.tokenFile === null && target.address.kind === 'tcp') {
    throw new UsageError('actions over TCP need the admin token: pass --admin-token-file FILE, the file forkgate reads');
  }
  const headers: http.OutgoingHttpHeaders =
    target.tokenFile === null ? {} : { authorization: `Bearer ${readAdminToken(target.tokenFile)}` };
  return ask(target, 'POST', path, headers);
}

function ask(target: AdminTarget, method: string, path: string, headers: http.OutgoingHttpHeaders): Promise<Answer> {
  const { address } = target;
  const where = address.kind === 'unix' ? { socketPath: address.path } : { host: address.host, port: address.port };
  const endpoint = formatBindAddress(address);
  return new Promise((resolve, reject) => {
    const req = http.request({ ...where, method, path, headers, timeout: ANSWER_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        const answer = readJson(body);
        if (!answer)
          return reject(
            new AdminUnreachableError(`what answers at ${endpoint} is not forkgate's admin endpoint: HTTP ${res.statusCode}, no JSON`),
          );
        if (res.statusCode! >= 300) return reject(refusal(res.statusCode!, refusalOf(answer) ?? `HTTP ${res.statusCode}`));
        resolve({ text: body, answer });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${ANSWER_TIMEOUT_MS / 1000} s`)));
    req.on('error', (error: NodeJS.ErrnoException) => {
      const why = error.code ?? error.message;
      reject(
        new AdminUnreachableError(`cannot reach the admin endpoint at ${endpoint} (${why}): is forkgate serving it there (--admin-bind)?`, {
          cause: error,
        }),
      );
    });
    req.end();
  });
}

function readJson(text: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** A request the endpoint cannot do as given (4xx) is bad usage; its own failure (5xx) a runtime one. */
function refusal(status: number, why: string): AdminRefusedError | AdminFailedError {
  return status < 500 ? new AdminRefusedError(status, why) : new AdminFailedError(status, why);
}

/** The endpoint says why in `error` (or `status`, for /healthz and /readyz). */
function refusalOf(answer: Record<string, unknown>): string | null {
  const why = answer.error ?? answer.status;
  return typeof why === 'string' ? why : null;
}
