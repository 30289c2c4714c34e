import { reusePortSupported } from '../../config/bind.ts';
import type { Settings } from '../../config/settings.ts';
import type { TcpListenAddress } from '../../ipc/messages.ts';
import type { Logger } from '../../log/logger.ts';
import type { Inheritance } from '../upgrade.ts';
import type { Balancer } from './balancer.ts';
import { ensureRequestMigration, ReusePortBalancer } from './reuseport.ts';
import { RoundRobinBalancer } from './round-robin.ts';

export type { Balancer } from './balancer.ts';

export function createBalancer(settings: Settings, logger: Logger, inherited: Inheritance | null): Balancer {
  // A USR2 successor serves what its predecessor listened on, whatever --bind says now.
  if (inherited?.mode === 'handoff') {
    const fds = Array.from({ length: inherited.fdCount }, (_, index) => ({ kind: 'fd' as const, fd: 3 + index }));
    return new RoundRobinBalancer(fds, settings.backlog);
  }
  if (inherited?.mode === 'reuseport') {
    ensureRequestMigration(logger);
    return new ReusePortBalancer(inherited.addresses, settings.backlog);
  }
  if (settings.balance === 'reuseport') {
    const tcp = settings.bind.filter((address) => address.kind === 'tcp');
    if (tcp.length < settings.bind.length) {
      logger.warning('balance reuseport needs TCP addresses only (unix: and fd:// cannot be shared): using round-robin');
    } else if (!reusePortSupported()) {
      logger.warning(`balance reuseport is not supported on ${process.platform}: using round-robin`);
    } else {
      ensureRequestMigration(logger);
      const addresses: TcpListenAddress[] = tcp.map(({ host, port }) => ({ host, port }));
      return new ReusePortBalancer(addresses, settings.backlog);
    }
  }
  return new RoundRobinBalancer(settings.bind, settings.backlog);
}
