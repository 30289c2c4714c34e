/** `forkgate status [--admin ADDRESS]`: the admin endpoint's /status as a table. */
import * as http from 'node:http';
import { parseArgs } from 'node:util';
import { parseBindAddress, type BindAddress } from './config/bind.ts';
import { resolveSettings, type SettingSources } from './config/load.ts';
import { SettingError } from './errors.ts';
import type { PoolStatus } from './master/admin.ts';

export async function statusCommand(argv: string[], sources: SettingSources): Promise<string> {
  const { values } = parseArgs({ args: argv, options: { admin: { type: 'string' } }, strict: true });
  let address: BindAddress | null;
  if (values.admin !== undefined) {
    const parsed = parseBindAddress(values.admin);
    if (typeof parsed === 'string') throw new SettingError(`--admin: expected HOST:PORT or unix:PATH; ${parsed}`);
    address = parsed;
  } else {
    // The same config file and environment the master reads tell where its admin endpoint is.
    address = (await resolveSettings({ ...sources, argv: [] })).settings.adminBind;
  }
  if (!address || address.kind === 'fd') {
    throw new SettingError('status: no admin endpoint; pass --admin HOST:PORT or unix:PATH, or set admin-bind');
  }
  return renderStatus(await fetchStatus(address));
}

function fetchStatus(address: BindAddress): Promise<PoolStatus> {
  const target = address.kind === 'unix' ? { socketPath: address.path } : { host: (address as { host: string }).host, port: (address as { port: number }).port };
  return new Promise((resolve, reject) => {
    const req = http.get({ ...target, path: '/status', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as PoolStatus);
        } catch (error) {
          reject(error);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('the admin endpoint did not answer within 5 s')));
    req.on('error', reject);
  });
}

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
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) => cells.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd();
  const last = status.lastExit ? `, last exit: pid ${status.lastExit.pid} ${status.lastExit.reason}` : '';
  const proxy = status.balance === 'proxy'
    ? [
        `queued ${status.queued}; in rotation: ${
          status.backends
            .map(({ name, inFlight, capacity, takenBack }) => `${name} ${inFlight}/${capacity}${takenBack > 0 ? ` (${takenBack} taken back)` : ''}`)
            .join(', ') || 'none'
        }`,
      ]
    : [];
  return [
    `master ${status.master.pid} (forkgate ${status.master.version}, Node ${status.master.node}), up ${status.master.uptimeSeconds} s, ${status.ready ? 'ready' : 'NOT READY'}`,
    `generation ${status.generation}, ${status.workers.length}/${status.target} workers, ${status.workerClass}${status.threads > 1 ? ` × ${status.threads} threads` : ''}, balance ${status.balance}, restarts ${status.restarts}${last}`,
    ...proxy,
    '',
    line(header),
    ...rows.map(line),
    '',
  ].join('\n');
}
