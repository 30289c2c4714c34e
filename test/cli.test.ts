// The command line as users meet it: --version, --help, usage errors (exit 2, nothing started), boot
// failures, settings precedence seen through --print-config, --check-config, --chdir, and HUP re-reading a config file.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, copyFileSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { resolveSettings } from '../src/config/load.ts';
import { BALANCE_MODES, SETTINGS, WORKER_CLASSES, type Setting } from '../src/config/settings.ts';
import { SettingError } from '../src/errors.ts';
import { runCli, SETTING_ENV } from './helpers/cli.ts';
import { eventually, FIXTURES, request, ROOT, start } from './helpers/forkgate.ts';

const CLI = `${ROOT}dist/forkgate.cjs`;
const LISTENER = `${FIXTURES}listener.cjs`;
const all = SETTINGS as readonly Setting[];
const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** The choices as the error lists them, taken from the table (so a new worker class needs no test change). */
const CLASSES = escapeRegExp(WORKER_CLASSES.join(', '));
const BALANCES = escapeRegExp(BALANCE_MODES.join(', '));

const run = runCli;

/** `--print-config` output as a map of setting name to printed value. */
async function printConfig(args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<Map<string, string>> {
  const result = await run([...args, '--print-config'], options);
  assert.equal(result.code, 0, `--print-config failed:\n${result.stderr}`);
  const values = new Map<string, string>();
  for (const line of result.stdout.trimEnd().split('\n')) {
    const at = line.indexOf(' = ');
    assert.ok(at > 0, `not a 'name = value' line: ${line}`);
    values.set(line.slice(0, at), line.slice(at + 3));
  }
  return values;
}

/** CLI runs at once within a describe: enough to keep the file fast, few enough to leave the machine to other files. */
const PARALLEL = Math.max(2, Math.min(6, availableParallelism()));

const temps: string[] = [];
/** A fresh directory holding the given files; removed after the file's tests. */
function tempDir(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'forkgate-cli-'));
  temps.push(dir);
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return dir;
}
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

/** The machine's own Node when it is one forkgate does not run on (Debian and Ubuntu package 18 or 20). */
const OLDER_NODE = ['/usr/bin/node', '/usr/local/bin/node']
  .map((path) => ({ path, version: spawnSync(path, ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? '' }))
  .find(({ version }) => /^v(1\d|2[01])\./.test(version));
const olderNodeSkip = process.env.FORKGATE_TEST_BIN
  ? 'the single binary carries its own Node'
  : !OLDER_NODE && 'no Node older than 22 on this machine';

const asRoot = process.getuid?.() === 0;
let forkgateForAll: string[] | undefined;
/**
 * A directory every user can reach, holding the given files, and the command that runs forkgate from a
 * copy in another such directory: workers started as --user nobody read forkgate and Node themselves,
 * and the checkout may sit in a private (0700) directory.
 */
function reachableByAll(files: Record<string, string> = {}): { dir: string; command: string[] } {
  if (!forkgateForAll) {
    const home = tempDir();
    chmodSync(home, 0o755);
    const bin = process.env.FORKGATE_TEST_BIN;
    const own = bin ? [bin] : [process.execPath, CLI];
    forkgateForAll = own.map((path) => {
      const copy = join(home, basename(path));
      try {
        linkSync(path, copy);
      } catch {
        copyFileSync(path, copy); // another file system
      }
      return copy;
    });
  }
  const dir = tempDir(files);
  chmodSync(dir, 0o755);
  return { dir, command: forkgateForAll };
}

describe('actions', { concurrency: PARALLEL }, () => {
  test('--version prints forkgate and Node versions and exits 0', async () => {
    const { version } = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string };
    for (const flag of ['--version', '-v']) {
      const result = await run([flag]);
      assert.equal(result.code, 0, result.stderr);
      const match = /^forkgate (\S+) \(Node (v\d+\.\d+\.\d+\S*)\)\n$/.exec(result.stdout);
      assert.ok(match, `unexpected --version output: ${JSON.stringify(result.stdout)}`);
      assert.equal(match[1], version);
      if (!process.env.FORKGATE_TEST_BIN) assert.equal(match[2], process.version);
    }
  });

  test('--help lists every setting of the table and exits 0', async () => {
    for (const flag of ['--help', '-h']) {
      const result = await run([flag]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^Usage: forkgate \[options\] APP\n/);
      for (const entry of all) {
        if (entry.key === 'app' || entry.kind === 'hook') continue; // positional; config-file only
        const long = `--${entry.name}${entry.meta ? ` ${entry.meta}` : ''}`;
        assert.ok(result.stdout.includes(long), `--help does not list ${long}`);
        if (entry.short) assert.ok(result.stdout.includes(`-${entry.short}, ${long}`), `--help does not list -${entry.short}`);
        // The first words of the doc, so each flag is explained and not just named.
        assert.ok(result.stdout.includes(entry.doc.slice(0, 30)), `--help has no text for --${entry.name}`);
      }
    }
  });

  test('--help has no heading without flags under it; the server hooks are said to go in a config file', async () => {
    const result = await run(['--help']);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trimEnd().split('\n');
    lines.forEach((line, i) => {
      if (/^\S.*:$/.test(line)) assert.match(lines[i + 1] ?? '', /^ +\S/, `heading '${line}' has nothing under it`);
    });
    assert.doesNotMatch(result.stdout, /^Server hooks/m);
    assert.match(result.stdout, /server hooks \(onStarting, preFork, \.\.\.\) are set in a config file/);
  });

  test('--help and --version work beside a broken config file and environment', async () => {
    const cwd = tempDir({ 'forkgate.config.json': '{ "workers": ' });
    const env = { FORKGATE_WORKERS: 'lots', FORKGATE_CMD_ARGS: '--bogus' };
    const help = await run(['--help'], { cwd, env });
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: forkgate/);
    const version = await run(['-v'], { cwd, env });
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /^forkgate /);
    // Anything else still reads them, and says what is wrong.
    const serve = await run([LISTENER], { cwd, env: { FORKGATE_WORKERS: 'lots' } });
    assert.equal(serve.code, 2);
    assert.match(serve.stderr, /forkgate\.config\.json: not valid JSON/);
  });
});

describe('bad usage exits 2, says what is wrong and starts nothing', { concurrency: PARALLEL }, () => {
  const cases: { name: string; args: string[]; env?: Record<string, string>; files?: Record<string, string>; expect: RegExp[] }[] = [
    { name: 'unknown flag', args: ['--wokers', '2', LISTENER], expect: [/unknown option '--wokers'/, /did you mean --workers\?/] },
    {
      name: 'unknown flag without a near setting',
      args: ['--zzzzzzzz', LISTENER],
      expect: [/unknown option '--zzzzzzzz'; see forkgate --help/],
    },
    {
      name: 'flag missing its value',
      args: [LISTENER, '--bind'],
      expect: [/^forkgate: error: --bind: missing its value \(--bind ADDRESS\); see forkgate --help$/m],
    },
    {
      name: 'flag followed by another flag where its value goes',
      args: ['--bind', '-w', '2', LISTENER],
      expect: [
        /^forkgate: error: --bind: missing its value \(--bind ADDRESS\), or write --bind=-w if '-w' is the value; see forkgate --help$/m,
      ],
    },
    {
      name: 'flag missing its value in FORKGATE_CMD_ARGS',
      args: [LISTENER],
      env: { FORKGATE_CMD_ARGS: '-w 2 --timeout' },
      expect: [/^forkgate: error: FORKGATE_CMD_ARGS --timeout: missing its value \(--timeout SECONDS\); see forkgate --help$/m],
    },
    // A negative number is the value, for the setting to judge, not an option.
    {
      name: 'negative --timeout',
      args: ['--timeout', '-5', LISTENER],
      expect: [/^forkgate: error: --timeout: expected a whole number ≥ 0; got "-5"$/m],
    },
    { name: 'negative -t', args: ['-t', '-5', LISTENER], expect: [/^forkgate: error: --timeout: expected a whole number ≥ 0; got "-5"$/m] },
    {
      name: 'a negative fraction for -w',
      args: ['-w', '-0.5', LISTENER],
      expect: [/--workers: expected a whole number ≥ 1 or 'auto'.*; got "-0\.5"$/m],
    },
    { name: 'non-numeric --workers', args: ['--workers', 'abc', LISTENER], expect: [/--workers: expected/, /'auto'/, /got "abc"/] },
    { name: 'zero workers', args: ['-w', '0', LISTENER], expect: [/--workers: expected a whole number ≥ 1 or 'auto'/] },
    {
      name: 'unknown worker class',
      args: ['--worker-class', 'gevent', LISTENER],
      expect: [new RegExp(`--worker-class: expected one of ${CLASSES}; got "gevent"`), /async, sync/],
    },
    {
      name: 'malformed --bind',
      args: ['--bind', 'nonsense:port:x', LISTENER],
      expect: [/--bind: expected HOST:PORT, \[IPv6\]:PORT, HOST \(port 8000\), unix:PATH or fd:\/\/N/, /nonsense:port:x/],
    },
    { name: 'bad port in --bind', args: ['-b', '127.0.0.1:99999', LISTENER], expect: [/--bind: expected/, /no valid port \(0-65535\)/] },
    // The bind's default port is the app's: the admin endpoint would take it, or fail on it.
    {
      name: '--admin-bind without a port',
      args: ['--admin-bind', '127.0.0.1', LISTENER],
      expect: [/--admin-bind: expected HOST:PORT or unix:PATH; got "127\.0\.0\.1"$/m],
    },
    // A TLS setting without a certificate would leave the server plain HTTP, without a word.
    ...(['--keyfile key.pem', '--ca-certs ca.pem', '--cert-reqs required'] as const).map((flag) => ({
      name: `${flag} without --certfile`,
      args: [...flag.split(' '), LISTENER],
      expect: [
        new RegExp(
          `^forkgate: error: ${flag.split(' ')[0]}: has no effect without --certfile \\(TLS is served only with a certificate\\)$`,
          'm',
        ),
      ],
    })),
    {
      name: 'unknown --balance',
      args: ['--balance', 'magic', LISTENER],
      expect: [new RegExp(`--balance: expected one of ${BALANCES}; got "magic"`)],
    },
    {
      name: 'bad boolean in the environment',
      args: [LISTENER],
      env: { FORKGATE_PRELOAD: 'maybe' },
      expect: [/FORKGATE_PRELOAD=maybe: expected true or false/],
    },
    {
      name: 'bad FORKGATE_WORKERS',
      args: [LISTENER],
      env: { FORKGATE_WORKERS: 'zero' },
      expect: [/FORKGATE_WORKERS=zero: expected/, /'auto'/],
    },
    {
      name: 'bad WEB_CONCURRENCY names the setting it feeds',
      args: [LISTENER],
      env: { WEB_CONCURRENCY: '-1' },
      expect: [/WEB_CONCURRENCY=-1 \(--workers\): expected a whole number ≥ 1 or 'auto'/],
    },
    { name: 'bad PORT names --bind', args: [LISTENER], env: { PORT: 'http' }, expect: [/PORT=http \(--bind\): expected/, /no valid port/] },
    {
      name: 'bad FORKGATE_CMD_ARGS value',
      args: [LISTENER],
      env: { FORKGATE_CMD_ARGS: '--workers none' },
      expect: [/FORKGATE_CMD_ARGS --workers: expected/],
    },
    {
      name: 'unknown flag in FORKGATE_CMD_ARGS',
      args: [LISTENER],
      env: { FORKGATE_CMD_ARGS: '--wokers 2' },
      expect: [/FORKGATE_CMD_ARGS unknown option '--wokers' \(did you mean --workers\?\)/],
    },
    {
      name: 'a --pid file in no directory: told before anything listens, not a crash once the pool serves',
      args: ['--pid', '/nonexistent/forkgate-dir/app.pid', LISTENER],
      expect: [/--pid \/nonexistent\/forkgate-dir\/app\.pid: cannot write it: no such directory \/nonexistent\/forkgate-dir/],
    },
    {
      name: 'an --access-logfile that is a directory: the setting, not a worker failing to boot',
      args: ['--access-logfile', '/tmp', LISTENER],
      expect: [/--access-logfile \/tmp: cannot write it: it is a directory/],
    },
    {
      name: 'an --access-logfile in no directory: the setting, not the app failing to boot',
      args: ['--access-logfile', '/nonexistent/forkgate-dir/access.log', LISTENER],
      expect: [/--access-logfile \/nonexistent\/forkgate-dir\/access\.log: cannot write it: no such directory/],
    },
    {
      name: "two of forkgate's own listeners on one address: the settings named, not 'address already in use'",
      args: ['-b', '127.0.0.1:7390', '--metrics-bind', '127.0.0.1:7390', LISTENER],
      expect: [/--metrics-bind 127\.0\.0\.1:7390: --bind listens there already/],
    },
    {
      name: 'a misspelled FORKGATE_ variable',
      args: [LISTENER],
      env: { FORKGATE_WORKER: '4' },
      expect: [/FORKGATE_WORKER: not a forkgate setting \(did you mean FORKGATE_WORKERS\?\)/],
    },
    {
      name: 'app in FORKGATE_CMD_ARGS',
      args: [LISTENER],
      env: { FORKGATE_CMD_ARGS: '-w 2 other.js' },
      expect: [/FORKGATE_CMD_ARGS: takes options only, not the app \('other.js'\)/],
    },
    {
      name: 'unknown key in a config file',
      args: [LISTENER],
      files: { 'forkgate.config.json': '{ "wokers": 2 }' },
      expect: [/forkgate\.config\.json: unknown setting 'wokers' \(did you mean 'workers'\?\)/],
    },
    {
      name: 'unknown camelCase key in a config file suggests the config key',
      args: [LISTENER],
      files: { 'forkgate.config.json': '{ "workerClas": "sync" }' },
      expect: [/unknown setting 'workerClas' \(did you mean 'workerClass'\?\)/],
    },
    {
      name: 'bad value in a config file',
      args: [LISTENER],
      files: { 'forkgate.config.json': '{ "workerClass": "gevent" }' },
      expect: [new RegExp(`forkgate\\.config\\.json: workerClass: expected one of ${CLASSES}; got "gevent"`)],
    },
    {
      name: 'command-line action in a config file',
      args: [LISTENER],
      files: { 'forkgate.config.json': '{ "help": true }' },
      expect: [/forkgate\.config\.json: 'help' cannot be set in a config file; it is the command-line option --help/],
    },
    {
      name: 'config file that is not JSON',
      args: [LISTENER],
      files: { 'forkgate.config.json': '{ workers: 2 }' },
      expect: [/forkgate\.config\.json: not valid JSON/],
    },
    {
      name: 'config file that is not an object',
      args: [LISTENER],
      files: { 'forkgate.config.json': '[1, 2]' },
      expect: [/forkgate\.config\.json: expected an object of settings/],
    },
    {
      name: 'config file that throws',
      args: [LISTENER],
      files: { 'forkgate.config.mjs': "throw new Error('config exploded');\n" },
      expect: [/forkgate\.config\.mjs: cannot load the config file: config exploded/],
    },
    {
      name: 'config file with a syntax error',
      args: [LISTENER],
      files: { 'forkgate.config.mjs': 'export default {\n' },
      expect: [/forkgate\.config\.mjs: cannot load the config file: /],
    },
    { name: 'missing -c file', args: ['-c', 'nowhere.json', LISTENER], expect: [/--config: no such file .*nowhere\.json/] },
    {
      name: 'missing --env-file',
      args: [LISTENER],
      env: { FORKGATE_ENV_FILE: 'missing.env' },
      expect: [/^forkgate: error: --env-file \/\S+\/missing\.env: cannot read it: no such file or directory \(ENOENT\)$/m],
    },
    {
      name: '--env-file that is no file, from a config file',
      args: [LISTENER],
      files: { 'forkgate.config.json': '{ "envFile": ["."] }' },
      expect: [/^forkgate: error: --env-file \/\S+: cannot read it: illegal operation on a directory \(EISDIR\)$/m],
    },
    // The token file is read at start as the certificates are: one line before anything starts, not a log line.
    {
      name: 'missing --admin-token-file',
      args: ['--admin-bind', '127.0.0.1:0', '--admin-token-file', 'missing.token', LISTENER],
      expect: [/^forkgate: error: --admin-token-file missing\.token: cannot read it: no such file or directory \(ENOENT\)$/m],
    },
    {
      name: '--admin-token-file that is no file',
      args: ['--admin-token-file', '.', LISTENER],
      expect: [/^forkgate: error: --admin-token-file \.: cannot read it: illegal operation on a directory \(EISDIR\)$/m],
    },
    {
      name: 'empty --admin-token-file, from a config file',
      args: [LISTENER],
      files: { 'forkgate.config.json': '{ "adminBind": "127.0.0.1:0", "adminTokenFile": "empty.token" }', 'empty.token': ' \n' },
      expect: [/^forkgate: error: --admin-token-file empty\.token: holds no token \(the file is empty\)$/m],
    },
    {
      name: 'two apps',
      args: [LISTENER, `${FIXTURES}ops.cjs`],
      expect: [/expected one app \(PATH\[:EXPORT\]\); got '.*listener\.cjs', '.*ops\.cjs'/],
    },
    { name: 'no app', args: ['-w', '2'], expect: [/no app given; usage: forkgate \[options\] APP/] },
    {
      name: 'a word no command and no file, where the app goes',
      args: ['restart'],
      expect: [
        /'restart' is neither a forkgate command nor an app file \(no restart\.\{js,cjs,mjs,ts,mts,cts\} in \S+\)/,
        /the commands are status, top, reload, scale, stop, tune \(forkgate COMMAND --help\), and an app is PATH\[:EXPORT\]/,
      ],
    },
    {
      name: 'a mistyped command',
      args: ['statsu'],
      expect: [/'statsu' is neither a forkgate command \(did you mean forkgate status\?\) nor an app file \(no statsu\./],
    },
    {
      name: 'a mistyped command, two letters swapped',
      args: ['tpo'],
      expect: [/'tpo' is neither a forkgate command \(did you mean forkgate top\?\) nor an app file/],
    },
    {
      name: 'a mistyped command with options after it',
      args: ['relaod', '-w', '2'],
      expect: [/'relaod' is neither a forkgate command \(did you mean forkgate reload\?\) nor an app file/],
    },
    {
      name: 'another word that looks like a command',
      args: ['run', '-w', '2'],
      expect: [/'run' is neither a forkgate command nor an app file/],
    },
    {
      name: 'a DogStatsD tag with a space',
      args: ['--dogstatsd-tags', 'env:prod,my tag', LISTENER],
      expect: [/--dogstatsd-tags: expected comma-separated tags without spaces, \|, # or @; got "env:prod,my tag"/],
    },
    {
      name: 'a command after an option',
      args: ['-w', '2', 'reload'],
      expect: [/'reload' is a command: it comes first, before any option \(see forkgate reload --help\)/],
    },
    {
      name: 'missing --chdir directory',
      args: ['--chdir', '/nonexistent/forkgate-dir', 'app.js'],
      expect: [/--chdir: cannot change to \/nonexistent\/forkgate-dir: ENOENT/],
    },
  ];
  for (const { name, args, env, files, expect } of cases) {
    test(name, async () => {
      const cwd = files ? tempDir(files) : tempDir();
      // A free port unless the case is about the address, so a run that wrongly starts collides with nothing.
      const bind: Record<string, string> = env?.PORT === undefined ? { FORKGATE_BIND: '127.0.0.1:0' } : {};
      const result = await run(args, { env: { ...bind, ...env }, cwd });
      const output = result.stdout + result.stderr;
      assert.equal(result.code, 2, `expected exit 2, got ${result.code ?? result.signal}; output:\n${output}`);
      assert.match(result.stderr, /^forkgate: error: /);
      assert.doesNotMatch(output, /internal error/);
      assert.equal(result.stderr.trimEnd().split('\n').length, 1, `expected a one-line message, got:\n${result.stderr}`);
      for (const pattern of expect) assert.match(result.stderr, pattern);
      assert.doesNotMatch(output, /Booting worker|Listening at|Starting forkgate/);
    });
  }

  test('every flag that takes a value says so by name when it has none', async () => {
    const valued = all.filter((entry) => entry.key !== 'app' && (entry.kind === 'string' || entry.kind === 'list'));
    assert.ok(valued.length > 10);
    for (const entry of valued) {
      const flag = `--${entry.name}`;
      await assert.rejects(resolveSettings({ argv: [LISTENER, flag], env: {}, cwd: tempDir() }), (error: Error) => {
        assert.ok(error instanceof SettingError, `${flag}: ${error.stack}`);
        assert.equal(error.message, `${flag}: missing its value (${flag} ${entry.meta ?? 'VALUE'}); see forkgate --help`);
        return true;
      });
    }
  });

  test('on an older Node, one line names it, the Node forkgate needs and what to do, exit 2', { skip: olderNodeSkip }, async () => {
    const result = await run(['--version'], { command: [OLDER_NODE!.path, CLI] });
    assert.equal(result.code, 2);
    assert.equal(result.stdout, '');
    assert.equal(result.stderr.split('\n').length, 2, `expected one line, got:\n${result.stderr}`);
    assert.match(
      result.stderr,
      new RegExp(
        `^forkgate: error: needs Node >= 24\\.9, or a Node 22 from 22\\.21 on; this is Node ${escapeRegExp(OLDER_NODE!.version)} \\(${escapeRegExp(OLDER_NODE!.path)}\\)\\. `,
      ),
    );
    assert.match(
      result.stderr,
      /Install a newer Node, pin one in the project \(npm install --save-dev node@24; .*\), or use the single binary/,
    );
    // npm warns on install about the same versions.
    const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { engines: { node: string } };
    assert.equal(pkg.engines.node, '^22.21.0 || >=24.9.0');
  });

  test('--upstream takes http://HOST on port 80, and IPv6 in brackets', async () => {
    const values = await printConfig(['--upstream', 'http://example.test', '--upstream', 'http://[::1]:8080'], { cwd: tempDir() });
    assert.equal(values.get('upstream'), 'http://example.test:80,http://[::1]:8080');
  });

  test('a --bind with several colons is not called an IPv6 address unless it looks like one', async () => {
    const nonsense = await run(['--bind', 'nonsense:port:x', LISTENER], { cwd: tempDir() });
    assert.doesNotMatch(nonsense.stderr, /IPv6 address/);
    const v6 = await run(['--bind', '::1:8000', LISTENER], { cwd: tempDir() });
    assert.equal(v6.code, 2);
    assert.match(v6.stderr, /'::1:8000' looks like a bare IPv6 address: write it as \[::1:8000\]:PORT/);
  });
});

describe("a boot failure of forkgate's own finding is one line, without a stack", { concurrency: PARALLEL }, () => {
  test('a missing app file is named, exit 3', async () => {
    const result = await run(['-b', '127.0.0.1:0', 'nope/app.js'], { cwd: tempDir() });
    const output = result.stdout + result.stderr;
    assert.equal(result.code, 3, output);
    assert.match(output, /Worker failed to boot \(pid:\d+\): cannot find app file \S+\/nope\/app\.js \(from 'nope\/app\.js'\)\n/);
    assert.doesNotMatch(output, /^\s+at /m);
  });

  test('an app that exports nothing servable and waits on nothing is named at once, exit 3', async () => {
    const started = Date.now();
    const result = await run(['-b', '127.0.0.1:0', 'no-export.cjs'], { cwd: FIXTURES });
    const output = result.stdout + result.stderr;
    assert.equal(result.code, 3, output);
    assert.match(
      output,
      /Worker failed to boot \(pid:\d+\): \S+no-export\.cjs gave no app to serve\. .*the module exports: default\).*waits on nothing.* Export a Fastify instance/,
    );
    // The wait for an app calling listen() late is the --timeout, 30 s.
    assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
  });

  test('an app the --user cannot read: permission denied, naming the directory it cannot enter or the file, exit 3', {
    skip: !asRoot && 'needs root',
  }, async () => {
    const { dir, command } = reachableByAll({ 'secret.cjs': 'module.exports = (req, res) => res.end();\n' });
    chmodSync(join(dir, 'secret.cjs'), 0o600);
    mkdirSync(join(dir, 'private'), { mode: 0o700 });
    writeFileSync(join(dir, 'private', 'app.cjs'), 'module.exports = (req, res) => res.end();\n');
    const cases = [
      {
        app: 'secret',
        expect:
          /cannot read app file \S+\/secret\.cjs \(from 'secret'\): permission denied: the file exists, but user 'nobody' \(uid 65534\) may not read it\n/,
      },
      {
        app: 'private/app.cjs',
        expect:
          /cannot read app file \S+\/private\/app\.cjs \(from 'private\/app\.cjs'\): permission denied: user 'nobody' \(uid 65534\) may not enter the directory \S+\/private\n/,
      },
    ];
    for (const { app, expect } of cases) {
      const result = await run(['--user', 'nobody', '-b', '127.0.0.1:0', app], { cwd: dir, command });
      const output = result.stdout + result.stderr;
      assert.equal(result.code, 3, output);
      assert.match(output, expect);
      assert.doesNotMatch(output, /cannot find|^\s+at /m);
    }
  });
});

describe('an address that cannot be bound exits 1, with "Cannot listen:" naming it, in every balance mode', {
  concurrency: PARALLEL,
}, () => {
  test('a unix socket in a directory that does not exist: the directory named, not a permission problem', async () => {
    const socket = join(tempDir(), 'missing', 'app.sock');
    const result = await run(['-b', `unix:${socket}`, LISTENER], { cwd: tempDir() });
    const output = result.stdout + result.stderr;
    assert.equal(result.code, 1, output);
    assert.match(output, new RegExp(`Cannot listen: unix:${escapeRegExp(socket)}: no such directory ${escapeRegExp(dirname(socket))}\n`));
    assert.doesNotMatch(output, /EACCES|Listening at|^\s+at /m);
  });

  for (const balance of BALANCE_MODES) {
    test(`a port another server holds fails before "Listening at:" (${balance})`, async () => {
      const occupied = net.createServer().listen(0, '127.0.0.1');
      await once(occupied, 'listening');
      try {
        const bind = `127.0.0.1:${(occupied.address() as net.AddressInfo).port}`;
        const result = await run(['--balance', balance, '-b', bind, LISTENER], { cwd: tempDir() });
        const output = result.stdout + result.stderr;
        assert.equal(result.code, 1, output);
        assert.match(output, new RegExp(`Cannot listen: listen EADDRINUSE: address already in use ${escapeRegExp(bind)}\n`));
        assert.doesNotMatch(output, /Listening at|Booting worker|the app cannot start|^\s+at /m);
      } finally {
        occupied.close();
      }
    });
  }

  test("a port the workers' --user may not bind (reuseport): one line before any worker boots, exit 2", {
    skip: !asRoot && 'needs root',
  }, async (t) => {
    const unprivileged = Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'));
    const port = await freePortBelow(unprivileged);
    if (port === null) return t.skip('every user may bind every port here, or no privileged port is free');
    const { dir, command } = reachableByAll({ 'app.cjs': 'module.exports = (req, res) => res.end();\n' });
    for (const flags of [
      ['--balance', 'reuseport'],
      ['--threads', '2'],
    ]) {
      const result = await run([...flags, '--user', 'nobody', '-b', `127.0.0.1:${port}`, 'app.cjs'], { cwd: dir, command });
      const output = result.stdout + result.stderr;
      assert.equal(result.code, 2, output);
      assert.match(
        output,
        new RegExp(
          `--bind 127\\.0\\.0\\.1:${port}: with --balance reuseport \\(and --threads\\) the workers bind for themselves, and as --user they may not bind ports below ${unprivileged}; use --balance round-robin`,
        ),
      );
      assert.doesNotMatch(output, /Listening at|Booting worker|the app cannot start|^\s+at /m);
    }
  });
});

/** A port below `limit` that nothing listens on now (at most 100 tried), or null. */
async function freePortBelow(limit: number): Promise<number | null> {
  for (let port = limit - 1; port >= Math.max(1, limit - 100); port--) {
    const probe = net.createServer();
    const bound = await new Promise<boolean>((resolve) => {
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!bound) continue;
    await new Promise((resolve) => probe.close(resolve));
    return port;
  }
  return null;
}

describe('precedence: default < config file < environment < FORKGATE_CMD_ARGS < command line', { concurrency: PARALLEL }, () => {
  test('--print-config prints one `name = value` line per setting, defaults first', async () => {
    const values = await printConfig([], { cwd: tempDir() });
    const expected = all.filter((entry) => entry.section !== 'Actions').map((entry) => entry.name);
    assert.deepEqual([...values.keys()], expected);
    assert.equal(values.get('workers'), '1');
    assert.equal(values.get('bind'), '127.0.0.1:8000');
    assert.equal(values.get('config'), 'null');
    assert.equal(values.get('worker-class'), 'async');
    assert.equal(values.get('env'), '{}');
  });

  test('forkgate.config.json in the working directory is found without -c', async () => {
    const dir = tempDir({ 'forkgate.config.json': JSON.stringify({ workers: 2, bind: ['127.0.0.1:7001'], env: { FROM: 'file' } }) });
    const values = await printConfig([], { cwd: dir });
    assert.equal(values.get('workers'), '2');
    assert.equal(values.get('bind'), '127.0.0.1:7001');
    assert.equal(values.get('env'), '{"FROM":"file"}');
    assert.equal(values.get('config'), join(dir, 'forkgate.config.json'));
  });

  test('-c FILE.mjs is read instead of the discovered file', async () => {
    const dir = tempDir({ 'forkgate.config.json': '{ "workers": 2 }', 'custom.mjs': 'export default { workers: 3 };\n' });
    const values = await printConfig(['-c', 'custom.mjs'], { cwd: dir });
    assert.equal(values.get('workers'), '3');
    assert.equal(values.get('config'), join(dir, 'custom.mjs'));
    // FORKGATE_CONFIG names the file too; the command line beats it.
    assert.equal((await printConfig([], { cwd: dir, env: { FORKGATE_CONFIG: 'custom.mjs' } })).get('workers'), '3');
    const other = join(dir, 'other.mjs');
    writeFileSync(other, 'export default { workers: 9 };\n');
    assert.equal((await printConfig(['--config', other], { cwd: dir, env: { FORKGATE_CONFIG: 'custom.mjs' } })).get('workers'), '9');
  });

  test('forkgate.config.ts with defineConfig from the package', async () => {
    const lib = pathToFileURL(`${ROOT}dist/index.cjs`).href;
    const dir = tempDir({
      'forkgate.config.ts': [
        `import { defineConfig } from '${lib}';`,
        `export default defineConfig({ workers: 7, workerClass: 'sync', bind: ['127.0.0.1:7001', 'unix:/tmp/forkgate-test.sock'] });`,
        '',
      ].join('\n'),
      // .ts comes first in the discovery order
      'forkgate.config.json': '{ "workers": 2 }',
    });
    const values = await printConfig([], { cwd: dir });
    assert.equal(values.get('workers'), '7');
    assert.equal(values.get('worker-class'), 'sync');
    assert.equal(values.get('bind'), '127.0.0.1:7001, unix:/tmp/forkgate-test.sock');
    assert.equal(values.get('config'), join(dir, 'forkgate.config.ts'));
  });

  test('forkgate.config.ts as a plain object with type annotations', async () => {
    const dir = tempDir({
      'forkgate.config.ts': [
        'interface Config { workers: number; timeout: number }',
        'const config: Config = { workers: 8, timeout: 90 };',
        'export default config;',
        '',
      ].join('\n'),
    });
    const values = await printConfig([], { cwd: dir });
    assert.equal(values.get('workers'), '8');
    assert.equal(values.get('timeout'), '90');
  });

  test('each layer beats the one below it', async () => {
    const dir = tempDir({ 'forkgate.config.json': '{ "workers": 2, "timeout": 40 }' });
    const workers = async (args: string[], env: Record<string, string> = {}) => (await printConfig(args, { cwd: dir, env })).get('workers');
    assert.equal(await workers([]), '2');
    assert.equal(await workers([], { WEB_CONCURRENCY: '3' }), '3');
    assert.equal(await workers([], { FORKGATE_WORKERS: '4' }), '4');
    assert.equal(await workers([], { FORKGATE_WORKERS: '4', WEB_CONCURRENCY: '3' }), '4', 'FORKGATE_WORKERS beats WEB_CONCURRENCY');
    assert.equal(await workers([], { FORKGATE_WORKERS: '', WEB_CONCURRENCY: '3' }), '3', 'an empty variable counts as unset');
    assert.equal(await workers([], { FORKGATE_SHOP_REGION: 'eu' }), '2', "a FORKGATE_ name near no setting's is the app's own");
    assert.equal(await workers([], { FORKGATE_WORKERS: '4', FORKGATE_CMD_ARGS: '--workers 5' }), '5');
    assert.equal(await workers(['-w', '6'], { FORKGATE_WORKERS: '4', FORKGATE_CMD_ARGS: '--workers 5' }), '6');
    assert.equal(await workers(['--workers=6'], { FORKGATE_CMD_ARGS: "--workers '5'" }), '6');
    // A layer only overrides what it sets: the file's timeout survives all of the above.
    assert.equal((await printConfig(['-w', '6'], { cwd: dir, env: { FORKGATE_WORKERS: '4' } })).get('timeout'), '40');
  });

  test('PORT means 0.0.0.0:PORT, and FORKGATE_BIND and -b beat it', async () => {
    const cwd = tempDir();
    assert.equal((await printConfig([], { cwd, env: { PORT: '9123' } })).get('bind'), '0.0.0.0:9123');
    assert.equal((await printConfig([], { cwd, env: { PORT: '9123', FORKGATE_BIND: '127.0.0.1:9200' } })).get('bind'), '127.0.0.1:9200');
    assert.equal(
      (await printConfig(['-b', '127.0.0.1:9300'], { cwd, env: { PORT: '9123', FORKGATE_BIND: '127.0.0.1:9200' } })).get('bind'),
      '127.0.0.1:9300',
    );
    assert.equal(
      (await printConfig([], { cwd, env: { FORKGATE_BIND: '127.0.0.1:9200, [::1]:9201' } })).get('bind'),
      '127.0.0.1:9200, [::1]:9201',
    );
  });

  test('--workers auto resolves to (2 × CPU) + 1, at least 3', async () => {
    const printed = (await printConfig(['--workers', 'auto'], { cwd: tempDir() })).get('workers')!;
    assert.match(printed, /^\d+$/);
    assert.ok(Number(printed) >= 3, `workers auto = ${printed}`);
    assert.equal(Number(printed) % 2, 1, `workers auto = ${printed} is not 2 × CPU + 1`);
    assert.equal((await printConfig([], { cwd: tempDir(), env: { WEB_CONCURRENCY: 'auto' } })).get('workers'), printed);
  });

  test('repeatable -b and -e collect every value', async () => {
    const values = await printConfig(['-b', '127.0.0.1:9001', '--bind', 'unix:/tmp/forkgate.sock', '-e', 'A=1', '-e', 'B=x=y'], {
      cwd: tempDir(),
    });
    assert.equal(values.get('bind'), '127.0.0.1:9001, unix:/tmp/forkgate.sock');
    assert.deepEqual(JSON.parse(values.get('env')!), { A: '1', B: 'x=y' });
  });

  test('boolean flags: --preload, --no-preload, FORKGATE_PRELOAD', async () => {
    const cwd = tempDir();
    assert.equal((await printConfig(['--preload'], { cwd })).get('preload'), 'true');
    assert.equal((await printConfig([], { cwd, env: { FORKGATE_PRELOAD: 'yes' } })).get('preload'), 'true');
    assert.equal((await printConfig(['--no-preload'], { cwd, env: { FORKGATE_PRELOAD: 'yes' } })).get('preload'), 'false');
  });
});

describe('--check-config', { concurrency: PARALLEL }, () => {
  test('takes a bare word for an app when a file of that name is there, in the directory or --chdir', async () => {
    for (const [args, cwd] of [
      [['listener'], FIXTURES],
      [['--chdir', FIXTURES, 'listener'], tempDir()],
    ] as const) {
      const result = await run(['--check-config', ...args], { cwd });
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^Config OK: listener loads as a/);
    }
  });

  test('exits 0 when the app loads', async () => {
    const result = await run(['--check-config', 'listener.cjs'], { cwd: FIXTURES });
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /Config OK: listener\.cjs loads as a listener app/);
    assert.doesNotMatch(result.stdout + result.stderr, /Booting worker|Listening at/);
  });

  test('passes apps that serve: one calling listen() itself, a Fastify instance', async () => {
    for (const [app, shape] of [
      ['listen-express.cjs', 'listen-call'],
      ['listen-fastify.mjs', 'listen-call'],
      ['fastify.mjs', 'fastify'],
    ]) {
      const result = await run(['--check-config', app!], { cwd: FIXTURES });
      assert.equal(result.code, 0, result.stdout + result.stderr);
      assert.match(result.stdout, new RegExp(`Config OK: ${escapeRegExp(app!)} loads as a ${shape} app`));
    }
  });

  test('binds nothing in any balance mode: a server on the address is left alone', async () => {
    const occupied = net.createServer().listen(0, '127.0.0.1');
    await once(occupied, 'listening');
    try {
      const bind = `127.0.0.1:${(occupied.address() as net.AddressInfo).port}`;
      for (const balance of BALANCE_MODES) {
        const result = await run(['--check-config', '--balance', balance, '-b', bind, 'listener.cjs'], { cwd: FIXTURES });
        assert.equal(result.code, 0, `${balance}: ${result.stdout}${result.stderr}`);
      }
    } finally {
      occupied.close();
    }
  });

  test('loads the app with the --node-option values, as the workers do', async () => {
    // Node strips types on its own, but an enum needs --experimental-transform-types.
    const cwd = tempDir({
      'enum-app.ts':
        "enum Greeting { Hello = 'hello' }\nexport default (req: unknown, res: { end(text: string): void }) => res.end(Greeting.Hello);\n",
    });
    const result = await run(
      ['--check-config', '--node-option=--experimental-transform-types', '--node-option=--no-warnings', 'enum-app.ts'],
      { cwd },
    );
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /Config OK: enum-app\.ts loads as a listener app/);
    const without = await run(['--check-config', 'enum-app.ts'], { cwd });
    assert.equal(without.code, 1, without.stdout + without.stderr);
  });

  test('loads the app as the --user the workers run as', { skip: !asRoot && 'needs root' }, async () => {
    const { dir, command } = reachableByAll({
      'app.cjs': 'module.exports = (req, res) => res.end();\n',
      'secret.cjs': 'module.exports = (req, res) => res.end();\n',
    });
    chmodSync(join(dir, 'secret.cjs'), 0o600);
    const readable = await run(['--check-config', '--user', 'nobody', 'app.cjs'], { cwd: dir, command });
    assert.equal(readable.code, 0, readable.stdout + readable.stderr);
    assert.match(readable.stdout, /Config OK: app\.cjs loads as a listener app/);
    const unreadable = await run(['--check-config', '--user', 'nobody', 'secret.cjs'], { cwd: dir, command });
    const output = unreadable.stdout + unreadable.stderr;
    assert.equal(unreadable.code, 1, output);
    assert.match(
      output,
      /Config check failed: secret\.cjs does not load: cannot read app file \S+secret\.cjs \(from 'secret\.cjs'\): permission denied/,
    );
    assert.doesNotMatch(output, /Config OK/);
  });

  test("exits 1 with the app's error when it does not load", async () => {
    const result = await run(['--check-config', 'broken-import.cjs'], { cwd: FIXTURES });
    const output = result.stdout + result.stderr;
    assert.equal(result.code, 1, output);
    assert.match(output, /Config check failed: broken-import\.cjs does not load/);
    assert.match(output, /database url missing/);
    assert.doesNotMatch(output, /Booting worker|Listening at/);
  });

  test('a log file the --user cannot be given names its setting, exit 2', { skip: !asRoot && 'needs root' }, async () => {
    // a directory where the file would be: refused before any worker is given it
    const directory = tempDir();
    const result = await run(['--check-config', '--user', 'nobody', '--access-logfile', directory, 'listener.cjs']);
    assert.equal(result.code, 2, result.stdout + result.stderr);
    assert.match(result.stderr, new RegExp(`^forkgate: error: --access-logfile ${directory}: cannot write it: it is a directory`));
    assert.equal(result.stderr.split('\n').length, 2, `one line: ${result.stderr}`);
  });

  test('a start that fails with --error-logfile says why on stderr too, naming the file', async () => {
    const log = join(tempDir(), 'error.log');
    const result = await run(['-b', '127.0.0.1:0', '--error-logfile', log, 'no-such-app.js']);
    assert.equal(result.code, 3, result.stderr);
    assert.match(
      result.stderr,
      /^forkgate: error: Worker failed to boot \(pid:\d+\): cannot find app file .*no-such-app\.js .*\(the error log: .*error\.log\)\n$/,
    );
    assert.match(readFileSync(log, 'utf8'), /cannot find app file/);
  });

  test('exits 2 on a bad setting before loading the app', async () => {
    const result = await run(['--check-config', '-w', 'x', 'listener.cjs'], { cwd: FIXTURES });
    assert.equal(result.code, 2);
    assert.doesNotMatch(result.stdout, /Config OK/);
  });
});

test('--chdir DIR resolves a relative app inside DIR and serves it', async () => {
  const cwd = tempDir(); // the app is not reachable from here
  const forkgate = await start(['--chdir', FIXTURES, '-b', '127.0.0.1:0', 'listener.cjs'], {
    cwd,
    env: Object.fromEntries(SETTING_ENV.map((name) => [name, ''])),
  });
  try {
    const reply = await request(`${forkgate.url}/`);
    assert.equal(reply.status, 200);
    assert.equal(reply.body, 'hello from listener');
  } finally {
    assert.deepEqual(await forkgate.stop(), { code: 0, signal: null });
  }
});

describe('--env-file', { concurrency: PARALLEL }, () => {
  const NAMES = ['FROM_FILE', 'QUOTED', 'LATER', 'BY_MASTER', 'BY_DASH_E'];
  const envApp = `module.exports = (req, res) => res.end(JSON.stringify(Object.fromEntries(${JSON.stringify(NAMES)}.map((name) => [name, process.env[name] ?? null]))));\n`;
  const noSettingEnv = Object.fromEntries(SETTING_ENV.map((name) => [name, '']));

  test("sets the workers' environment, relative to where forkgate starts: a later file wins, the master's environment over the files, -e over all", async () => {
    const dir = tempDir({
      '.env': [
        '# as node --env-file reads it',
        'FROM_FILE=file',
        'QUOTED="two words" # a comment',
        'LATER=first',
        'BY_MASTER=file',
        'BY_DASH_E=file',
        '',
      ].join('\n'),
      'later.env': 'LATER=second\n',
    });
    mkdirSync(join(dir, 'srv'));
    writeFileSync(join(dir, 'srv', 'app.cjs'), envApp);
    const args = ['--chdir', 'srv', '--env-file', '.env', '--env-file=later.env', '-e', 'BY_DASH_E=dash-e', '-b', '127.0.0.1:0', 'app.cjs'];
    const forkgate = await start(args, { cwd: dir, env: { ...noSettingEnv, BY_MASTER: 'master' } });
    try {
      assert.deepEqual(JSON.parse((await request(forkgate.url)).body), {
        FROM_FILE: 'file',
        QUOTED: 'two words',
        LATER: 'second',
        BY_MASTER: 'master',
        BY_DASH_E: 'dash-e',
      });
    } finally {
      assert.deepEqual(await forkgate.stop(), { code: 0, signal: null });
    }
  });

  test('HUP reads the file again for the new workers; a file gone by then aborts the reload', async () => {
    const dir = tempDir({ 'app.cjs': envApp, '.env': 'FROM_FILE=before\n' });
    const forkgate = await start(['--env-file', '.env', '-b', '127.0.0.1:0', 'app.cjs'], { cwd: dir, env: noSettingEnv });
    const fromFile = async () => (JSON.parse((await request(forkgate.url)).body) as Record<string, string | null>).FROM_FILE;
    try {
      assert.equal(await fromFile(), 'before');
      writeFileSync(join(dir, '.env'), 'FROM_FILE=after\n');
      forkgate.signal('SIGHUP');
      await forkgate.waitFor(/Reloading: generation 2/);
      await eventually(async () => (await fromFile()) === 'after', 'the new generation serving');
      rmSync(join(dir, '.env'));
      forkgate.signal('SIGHUP');
      await forkgate.waitFor(/Reload aborted, settings unchanged: --env-file \S+\/\.env: cannot read it: no such file or directory/);
      assert.equal(await fromFile(), 'after');
    } finally {
      assert.deepEqual(await forkgate.stop(), { code: 0, signal: null });
    }
  });

  test('a missing file named on the command line: Node itself stops forkgate before it starts, in one line', async () => {
    // Node looks for every --env-file on its command line, forkgate's options too, before any JavaScript runs.
    const result = await run(['--env-file', 'missing.env', LISTENER], { cwd: tempDir(), env: { FORKGATE_BIND: '127.0.0.1:0' } });
    assert.equal(result.code, 9);
    assert.match(result.stderr, /^\S+: missing\.env: not found\n$/);
    assert.equal(result.stdout, '');
  });
});

describe('HUP reads the config file again', { concurrency: PARALLEL }, () => {
  const variants = [
    { file: 'forkgate.config.mjs', body: (workers: number) => `export default { workers: ${workers} };\n` },
    { file: 'forkgate.config.ts', body: (workers: number) => `const workers: number = ${workers};\nexport default { workers };\n` },
    { file: 'forkgate.config.js', body: (workers: number) => `module.exports = { workers: ${workers} };\n` },
  ];
  for (const { file, body } of variants) {
    test(file, async () => {
      const dir = tempDir({ [file]: body(1) });
      const forkgate = await start(['-b', '127.0.0.1:0', LISTENER], {
        cwd: dir,
        env: Object.fromEntries(SETTING_ENV.map((name) => [name, ''])),
      });
      try {
        writeFileSync(join(dir, file), body(2));
        forkgate.signal('SIGHUP');
        await forkgate.waitFor(/Reloading: generation 2 with \d+ workers/);
        assert.match(forkgate.output, /Reloading: generation 2 with 2 workers/);
      } finally {
        assert.deepEqual(await forkgate.stop(), { code: 0, signal: null });
      }
    });
  }
});
