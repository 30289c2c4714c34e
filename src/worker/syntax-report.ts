/**
 * An ES module's SyntaxError carries its file and line only in the report Node prints when it goes
 * uncaught. `node --check` prints it; the single binary ignores --check, so there a process of the
 * binary in the syntax-check role compiles the file as a module (never runs it) and lets the error go.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { stripTypeScriptTypes } from 'node:module';
import { isSea } from 'node:sea';
import * as vm from 'node:vm';

export const SYNTAX_CHECK_ROLE = 'syntax-check';

/** Puts where the file fails to parse, as Node reports it, in front of the error's stack (if it lacks one). */
export function locateSyntaxError(error: unknown, path: string): unknown {
  if (!(error instanceof SyntaxError) || error.stack?.includes(path)) return error;
  const check = isSea()
    ? spawnSync(process.execPath, ['--node-options=--experimental-vm-modules --no-warnings'], {
        env: { ...process.env, FORKGATE_ROLE: SYNTAX_CHECK_ROLE, FORKGATE_SYNTAX_CHECK: path },
        encoding: 'utf8',
        timeout: 10_000,
      })
    : spawnSync(process.execPath, ['--check', path], { encoding: 'utf8', timeout: 10_000 });
  // The report's first paragraph: "FILE:LINE", the line, a caret under the fault (its own stack follows).
  const location = check.status !== 0 ? /^.+:\d+\n.*\n *\^+$/m.exec(check.stderr)?.[0] : undefined;
  if (location) error.stack = `${location}\n${error.stack}`;
  return error;
}

/** The syntax-check role (started with --experimental-vm-modules): throws the file's SyntaxError, uncaught. */
export function checkSyntax(path: string): void {
  const source = readFileSync(path, 'utf8');
  // Type stripping keeps every line and column where it was.
  const code = /\.[mc]?ts$/.test(path) ? stripTypeScriptTypes(source) : source;
  new vm.SourceTextModule(code, { identifier: path });
}
