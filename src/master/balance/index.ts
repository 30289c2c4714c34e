import { reusePortSupported } from '../../config/bind.ts';
import type { Settings } from '../../config/settings.ts';
import type { TcpListenAddress } from '../../ipc/messages.ts';
import type { Logger } from '../../log/logger.ts';
import type { Balancer } from './balancer.ts';
import { ReusePortBalancer } from './reuseport.ts';
import { RoundRobinBalancer } from './round-robin.ts';

export type { Balancer } from './balancer.ts';

export function createBalancer(settings: Settings, logger: Logger): Balancer {
  if (settings.balance === 'reuseport') {
    const tcp = settings.bind.filter((address) => address.kind === 'tcp');
    if (tcp.length < settings.bind.length) {
      logger.warning('balance reuseport needs TCP addresses only (unix: and fd:// cannot be shared): using round-robin');
    } else if (!reusePortSupported()) {
      logger.warning(`balance reuseport is not supported on ${process.platform}: using round-robin`);
    } else {
      const addresses: TcpListenAddress[] = tcp.map(({ host, port }) => ({ host, port }));
      return new ReusePortBalancer(addresses, settings.backlog);
    }
  }
  return new RoundRobinBalancer(settings.bind, settings.backlog);
}
