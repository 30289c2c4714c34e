/**
 * Server hooks: functions a config file may export under these names (Gunicorn's, in camelCase). Master
 * hooks run in the master; worker hooks run in each worker process, which imports the config file
 * again for them (functions cannot cross the IPC channel). A hook that throws is logged, never fatal.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pathToFileURL } from 'node:url';
import type { Logger } from './log/logger.ts';

/** The master as hooks see it. */
export interface MasterInfo {
  readonly pid: number;
  readonly generation: number;
  /** The pool size the master aims at. */
  readonly workers: number;
}

/** A worker as hooks see it. */
export interface WorkerInfo {
  readonly pid: number;
  /** Increases with every spawn. */
  readonly id: number;
  readonly generation: number;
}

type Result = void | Promise<void>;

export interface Hooks {
  /** Master: before it binds and spawns. */
  onStarting?(master: MasterInfo): Result;
  /** Master: on HUP, with the settings re-read, before the new generation starts. */
  onReload?(master: MasterInfo): Result;
  /** Master: once the first full pool is serving. */
  whenReady?(master: MasterInfo): Result;
  /** Master: just before a worker process is started (its pid is not known yet: 0). */
  preFork?(master: MasterInfo, worker: WorkerInfo): Result;
  /** Worker: first thing in the new process, before the app loads. */
  postFork?(worker: WorkerInfo): Result;
  /** Worker: the app is loaded and about to serve. */
  postWorkerInit?(worker: WorkerInfo): Result;
  /** Worker: it got INT or QUIT and is about to exit at once. */
  workerInt?(worker: WorkerInfo): Result;
  /** Master: a worker was silent past --timeout; its blocked stack (if it could be read) before the kill. */
  workerAbort?(master: MasterInfo, worker: WorkerInfo & { stack: string | null }): Result;
  /** Master: on USR2, just before the new master is started. */
  preExec?(master: MasterInfo): Result;
  /** Worker: before the app sees a request. */
  preRequest?(worker: WorkerInfo, req: IncomingMessage): Result;
  /** Worker: after the response to a request has ended (or the connection closed). */
  postRequest?(worker: WorkerInfo, req: IncomingMessage, res: ServerResponse): Result;
  /** Master: a worker process has exited. */
  childExit?(master: MasterInfo, worker: WorkerInfo & { code: number | null; signal: string | null }): Result;
  /** Worker: about to exit, after draining. */
  workerExit?(worker: WorkerInfo): Result;
  /** Master: the pool's target size changed (TTIN, TTOU, reload). */
  nworkersChanged?(master: MasterInfo, newValue: number, oldValue: number): Result;
  /** Master: just before it exits. */
  onExit?(master: MasterInfo): Result;
}

export const HOOK_NAMES = [
  'onStarting',
  'onReload',
  'whenReady',
  'preFork',
  'postFork',
  'postWorkerInit',
  'workerInt',
  'workerAbort',
  'preExec',
  'preRequest',
  'postRequest',
  'childExit',
  'workerExit',
  'nworkersChanged',
  'onExit',
] as const satisfies readonly (keyof Hooks)[];

export type HookName = (typeof HOOK_NAMES)[number];

/** A worker's hooks: its own import of the config file (a process or a thread of its own). */
export async function loadWorkerHooks(configFile: string | null): Promise<Hooks> {
  if (!configFile || configFile.endsWith('.json')) return {};
  const module = (await import(pathToFileURL(configFile).href)) as { default?: Record<string, unknown> } & Record<string, unknown>;
  const config = module.default ?? module;
  return Object.fromEntries(HOOK_NAMES.filter((name) => typeof config[name] === 'function').map((name) => [name, config[name]]));
}

/** Calls a hook if it is set; awaits it; logs (and swallows) what it throws. */
export async function runHook<Name extends HookName>(
  hooks: Hooks,
  name: Name,
  logger: Logger,
  ...args: Parameters<NonNullable<Hooks[Name]>>
): Promise<void> {
  const hook = hooks[name] as ((...hookArgs: unknown[]) => Result) | undefined;
  if (!hook) return;
  try {
    await hook(...args);
  } catch (error) {
    logger.error(`The ${name} hook failed`, error);
  }
}
