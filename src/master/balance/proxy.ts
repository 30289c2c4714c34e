import * as fs from 'node:fs';
import type * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BindAddress } from '../../config/bind.ts';
import { fixedUntilRestart, restartNotice, type Settings } from '../../config/settings.ts';
import type { Certificates } from '../../edge/tls.ts';
import type { ListenPlan } from '../../ipc/messages.ts';
import { AccessLog } from '../../log/access-log.ts';
import type { Logger } from '../../log/logger.ts';
import { newBackend, type Backend } from '../../proxy/dispatcher.ts';
import { FrontProxy } from '../../proxy/front.ts';
import { Upstreams } from '../../proxy/upstreams.ts';
import { workerClassFor } from '../../worker/classes/index.ts';
import { MasterListeners } from '../listen.ts';
import type { SocketAccess, WorkerIdentity } from '../privileges.ts';
import type { Inheritance } from '../upgrade.ts';
import type { WorkerHandle } from '../worker-handle.ts';
import type { Balancer, BalancerLoad } from './balancer.ts';

/** What the master's front applies once, at start (Edge, FrontProxy, Upstreams); HUP renews the certificate. */
const APPLIED_AT_START = fixedUntilRestart('with-proxy');

/**
 * The master accepts, parses HTTP (FrontProxy) and sends each request to the least busy serving unit:
 * every worker process, or every thread, listens on a unix socket of its own in a private directory.
 * With --upstream the backends are those servers instead, and no worker is started.
 */
export class ProxyBalancer implements Balancer {
  readonly mode = 'proxy' as const;
  /** As at start (what the master applies), and as the last HUP left them (what new units are given). */
  private readonly started: Settings;
  private settings: Settings;
  private readonly logger: Logger;
  private readonly listeners: MasterListeners;
  private readonly front: FrontProxy;
  private readonly upstreams: Upstreams | null;
  private readonly units = new Map<WorkerHandle, Backend[]>();
  /** The master's own lines in the access log (see FrontProxy.logRequestsTo). */
  private accessLog: AccessLog | null = null;
  /** Holds the units' sockets: only the master and the workers' user may connect to them. */
  private directory: string | null = null;

  constructor(addresses: readonly BindAddress[], settings: Settings, certificates: Certificates | null, logger: Logger) {
    this.started = settings;
    this.settings = settings;
    this.logger = logger;
    this.front = new FrontProxy(settings, certificates, logger, (backend) => this.onBackendDown(backend));
    this.listeners = new MasterListeners(addresses, settings.backlog, { noDelay: true }, (socket) => this.front.accept(socket), logger);
    this.upstreams =
      settings.upstream.length > 0
        ? new Upstreams(settings.upstream, settings.workerConnections, settings.upstreamHealth, this.front.dispatcher, logger)
        : null;
  }

  async listen(clients: SocketAccess, owner: WorkerIdentity | null): Promise<void> {
    // Now that the workers' user has its log files (had the master made them, they would be root's).
    this.openAccessLog(this.settings);
    if (!this.upstreams) {
      this.directory = fs.mkdtempSync(join(tmpdir(), 'forkgate-units-'));
      if (owner) fs.chownSync(this.directory, owner.uid, owner.gid);
    }
    await this.listeners.listen(clients);
    this.upstreams?.start();
  }

  urls(): string[] {
    return this.listeners.urls();
  }

  listenPlan(): ListenPlan {
    return { mode: 'proxy', directory: this.directory! };
  }

  appAddress(): net.AddressInfo | string | null {
    return this.listeners.firstAddress();
  }

  add(worker: WorkerHandle): void {
    this.unitsChanged(worker);
  }

  unitsChanged(worker: WorkerHandle): void {
    const current = this.units.get(worker) ?? [];
    const kept = current.filter((backend) => worker.endpoints.includes(backend.name));
    for (const backend of current) if (!kept.includes(backend)) this.retire(backend);
    const capacity = workerClassFor(this.settings).connectionLimit;
    for (const endpoint of worker.endpoints) {
      if (kept.some((backend) => backend.name === endpoint)) continue;
      const backend = newBackend(endpoint, { socketPath: endpoint }, capacity, true);
      kept.push(backend);
      this.front.dispatcher.add(backend);
    }
    this.units.set(worker, kept);
  }

  remove(worker: WorkerHandle): void {
    for (const backend of this.units.get(worker) ?? []) this.retire(backend);
    this.units.delete(worker);
    // A unit that drains closes its socket, which removes the file; one killed outright leaves it behind.
    const { child } = worker;
    if (child.exitCode !== null || child.signalCode !== null) for (const endpoint of worker.endpoints) fs.rmSync(endpoint, { force: true });
  }

  accepted(): void {} // requests, not connections, go to workers
  closed(): void {}

  handOver(): void {
    this.listeners.handOver();
  }

  inheritance(): { inheritance: Inheritance; fds: number[] } {
    const fds = this.listeners.fds();
    return { inheritance: { mode: 'handoff', addresses: this.listeners.origins() }, fds };
  }

  load(): BalancerLoad {
    return this.front.dispatcher.load();
  }

  settingsChanged(settings: Settings, certificates: Certificates | null): void {
    const previous = this.settings;
    this.settings = settings;
    if (settings.accessLogfile !== previous.accessLogfile || settings.accessLogformat !== previous.accessLogformat) {
      this.accessLog?.close();
      this.openAccessLog(settings);
    }
    this.front.renewCertificates(certificates);
    // Units report their capacity as they start; upstreams are there all along.
    this.upstreams?.setCapacity(settings.workerConnections);
    const notice = restartNotice(APPLIED_AT_START, this.started, settings);
    if (notice) this.logger.warning(`with --balance proxy, ${notice}`);
    // The front is an HTTPS server or a plain one: a reload renews its certificate, not its kind.
    if ((settings.certfile === null) !== (this.started.certfile === null)) {
      this.logger.warning(
        `--certfile: with --balance proxy, turning TLS ${settings.certfile ? 'on' : 'off'} takes effect on restart, not on reload`,
      );
    }
  }

  reopenLogs(files: readonly string[]): void {
    this.accessLog?.reopen(files, this.logger);
  }

  async close(mode: 'graceful' | 'quick'): Promise<void> {
    this.listeners.close();
    await this.front.close(mode);
    this.accessLog?.close();
    this.upstreams?.stop();
    // Units listen on descriptors they hold; the directory's names are no longer needed.
    if (this.directory) fs.rmSync(this.directory, { recursive: true, force: true });
  }

  private openAccessLog(settings: Settings): void {
    const { accessLogfile, accessLogformat } = settings;
    this.accessLog = accessLogfile ? new AccessLog({ accessLogfile, accessLogformat }, this.logger, false) : null;
    this.front.logRequestsTo(this.accessLog, this.upstreams !== null);
  }

  /** Out of rotation; what it has in flight finishes, and its idle pooled connections close now. */
  private retire(backend: Backend): void {
    this.front.dispatcher.remove(backend);
    backend.pool.close();
  }

  private onBackendDown(backend: Backend): void {
    if (this.upstreams) return this.upstreams.markDown(backend, 'connection refused');
    // A unit that refuses connections is on its way out; its worker's exit or next report follows.
    this.logger.debug(`proxy: ${backend.name} refused a connection: out of rotation`);
    this.retire(backend);
  }
}
