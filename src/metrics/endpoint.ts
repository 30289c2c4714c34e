/**
 * --metrics-bind: an HTTP server that answers GET /metrics and refuses everything else, so Prometheus
 * can scrape over a network the admin endpoint's actions must not be reachable from.
 */
import * as http from 'node:http';
import { formatBindAddress, type BindAddress } from '../config/bind.ts';
import { closeForSuccessor, listenEndpoint, listeningFd } from '../master/listen.ts';
import type { EndpointSocket } from '../master/upgrade.ts';

export type Exposition = () => Promise<{ contentType: string; text: string }>;

/** Answers a scrape (GET or HEAD) with the exposition; used by the admin endpoint too. */
export function serveMetrics(req: http.IncomingMessage, res: http.ServerResponse, exposition: Exposition): void {
  exposition().then(
    ({ contentType, text }) => {
      res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : text);
    },
    (error: Error) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`cannot collect the metrics: ${error.message}\n`);
    },
  );
}

export class MetricsEndpoint {
  /** Where scrapes reach it: the port chosen for HOST:0; after USR2, the address the first master bound. */
  private readonly address: BindAddress;
  private readonly server: http.Server;

  private constructor(server: http.Server, address: BindAddress) {
    this.server = server;
    this.address = address;
  }

  /**
   * Listens on `address` alone, as the admin endpoint does (a unix socket made mode 0600), or, in a USR2
   * successor, on the descriptor its predecessor handed over: no other master binds it meanwhile.
   */
  static async start(address: BindAddress, inheritedFd: number | undefined, exposition: Exposition): Promise<MetricsEndpoint> {
    const server = http.createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://metrics').pathname;
      const refuse = (status: number, text: string, headers: http.OutgoingHttpHeaders = {}) => {
        res.writeHead(status, { 'content-type': 'text/plain', ...headers });
        res.end(`${text}\n`);
      };
      if (path !== '/metrics') return refuse(404, `no ${path} here: only GET /metrics`);
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return refuse(405, `${req.method} is not allowed: only GET /metrics`, { allow: 'GET, HEAD' });
      serveMetrics(req, res, exposition);
    });
    return new MetricsEndpoint(server, await listenEndpoint(server, address, inheritedFd));
  }

  /** Where scrapes reach it, for the log. */
  url(): string {
    const bound = formatBindAddress(this.address);
    return this.address.kind === 'tcp' ? `http://${bound}/metrics` : bound;
  }

  /** The listening socket, for a USR2 successor to inherit. */
  socket(): EndpointSocket {
    return { fd: listeningFd(this.server), address: this.address };
  }

  close(): void {
    if (this.server.listening) this.server.close();
  }

  /** A USR2 successor serves here now: close this copy, leaving a unix socket's file to it. */
  handOver(): void {
    if (this.server.listening) closeForSuccessor(this.server);
  }
}
