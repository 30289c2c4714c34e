import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';

/** A number a user may mean as an option's value, which parseArgs would take for an option: -5, -0.5. */
const NEGATIVE_NUMBER = /^-\.?\d/;

/**
 * The command line with a negative number joined to the option before it (`--timeout -5` becomes
 * `--timeout=-5`), so that the setting's validator judges it; or, for an option that takes a value and
 * has none (nothing follows, or an option does), why not, naming the option. parseArgs would refuse
 * both in its own words, which are about its API rather than forkgate's options.
 * meta: what the value is, as --help says it (ADDRESS), for the message.
 */
export function attachOptionValues(
  args: readonly string[],
  options: ParseArgsOptionsConfig,
  meta: (name: string) => string = () => 'VALUE',
): { args: string[] } | { problem: string } {
  const { tokens } = parseArgs({ args: [...args], options, allowPositionals: true, strict: false, tokens: true });
  const attached = [...args];
  const joins: { index: number; value: string }[] = [];
  for (const token of tokens) {
    if (token.kind !== 'option' || options[token.name]?.type !== 'string' || token.inlineValue) continue;
    const flag = `--${token.name}`;
    const usage = `${flag} ${meta(token.name)}`;
    if (token.value === undefined) return { problem: `${flag}: missing its value (${usage})` };
    // parseArgs reads '-' alone as a value (stdout, stdin), as Gunicorn's log files take it.
    if (token.value.length < 2 || !token.value.startsWith('-')) continue;
    if (!NEGATIVE_NUMBER.test(token.value)) {
      return { problem: `${flag}: missing its value (${usage}), or write ${flag}=${token.value} if '${token.value}' is the value` };
    }
    joins.push({ index: token.index, value: token.value });
  }
  // From the last, so that each index still points at its option; a short option takes its value
  // attached (-t-5), alone or ending a group of short options.
  for (const { index, value } of joins.toReversed()) {
    const word = attached[index]!;
    attached.splice(index, 2, word.startsWith('--') ? `${word}=${value}` : `${word}${value}`);
  }
  return { args: attached };
}
