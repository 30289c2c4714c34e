// forkgate's errors: stable codes, the exit code each ends a process with, the README's table of them.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import * as errors from '../src/errors.ts';
import {
  AdminFailedError,
  AdminRefusedError,
  AdminUnreachableError,
  AppLoadError,
  ERROR_EXIT_CODES,
  ExitCode,
  ForkgateError,
  HOP_ERROR_CODES,
  HopClosedError,
  HopError,
  HopParseError,
  ListenError,
  SettingError,
  TuneError,
  UsageError,
} from '../src/errors.ts';
import { revivedError, serializeError } from '../src/ipc/messages.ts';
import { exitCodeTableIn, renderExitCodeTable } from '../scripts/readme.ts';

const SRC = new URL('../src/', import.meta.url);

/** One of each, as forkgate raises them. */
const RAISED: readonly ForkgateError[] = [
  new SettingError('--workers: expected a whole number'),
  new UsageError('no app given'),
  new AppLoadError('cannot find app file app.js'),
  new ListenError(new Error('listen EADDRINUSE')),
  new AdminUnreachableError('cannot reach the admin endpoint'),
  new AdminRefusedError(401, 'the bearer token is not the one in --admin-token-file'),
  new AdminFailedError(500, '--admin-token-file: cannot read it'),
  new TuneError('no path answers 2xx or 3xx, nothing to measure'),
];
const HOP_RAISED: readonly HopError[] = [new HopParseError('invalid status line'), new HopClosedError()];

test('each code keeps its exit code: scripts and supervisors rely on both', () => {
  assert.deepEqual(ERROR_EXIT_CODES, {
    FKG_ERR_SETTING: 2,
    FKG_ERR_USAGE: 2,
    FKG_ERR_ADMIN_REFUSED: 2,
    FKG_ERR_LISTEN: 1,
    FKG_ERR_ADMIN_UNREACHABLE: 1,
    FKG_ERR_ADMIN_FAILED: 1,
    FKG_ERR_TUNE: 1,
    FKG_ERR_APP_LOAD: 3,
  });
  assert.deepEqual(HOP_ERROR_CODES, ['FKG_ERR_HOP_PARSE', 'FKG_ERR_HOP_CLOSED']);
  assert.deepEqual(ExitCode, { ok: 0, runtimeFailure: 1, usage: 2, bootFailure: 3 });
});

test('every error class has a code of its own, and its exit code from the table', () => {
  const codes = [...RAISED, ...HOP_RAISED].map((error) => error.code);
  assert.deepEqual(new Set(codes), new Set([...Object.keys(ERROR_EXIT_CODES), ...HOP_ERROR_CODES]), 'one class per code');
  assert.equal(new Set(codes).size, codes.length, 'no code twice');
  const classes = Object.values(errors).filter(
    (value) => typeof value === 'function' && (value.prototype instanceof ForkgateError || value.prototype instanceof HopError),
  );
  assert.deepEqual(new Set(classes), new Set([...RAISED, ...HOP_RAISED].map((error) => error.constructor)), 'each class is tested here');
  for (const error of RAISED) {
    assert.match(error.code, /^FKG_ERR_[A-Z]+(_[A-Z]+)*$/);
    assert.equal(error.exitCode, ERROR_EXIT_CODES[error.code], error.name);
    assert.equal(error.name, error.constructor.name);
  }
  for (const error of HOP_RAISED) {
    assert.ok(!(error instanceof ForkgateError), `${error.name} ends a request, not a process`);
    assert.equal(error.name, error.constructor.name);
  }
});

test('every class is raised somewhere in src/: no code is kept for a failure that never happens', () => {
  const files = readdirSync(SRC, { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.ts') && file !== 'errors.ts');
  const source = files.map((file) => readFileSync(join(SRC.pathname, file), 'utf8')).join('\n');
  for (const error of [...RAISED, ...HOP_RAISED]) {
    assert.ok(source.includes(`new ${error.name}(`), `nothing in src/ raises ${error.name} (${error.code})`);
  }
});

test("a worker's error reaches the master with its code and exit code", () => {
  for (const error of RAISED) {
    const revived = revivedError(serializeError(error));
    assert.ok(revived instanceof ForkgateError);
    assert.deepEqual([revived.code, revived.exitCode, revived.message], [error.code, error.exitCode, error.message]);
  }
});

test("the README's exit-code table is the one the error module gives", () => {
  const table = exitCodeTableIn(readFileSync(new URL('../README.md', import.meta.url), 'utf8'));
  assert.ok(table !== null, 'README.md has lost the markers around its exit-code table');
  assert.equal(table, renderExitCodeTable(), 'README.md is out of date with src/errors.ts: run npm run docs');
  for (const code of Object.keys(ERROR_EXIT_CODES)) assert.ok(table.includes(`\`${code}\``), `the table lists ${code}`);
});
