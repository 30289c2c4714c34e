/**
 * The admin endpoint (--admin-bind): what load balancers, orchestrators and operators ask the master.
 * GET /healthz, /readyz, /status; POST /workers/+1, /workers/-1, /reload. Off unless configured; meant
 * for loopback or a unix socket, since it can resize and reload the pool.
 */
import * as http from 'node:http';
import type { BindAddress } from '../config/bind.ts';
import type { BalancerLoad } from './balance/balancer.ts';
import { listenOn } from './listen.ts';

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

export async function startAdmin(address: BindAddress, actions: AdminActions): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(`${JSON.stringify(body)}\n`);
    };
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
  });
  await listenOn(server, address);
  return server;
}
