/** Text derived from the settings table: --help, --print-config and docs/settings.md. */
import { formatSettingValue, SETTINGS, type Setting, type Settings } from './settings.ts';

const all = SETTINGS as readonly Setting[];

function flagLabel(entry: Setting): string {
  const long = entry.key === 'app' ? 'APP' : `--${entry.name}${entry.meta ? ` ${entry.meta}` : ''}`;
  return entry.short ? `-${entry.short}, ${long}` : `    ${long}`;
}

function sections(): Map<string, Setting[]> {
  const grouped = new Map<string, Setting[]>();
  for (const entry of all) grouped.set(entry.section, [...(grouped.get(entry.section) ?? []), entry]);
  return grouped;
}

/** commands: the usage lines of forkgate's commands (status, reload, ..., tune). */
export function renderHelp(commands: readonly string[]): string {
  const lines = [
    'Usage: forkgate [options] APP',
    ...commands.map((usage) => `       ${usage}`),
    '',
    'APP is path/to/app.{js,mjs,cjs,ts}[:export] (:factory() calls a factory).',
    'The commands ask a running master through its admin endpoint (--admin-bind), but tune, which starts forkgate itself to measure the app; forkgate COMMAND --help says more.',
  ];
  for (const [section, entries] of sections()) {
    // The app is the positional argument; server hooks have no flag (the footer says where they go).
    const flags = entries.filter((entry) => entry.key !== 'app' && entry.kind !== 'hook');
    if (flags.length === 0) continue;
    lines.push('', `${section}:`);
    for (const entry of flags) {
      const label = flagLabel(entry);
      lines.push(`  ${label.padEnd(34)}${label.length > 33 ? `\n${' '.repeat(36)}` : ''}${entry.doc}`);
    }
  }
  lines.push(
    '',
    'Every setting also reads FORKGATE_<NAME> from the environment; server hooks (onStarting, preFork, ...) are set in a config file.',
  );
  lines.push('See docs/settings.md.');
  return `${lines.join('\n')}\n`;
}

export function renderPrintConfig(settings: Settings): string {
  const values = settings as unknown as Record<string, unknown>;
  return all
    .filter((entry) => entry.section !== 'Actions')
    .map((entry) => `${entry.name} = ${formatSettingValue(entry, values[entry.key])}`)
    .join('\n')
    .concat('\n');
}

export function renderSettingsMarkdown(): string {
  const lines = [
    '# Settings',
    '',
    '<!-- Generated from src/config/settings.ts by `npm run docs`; do not edit by hand. -->',
    '',
    'Precedence, lowest first: default < config file < environment < `FORKGATE_CMD_ARGS` < command line.',
    'A config file is `-c FILE`, else the first of `./forkgate.config.{ts,mjs,js,json}` present; it',
    'exports an object of the keys below (`export default defineConfig({ workers: 4 })`). An unknown key, and a',
    "`FORKGATE_` variable a letter or two from a setting's (`FORKGATE_WORKER`), stop forkgate with exit 2.",
  ];
  for (const [section, entries] of sections()) {
    lines.push('', `## ${section}`);
    for (const entry of entries) {
      const env = entry.env.map((source) => `\`${source.name}\``).join(', ') || '—';
      const flag =
        entry.key === 'app'
          ? 'positional `APP`'
          : entry.kind === 'hook'
            ? '—'
            : `\`--${entry.name}\`${entry.short ? `, \`-${entry.short}\`` : ''}`;
      lines.push(
        '',
        `### ${entry.name}`,
        '',
        `| command line | environment | config key | default |`,
        '|---|---|---|---|',
        `| ${flag} | ${env} | ${entry.inFile ? `\`${entry.key}\`` : '—'} | \`${formatSettingValue(entry, entry.default)}\` |`,
        '',
        entry.doc,
      );
      if (entry.fixedUntilRestart === 'always') lines.push('', 'A reload (HUP) leaves it as it was: it takes a restart.');
      if (entry.fixedUntilRestart === 'with-proxy')
        lines.push(
          '',
          "With `--balance proxy` the master's front keeps the value it started with until a restart; what the workers do with it follows a reload (HUP).",
        );
    }
  }
  return `${lines.join('\n')}\n`;
}
