import * as fs from 'node:fs';
import * as net from 'node:net';
import { dirname } from 'node:path';
import { formatBindAddress, type BindAddress } from '../config/bind.ts';
import type { Logger } from '../log/logger.ts';
import { acceptFailures, type RecurringWarning } from '../log/recurring.ts';
import type { SocketAccess } from './privileges.ts';
import { SettingError } from '../errors.ts';

/**
 * Listens on any bind form; rejects with the OS error (address in use, permission denied). A unix
 * socket it creates gets `access`; a descriptor (systemd's, a predecessor's) keeps its owner and mode,
 * but is listened on again, with `backlog`.
 */
export async function listenOn(server: net.Server, address: BindAddress, access: SocketAccess, backlog?: number): Promise<void> {
  if (address.kind === 'unix') {
    // libuv reports a missing directory as EACCES, which sends one looking for a permission problem.
    const directory = dirname(address.path);
    if (!fs.existsSync(directory)) throw new Error(`unix:${address.path}: no such directory ${directory}`);
    await removeStaleSocket(address.path);
  }
  if (address.kind === 'fd') assertSocketGiven(address.fd);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const options =
      address.kind === 'tcp'
        ? { host: address.host, port: address.port }
        : address.kind === 'unix'
          ? { path: address.path }
          : { fd: address.fd };
    // bind() creates the file under the umask, within listen(): the socket has its mode from the start.
    const umask = address.kind === 'unix' ? process.umask(~access.mode & 0o777) : null;
    try {
      // Given beside the options: Node ignores { fd, backlog } and listens on a descriptor with 511.
      server.listen(options, backlog, () => {
        server.off('error', reject);
        resolve();
      });
    } finally {
      if (umask !== null) process.umask(umask);
    }
  });
  // lchown: a name swapped for a symbolic link meanwhile gives away no other file.
  if (address.kind === 'unix' && access.owner) fs.lchownSync(address.path, access.owner.uid, access.owner.gid);
}

/** fd://N must be a socket this process was given: Node aborts the process listening on any other descriptor. */
function assertSocketGiven(fd: number): void {
  let socket = false;
  try {
    socket = fs.fstatSync(fd).isSocket();
  } catch {} // not open
  if (!socket)
    throw new SettingError(
      `--bind fd://${fd}: descriptor ${fd} is not a socket given to forkgate (by systemd's LISTEN_FDS or the process that started it)`,
    );
}

/**
 * A master's own endpoint (admin, metrics): listens alone on its address (a unix socket lets in only the
 * master's user and root, whatever the umask), or in a USR2 successor on the descriptor handed over;
 * returns where it is reached (a TCP port 0 resolved).
 */
export async function listenEndpoint(server: net.Server, address: BindAddress, inheritedFd: number | undefined): Promise<BindAddress> {
  await listenOn(server, inheritedFd === undefined ? address : { kind: 'fd', fd: inheritedFd }, { mode: 0o600 });
  const bound = server.address();
  return bound && typeof bound === 'object' ? { kind: 'tcp', host: bound.address, port: bound.port } : address;
}

/** A listening server's descriptor, for a USR2 successor to inherit. */
export function listeningFd(server: net.Server): number {
  // A listening net.Server exposes no public descriptor; its handle's fd is what spawn() can pass on.
  return (server as unknown as { _handle: { fd: number } })._handle.fd;
}

/**
 * Closes this process's copy of a listening socket a USR2 successor serves on too. Closing a unix socket
 * this process bound removes its file (libuv unlinks it), which the successor's copy answers on: a
 * second name for the socket outlives the close and takes the first one's place.
 */
export function closeForSuccessor(server: net.Server): void {
  const path = server.address();
  if (typeof path !== 'string') return void server.close();
  const spare = `${path}.${process.pid}`;
  try {
    fs.linkSync(path, spare);
  } finally {
    server.close();
  }
  fs.renameSync(spare, path);
}

/**
 * A socket file left by a crashed run would make listen() fail with EADDRINUSE. One a server still
 * answers on (another master's) is left to it: listen() then fails, naming the path.
 */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    if (!fs.statSync(path).isSocket()) return;
  } catch {
    return; // absent: nothing to remove
  }
  if (await answered(path)) return;
  fs.rmSync(path, { force: true });
}

function removeSocketFile(path: string): void {
  try {
    if (fs.lstatSync(path).isSocket()) fs.rmSync(path);
  } catch {} // gone already
}

/** Whether something may listen on the socket file: only a refused connection says nothing does. */
function answered(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (error: NodeJS.ErrnoException) => resolve(error.code !== 'ECONNREFUSED'));
  });
}

/**
 * The listening sockets the master owns (round-robin and proxy): bound at start, named in the log,
 * passed on to a USR2 successor, closed on stop.
 */
export class MasterListeners {
  private readonly addresses: readonly BindAddress[];
  private readonly backlog: number;
  private readonly options: net.ServerOpts;
  private readonly onConnection: (socket: net.Socket) => void;
  private readonly servers: net.Server[] = [];
  private readonly acceptFailed: RecurringWarning<Error>;
  /** A USR2 successor serves on them: their files are its own. */
  private handedOver = false;

  constructor(
    addresses: readonly BindAddress[],
    backlog: number,
    options: net.ServerOpts,
    onConnection: (socket: net.Socket) => void,
    logger: Logger,
  ) {
    this.addresses = addresses;
    this.backlog = backlog;
    this.options = options;
    this.onConnection = onConnection;
    this.acceptFailed = acceptFailures(logger);
  }

  /** access: the mode and owner of the unix sockets among them (--socket-mode, --socket-group). */
  async listen(access: SocketAccess): Promise<void> {
    for (const address of this.addresses) {
      const server = net.createServer(this.options, this.onConnection);
      this.servers.push(server);
      await listenOn(server, address, access, this.backlog);
      server.on('error', (error) => this.acceptFailed.note(error));
    }
  }

  /** The addresses clients can reach, as URLs for the log ('http://127.0.0.1:8000', 'unix:/run/app.sock'). */
  urls(): string[] {
    return this.servers.map((server, index) => {
      const bound = server.address();
      if (typeof bound === 'string') return `unix:${bound}`;
      if (bound === null) return formatBindAddress(this.addresses[index]!);
      const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
      return `http://${host}:${bound.port}`;
    });
  }

  firstAddress(): net.AddressInfo | string | null {
    return this.servers[0]?.address() ?? null;
  }

  /** The listening descriptors, for a USR2 successor to inherit. */
  fds(): number[] {
    return this.servers.map(listeningFd);
  }

  /** What each listener was bound to in the first place, for a USR2 successor to name them (fds() order). */
  origins(): BindAddress[] {
    return this.addresses.map((address) => (address.kind === 'fd' && address.origin) || address);
  }

  /** A USR2 successor serves on them now: this master stops listening, leaving unix socket files in place. */
  handOver(): void {
    this.handedOver = true;
    for (const server of this.servers) closeForSuccessor(server);
  }

  /**
   * Stops listening (at once); connections already accepted are the balancer's to finish. A unix socket
   * goes with its file, as libuv removes the file of one it bound: a predecessor's too.
   */
  close(): void {
    for (const server of this.servers) server.close();
    if (this.handedOver) return;
    for (const address of this.addresses) {
      if (address.kind === 'fd' && address.origin?.kind === 'unix') removeSocketFile(address.origin.path);
    }
  }
}
