/**
 * --metrics-bind: an HTTP server that answers GET /metrics and refuses everything else, so Prometheus
 * can scrape over a network the admin endpoint's actions must not be reachable from.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import type { BindAddress } from '../config/bind.ts';
import { closeForSuccessor, listenOn } from '../master/listen.ts';

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
  private readonly server: http.Server;

  private constructor(server: http.Server) {
    this.server = server;
  }

  /**
   * A TCP port is bound with SO_REUSEPORT, so a USR2 successor binds it beside this master; a unix socket
   * is made mode 0600, as the admin endpoint's.
   */
  static async start(address: BindAddress, exposition: Exposition): Promise<MetricsEndpoint> {
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
    if (address.kind === 'tcp') {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: address.host, port: address.port, reusePort: true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } else {
      await listenOn(server, address, { mode: 0o600 });
    }
    return new MetricsEndpoint(server);
  }

  /** Where scrapes reach it, for the log (the port chosen for HOST:0). */
  url(): string {
    const bound = this.server.address();
    if (typeof bound === 'string') return `unix:${bound}`;
    const host = bound && net.isIPv6(bound.address) ? `[${bound.address}]` : bound?.address;
    return `http://${host}:${bound?.port}/metrics`;
  }

  close(): void {
    if (this.server.listening) this.server.close();
  }

  /** A USR2 successor serves here now: close this copy, leaving a unix socket's file to it. */
  handOver(): void {
    if (this.server.listening) closeForSuccessor(this.server);
  }
}
