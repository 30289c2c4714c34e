/** The README's exit-code table, generated from src/errors.ts between two markers. */
import { ERROR_EXIT_CODES, EXIT_MEANINGS, ExitCode } from '../src/errors.ts';

const START = '<!-- exit codes: generated from src/errors.ts by `npm run docs`; do not edit by hand -->\n';
const END = '<!-- end of exit codes -->';

/** Each exit code, what it means, and the codes of the errors that end a process with it. */
export function renderExitCodeTable(): string {
  const rows = Object.values(ExitCode).map((exitCode) => {
    const codes = Object.entries(ERROR_EXIT_CODES)
      .filter(([, exit]) => exit === exitCode)
      .map(([code]) => `\`${code}\``);
    return `| ${exitCode} | ${EXIT_MEANINGS[exitCode]} | ${codes.join(', ')} |`;
  });
  return ['', '| exit code | meaning | error codes |', '|---|---|---|', ...rows, '', ''].join('\n');
}

/** The table as the README holds it, or null without the markers. */
export function exitCodeTableIn(readme: string): string | null {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END, start);
  return start < 0 || end < 0 ? null : readme.slice(start + START.length, end);
}

/** The README with its table regenerated. */
export function withExitCodeTable(readme: string): string {
  const table = exitCodeTableIn(readme);
  if (table === null) throw new Error(`README.md has no exit-code table between '${START.trim()}' and '${END}'`);
  const start = readme.indexOf(START) + START.length;
  return readme.slice(0, start) + renderExitCodeTable() + readme.slice(start + table.length);
}
