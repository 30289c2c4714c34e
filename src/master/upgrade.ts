/**
 * USR2 binary upgrade: the master starts a successor (the executable at its path now, settings read
 * afresh) with its listeners as descriptors 3, 4, … and the addresses they were bound to (reuseport
 * addresses by value) and the endpoints'
 * sockets (the admin endpoint's, --metrics-bind's) after them. Both serve until the successor's pool is ready; then the old master drains and exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { isSea } from 'node:sea';
import type { BindAddress } from '../config/bind.ts';
import type { TcpListenAddress } from '../ipc/messages.ts';

const INHERIT_ENV = 'FORKGATE_INHERIT';

/** What a successor takes over instead of binding its --bind, --admin-bind and --metrics-bind addresses. */
export type Inheritance = (
  | { readonly mode: 'handoff'; readonly addresses: readonly BindAddress[] }
  | { readonly mode: 'reuseport'; readonly addresses: readonly TcpListenAddress[] }
) & { readonly [name in EndpointName]?: EndpointSocket };

/** The endpoints a master serves apart from its clients' listeners. */
const ENDPOINTS = ['admin', 'metrics'] as const;
type EndpointName = (typeof ENDPOINTS)[number];

/** An endpoint's listening socket: its descriptor, and the address the first master bound. */
export interface EndpointSocket {
  readonly fd: number;
  readonly address: BindAddress;
}

/** The endpoints' sockets a master serves on (null: that endpoint is off). */
export type EndpointSockets = { readonly [name in EndpointName]: EndpointSocket | null };

/** The successor's message to the master that started it. */
export interface UpgradedMessage {
  readonly type: 'upgraded';
}

export function inheritanceFrom(env: NodeJS.ProcessEnv): Inheritance | null {
  const text = env[INHERIT_ENV];
  return text ? (JSON.parse(text) as Inheritance) : null;
}

export function startSuccessor(
  inheritance: Inheritance,
  fds: readonly number[],
  endpoints: EndpointSockets,
  env: NodeJS.ProcessEnv,
): ChildProcess {
  const args = isSea() ? process.argv.slice(2) : [...process.execArgv, ...process.argv.slice(1)];
  // Listening descriptors land on 3, 4, ..., the endpoints' next; the IPC channel comes after them.
  const passed = [...fds];
  const handed: { -readonly [name in EndpointName]?: EndpointSocket } = {};
  for (const name of ENDPOINTS) {
    const socket = endpoints[name];
    if (!socket) continue;
    handed[name] = { fd: 3 + passed.length, address: socket.address };
    passed.push(socket.fd);
  }
  return spawn(process.execPath, args, {
    stdio: ['ignore', 'inherit', 'inherit', ...passed, 'ipc'],
    env: { ...env, [INHERIT_ENV]: JSON.stringify({ ...inheritance, ...handed } satisfies Inheritance) },
  });
}

/** Called by a successor once its pool is ready: the old master may go. */
export function notifyPredecessor(env: NodeJS.ProcessEnv): void {
  if (!env[INHERIT_ENV] || !process.send) return;
  process.send({ type: 'upgraded' } satisfies UpgradedMessage, () => process.disconnect());
}
