/**
 * The master ⇄ worker protocol. Every message crosses the child_process IPC channel through the two
 * `send*` helpers below; nothing else in the code base calls `process.send` or `child.send`.
 */
import type { ChildProcess } from 'node:child_process';
import type { AddressInfo, Socket } from 'node:net';
import type { Settings } from '../config/settings.ts';
import type { Certificates } from '../edge/tls.ts';
import { ForkgateError, type ErrorCode, type ExitCode } from '../errors.ts';

/** Which shape the app's module had; logged at boot so users see what forkgate understood. */
export type AppShape = 'listener' | 'koa' | 'fetch' | 'http-server' | 'fastify' | 'listen-call';
import type { UnitReport, WorkerReport } from '../metrics/report.ts';

export interface TcpListenAddress {
  readonly host: string;
  readonly port: number;
}

/** How a worker receives connections, decided by the master's balancer. */
export type ListenPlan =
  /** The master accepts and sends each connection with a `connection` message. */
  | { readonly mode: 'handoff' }
  /** The worker binds every address itself with SO_REUSEPORT. */
  | { readonly mode: 'reuseport'; readonly addresses: readonly TcpListenAddress[]; readonly backlog: number }
  /** Each unit listens on a unix socket of its own in this directory; the master's proxy sends it requests. */
  | { readonly mode: 'proxy'; readonly directory: string };

export interface WorkerStats {
  readonly requests: number;
  readonly inFlight: number;
  /** Connections accepted and not yet closed, including those waiting for a slot. */
  readonly connections: number;
}

/** A unit that serves nothing yet. */
export const NO_TRAFFIC: WorkerStats = { requests: 0, inFlight: 0, connections: 0 };

/** How often a unit (process or thread) proves its event loop turns; --timeout of silence is allowed. */
export function heartbeatInterval(timeoutSeconds: number): number {
  return timeoutSeconds > 0 ? Math.min(1000, (timeoutSeconds * 1000) / 4) : 1000;
}

// ---- master → worker ----

export type MasterMessage =
  | {
      readonly type: 'boot';
      readonly workerId: number;
      readonly generation: number;
      readonly settings: Settings;
      /** What TLS serves with: the master reads the files, the workers never do. Null behind the proxy. */
      readonly certificates: Certificates | null;
      readonly listen: ListenPlan;
      /** What `server.address()` answers for an app that calls listen() itself. */
      readonly appAddress: AddressInfo | string | null;
    }
  /** Carries an accepted client socket; the worker answers `accepted` with the same seq. */
  | { readonly type: 'connection'; readonly seq: number }
  /** Stop taking work, finish what is in flight, exit 0. */
  | { readonly type: 'drain' }
  | ReopenLogs
  | CollectMetrics;

/** A scrape of /metrics: report now, answering with the same seq. */
export interface CollectMetrics {
  readonly type: 'collect-metrics';
  readonly seq: number;
}

/** USR1: reopen the log files among `files`, those the master could create; the others stay on the old file. */
export interface ReopenLogs {
  readonly type: 'reopen-logs';
  readonly files: readonly string[];
}

// ---- worker → master ----

export interface SerializedError {
  readonly message: string;
  /** The error's stack: the app's own file and line for import-time failures. */
  readonly stack: string;
  /** Set for a ForkgateError: forkgate's own diagnosis (its stack would only show forkgate's code). */
  readonly forkgate?: { readonly code: ErrorCode; readonly exitCode: ExitCode };
}

export type WorkerMessage =
  /** Sent before the app loads: where the inspector will listen if the master must read a hung stack. */
  | { readonly type: 'started'; readonly inspectorPort: number | null }
  /** loadedFiles: with --reload, the app's own source files (outside node_modules) the worker loaded. */
  | {
      readonly type: 'ready';
      readonly shape: AppShape;
      readonly loadedFiles: readonly string[];
      /** Proxy plan: the unix sockets of the units that take requests (one, or one per thread). */
      readonly endpoints: readonly string[];
    }
  /** Proxy plan: the worker's serving units changed (a thread was replaced or retired). */
  | { readonly type: 'endpoints'; readonly endpoints: readonly string[] }
  | { readonly type: 'boot-error'; readonly error: SerializedError }
  | { readonly type: 'heartbeat'; readonly stats: WorkerStats; readonly rss: number }
  /** ok: false when the worker is draining; the master then gives the socket to another worker. */
  | { readonly type: 'accepted'; readonly seq: number; readonly ok: boolean; readonly connections: number }
  /** A handed-over connection closed (workers with a handoff capacity): this many are open now. */
  | { readonly type: 'closed'; readonly connections: number }
  /** The worker reached --max-requests and asks to be replaced. */
  | { readonly type: 'retire'; readonly reason: string }
  /** Its first client (once): from then on its failing is a crash, not a failed boot. */
  | { readonly type: 'serving' }
  /** seq: the collect-metrics this answers; null for the last report, sent as the worker exits. */
  | { readonly type: 'metrics'; readonly seq: number | null; readonly report: WorkerReport };

// ---- a worker process ⇄ its threads (--threads): structured clone over worker_threads ports ----

export type ToThreadMessage = { readonly type: 'drain' } | ReopenLogs | CollectMetrics;

export type FromThreadMessage =
  | { readonly type: 'ready'; readonly shape: AppShape; readonly endpoint: string | null }
  | { readonly type: 'boot-error'; readonly error: SerializedError }
  | { readonly type: 'heartbeat'; readonly stats: WorkerStats }
  | { readonly type: 'retire'; readonly reason: string }
  | { readonly type: 'serving' }
  | { readonly type: 'metrics'; readonly seq: number | null; readonly report: UnitReport };

/** workerData of a serving thread; the role marker tells the shared entry point what to run. */
export interface ThreadData {
  readonly role: 'forkgate-thread';
  readonly boot: Pick<
    Extract<MasterMessage, { type: 'boot' }>,
    'workerId' | 'generation' | 'settings' | 'certificates' | 'listen' | 'appAddress'
  >;
}

export function sendToWorker(child: ChildProcess, message: MasterMessage, socket?: Socket, onSent?: (error: Error | null) => void): void {
  if (!child.connected) {
    onSent?.(new Error('worker IPC channel closed'));
    return;
  }
  // keepOpen: the master keeps its copy of a handed-off socket until the worker acknowledges it.
  child.send(message, socket, { keepOpen: true }, onSent ?? ignoreSendError);
}

export function sendToMaster(message: WorkerMessage, onSent: (error: Error | null) => void = ignoreSendError): void {
  if (process.connected) process.send!(message, undefined, {}, onSent);
  else onSent(new Error('master IPC channel closed'));
}

/** The channel closing mid-send means the other side is gone; its exit or disconnect handler deals with it. */
function ignoreSendError(): void {}

/** Both ends only ever receive the other's messages, so a `type` field is all there is to check. */
export function isProtocolMessage<Message extends MasterMessage | WorkerMessage>(value: unknown): value is Message {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof ForkgateError) {
    return { message: error.message, stack: error.message, forkgate: { code: error.code, exitCode: error.exitCode } };
  }
  if (error instanceof Error) return { message: error.message, stack: error.stack ?? `${error.name}: ${error.message}` };
  return { message: String(error), stack: String(error) };
}

/** A boot failure as the log shows it after a colon: forkgate's diagnosis on the same line, an error's stack below. */
export function describeBootError(error: SerializedError): string {
  return error.forkgate ? ` ${error.message}` : `\n${error.stack}`;
}

/** The error a serialized one stands for, to throw again on the other side of a thread's port. */
export function revivedError(error: SerializedError): Error {
  if (error.forkgate) return new ForkgateError(error.forkgate.code, error.message);
  return Object.assign(new Error(error.message), { stack: error.stack });
}
