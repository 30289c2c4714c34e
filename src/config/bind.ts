/** Where forkgate listens: the forms Gunicorn's `--bind` accepts. */
export type BindAddress =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string }
  /** origin: a USR2 predecessor's socket, as it was bound (named so in the log, its file removed on stop). */
  | { readonly kind: 'fd'; readonly fd: number; readonly origin?: BindAddress };

export const BIND_FORMS = 'HOST:PORT, [IPv6]:PORT, HOST (port 8000), unix:PATH or fd://N';

const DEFAULT_PORT = 8000;

/** Parses one `--bind` value; returns an error sentence instead of throwing so callers can name the source. */
export function parseBindAddress(raw: string): BindAddress | string {
  const text = raw.trim();
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length);
    return path ? { kind: 'unix', path } : `'${raw}' has no socket path after unix:`;
  }
  if (text.startsWith('fd://')) {
    const fd = Number(text.slice('fd://'.length));
    return Number.isInteger(fd) && fd >= 0 ? { kind: 'fd', fd } : `'${raw}' is not fd://N with N a file descriptor`;
  }
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(text);
  if (v6) return tcp(v6[1]!, v6[2], raw);
  const parts = text.split(':');
  if (parts.length > 2) {
    return /^[0-9a-fA-F:.]+$/.test(text)
      ? `'${raw}' looks like a bare IPv6 address: write it as [${text}]:PORT`
      : `'${raw}' has more than one ':'`;
  }
  if (!parts[0]) return `'${raw}' has no host (write 0.0.0.0:PORT to listen on every interface)`;
  return tcp(parts[0], parts[1], raw);
}

function tcp(host: string, portText: string | undefined, raw: string): BindAddress | string {
  const port = portText === undefined ? DEFAULT_PORT : Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535 || portText === '') {
    return `'${raw}' has no valid port (0-65535)`;
  }
  return { kind: 'tcp', host, port };
}

export function formatBindAddress(address: BindAddress): string {
  switch (address.kind) {
    case 'tcp':
      return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
    case 'unix':
      return `unix:${address.path}`;
    case 'fd':
      return address.origin ? formatBindAddress(address.origin) : `fd://${address.fd}`;
  }
}

/** The address an app sees as its own before (or without) forkgate listening: --preload, --check-config. */
export function nominalAddress(address: BindAddress | undefined): import('node:net').AddressInfo | string {
  if (address?.kind === 'unix') return address.path;
  const host = address?.kind === 'tcp' ? address.host : '127.0.0.1';
  const port = address?.kind === 'tcp' ? address.port : 0;
  return { address: host, family: host.includes(':') ? 'IPv6' : 'IPv4', port };
}

/** libuv's platforms where listen({ reusePort: true }) lets several sockets share a port. */
export function reusePortSupported(platform: NodeJS.Platform = process.platform): boolean {
  return ['linux', 'freebsd', 'sunos', 'aix'].includes(platform);
}

/** sd_listen_fds(3): systemd passes the sockets of socket activation as descriptors 3, 4, ... */
const SD_LISTEN_FDS_START = 3;

/**
 * systemd socket activation: fd:// binds for the sockets passed to this process (LISTEN_FDS, when
 * LISTEN_PID is this pid). Takes the variables out of `env` either way, as sd_listen_fds(unset=1) does, so
 * that no worker or process the app starts takes the sockets for its own.
 */
export function takeActivatedSockets(env: NodeJS.ProcessEnv, pid: number): BindAddress[] {
  const count = Number(env.LISTEN_FDS);
  const forThisProcess = env.LISTEN_PID === String(pid);
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (!forThisProcess || !Number.isInteger(count) || count < 1) return [];
  return Array.from({ length: count }, (_, index) => ({ kind: 'fd', fd: SD_LISTEN_FDS_START + index }));
}
