/**
 * The admin endpoint (--admin-bind): what load balancers, orchestrators and operators ask the master.
 * GET /healthz, /readyz, /status; POST /workers/+1, /workers/-1, /reload. Off unless configured; meant
 * for loopback or a unix socket, since it can resize and reload the pool. A browser on the operator's
 * machine reaches loopback too, so requests only a web page would send are refused: a domain name as
 * Host (DNS rebinding), an Origin other than the endpoint's own (a cross-site form or fetch).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { BindAddress } from '../config/bind.ts';
import type { BalancerLoad } from './balance/balancer.ts';
import { listeningFd, listenOn } from './listen.ts';
import type { AdminSocket } from './upgrade.ts';

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
  restarts: number;
  lastExit: { pid: number; reason: string } | null;
  workers: WorkerStatus[];
}

export interface AdminActions {
  status(): PoolStatus;
  /** At least one worker is serving. */
  healthy(): boolean;
  /** Serving and not shutting down: a load balancer may send traffic. */
  ready(): boolean;
  signal(signal: 'SIGTTIN' | 'SIGTTOU' | 'SIGHUP'): void;
}

const ACTIONS: Record<string, 'SIGTTIN' | 'SIGTTOU' | 'SIGHUP'> = {
  '/workers/+1': 'SIGTTIN',
  '/workers/-1': 'SIGTTOU',
  '/reload': 'SIGHUP',
};

export class AdminEndpoint {
  /** Where clients reach it: the port chosen for HOST:0; after USR2, the address the first master bound. */
  readonly address: BindAddress;
  private readonly server: http.Server;

  private constructor(server: http.Server, address: BindAddress) {
    this.server = server;
    this.address = address;
  }

  /** Listens on `address`, or, in a USR2 successor, on the descriptor its predecessor handed over. */
  static async start(address: BindAddress, inheritedFd: number | undefined, actions: AdminActions): Promise<AdminEndpoint> {
    const server = http.createServer((req, res) => handle(req, res, address.kind === 'tcp', actions));
    await listenOn(server, inheritedFd === undefined ? address : { kind: 'fd', fd: inheritedFd });
    const bound = server.address();
    const reachable: BindAddress = bound && typeof bound === 'object' ? { kind: 'tcp', host: bound.address, port: bound.port } : address;
    return new AdminEndpoint(server, reachable);
  }

  /** The listening socket, for a USR2 successor to inherit. */
  socket(): AdminSocket {
    return { fd: listeningFd(this.server), address: this.address };
  }

  close(): void {
    this.server.close();
  }

  /** Stops serving here: a USR2 successor serves on its copy of the socket. */
  handOver(): void {
    const boundPath = this.server.address();
    if (typeof boundPath !== 'string') return this.close();
    // Closing a unix socket this process bound removes its file (libuv unlinks it), which the successor's
    // copy answers on: a second name for the socket outlives the close and takes the first one's place.
    const spare = `${boundPath}.${process.pid}`;
    try {
      fs.linkSync(boundPath, spare);
    } finally {
      this.close();
    }
    fs.renameSync(spare, boundPath);
  }
}

function handle(req: http.IncomingMessage, res: http.ServerResponse, overTcp: boolean, actions: AdminActions): void {
  const reply = (status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(`${JSON.stringify(body)}\n`);
  };
  const refused = browserRefusal(req, overTcp);
  if (refused) return reply(403, { error: refused });
  const path = new URL(req.url ?? '/', 'http://admin').pathname;
  if (req.method === 'POST' && path in ACTIONS) {
    actions.signal(ACTIONS[path]!);
    return reply(202, { accepted: path });
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, { error: `${req.method} ${path} is not allowed` });
  switch (path) {
    case '/healthz':
      return actions.healthy() ? reply(200, { status: 'ok' }) : reply(503, { status: 'no worker is serving' });
    case '/readyz':
      return actions.ready() ? reply(200, { status: 'ready' }) : reply(503, { status: 'not ready' });
    case '/status':
      return reply(200, actions.status());
    default:
      return reply(404, { error: `no ${path}; try /healthz, /readyz, /status` });
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
