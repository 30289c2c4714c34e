/** `forkgate status`: the admin endpoint's /status as a table, or as it is (--json). */
import { count } from '../log/count.ts';
import type { PoolStatus } from '../master/admin.ts';
import { adminTarget, get } from './admin-client.ts';
import { ADMIN_OPTION, parseOptions, type Command } from './command.ts';
import { tableLines } from './table.ts';

export const status: Command = {
  usage: 'forkgate status [--json] [--admin ADDRESS]',
  summary: 'Print the pool: the master, each worker, what the balancer holds.',
  options: [['--json', "The admin endpoint's /status document as it is, instead of the table."], ADMIN_OPTION],
  async run(argv, sources) {
    const { values } = parseOptions('status', argv, { admin: { type: 'string' }, json: { type: 'boolean' } });
    const { text, answer } = await get(await adminTarget(values, sources, false), '/status');
    return values.json ? text : renderStatus(answer as unknown as PoolStatus);
  },
};

export function renderStatus(status: PoolStatus): string {
  const header = ['PID', 'GEN', 'STATE', 'REQUESTS', 'IN-FLIGHT', 'CONNS', 'RSS MiB', 'UPTIME s'];
  const rows = status.workers.map((worker) => [
    String(worker.pid),
    String(worker.generation),
    worker.retiring && worker.state === 'ready' ? 'retiring' : worker.state,
    String(worker.requests),
    String(worker.inFlight),
    String(worker.connections),
    String(Math.round(worker.rssBytes / 2 ** 20)),
    String(worker.uptimeSeconds),
  ]);
  const last = status.lastExit ? `, last exit: pid ${status.lastExit.pid} ${status.lastExit.reason}` : '';
  const proxy =
    status.balance === 'proxy'
      ? [
          `queued ${status.queued}; in rotation: ${
            status.backends
              .map(
                ({ name, inFlight, capacity, takenBack }) =>
                  `${name} ${inFlight}/${capacity}${takenBack > 0 ? ` (${takenBack} taken back)` : ''}`,
              )
              .join(', ') || 'none'
          }`,
        ]
      : [];
  return [
    `master ${status.master.pid} (forkgate ${status.master.version}, Node ${status.master.node}), up ${status.master.uptimeSeconds} s, ${status.ready ? 'ready' : 'NOT READY'}`,
    `generation ${status.generation}, ${status.workers.length}/${count(status.target, 'worker')}, ${status.workerClass}${status.threads > 1 ? ` × ${status.threads} threads` : ''}, balance ${status.balance}, unplanned restarts ${status.restarts}${last}`,
    ...proxy,
    '',
    ...tableLines(header, rows),
    '',
  ].join('\n');
}
