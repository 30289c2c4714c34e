/** `forkgate tune APP`: run the app in the configurations worth trying, measure them, recommend one. */
import { writeFileSync } from 'node:fs';
import { UsageError } from '../errors.ts';
import { TuneError } from '../errors.ts';
import { readMachine } from '../tune/machine.ts';
import { progressOn } from '../tune/progress.ts';
import { renderHtml, renderJson, renderText } from '../tune/report.ts';
import { tune as runTune } from '../tune/run.ts';
import { TrialServer } from '../tune/server.ts';
import { parseOptions, type Command } from './command.ts';

const DEFAULT_DURATION = 8;

export const tune: Command = {
  usage: 'forkgate tune APP [--path PATH ...] [--duration SECONDS] [--memory MB] [--json] [--report FILE.html]',
  summary:
    'Profile the app with one worker, name its bottleneck (cpu, io or memory) on this machine, measure the configurations that could serve it best, and recommend one, as flags and as a config file. It starts forkgate itself for each trial, on a free port of 127.0.0.1; about two minutes with the default --duration.',
  options: [
    [
      '--path PATH',
      'A URL path to request (repeatable; default /). One that does not answer 2xx or 3xx is reported and left out of the load.',
    ],
    ['--duration SECONDS', `How long each trial is measured, after a warm-up of up to 2 s (default ${DEFAULT_DURATION}).`],
    [
      '--memory MB',
      "The memory the server may use, in MiB, when less than the cgroup's memory.max (or the machine's memory): configurations that would not fit are skipped.",
    ],
    ['--json', 'Print the profile, every trial, the bottleneck and the recommendation as JSON.'],
    ['--report FILE', 'Also write an HTML page with the charts (self-contained: no scripts, nothing fetched).'],
  ],
  async run(argv, sources) {
    const { values, positionals } = parseOptions(
      'tune',
      argv,
      {
        path: { type: 'string', multiple: true },
        duration: { type: 'string' },
        memory: { type: 'string' },
        json: { type: 'boolean' },
        report: { type: 'string' },
      },
      true,
    );
    if (positionals.length !== 1) {
      throw new UsageError(`expected one app (PATH[:EXPORT]); got ${positionals.map((word) => `'${word}'`).join(', ') || 'none'}`);
    }
    const paths = values.path ?? ['/'];
    const notPath = paths.find((path) => !path.startsWith('/'));
    if (notPath !== undefined) throw new UsageError(`--path: expected a path starting with '/'; got '${notPath}'`);
    const duration = wholeNumber('--duration', values.duration, DEFAULT_DURATION, 'a whole number of seconds ≥ 1');
    const memory = values.memory === undefined ? null : wholeNumber('--memory', values.memory, 0, 'a whole number of MiB ≥ 1');
    // A report that cannot be written is said before the trials, not after them.
    if (values.report !== undefined) writable(values.report);
    if (process.platform !== 'linux') {
      throw new TuneError(`measures the server's CPU and memory in /proc, which ${process.platform} does not have: Linux only`);
    }

    const progress = progressOn(process.stderr);
    const stop = (signal: NodeJS.Signals) => {
      TrialServer.terminateAll();
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      const result = await runTune({ app: positionals[0]!, paths, duration, machine: readMachine(memory), env: sources.env }, progress);
      if (values.report !== undefined) writeFileSync(values.report, renderHtml(result));
      return values.json ? renderJson(result) : renderText(result);
    } finally {
      progress.end();
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
  },
};

function writable(file: string): void {
  try {
    writeFileSync(file, '');
  } catch (error) {
    throw new UsageError(`--report: cannot write ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

function wholeNumber(flag: string, text: string | undefined, fallback: number, expected: string): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < 1)
    throw new UsageError(`${flag}: expected ${expected}; got '${text}'`);
  return value;
}
