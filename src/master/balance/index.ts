import { formatBindAddress, reusePortSupported, type BindAddress } from '../../config/bind.ts';
import type { Settings } from '../../config/settings.ts';
import type { Certificates } from '../../edge/tls.ts';
import type { TcpListenAddress } from '../../ipc/messages.ts';
import type { Logger } from '../../log/logger.ts';
import type { Inheritance } from '../upgrade.ts';
import type { Balancer } from './balancer.ts';
import { ensureRequestMigration, ReusePortBalancer } from './reuseport.ts';
import { ProxyBalancer } from './proxy.ts';
import { RoundRobinBalancer } from './round-robin.ts';

export type { Balancer } from './balancer.ts';

/** certificates: the front's with --balance proxy, which terminates TLS in the master. */
export function createBalancer(
  settings: Settings,
  certificates: Certificates | null,
  logger: Logger,
  inherited: Inheritance | null,
): Balancer {
  // A USR2 successor serves what its predecessor listened on, whatever --bind says now.
  if (inherited) warnOfNewBinds(settings, inherited, logger);
  if (inherited?.mode === 'handoff') {
    const fds = inherited.addresses.map((origin, index) => ({ kind: 'fd' as const, fd: 3 + index, origin }));
    return settings.balance === 'proxy'
      ? new ProxyBalancer(fds, settings, certificates, logger)
      : new RoundRobinBalancer(fds, settings, logger);
  }
  if (settings.balance === 'proxy') return new ProxyBalancer(settings.bind, settings, certificates, logger);
  const shared = inherited?.mode === 'reuseport' ? inherited.addresses : reusePortAddresses(settings, logger);
  if (!shared) return new RoundRobinBalancer(settings.bind, settings, logger);
  ensureRequestMigration(logger);
  return new ReusePortBalancer(shared, settings.backlog, inherited !== null);
}

function warnOfNewBinds(settings: Settings, inherited: Inheritance, logger: Logger): void {
  const serving =
    inherited.mode === 'handoff' ? inherited.addresses : inherited.addresses.map((address) => ({ kind: 'tcp' as const, ...address }));
  const named = (addresses: readonly BindAddress[]) => addresses.map(formatBindAddress).join(', ');
  if (named(serving) === named(settings.bind)) return;
  logger.warning(
    `--bind ${named(settings.bind)}: an upgrade serves on the sockets it takes over (${named(serving)}); a new --bind takes a restart`,
  );
}

/** The addresses every worker binds with SO_REUSEPORT, or null (with the reason logged) for round-robin. */
function reusePortAddresses(settings: Settings, logger: Logger): TcpListenAddress[] | null {
  if (settings.balance !== 'reuseport') return null;
  const tcp = settings.bind.filter((address) => address.kind === 'tcp');
  if (tcp.length < settings.bind.length) {
    logger.warning('balance reuseport needs TCP addresses only (unix: and fd:// cannot be shared): using round-robin');
    return null;
  }
  if (!reusePortSupported()) {
    logger.warning(`balance reuseport is not supported on ${process.platform}: using round-robin`);
    return null;
  }
  return tcp.map(({ host, port }) => ({ host, port }));
}
