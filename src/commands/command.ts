/** What every command is: its usage for --help, and a run that returns what it prints. */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import type { SettingSources } from '../config/load.ts';
import { attachOptionValues } from '../config/option-values.ts';
import { UsageError } from '../errors.ts';

export interface Command {
  /** `forkgate NAME [options]`, as --help shows it. */
  readonly usage: string;
  /** What it does, one sentence. */
  readonly summary: string;
  /** Its options as `forkgate NAME --help` explains them. */
  readonly options: readonly (readonly [flag: string, doc: string])[];
  /** What it prints on stdout once done; a ForkgateError says why not. */
  run(argv: string[], sources: SettingSources): Promise<string>;
}

export const ADMIN_OPTION = [
  '--admin ADDRESS',
  'The admin endpoint: HOST:PORT or unix:PATH. Default: admin-bind as the master reads it (its config file in this directory, FORKGATE_ADMIN_BIND).',
] as const;

export const TOKEN_OPTION = [
  '--admin-token-file FILE',
  "The file holding the endpoint's token, which actions need over TCP (and over a unix socket if the master has one). Default: admin-token-file as the master reads it.",
] as const;

/** Parses a command's options; a mistake in them is bad usage, said as parseArgs says it. */
export function parseOptions<Options extends ParseArgsOptionsConfig>(
  name: string,
  argv: string[],
  options: Options,
  allowPositionals = false,
) {
  const attached = attachOptionValues(argv, options);
  if ('problem' in attached) throw new UsageError(`${attached.problem}; see forkgate ${name} --help`);
  try {
    return parseArgs({ args: attached.args, options, strict: true, allowPositionals });
  } catch (error) {
    const { code, message } = error as Error & { code?: string };
    if (!code?.startsWith('ERR_PARSE_ARGS')) throw error;
    // parseArgs's first sentence, and the word it is about; its advice on '--' is for other programs.
    const word = /'([^']+)'/.exec(message)?.[1];
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option '${word}'; see forkgate ${name} --help`);
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL')
      throw new UsageError(`takes options only; got '${word}' (see forkgate ${name} --help)`);
    throw new UsageError(`${message.replace(/\.$/, '')}; see forkgate ${name} --help`);
  }
}
