// USR2 binary upgrade under load: a new master takes the sockets over, the old one drains and exits.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { childPids, eventually, isAlive, listenBacklog, request, start } from './helpers/forkgate.ts';
import { freshConnectionLoad, keepAliveLoad } from './helpers/load.ts';

const scratch = mkdtempSync(join(tmpdir(), 'forkgate-upgrade-'));
const successors: number[] = [];
after(() => {
  for (const pid of successors) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(scratch, { recursive: true, force: true });
});

const appSource = (version: string) => `module.exports = (req, res) => res.end('${version}');\n`;

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`USR2 with a code change under load: new master, new workers, zero failed requests (${balance})`, async (t) => {
    const app = join(scratch, `app-${balance}.cjs`);
    const pidFile = join(scratch, `forkgate-${balance}.pid`);
    writeFileSync(app, appSource('v1'));
    const forkgate = await start(['-w', '2', '--balance', balance, '-b', '127.0.0.1:0', '--pid', pidFile, app]);
    try {
      const oldWorkers = forkgate.workerPids();
      assert.equal(Number(readFileSync(pidFile, 'utf8')), forkgate.pid);

      const keepAlive = keepAliveLoad(`${forkgate.url}/`, { connections: 8, maxMs: 40_000 });
      const fresh = freshConnectionLoad(`${forkgate.url}/`);
      await keepAlive.reached(300);
      writeFileSync(app, appSource('v2'));
      forkgate.signal('SIGUSR2');
      const [, successorPid] = (await forkgate.waitFor(/Upgrading: started a new master \(pid:(\d+)\)/)) as [string, string];
      successors.push(Number(successorPid));

      assert.deepEqual(await forkgate.exited, { code: 0, signal: null }, 'the old master drains and exits on its own');
      assert.equal(Number(readFileSync(pidFile, 'utf8')), Number(successorPid), 'the pid file names the new master');
      const newWorkers = childPids(Number(successorPid));
      assert.equal(newWorkers.length, 2);
      assert.ok(newWorkers.every((pid) => !oldWorkers.includes(pid)));
      for (const pid of oldWorkers) await eventually(() => !isAlive(pid), `old worker ${pid} to exit`);

      const { ok, failures } = await keepAlive.stop();
      const freshFailures = await fresh.stop();
      t.diagnostic(
        `USR2 under load (${balance}): ${ok + failures.length} keep-alive requests, ${failures.length} failed; ${freshFailures.length} fresh-connection failures`,
      );
      assert.deepEqual(
        [...failures, ...freshFailures],
        [],
        `failed: ${failures.length} keep-alive of ${ok + failures.length}, ${freshFailures.length} fresh`,
      );
      const after = keepAliveLoad(`${forkgate.url}/`, { connections: 2, maxRequests: 50 });
      await after.reached(50);
      assert.deepEqual([...(await after.stop()).bodies], ['v2'], 'the new code serves');
      process.kill(Number(successorPid), 'SIGTERM');
      await eventually(() => !isAlive(Number(successorPid)), 'the new master to stop');
    } finally {
      await forkgate.stop(); // a no-op once the old master has exited; `after` kills a successor left over
    }
  });
}

for (const balance of ['round-robin', 'proxy']) {
  test(`USR2 on a unix socket: the old master leaves the socket file to the new one, which serves on it, names it, and removes it on stop (${balance})`, async () => {
    const socketPath = join(scratch, `app-${balance}.sock`);
    const app = join(scratch, `unix-${balance}.cjs`);
    writeFileSync(app, appSource('v1'));
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', `unix:${socketPath}`, app]);
    try {
      writeFileSync(app, appSource('v2'));
      forkgate.signal('SIGUSR2');
      const [, successorPid] = (await forkgate.waitFor(/Upgrading: started a new master \(pid:(\d+)\)/)) as [string, string];
      successors.push(Number(successorPid));
      assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
      assert.equal((await request('http://x/', { socketPath })).body, 'v2');
      assert.ok(forkgate.output.includes(`Listening at: unix:${socketPath} (${successorPid})`), forkgate.output);
      process.kill(Number(successorPid), 'SIGTERM');
      await eventually(() => !isAlive(Number(successorPid)), 'the new master to stop');
      assert.equal(existsSync(socketPath), false, 'the socket file went with the master that served on it');
    } finally {
      await forkgate.stop();
    }
  });
}

for (const balance of ['round-robin', 'proxy']) {
  test(`USR2 keeps --backlog on the socket the new master inherits (${balance})`, async () => {
    const app = join(scratch, `backlog-${balance}.cjs`);
    writeFileSync(app, appSource('v1'));
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', '--backlog', '1000', app]);
    try {
      const port = Number(new URL(forkgate.url).port);
      assert.equal(listenBacklog(port), 1000);
      forkgate.signal('SIGUSR2');
      const [, successorPid] = (await forkgate.waitFor(/Upgrading: started a new master \(pid:(\d+)\)/)) as [string, string];
      successors.push(Number(successorPid));
      assert.deepEqual(await forkgate.exited, { code: 0, signal: null }, 'the new master serves, the old one has gone');
      assert.equal(listenBacklog(port), 1000);
      process.kill(Number(successorPid), 'SIGTERM');
      await eventually(() => !isAlive(Number(successorPid)), 'the new master to stop');
    } finally {
      await forkgate.stop();
    }
  });
}

test('a USR2 whose new master fails to start leaves the pid file naming the master that serves on', async () => {
  const app = join(scratch, 'failing-upgrade.cjs');
  const pidFile = join(scratch, 'failing-upgrade.pid');
  writeFileSync(app, appSource('v1'));
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--pid', pidFile, app]);
  try {
    writeFileSync(app, `throw new Error('broken release');\n`);
    forkgate.signal('SIGUSR2');
    const [, successorPid] = (await forkgate.waitFor(/Upgrading: started a new master \(pid:(\d+)\)/)) as [string, string];
    successors.push(Number(successorPid));
    await forkgate.waitFor(/Upgrade failed: the new master exited with code 3 before it served; serving on/);
    assert.equal(readFileSync(pidFile, 'utf8'), `${forkgate.pid}\n`);
    assert.equal(existsSync(`${pidFile}.oldbin`), false);
    assert.equal((await request(`${forkgate.url}/`)).body, 'v1');
  } finally {
    await forkgate.stop();
  }
  assert.equal(existsSync(pidFile), false, 'removed by the master it named, as it stops');
});

test("a second master given a live master's --pid file refuses to start, naming it; the file stays", async () => {
  const app = join(scratch, 'pid-taken.cjs');
  const pidFile = join(scratch, 'pid-taken.pid');
  writeFileSync(app, appSource('v1'));
  const first = await start(['-w', '1', '-b', '127.0.0.1:0', '--pid', pidFile, app]);
  try {
    const second = await start(['-w', '1', '-b', '127.0.0.1:0', '--pid', pidFile, app], { waitReady: false });
    assert.deepEqual(await second.exited, { code: 2, signal: null }, second.output);
    assert.match(second.output, new RegExp(`--pid ${pidFile}: already running as pid ${first.pid} \\(or the file is stale: remove it\\)`));
    assert.doesNotMatch(second.output, /Listening at|^\s+at /m);
    assert.equal(readFileSync(pidFile, 'utf8'), `${first.pid}\n`);
  } finally {
    await first.stop();
  }
  writeFileSync(pidFile, '999999999\n'); // stale: no such process
  const third = await start(['-w', '1', '-b', '127.0.0.1:0', '--pid', pidFile, app]);
  try {
    assert.equal(readFileSync(pidFile, 'utf8'), `${third.pid}\n`, 'a stale file is taken over');
  } finally {
    await third.stop();
  }
});

test('USR2: health checks on the admin endpoint say healthy throughout; the new master answers them once it serves', async () => {
  const app = join(scratch, 'slow-boot.mjs');
  const socketPath = join(scratch, 'admin-usr2.sock');
  // Its workers take a second to boot: long enough for a check to reach the new master before it serves.
  writeFileSync(app, `await new Promise((resolve) => setTimeout(resolve, 1000));\nexport default (req, res) => res.end('v1');\n`);
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, app]);
  try {
    const answers = new Map<string, number>();
    let upgrading = true;
    const poll = (async () => {
      for (let i = 0; upgrading && i < 5000; i++) {
        for (const path of ['/healthz', '/readyz']) {
          const { status } = await request(`http://localhost${path}`, { socketPath });
          answers.set(`${path} ${status}`, (answers.get(`${path} ${status}`) ?? 0) + 1);
        }
      }
    })();
    forkgate.signal('SIGUSR2');
    const [, successorPid] = (await forkgate.waitFor(/Upgrading: started a new master \(pid:(\d+)\)/)) as [string, string];
    successors.push(Number(successorPid));
    assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
    upgrading = false;
    await poll;
    assert.deepEqual([...answers.keys()].sort(), ['/healthz 200', '/readyz 200'], JSON.stringify([...answers]));
    assert.ok(answers.get('/readyz 200')! >= 10, `checked throughout: ${JSON.stringify([...answers])}`);
    const status = JSON.parse((await request('http://localhost/status', { socketPath })).body) as { master: { pid: number } };
    assert.equal(status.master.pid, Number(successorPid), 'the new master answers now');
    process.kill(Number(successorPid), 'SIGTERM');
    await eventually(() => !isAlive(Number(successorPid)), 'the new master to stop');
  } finally {
    await forkgate.stop();
  }
});

test('USR2 with a new --bind in the config file says that it serves on the sockets it took over', async () => {
  const dir = mkdtempSync(join(scratch, 'rebind-'));
  const app = join(dir, 'app.cjs');
  writeFileSync(app, appSource('v1'));
  writeFileSync(join(dir, 'forkgate.config.json'), JSON.stringify({ bind: ['127.0.0.1:0'] }));
  const forkgate = await start(['-w', '1', app], { cwd: dir });
  try {
    writeFileSync(join(dir, 'forkgate.config.json'), JSON.stringify({ bind: ['127.0.0.1:1'] }));
    forkgate.signal('SIGUSR2');
    const [, successorPid] = (await forkgate.waitFor(/Upgrading: started a new master \(pid:(\d+)\)/)) as [string, string];
    successors.push(Number(successorPid));
    await forkgate.waitFor(
      /--bind 127\.0\.0\.1:1: an upgrade serves on the sockets it takes over \(127\.0\.0\.1:0\); a new --bind takes a restart/,
    );
    assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
    assert.equal((await request(`${forkgate.url}/`)).body, 'v1');
    process.kill(Number(successorPid), 'SIGTERM');
    await eventually(() => !isAlive(Number(successorPid)), 'the new master to stop');
  } finally {
    await forkgate.stop();
  }
});
