/**
 * Loads for the zero-downtime tests, bounded in count and time: a steady keep-alive load (N connections,
 * each sending requests one after another), and requests each on a fresh connection. Every failure is
 * recorded, never retried.
 */
import * as http from 'node:http';
import { request } from './forkgate.ts';

export interface LoadResult {
  ok: number;
  failures: string[];
  /** When each failed request was sent (Date.now()), in the order of `failures`. */
  failureStarts: number[];
  bodies: Set<string>;
}

export interface Load {
  /** Resolves once at least `count` requests have succeeded (bounded by the load's own limits). */
  reached(count: number): Promise<void>;
  stop(): Promise<LoadResult>;
}

export function keepAliveLoad(url: string, options: { connections: number; maxRequests?: number; maxMs?: number }): Load {
  const result: LoadResult = { ok: 0, failures: [], failureStarts: [], bodies: new Set() };
  const deadline = Date.now() + (options.maxMs ?? 60_000);
  const maxRequests = options.maxRequests ?? 200_000;
  let stopping = false;
  let waiters: { count: number; resolve: () => void }[] = [];

  const one = (agent: http.Agent) =>
    new Promise<void>((resolve) => {
      const startedAt = Date.now();
      const fail = (reason: string) => {
        result.failures.push(reason);
        result.failureStarts.push(startedAt);
      };
      const req = http.get(url, { agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          if (res.statusCode === 200) {
            result.ok++;
            result.bodies.add(body);
          } else {
            fail(`status ${res.statusCode}`);
          }
          resolve();
        });
      });
      req.on('error', (error) => {
        fail(error.message);
        resolve();
      });
    });

  const loops = Array.from({ length: options.connections }, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    while (!stopping && Date.now() < deadline && result.ok + result.failures.length < maxRequests) {
      await one(agent);
      waiters = waiters.filter((waiter) => {
        if (result.ok < waiter.count) return true;
        waiter.resolve();
        return false;
      });
    }
    agent.destroy();
  });
  const finished = Promise.all(loops);

  return {
    reached: (count) =>
      new Promise((resolve, reject) => {
        if (result.ok >= count) return resolve();
        waiters.push({ count, resolve });
        void finished.then(() => (result.ok >= count ? resolve() : reject(new Error(`load ended at ${result.ok} requests`))));
      }),
    stop: async () => {
      stopping = true;
      await finished;
      return result;
    },
  };
}

/** Requests on fresh connections, one after another (bounded), so that accepts happen throughout a reload or upgrade. */
export function freshConnectionLoad(url: string): { stop(): Promise<string[]> } {
  let running = true;
  const failures: string[] = [];
  const done = (async () => {
    for (let i = 0; running && i < 5000; i++) {
      try {
        const reply = await request(url);
        if (reply.status !== 200) failures.push(`status ${reply.status}`);
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return failures;
    },
  };
}
