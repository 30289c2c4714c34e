/**
 * Turns whatever the user's module exports (or the server it starts itself) into one http.Server that
 * the worker feeds accepted connections into. The server never binds a port of its own.
 */
import { accessSync, constants, statSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { userInfo } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { getRequestListener } from '@hono/node-server';
import { AppLoadError } from '../errors.ts';
import type { AppServer } from '../edge/app-server.ts';
import type { AppShape } from '../ipc/messages.ts';
import { locateSyntaxError } from './syntax-report.ts';

export interface AppSpec {
  /** Path as the user wrote it (relative to cwd or absolute). */
  readonly path: string;
  /** `app.js:name` → 'name'; undefined means default export / module.exports. */
  readonly exportName: string | undefined;
  /** `app.js:create()` → true: call the export as a factory even if it looks like a listener. */
  readonly callFactory: boolean;
}

export interface LoadedApp {
  /** Connections are fed into this server with `server.emit('connection', socket)`; it never listens. */
  readonly server: AppServer;
  readonly shape: AppShape;
}

export interface LoadOptions {
  readonly cwd: string;
  /** What `server.address()` answers for an app that called listen() itself. */
  readonly address: AddressInfo | string | null;
  /** How long to wait for an app that exports nothing to call listen() while it still waits on something (ms). */
  readonly listenWaitMs: number;
  /** Called with an error thrown or rejected by the app's request listener (after 500 is sent), and its request where known. */
  readonly onListenerError: (error: unknown, req?: http.IncomingMessage) => void;
}

/** Extensions tried, in order, when the path names a file without one (`app:create()` like Gunicorn). */
export const appExtensions = ['.js', '.cjs', '.mjs', '.ts', '.mts', '.cts'] as const;

const acceptedShapes =
  'a Fastify instance, an http(s).Server, a Koa app, an object with fetch() (Hono), ' +
  'a (req, res) listener function (Express, Connect), or a function returning one of these';

/** How often a wait for listen() looks whether the app still waits on anything. */
const LISTEN_POLL_MS = 100;

/** `:NAME` or `:NAME()` at the very end; a colon followed by anything else belongs to the path. */
const exportSuffix = /:([\p{ID_Start}$_][\p{ID_Continue}$\u200C\u200D]*)(\(\))?$/u;

export function parseAppSpec(raw: string): AppSpec {
  const match = exportSuffix.exec(raw);
  const path = match ? raw.slice(0, match.index) : raw;
  if (path === '') throw new AppLoadError(`app '${raw}' names no file; expected PATH, PATH:NAME or PATH:NAME()`);
  return { path, exportName: match?.[1], callFactory: match?.[2] !== undefined };
}

export async function loadApp(spec: AppSpec, options: LoadOptions): Promise<LoadedApp> {
  const path = findAppFile(spec, options.cwd);
  // Patched before the import: an unmodified app calls listen() while (or soon after) it loads.
  const listenCalls = captureListen(options.address);
  const before = liveResources();
  try {
    // The app's own import-time errors propagate untouched so their stack points into the app.
    const namespace = (await import(pathToFileURL(path).href).catch((error: unknown) => {
      throw locateSyntaxError(error, path);
    })) as Namespace;
    for (const value of exportsToTry(namespace, spec, path)) {
      const loaded = await fromExport(value, spec, options);
      if (loaded) return loaded;
    }
    // A listen() can only come from something the app still waits on: a timer, a socket, a file read.
    const outcome = await listenCalls.waitForServer(options.listenWaitMs, () => startedSince(before));
    if (typeof outcome === 'string') throw new AppLoadError(noAppMessage(path, spec, namespace, outcome, options.listenWaitMs));
    guardRequestListeners(outcome, options.onListenerError);
    return { server: outcome, shape: 'listen-call' };
  } finally {
    listenCalls.release();
  }
}

type Namespace = Record<string, unknown>;
type Listener = (this: unknown, req: http.IncomingMessage, res: http.ServerResponse) => unknown;

function findAppFile(spec: AppSpec, cwd: string): string {
  const path = resolve(cwd, spec.path);
  const hasAppExtension = (appExtensions as readonly string[]).includes(extname(path));
  let directory = false;
  for (const candidate of [path, ...(hasAppExtension ? [] : appExtensions.map((ext) => path + ext))]) {
    try {
      accessSync(candidate, constants.R_OK);
      if (!statSync(candidate).isDirectory()) return candidate;
      directory = true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EACCES') throw new AppLoadError(unreadableMessage(candidate, spec));
    }
  }
  if (directory)
    throw new AppLoadError(
      `app ${path} is a directory (from '${spec.path}'); name the app's file in it, such as ${join(path, 'index.js')}`,
    );
  throw new AppLoadError(`cannot find app file ${path} (from '${spec.path}')`);
}

/** Permission denied: a directory on the path this process cannot enter, or the file it cannot read. */
function unreadableMessage(path: string, spec: AppSpec): string {
  const directories: string[] = []; // from the root down
  for (let directory = dirname(path); directories[0] !== directory; directory = dirname(directory)) directories.unshift(directory);
  const closed = directories.find((directory) => !accessible(directory, constants.X_OK));
  const cause = closed ? `${runningAs()} may not enter the directory ${closed}` : `the file exists, but ${runningAs()} may not read it`;
  return `cannot read app file ${path} (from '${spec.path}'): permission denied: ${cause}`;
}

function accessible(path: string, mode: number): boolean {
  try {
    accessSync(path, mode);
    return true;
  } catch {
    return false;
  }
}

/** This process's user as the message names it (--user may have given a number with no passwd entry). */
function runningAs(): string {
  const uid = process.getuid?.();
  try {
    return `user '${userInfo().username}' (uid ${uid})`;
  } catch {
    return `uid ${uid}`;
  }
}

/** The export named in the spec, else the default export (a CJS module.exports) and then `app`. */
function exportsToTry(namespace: Namespace, spec: AppSpec, path: string): unknown[] {
  const name = spec.exportName;
  if (name === undefined) return [namespace.default, namespace.app];
  if (name in namespace) return [namespace[name]];
  throw new AppLoadError(`${path} has no export '${name}'; it exports: ${exportNames(namespace)}`);
}

/** Calls a factory (one level deep) and resolves what it returns; undefined when nothing usable. */
async function fromExport(value: unknown, spec: AppSpec, options: LoadOptions): Promise<LoadedApp | undefined> {
  // A listener takes (req, res); a function taking nothing can only be a factory.
  const isFactory = typeof value === 'function' && (spec.callFactory || value.length === 0);
  if (!isFactory) {
    if (spec.callFactory) {
      throw new AppLoadError(`'${spec.exportName}()' asks to call it, but it is not a function: ${describe(value)}`);
    }
    return fromValue(value, options);
  }
  const made: unknown = await value();
  if (typeof made === 'function' && made.length === 0) {
    throw new AppLoadError(`factory '${spec.exportName ?? value.name}' returned another factory; return the app instead`);
  }
  return fromValue(made, options);
}

async function fromValue(value: unknown, options: LoadOptions): Promise<LoadedApp | undefined> {
  const onError = options.onListenerError;
  if (isFastify(value)) {
    await value.ready();
    return { server: value.server, shape: 'fastify' };
  }
  if (isHttpServer(value)) {
    guardRequestListeners(value, onError);
    return { server: value, shape: 'http-server' };
  }
  if (hasMethod(value, 'callback') && hasMethod(value, 'use')) {
    return { server: http.createServer(value.callback() as http.RequestListener), shape: 'koa' };
  }
  if (hasMethod(value, 'fetch')) {
    return { server: http.createServer(fetchListener(value, onError)), shape: 'fetch' };
  }
  if (typeof value === 'function') {
    return { server: http.createServer(guarded(value as Listener, onError)), shape: 'listener' };
  }
  return undefined;
}

/** Adapts a fetch(Request) → Response handler; @hono/node-server streams bodies and keeps Set-Cookie apart. */
function fetchListener(app: { fetch: (...args: unknown[]) => unknown }, onError: (error: unknown) => void): http.RequestListener {
  return getRequestListener((request, env) => app.fetch(request, env), {
    errorHandler: (error) => {
      onError(error);
      return new Response('Internal Server Error', { status: 500, headers: { 'content-type': 'text/plain' } });
    },
  });
}

/** A throw or rejection from a bare listener must answer 500, not end the worker with an uncaughtException. */
function guarded(listener: Listener, onError: LoadOptions['onListenerError']): http.RequestListener {
  const fail = (res: http.ServerResponse, error: unknown): void => {
    answerFailure(res);
    onError(error, res.req);
  };
  return function guardedListener(this: unknown, req, res) {
    try {
      const result = listener.call(this, req, res);
      if (result instanceof Promise) result.catch((error: unknown) => fail(res, error));
    } catch (error) {
      fail(res, error);
    }
  };
}

function answerFailure(res: http.ServerResponse): void {
  if (res.writableEnded) return;
  // Part of a response is out: cutting the connection is the only honest signal left.
  if (res.headersSent) {
    res.destroy();
    return;
  }
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  res.writeHead(500, { 'content-type': 'text/plain' }).end('Internal Server Error');
}

function guardRequestListeners(server: AppServer, onError: LoadOptions['onListenerError']): void {
  const listeners = server.listeners('request') as Listener[];
  server.removeAllListeners('request');
  for (const listener of listeners) server.on('request', guarded(listener, onError));
}

/** Why no listen() came: the wait ran out, or the app had nothing left pending that could call it. */
type NoListen = 'timed out' | 'idle';

interface ListenCapture {
  /** The server the app called listen() on, waiting up to `ms` for the call while `appIsWaiting()`. */
  waitForServer(ms: number, appIsWaiting: () => boolean): Promise<AppServer | NoListen>;
  /** Puts the real listen() back; later calls bind for real. */
  release(): void;
}

/**
 * Fakes the first listen() on an HTTP server (and on its siblings, below): nothing binds, 'listening'
 * fires and address() answers forkgate's address. Other servers, like a metrics port, bind for real.
 */
function captureListen(address: LoadOptions['address']): ListenCapture {
  const realListen = net.Server.prototype.listen;
  let captured: AppServer | undefined;
  let onCapture = (): void => {};
  net.Server.prototype.listen = function listen(this: net.Server, ...args: unknown[]) {
    // Fastify listening on 'localhost' binds 127.0.0.1 and ::1 with one server each, sharing a handler.
    const isApp = isHttpServer(this) && (captured === undefined || sharesRequestListener(this, captured));
    if (!isApp) return Reflect.apply(realListen, this, args) as net.Server;
    captured ??= this;
    const callback = args.at(-1);
    if (typeof callback === 'function') this.once('listening', callback as () => void);
    this.address = () => address;
    Object.defineProperty(this, 'listening', { configurable: true, get: () => true });
    process.nextTick(() => this.emit('listening'));
    onCapture();
    return this;
  } as typeof realListen;

  return {
    waitForServer: (ms, appIsWaiting) =>
      new Promise((settle) => {
        if (captured) return settle(captured);
        let poll: NodeJS.Timeout | undefined;
        let look: NodeJS.Immediate | undefined;
        const finish = (outcome: AppServer | NoListen) => {
          clearTimeout(deadline);
          clearTimeout(poll);
          clearImmediate(look);
          onCapture = () => {};
          settle(outcome);
        };
        // Unreferenced, so it is not counted as the app's; the polls keep the event loop alive meanwhile.
        const deadline = setTimeout(() => finish('timed out'), ms).unref();
        // Run from an immediate, when neither the poll's timer nor the immediate itself counts as live.
        const check = () => {
          if (!appIsWaiting()) return finish('idle');
          poll = setTimeout(() => (look = setImmediate(check)), LISTEN_POLL_MS);
        };
        look = setImmediate(check);
        onCapture = () => finish(captured!);
      }),
    release: () => {
      net.Server.prototype.listen = realListen;
    },
  };
}

/** The event loop's live resources (referenced timers, sockets, file requests, ...) by type. */
function liveResources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const type of process.getActiveResourcesInfo()) counts.set(type, (counts.get(type) ?? 0) + 1);
  return counts;
}

/** Whether more resources of some type are live than `before`: what the app started and waits on. */
function startedSince(before: Map<string, number>): boolean {
  for (const [type, count] of liveResources()) if (count > (before.get(type) ?? 0)) return true;
  return false;
}

function sharesRequestListener(a: AppServer, b: AppServer): boolean {
  const theirs = b.listeners('request');
  return a.listeners('request').some((listener) => theirs.includes(listener));
}

function isFastify(value: unknown): value is { server: AppServer; ready: () => unknown } {
  return hasMethod(value, 'ready') && isHttpServer((value as { server?: unknown }).server);
}

function isHttpServer(value: unknown): value is AppServer {
  return value instanceof http.Server || value instanceof https.Server;
}

function hasMethod<K extends string>(value: unknown, name: K): value is Record<K, (...args: unknown[]) => unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as Record<string, unknown>)[name] === 'function'
  );
}

function noAppMessage(path: string, spec: AppSpec, namespace: Namespace, why: NoListen, waitedMs: number): string {
  const lookedFor =
    spec.exportName === undefined
      ? `the default export (module.exports): ${describe(namespace.default)}, and export 'app': ${describe(namespace.app)}`
      : `export '${spec.exportName}': ${describe(namespace[spec.exportName])}`;
  const noListen =
    why === 'idle'
      ? 'and it called no listen() and waits on nothing (no timer, socket or other I/O) that could still call it'
      : `and no listen() call came within ${waitedMs} ms`;
  return (
    `${path} gave no app to serve. Looked for ${lookedFor} (the module exports: ${exportNames(namespace)}); ` +
    `${noListen}. Export ${acceptedShapes}; or call listen() on an http.Server.`
  );
}

/** Node 24 also lists a CommonJS module's exports object under the name 'module.exports'. */
function exportNames(namespace: Namespace): string {
  return (
    Object.keys(namespace)
      .filter((name) => name !== 'module.exports')
      .join(', ') || 'nothing'
  );
}

function describe(value: unknown): string {
  if (value === undefined) return 'missing';
  if (value === null) return 'null';
  if (typeof value === 'function') return `a function taking ${value.length} arguments`;
  if (typeof value === 'object') return `an object with keys [${Object.keys(value).join(', ')}]`;
  return `a ${typeof value}`;
}
