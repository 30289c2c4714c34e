// systemd socket activation: with LISTEN_FDS/LISTEN_PID for the master and no bind given, forkgate serves
// the passed sockets (fd://3 ...), and no worker sees the variables.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { takeActivatedSockets } from '../src/config/bind.ts';
import { resolveSettings } from '../src/config/load.ts';
import { FIXTURES, listenBacklog, request, ROOT, start, within } from './helpers/forkgate.ts';
import { freePort } from './helpers/free-port.ts';

const missing = (command: string) =>
  spawnSync(command, ['--version']).error !== undefined && `${command} not installed (apt-get install systemd)`;

test('LISTEN_FDS for this pid gives fd://3 .. fd://(3+N-1); the variables are removed either way', () => {
  const env = { LISTEN_FDS: '2', LISTEN_PID: '4242', LISTEN_FDNAMES: 'web:admin', KEEP: 'yes' };
  assert.deepEqual(takeActivatedSockets(env, 4242), [
    { kind: 'fd', fd: 3 },
    { kind: 'fd', fd: 4 },
  ]);
  assert.deepEqual(env, { KEEP: 'yes' });
  const forAnother = { LISTEN_FDS: '1', LISTEN_PID: '4243' };
  assert.deepEqual(takeActivatedSockets(forAnother, 4242), []);
  assert.deepEqual(forAnother, {});
});

test('activated sockets are the binds only when no source gives one', async () => {
  const activatedSockets = [{ kind: 'fd', fd: 3 }] as const;
  const resolve = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
    resolveSettings({ argv, env, cwd: FIXTURES, activatedSockets }).then(({ settings }) => settings.bind);
  assert.deepEqual(await resolve([]), activatedSockets);
  assert.deepEqual(await resolve(['-b', '127.0.0.1:9000']), [{ kind: 'tcp', host: '127.0.0.1', port: 9000 }]);
  assert.deepEqual(await resolve([], { PORT: '9001' }), [{ kind: 'tcp', host: '0.0.0.0', port: 9001 }]);
  // passed over: said at start, since systemd's connections would wait on them unanswered
  const { warnings } = await resolveSettings({ argv: [], env: { PORT: '9001' }, cwd: FIXTURES, activatedSockets });
  assert.deepEqual(warnings, ['--bind is set by PORT=9001 (--bind): the socket systemd passed (LISTEN_FDS) goes unused']);
  assert.deepEqual((await resolveSettings({ argv: [], env: {}, cwd: FIXTURES, activatedSockets })).warnings, []);
});

test('under systemd-socket-activate: serves the passed socket; workers get no LISTEN_* variables', {
  skip: missing('systemd-socket-activate'),
}, async () => {
  const port = await freePort();
  // systemd-socket-activate listens, waits for the first connection, then execs forkgate with
  // LISTEN_FDS=1 and LISTEN_PID set; it passes on only the variables given with -E (and PATH, HOME).
  const launcher = ['systemd-socket-activate', '-l', `127.0.0.1:${port}`, '-E', 'FORKGATE_WORKERS=2'];
  const forkgate = await start([`${FIXTURES}ops.cjs`], { launcher, waitReady: false });
  try {
    await forkgate.waitFor(new RegExp(`Listening on 127\\.0\\.0\\.1:${port} as 3`));
    const first = await request(`http://127.0.0.1:${port}/pid`);
    assert.equal(first.status, 200);
    await forkgate.ready();
    assert.equal(forkgate.url, `http://127.0.0.1:${port}`);
    const workers = forkgate.workerPids();
    assert.equal(workers.length, 2);
    for (const pid of workers) {
      const environment = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      assert.deepEqual(
        environment.filter((entry) => entry.startsWith('LISTEN_')),
        [],
        `worker ${pid}`,
      );
    }
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test('under systemd-socket-activate: the passed socket is listened on with --backlog', {
  skip: missing('systemd-socket-activate'),
}, async () => {
  const port = await freePort();
  const launcher = ['systemd-socket-activate', '-l', `127.0.0.1:${port}`];
  const forkgate = await start(['-w', '1', '--backlog', '1000', `${FIXTURES}ops.cjs`], { launcher, waitReady: false });
  try {
    await forkgate.waitFor(new RegExp(`Listening on 127\\.0\\.0\\.1:${port} as 3`));
    assert.equal((await request(`http://127.0.0.1:${port}/pid`)).status, 200);
    await forkgate.ready();
    assert.equal(listenBacklog(port), 1000);
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test('deploy/forkgate.socket and forkgate.service pass systemd-analyze verify', { skip: missing('systemd-analyze') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'forkgate-units-'));
  try {
    for (const unit of ['forkgate.socket', 'forkgate.service']) {
      // verify checks that ExecStart exists: the installed path becomes this machine's node.
      const text = readFileSync(`${ROOT}deploy/${unit}`, 'utf8').replaceAll('/usr/local/bin/forkgate', process.execPath);
      writeFileSync(join(dir, unit), text);
    }
    const result = spawnSync('systemd-analyze', ['verify', '--man=no', 'forkgate.socket', 'forkgate.service'], {
      cwd: dir,
      encoding: 'utf8',
    });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stderr, '', 'no warnings');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fd://N naming no socket given to forkgate: one line naming it, exit 2, never an abort', async () => {
  // 20: not open in the master; 0: open, but the terminal or a pipe, not a socket.
  for (const fd of [20, 0]) {
    const forkgate = await start(['-w', '1', '-b', `fd://${fd}`, `${FIXTURES}ops.cjs`], { waitReady: false });
    const exit = await within(20_000, 'the master exits', forkgate.exited);
    assert.deepEqual(exit, { code: 2, signal: null }, forkgate.output);
    assert.match(forkgate.output, new RegExp(`--bind fd://${fd}: descriptor ${fd} is not a socket given to forkgate`));
    assert.doesNotMatch(forkgate.output, /Listening at|^\s+at /m);
  }
});
