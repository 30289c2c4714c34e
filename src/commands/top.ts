/** `forkgate top`: the dashboard's live view of the pool in a terminal, as `pm2 monit` gives one. */
import * as http from 'node:http';
import type { PoolSnapshot } from '../metrics/pool-metrics.ts';
import { quantileMs } from '../metrics/quantile.ts';
import { DURATION_BUCKETS } from '../metrics/report.ts';
import { formatBindAddress } from '../config/bind.ts';
import { AdminUnreachableError, UsageError } from '../errors.ts';
import { count } from '../log/count.ts';
import { adminTarget, type AdminTarget } from './admin-client.ts';
import { ADMIN_OPTION, parseOptions, type Command } from './command.ts';
import { tableLines } from './table.ts';

/** Clears a terminal and puts the cursor home: each frame replaces the last. */
const CLEAR = '\x1b[H\x1b[2J';

export const top: Command = {
  usage: 'forkgate top [--frames N] [--admin ADDRESS]',
  summary: 'Show the pool live, once a second: request rate, p50/p99, each worker, the last restarts. Ctrl-C leaves.',
  options: [['--frames N', 'Stop after N frames, each printed below the last (for a script or a log) rather than in place.'], ADMIN_OPTION],
  async run(argv, sources) {
    const { values } = parseOptions('top', argv, { admin: { type: 'string' }, frames: { type: 'string' } });
    const frames = values.frames === undefined ? Infinity : Number(values.frames);
    if (frames !== Infinity && (!Number.isInteger(frames) || frames < 1))
      throw new UsageError(`--frames: expected a whole number ≥ 1; got '${values.frames}'`);
    const inPlace = frames === Infinity && process.stdout.isTTY;
    let previous: PoolSnapshot | null = null;
    let shown = 0;
    await follow(await adminTarget(values, sources, false), (pool) => {
      if (previous) {
        process.stdout.write(`${inPlace ? CLEAR : ''}${renderTop(pool, previous)}\n`);
        shown++;
      }
      previous = pool;
      return shown < frames;
    });
    return '';
  },
};

/** Reads /events until `onSnapshot` returns false; rejects if the stream ends first (the master stopped). */
function follow(target: AdminTarget, onSnapshot: (pool: PoolSnapshot) => boolean): Promise<void> {
  const { address } = target;
  const where = address.kind === 'unix' ? { socketPath: address.path } : { host: address.host, port: address.port };
  const endpoint = formatBindAddress(address);
  return new Promise((resolve, reject) => {
    const req = http.get({ ...where, path: '/events' }, (res) => {
      if (res.statusCode !== 200 || !String(res.headers['content-type']).startsWith('text/event-stream')) {
        res.resume();
        return reject(
          new AdminUnreachableError(
            `what answers at ${endpoint} serves no /events (HTTP ${res.statusCode}): is it forkgate's admin endpoint?`,
          ),
        );
      }
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
          const event = text.slice(0, end);
          text = text.slice(end + 2);
          if (event.startsWith('data: ') && !onSnapshot(JSON.parse(event.slice(6)) as PoolSnapshot)) {
            req.destroy();
            return resolve();
          }
        }
      });
      // The master stopped (or went away) while it was watched: said, and not a success.
      res.on('close', () => reject(new AdminUnreachableError(`the master at ${endpoint} stopped: its stream of the pool ended`)));
    });
    req.on('error', (error: NodeJS.ErrnoException) => {
      reject(
        new AdminUnreachableError(
          `cannot reach the admin endpoint at ${endpoint} (${error.code ?? error.message}): is forkgate serving it there (--admin-bind)?`,
          { cause: error },
        ),
      );
    });
  });
}

export function renderTop(pool: PoolSnapshot, previous: PoolSnapshot): string {
  const seconds = (pool.at - previous.at) / 1000;
  const delta = pool.durationBuckets.map((bucket, i) => bucket - (previous.durationBuckets[i] ?? 0));
  const ms = (q: number) => {
    const value = quantileMs(DURATION_BUCKETS, delta, q);
    return value === null ? '-' : value.toFixed(1);
  };
  const before = new Map(previous.workers.map((worker) => [worker.pid, worker.cpuSeconds]));
  const header = ['SLOT', 'PID', 'STATE', 'REQUESTS', 'RSS MiB', 'CPU %', 'LOOP %', 'AGE s'];
  const rows = pool.workers.map((worker) => {
    const cpu = before.has(worker.pid) ? (((worker.cpuSeconds - before.get(worker.pid)!) / seconds) * 100).toFixed(0) : '-';
    return [
      String(worker.slot),
      String(worker.pid),
      worker.state,
      String(worker.requests),
      String(Math.round(worker.rssBytes / 2 ** 20)),
      cpu,
      (worker.eventLoopUtilization * 100).toFixed(0),
      String(Math.round(worker.uptimeSeconds)),
    ];
  });
  const restarts = pool.restarts
    .slice(-5)
    .reverse()
    .map((restart) => `  ${new Date(restart.at).toISOString().slice(11, 19)}  slot ${restart.slot}  pid ${restart.pid}  ${restart.reason}`);
  return [
    `${Math.round((pool.requests - previous.requests) / seconds)} req/s  p50 ${ms(0.5)} ms  p99 ${ms(0.99)} ms  ${pool.requests} requests since start  queued ${pool.queued}`,
    `${count(pool.workers.length, 'worker')} (${pool.target} wanted)`,
    '',
    ...tableLines(header, rows),
    ...(restarts.length > 0 ? ['', 'last restarts:', ...restarts] : []),
    '',
  ].join('\n');
}
