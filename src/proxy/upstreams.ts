/**
 * --upstream: servers forkgate fronts instead of its own workers. Each is a backend in the dispatcher
 * while it is up. One that refuses a connection is taken out at once (the request goes to another);
 * every second each one is checked: with --upstream-health by GETting that path (2xx or 3xx within a
 * second is up), without it only those that are out, by opening a connection.
 */
import * as http from 'node:http';
import { formatUpstream, type Upstream } from '../config/settings.ts';
import type { Logger } from '../log/logger.ts';
import { newBackend, type Backend, type Dispatcher } from './dispatcher.ts';
import { connectTo, type HopTarget } from '../hop/pool.ts';

const CHECK_INTERVAL_MS = 1000;
const CHECK_TIMEOUT_MS = 1000;

export class Upstreams {
  private readonly backends: Backend[];
  private readonly dispatcher: Dispatcher;
  private readonly healthPath: string | null;
  private readonly logger: Logger;
  private timer: NodeJS.Timeout | null = null;
  private readonly checking = new Set<Backend>();

  constructor(upstreams: readonly Upstream[], capacity: number, healthPath: string | null, dispatcher: Dispatcher, logger: Logger) {
    this.dispatcher = dispatcher;
    this.healthPath = healthPath;
    this.logger = logger;
    this.backends = upstreams.map((upstream) => {
      const target: HopTarget = upstream.kind === 'unix' ? { socketPath: upstream.path } : { host: upstream.host, port: upstream.port };
      return newBackend(formatUpstream(upstream), target, capacity, false);
    });
  }

  /** How many requests each may have at once (--worker-connections), anew on reload. */
  setCapacity(capacity: number): void {
    for (const backend of this.backends) this.dispatcher.setCapacity(backend, capacity);
  }

  /** Every upstream starts in rotation; the first checks (at once) take out the ones that are not up. */
  start(): void {
    for (const backend of this.backends) this.dispatcher.add(backend);
    this.check();
    this.timer = setInterval(() => this.check(), CHECK_INTERVAL_MS);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const backend of this.backends) backend.pool.close();
  }

  /** A request could not connect: out until a check passes. */
  markDown(backend: Backend, reason: string): void {
    if (!this.dispatcher.has(backend)) return;
    this.dispatcher.remove(backend);
    this.logger.warning(`Upstream ${backend.name} is out of rotation: ${reason}`);
  }

  private check(): void {
    for (const backend of this.backends) {
      const inRotation = this.dispatcher.has(backend);
      if ((!this.healthPath && inRotation) || this.checking.has(backend)) continue;
      this.checking.add(backend);
      const probe = this.healthPath ? getHealth(backend, this.healthPath) : connects(backend);
      void probe.then((problem) => {
        this.checking.delete(backend);
        if (problem && this.dispatcher.has(backend)) this.markDown(backend, problem);
        else if (!problem && !this.dispatcher.has(backend)) {
          this.dispatcher.add(backend);
          this.logger.info(`Upstream ${backend.name} is back in rotation`);
        }
      });
    }
  }
}

/** Null when healthy, else what was wrong. */
function getHealth(backend: Backend, path: string): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.get({ ...backend.target, path, agent: false, timeout: CHECK_TIMEOUT_MS }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      resolve(status >= 200 && status < 400 ? null : `GET ${path} answered ${status}`);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)));
    req.on('error', (error) => resolve(`GET ${path} failed: ${error.message}`));
  });
}

function connects(backend: Backend): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = connectTo(backend.target);
    socket.setTimeout(CHECK_TIMEOUT_MS, () => socket.destroy(new Error(`no connection within ${CHECK_TIMEOUT_MS} ms`)));
    socket.once('connect', () => {
      socket.destroy();
      resolve(null);
    });
    socket.once('error', (error) => resolve(`connect failed: ${error.message}`));
  });
}
