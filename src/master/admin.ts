/**
 * The admin endpoint (--admin-bind): GET / (the dashboard) and /events (its stream), /healthz, /readyz,
 * /status, /metrics; POST /workers/N|+N|-N, /reload, /stop. A browser reaches loopback too, so what only
 * a web page would send (a domain name as Host, a foreign Origin) is refused. Actions need the
 * --admin-token-file token over TCP; over a unix socket its mode (0600) guards them, unless a token is set.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import type { BindAddress } from '../config/bind.ts';
import { readSettingFile } from '../config/setting-file.ts';
import { SettingError } from '../errors.ts';
import type { BalancerLoad } from './balance/balancer.ts';
import { closeForSuccessor, listenEndpoint, listeningFd } from './listen.ts';
import type { EndpointSocket } from './upgrade.ts';
import { serveMetrics, type Exposition } from '../metrics/endpoint.ts';
import { sendDashboard, streamSnapshots } from '../metrics/dashboard.ts';
import type { PoolSnapshot } from '../metrics/pool-metrics.ts';

export interface WorkerStatus {
  pid: number;
  id: number;
  generation: number;
  state: string;
  retiring: boolean;
  requests: number;
  inFlight: number;
  connections: number;
  rssBytes: number;
  uptimeSeconds: number;
}

/** The pool as /status shows it; queued and backends are the balancer's load. */
export interface PoolStatus extends BalancerLoad {
  master: { pid: number; version: string; node: string; uptimeSeconds: number };
  generation: number;
  target: number;
  balance: string;
  workerClass: string;
  threads: number;
  ready: boolean;
  /**
   * Workers replaced because they left while they should have served (a crash, a kill, a hang), not as
   * asked (a reload, --max-requests, --max-memory); forkgate_worker_restarts_total counts both, by reason.
   */
  restarts: number;
  lastExit: { pid: number; reason: string } | null;
  workers: WorkerStatus[];
}

/** A pool size asked for: N workers, or N more (+N) or fewer (-N) than now. */
export type PoolSizeChange = { to: number } | { by: number };

/** The pool size after a resize, or the size it stays at and why (beyond the bounds, no pool). */
export type ResizeOutcome = { target: number; previous: number } | { target: number; refused: string };

/** What the POST actions ask of the master; `request` ("POST /reload") is for its log. */
export interface AdminActions {
  status(): PoolStatus;
  /** At least one worker is serving. */
  healthy(): boolean;
  /** Serving and not shutting down: a load balancer may send traffic. */
  ready(): boolean;
  /** As HUP does. */
  reload(request: string): void;
  /** As TERM does: a graceful stop, after --shutdown-delay. */
  stop(request: string): void;
  resize(change: PoolSizeChange, request: string): ResizeOutcome;
  /** GET /metrics: the Prometheus exposition. */
  metrics: Exposition;
  /** GET /events: the dashboard's view of the pool. */
  snapshot(): Promise<PoolSnapshot>;
}

/** What GET (and HEAD) reach; POST reaches the actions. */
const PAGES = ['/', '/events', '/healthz', '/readyz', '/status', '/metrics'];
const POOL_SIZE = /^\/workers\/([+-]?)(\d+)$/;
const POOL_SIZE_FORMS = '/workers/N (the pool size), /workers/+N or /workers/-N';

/** What decides who may ask: over TCP a browser can, and actions need the token in --admin-token-file. */
interface Guard {
  readonly overTcp: boolean;
  readonly tokenFile: string | null;
}

export class AdminEndpoint {
  /** Where clients reach it: the port chosen for HOST:0; after USR2, the address the first master bound. */
  readonly address: BindAddress;
  private readonly server: http.Server;

  private constructor(server: http.Server, address: BindAddress) {
    this.server = server;
    this.address = address;
  }

  /**
   * Listens on `address`, or, in a USR2 successor, on the descriptor its predecessor handed over.
   * tokenFile: --admin-token-file, read on each action so that the token can be rotated.
   */
  static async start(
    address: BindAddress,
    inheritedFd: number | undefined,
    tokenFile: string | null,
    actions: AdminActions,
  ): Promise<AdminEndpoint> {
    const guard: Guard = { overTcp: address.kind === 'tcp', tokenFile };
    const server = http.createServer((req, res) => handle(req, res, guard, actions));
    return new AdminEndpoint(server, await listenEndpoint(server, address, inheritedFd));
  }

  /** The listening socket, for a USR2 successor to inherit. */
  socket(): EndpointSocket {
    return { fd: listeningFd(this.server), address: this.address };
  }

  close(): void {
    this.server.close();
  }

  /** Stops serving here: a USR2 successor serves on its copy of the socket. */
  handOver(): void {
    closeForSuccessor(this.server);
  }
}

function handle(req: http.IncomingMessage, res: http.ServerResponse, guard: Guard, actions: AdminActions): void {
  const reply = (status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
    res.end(`${JSON.stringify(body)}\n`);
  };
  const refused = browserRefusal(req, guard.overTcp);
  if (refused) return reply(403, { error: refused });
  const path = new URL(req.url ?? '/', 'http://admin').pathname;
  const action = path === '/reload' || path === '/stop' || path.startsWith('/workers/');
  if (!action && !PAGES.includes(path)) {
    return reply(404, { error: `no ${path}; try GET ${PAGES.join(', ')}, or POST /reload, /stop, ${POOL_SIZE_FORMS}` });
  }
  // A known path asked with the other method: 405, saying which one it takes.
  const allowed = action ? 'POST' : 'GET, HEAD';
  if (!allowed.split(', ').includes(req.method ?? '')) {
    return reply(405, { error: `${req.method} ${path} is not allowed; use ${allowed}` }, { allow: allowed });
  }
  if (action) {
    const denied = actionRefusal(req, guard);
    if (denied) return reply(denied.status, { error: denied.error }, denied.status === 401 ? { 'www-authenticate': 'Bearer' } : {});
    const request = `POST ${path}`;
    if (path === '/reload' || path === '/stop') {
      actions[path === '/reload' ? 'reload' : 'stop'](request);
      return reply(202, { accepted: path });
    }
    const [, sign, digits] = POOL_SIZE.exec(path) ?? [];
    if (digits === undefined) return reply(400, { error: `expected ${POOL_SIZE_FORMS}; got ${path}` });
    const size = Number(digits);
    const outcome = actions.resize(sign ? { by: sign === '+' ? size : -size } : { to: size }, request);
    if ('refused' in outcome) return reply(400, { error: outcome.refused, target: outcome.target });
    return reply(202, { accepted: path, target: outcome.target, previous: outcome.previous });
  }
  switch (path) {
    case '/healthz':
      return actions.healthy() ? reply(200, { status: 'ok' }) : reply(503, { status: 'no worker is serving' });
    case '/readyz':
      return actions.ready() ? reply(200, { status: 'ready' }) : reply(503, { status: 'not ready' });
    case '/status':
      return reply(200, actions.status());
    case '/metrics':
      return serveMetrics(req, res, actions.metrics);
    case '/':
      return sendDashboard(res);
    case '/events':
      return streamSnapshots(req, res, () => actions.snapshot());
  }
}

/** Why a request that only a web page would send is refused, or null. */
function browserRefusal(req: http.IncomingMessage, overTcp: boolean): string | null {
  const { host, origin } = req.headers;
  // A DNS-rebinding page names its own domain; no browser reaches a unix socket; HTTP/1.0 sends no Host.
  if (overTcp && host !== undefined && !isLocalHost(host)) {
    return `Host '${host}' is not an IP address or localhost: the admin endpoint refuses domain names (DNS rebinding)`;
  }
  if (origin !== undefined && !sameOrigin(origin, host)) {
    return `Origin '${origin}' is not this endpoint's own: the admin endpoint refuses cross-site requests`;
  }
  return null;
}

/** HOST[:PORT] where HOST is an IP literal ([::1] for IPv6) or localhost. */
function isLocalHost(host: string): boolean {
  const match = /^(?:\[([^\]]+)\]|([^:]+))(?::\d+)?$/.exec(host);
  const name = match?.[1] ?? match?.[2];
  return name !== undefined && (name.toLowerCase() === 'localhost' || net.isIP(name) !== 0);
}

/** Browsers send Origin on cross-site POSTs; the endpoint's own origin is http:// and its Host. */
function sameOrigin(origin: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    const url = new URL(origin);
    return url.protocol === 'http:' && url.host === new URL(`http://${host}`).host;
  } catch {
    return false;
  }
}

/** Why an action is not done, or null: it needs the token in --admin-token-file, or over TCP the file. */
function actionRefusal(req: http.IncomingMessage, guard: Guard): { status: 401 | 403 | 500; error: string } | null {
  if (guard.tokenFile === null) {
    return guard.overTcp ? { status: 403, error: 'actions over TCP need a token: start forkgate with --admin-token-file' } : null;
  }
  let token: string;
  try {
    token = readAdminToken(guard.tokenFile);
  } catch (error) {
    return { status: 500, error: (error as Error).message };
  }
  const given = /^Bearer +(.+?) *$/i.exec(req.headers.authorization ?? '')?.[1];
  if (given === undefined) return { status: 401, error: 'actions need Authorization: Bearer TOKEN, with the token in --admin-token-file' };
  if (!sameSecret(given, token)) return { status: 401, error: 'the bearer token is not the one in --admin-token-file' };
  return null;
}

/** Digests of equal length, so the time the comparison takes tells nothing of the token, its length included. */
function sameSecret(given: string, token: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(given), digest(token));
}

/** The token in --admin-token-file, trimmed; a file that cannot be read or holds none is a bad setting. */
export function readAdminToken(file: string): string {
  const token = readSettingFile('admin-token-file', file).toString('utf8').trim();
  if (token === '') throw new SettingError(`--admin-token-file ${file}: holds no token (the file is empty)`);
  return token;
}
