// The single binary (npm run test:binary runs the integration tests against dist/forkgate): it starts its
// workers as itself, needs no Node on the machine and ignores NODE_OPTIONS; --node-option is how Node
// options reach workers, from the npm CLI and the binary alike (but --env-file, which is forkgate's own).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runCli } from './helpers/cli.ts';
import { FIXTURES, request, start } from './helpers/forkgate.ts';

const BINARY = process.env.FORKGATE_TEST_BIN;
const binaryOnly = { skip: !BINARY && 'for the single binary: npm run test:binary' };
const APP = `${FIXTURES}node-options.cjs`;

// A space in the path: the option must reach Node as one argument.
const dir = mkdtempSync(join(tmpdir(), 'forkgate node-option '));
after(() => rmSync(dir, { recursive: true, force: true }));
const preload = join(dir, 'preload.cjs');
writeFileSync(preload, 'globalThis.preloadedBy = process.pid;\n');

interface Options {
  execArgv: string[];
  gc: string;
  preloadedBy: number | null;
}

test('--node-option starts the worker processes with those Node options', async () => {
  const forkgate = await start(['-w', '2', '--node-option=--expose-gc', `--node-option=--require=${preload}`, '-b', '127.0.0.1:0', APP]);
  try {
    const workers = forkgate.workerPids();
    const seen = new Set<number>();
    for (let i = 0; i < 40 && seen.size < workers.length; i++) {
      const options = JSON.parse((await request(forkgate.url)).body) as Options;
      assert.equal(options.gc, 'function');
      assert.ok(workers.includes(options.preloadedBy!), `preloaded by a worker: ${options.preloadedBy}`);
      seen.add(options.preloadedBy!);
    }
    assert.equal(seen.size, workers.length, 'every worker answered');
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test('a Node option Node refuses stops forkgate with exit 2, naming --node-option', async () => {
  const result = await runCli(['--node-option=--max-old-space-size=lots', '-b', '127.0.0.1:0', APP], { cwd: dir });
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /illegal value for flag --max-old-space-size=lots/, "Node's own message");
  assert.match(
    result.stderr,
    /Worker failed to boot \(pid:\d+\): Node refused its options \(exit 9, its message is above\): see --node-option\n/,
  );
  assert.doesNotMatch(result.stderr, /the app cannot start/);
});

test('--version names forkgate and the Node 24 it is built on', binaryOnly, () => {
  const result = spawnSync(BINARY!, ['--version'], { encoding: 'utf8' });
  assert.match(result.stdout, /^forkgate \d+\.\d+\.\d+\S* \(Node v24\.\d+\.\d+\)\n$/);
});

test('workers are the binary itself; no node on PATH is needed; NODE_OPTIONS is ignored', binaryOnly, async () => {
  // A NODE_OPTIONS that would stop any Node that honours it, and a PATH with no node on it.
  const env = { PATH: dir, NODE_OPTIONS: '--require=/nonexistent/forkgate-test.cjs' };
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', APP], { env });
  try {
    for (const pid of forkgate.workerPids()) assert.equal(realpathSync(`/proc/${pid}/exe`), realpathSync(BINARY!));
    const options = JSON.parse((await request(forkgate.url)).body) as Options;
    // forkgate's one option: the inspector a hang is read through keeps its address out of the log.
    assert.deepEqual(options, { execArgv: ['--inspect-publish-uid=http'], gc: 'undefined', preloadedBy: null });
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test("--node-option=--env-file is refused, naming forkgate's --env-file: the binary's workers would never see the file", binaryOnly, () => {
  for (const option of ['--env-file=.env', '--env-file-if-exists=.env']) {
    const result = spawnSync(BINARY!, [`--node-option=${option}`, '-b', '127.0.0.1:0', APP], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 15_000,
    });
    assert.equal(result.status, 2, result.stderr);
    assert.equal(
      result.stderr,
      `forkgate: error: --node-option: expected Node options other than --env-file, which the single binary cannot pass to its workers: use forkgate's --env-file FILE; got ["${option}"]\n`,
    );
  }
});
