import { spawn, type ChildProcess } from 'node:child_process';
import { isSea } from 'node:sea';
import type { Settings } from '../config/settings.ts';
import { processTitle } from '../process-title.ts';
import type { WorkerIdentity } from './privileges.ts';

/** A process not yet heard from is starting Node itself, not running the app: it gets at least this long. */
export const START_GRACE_MS = 10_000;

/**
 * Starts a worker process: the same executable as the master (the worker role travels in its
 * environment), with the settings' Node options, `env` (the master's environment over the --env-file
 * files') and -e over it, as the workers' user. It waits for its boot message.
 */
export function spawnWorkerProcess(settings: Settings, env: NodeJS.ProcessEnv, identity: WorkerIdentity | null): ChildProcess {
  // The same executable with a role marker: works for `node dist/forkgate.cjs` and the single binary.
  return spawn(process.execPath, workerArgv(settings.nodeOption), {
    argv0: processTitle(settings, 'worker'),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...env, ...settings.env, FORKGATE_ROLE: 'worker' },
    ...identity,
  });
}

/**
 * The inspector that a hung worker's stack is read through (stack-dump.ts) says where it listens on
 * stderr, in the middle of the log: it says so only at /json/list, where the master asks, unless
 * the worker is run with an --inspect option of its own.
 */
const QUIET_INSPECTOR = '--inspect-publish-uid=http';

/** The master's own Node options and the --node-option values, in the form the executable takes them. */
function workerArgv(nodeOptions: readonly string[]): string[] {
  const given = [...process.execArgv, ...nodeOptions];
  const options = given.some((option) => option.startsWith('--inspect')) ? given : [QUIET_INSPECTOR, ...given];
  // The single binary has its script built in, and takes Node options only as --node-options="..."
  // (sea-config execArgvExtension "cli"): it ignores NODE_OPTIONS.
  if (isSea()) return options.length > 0 ? [`--node-options=${options.map(quoted).join(' ')}`] : [];
  return [...options, process.argv[1]!];
}

/** NODE_OPTIONS syntax: spaces separate options; double quotes (with \-escapes) keep one together. */
function quoted(option: string): string {
  return /[\s"\\]/.test(option) ? `"${option.replace(/["\\]/g, '\\$&')}"` : option;
}
