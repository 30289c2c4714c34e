/**
 * The commands: `forkgate status`, `top`, `reload`, `scale` and `stop`, clients of a running master's
 * admin endpoint, and `tune`, which starts forkgate itself to measure an app. A command is the first
 * word; anything else is the server's command line, whose app must
 * then not be a word that only looks like a command.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { nearest } from '../config/did-you-mean.ts';
import type { SettingSources } from '../config/load.ts';
import { appExtensions } from '../worker/app-loader.ts';
import type { Command } from './command.ts';
import { reload, scale, stop } from './control.ts';
import { status } from './status.ts';
import { top } from './top.ts';
import { tune } from './tune.ts';

const COMMANDS = { status, top, reload, scale, stop, tune } satisfies Record<string, Command>;
export type CommandName = keyof typeof COMMANDS;

export function isCommand(word: string): word is CommandName {
  return Object.hasOwn(COMMANDS, word);
}

/** The commands' usage lines, for forkgate --help. */
export const COMMAND_USAGE: readonly string[] = Object.values(COMMANDS).map((command) => command.usage);

/** Runs a command; returns what it prints. --help (-h) anywhere explains it instead. */
export function runCommand(name: CommandName, argv: string[], sources: SettingSources): Promise<string> {
  const command: Command = COMMANDS[name];
  if (argv.includes('--help') || argv.includes('-h')) return Promise.resolve(commandHelp(command));
  return command.run(argv, sources);
}

function commandHelp(command: Command): string {
  const options = command.options.map(([flag, doc]) => `  ${flag.padEnd(26)}${doc}`);
  return [`Usage: ${command.usage}`, '', command.summary, '', ...options, ''].join('\n');
}

/**
 * Why an app that is a bare word (no directory, no extension, no such file in cwd) is taken for a
 * command someone reached for (`forkgate restart`), or null if it may be an app.
 */
export function commandWordProblem(app: string, cwd: string): string | null {
  if (!/^[A-Za-z][\w-]*$/.test(app)) return null;
  if (['', ...appExtensions].some((extension) => existsSync(join(cwd, app + extension)))) return null;
  if (isCommand(app)) return `'${app}' is a command: it comes first, before any option (see forkgate ${app} --help)`;
  const files = `${app}.{${appExtensions.map((extension) => extension.slice(1)).join(',')}}`;
  const guess = nearest(app.toLowerCase(), Object.keys(COMMANDS));
  return (
    `'${app}' is neither a forkgate command${guess ? ` (did you mean forkgate ${guess}?)` : ''} nor an app file (no ${files} in ${cwd}); ` +
    `the commands are ${Object.keys(COMMANDS).join(', ')} (forkgate COMMAND --help), and an app is PATH[:EXPORT], such as app.js`
  );
}
