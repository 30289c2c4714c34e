import { readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { nominalAddress } from '../../config/bind.ts';
import type { Logger } from '../../log/logger.ts';
import type { ListenPlan, TcpListenAddress } from '../../ipc/messages.ts';
import type { Inheritance } from '../upgrade.ts';
import type { Balancer, BalancerLoad } from './balancer.ts';
import type { SocketAccess, WorkerIdentity } from '../privileges.ts';
import { SettingError } from '../../errors.ts';

/**
 * Every worker binds each address itself with SO_REUSEPORT and the kernel spreads connections; the
 * master binds nothing and only supervises. Fastest, but a worker that closes its listener resets the
 * connections still in its accept queue unless net.ipv4.tcp_migrate_req=1 (Linux ≥ 5.14).
 */
export class ReusePortBalancer implements Balancer {
  readonly mode = 'reuseport' as const;
  private addresses: TcpListenAddress[];
  private readonly backlog: number;
  /** A USR2 successor's: its predecessor's workers hold the ports, and its own join them. */
  private readonly inherited: boolean;

  constructor(addresses: readonly TcpListenAddress[], backlog: number, inherited: boolean) {
    this.addresses = [...addresses];
    this.backlog = backlog;
    this.inherited = inherited;
  }

  /**
   * Binds each address once and lets it go, so that an address the workers could not bind fails the
   * start here, as in the other modes, before "Listening at:". Port 0 means "any free port": the one
   * picked here is the one every worker binds. Workers started as --user bind as that user: a port
   * below the unprivileged range is refused here rather than by every worker as it boots.
   */
  async listen(_clients: SocketAccess, workers: WorkerIdentity | null): Promise<void> {
    if (this.inherited) return;
    if (workers && workers.uid !== 0) refusePrivilegedPorts(this.addresses);
    const bound: TcpListenAddress[] = [];
    for (const address of this.addresses) bound.push({ ...address, port: await bindOnce(address) });
    this.addresses = bound;
  }

  urls(): string[] {
    return this.addresses.map(({ host, port }) => `http://${host.includes(':') ? `[${host}]` : host}:${port}`);
  }

  listenPlan(): ListenPlan {
    return { mode: 'reuseport', addresses: this.addresses, backlog: this.backlog };
  }

  appAddress(): net.AddressInfo | string {
    const [first] = this.addresses;
    return nominalAddress(first && { kind: 'tcp', host: first.host, port: first.port });
  }

  reopenLogs(): void {} // the workers write every line

  handOver(): void {} // the successor's workers bind the addresses themselves

  inheritance(): { inheritance: Inheritance; fds: number[] } {
    return { inheritance: { mode: 'reuseport', addresses: this.addresses }, fds: [] };
  }

  // The kernel balances: nothing to track per worker.
  add(): void {}
  unitsChanged(): void {}
  load(): BalancerLoad {
    return { queued: 0, backends: [] };
  }
  settingsChanged(): void {}
  remove(): void {}
  accepted(): void {}
  closed(): void {}
  async close(): Promise<void> {}
}

const UNPRIVILEGED_PORT_START = '/proc/sys/net/ipv4/ip_unprivileged_port_start';

function refusePrivilegedPorts(addresses: readonly TcpListenAddress[]): void {
  let start = 1024;
  try {
    start = Number(readFileSync(UNPRIVILEGED_PORT_START, 'utf8'));
  } catch {} // not Linux, or an older one: the classic limit
  const privileged = addresses.find(({ port }) => port !== 0 && port < start);
  if (!privileged) return;
  throw new SettingError(
    `--bind ${privileged.host}:${privileged.port}: with --balance reuseport (and --threads) the workers bind for themselves, and as --user they may not bind ports below ${start}; use --balance round-robin (the master binds), or a port from ${start} up`,
  );
}

const MIGRATE_REQ = '/proc/sys/net/ipv4/tcp_migrate_req';

/**
 * A draining worker's listener closes, and Linux resets the connections in its accept queue unless
 * net.ipv4.tcp_migrate_req=1 (Linux 5.14+) moves them to another listener. forkgate sets it where it
 * may (as root; it belongs to the network namespace), else says how.
 */
export function ensureRequestMigration(logger: Logger): void {
  let current: string;
  try {
    current = readFileSync(MIGRATE_REQ, 'utf8').trim();
  } catch {
    logger.warning(
      'balance reuseport: this kernel cannot migrate queued connections (net.ipv4.tcp_migrate_req, Linux 5.14+); reloads may reset a few connections',
    );
    return;
  }
  if (current === '1') return;
  try {
    writeFileSync(MIGRATE_REQ, '1');
    logger.info('balance reuseport: set net.ipv4.tcp_migrate_req=1, so a draining worker hands its queued connections to the others');
  } catch {
    logger.warning(
      'balance reuseport: net.ipv4.tcp_migrate_req is 0, so reloads may reset connections queued on a draining worker; run `sysctl -w net.ipv4.tcp_migrate_req=1`',
    );
  }
}

/**
 * Binds without SO_REUSEPORT, so that a port any other socket holds is refused, even one that would let
 * the workers share it (another server started with reuseport); resolves with the port bound.
 */
function bindOnce({ host, port }: TcpListenAddress): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen({ host, port }, () => {
      const bound = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(bound));
    });
  });
}
