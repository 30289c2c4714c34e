/** Runs the forkgate CLI to its end, with none of the caller's setting variables, for tests of what it prints. */
import { spawn } from 'node:child_process';
import { SETTINGS, type Setting } from '../../src/config/settings.ts';
import { FIXTURES, ROOT } from './forkgate.ts';

/** Every variable a setting reads, so the tests do not depend on the environment they run in. */
export const SETTING_ENV = [
  ...new Set([...(SETTINGS as readonly Setting[]).flatMap((entry) => entry.env.map((source) => source.name)), 'FORKGATE_CMD_ARGS']),
];

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: Record<string, string>;
  /** Default: the fixtures, never the repo root, where a stray forkgate.config.* would be picked up. */
  cwd?: string;
  /** What runs forkgate (default: this Node with the npm build, or FORKGATE_TEST_BIN). */
  command?: string[];
  /** How long it may run before it is killed (default 15 s: a run that would start serving). */
  timeoutMs?: number;
}

/** Bounded: killed after options.timeoutMs. */
export function runCli(args: string[], options: RunOptions = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of SETTING_ENV) delete env[name];
  Object.assign(env, options.env);
  const bin = process.env.FORKGATE_TEST_BIN;
  const [file, ...prefix] = options.command ?? (bin ? [bin] : [process.execPath, `${ROOT}dist/forkgate.cjs`]);
  const child = spawn(file!, [...prefix, ...args], { cwd: options.cwd ?? FIXTURES, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15_000);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
