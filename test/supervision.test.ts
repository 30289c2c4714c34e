// Supervision and operability: admin endpoint, readiness on TERM, --max-memory, workers that die, back-off, --user.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, ROOT, request, start, startRequest, type Forkgate } from './helpers/forkgate.ts';
import { install, type Installation } from './helpers/install.ts';
import { keepAliveLoad } from './helpers/load.ts';

const OPS = `${FIXTURES}ops.cjs`;
const asRoot = { skip: process.getuid?.() !== 0 && 'needs root' };
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-supervision-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

test('admin endpoint: healthz, readyz, status, resize and reload; forkgate status prints the pool', async () => {
  const admin = join(scratch, 'admin.sock');
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--admin-bind', `unix:${admin}`, OPS]);
  const ask = (path: string, method = 'GET') => request(`http://admin${path}`, { socketPath: admin, method });
  try {
    assert.equal((await ask('/healthz')).status, 200);
    assert.equal((await ask('/readyz')).status, 200);
    const status = JSON.parse((await ask('/status')).body);
    assert.equal(status.master.pid, forkgate.pid);
    assert.deepEqual(status.workers.map((worker: { pid: number }) => worker.pid).sort(), forkgate.workerPids());
    assert.equal((await ask('/status', 'DELETE')).status, 405);

    assert.equal((await ask('/workers/+1', 'POST')).status, 202);
    await eventually(() => forkgate.workerPids().length === 3, '3 workers');
    assert.equal((await ask('/workers/-1', 'POST')).status, 202);
    await eventually(() => forkgate.workerPids().length === 2, '2 workers');
    assert.equal((await ask('/reload', 'POST')).status, 202);
    await eventually(async () => JSON.parse((await ask('/status')).body).generation === 2, 'generation 2');

    const printed = spawnSync(process.execPath, [`${ROOT}dist/forkgate.cjs`, 'status', '--admin', `unix:${admin}`], { encoding: 'utf8' });
    assert.equal(printed.status, 0, printed.stderr);
    assert.match(printed.stdout, new RegExp(`^master ${forkgate.pid} `));
    assert.match(printed.stdout, /^PID\s+GEN\s+STATE\s+REQUESTS/m);
  } finally {
    await forkgate.stop();
  }
});

test('TERM with --shutdown-delay: /readyz turns 503 at once, serving goes on, the in-flight request completes; TERM is logged once', async () => {
  const admin = join(scratch, 'ready.sock');
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', `unix:${admin}`, '--shutdown-delay', '1', OPS]);
  const readyz = async () => (await request('http://admin/readyz', { socketPath: admin })).status;
  assert.equal(await readyz(), 200);
  const slow = startRequest(`${forkgate.url}/slow?ms=1500`);
  await slow.headers;
  forkgate.signal('SIGTERM');
  await forkgate.waitFor(/Shutdown delay: serving 1 s more/);
  assert.equal(await readyz(), 503);
  assert.equal((await request(`${forkgate.url}/pid`)).status, 200, 'still serving during the delay');
  assert.equal((await slow.reply).status, 200);
  assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
  assert.equal(forkgate.count(/Handling signal: term/), 1, forkgate.output);
  assert.match(forkgate.output, /Shutdown delay over: stopping\n/);
});

test('--max-memory retires a leaking worker with zero failed requests', async (t) => {
  const forkgate = await start(['-w', '1', '--max-memory', '150', '--timeout', '2', '-b', '127.0.0.1:0', `${FIXTURES}leak.cjs`]);
  try {
    const [first] = forkgate.workerPids();
    const load = keepAliveLoad(`${forkgate.url}/`, { connections: 2, maxRequests: 400, maxMs: 30_000 });
    await forkgate.waitFor(new RegExp(`Worker \\(pid:${first}\\) uses \\d+ MiB, over --max-memory: replacing it`), 30_000);
    await eventually(() => !forkgate.workerPids().includes(first!), 'the leaking worker to go');
    const { ok, failures, bodies } = await load.stop();
    t.diagnostic(`--max-memory under load: ${ok + failures.length} requests, ${failures.length} failed`);
    assert.deepEqual(failures, [], `${failures.length} failed of ${ok + failures.length}`);
    assert.ok(bodies.size >= 2, 'a replacement served');
  } finally {
    await forkgate.stop();
  }
});

test('round-robin: workers dying under load never take the master down; what waited for them is served', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', OPS]);
  try {
    // wrk reconnects at once when its connections die with the worker: some reach the master between
    // the death and its exit being handled, when the worker's IPC channel is already closed.
    const wrk = spawn('wrk', ['-t1', '-c16', '-d6s', `${forkgate.url}/pid`], { stdio: 'ignore' });
    const wrkDone = new Promise((resolve) => wrk.once('exit', resolve));
    try {
      for (let crash = 1; crash <= 3; crash++) {
        await killAndAwaitReplacement(forkgate, '/throw', `a replacement for crashed worker ${crash}`);
      }
    } finally {
      wrk.kill();
      await wrkDone;
    }
    assert.equal(forkgate.process.exitCode, null, forkgate.output);
    assert.doesNotMatch(forkgate.output, /Maximum call stack|RangeError/);
    assert.equal((await request(`${forkgate.url}/pid`)).status, 200);
  } finally {
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'proxy']) {
  test(`${balance}: a worker that dies after it was ready is replaced at once; a request that kills workers, sent again and again, never stops the pool`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', OPS]);
    try {
      for (let death = 1; death <= 4; death++) {
        await killAndAwaitReplacement(forkgate, '/exit', `a replacement for killed worker ${death}`);
      }
      assert.equal(
        forkgate.count(/Worker \(pid:\d+\) exited with code 1/),
        4,
        'each request killed one worker, none was retried on another',
      );
      assert.doesNotMatch(forkgate.output, /Next worker start/);
    } finally {
      await forkgate.stop();
    }
  });
}

test('a worker that dies on its own after it was ready, before any request, is a crash loop: its restarts back off', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', `${FIXTURES}crashes-after-boot.cjs`]);
  try {
    await forkgate.waitFor(
      /1 before any client came[\s\S]*Next worker start in 500 ms \(failure 1 in a row\)[\s\S]*Next worker start in 1000 ms \(failure 2 in a row\)/,
      20_000,
    );
  } finally {
    await forkgate.stop();
  }
});

test('a worker a WebSocket client killed, or one stopped from outside while idle, is replaced at once: no back-off', async () => {
  const forkgate = await start(['-w', '1', '--log-level', 'debug', '-b', '127.0.0.1:0', `${FIXTURES}websocket.cjs`]);
  const replacedAndReady = async (gone: number) => {
    const replacement = await eventually(() => {
      const pids = forkgate.workerPids();
      return pids.length === 1 && pids[0] !== gone ? pids[0] : null;
    }, `a replacement for ${gone}`);
    await forkgate.waitFor(new RegExp(`Worker \\(pid:${replacement}\\) ready`));
  };
  try {
    for (let death = 1; death <= 3; death++) {
      const [worker] = forkgate.workerPids();
      const client = new WebSocket(forkgate.url.replace('http', 'ws'));
      await once(client, 'open');
      client.send('exit');
      await once(client, 'close');
      await replacedAndReady(worker!);
    }
    const [idle] = forkgate.workerPids();
    process.kill(idle!, 'SIGTERM');
    await replacedAndReady(idle!);
    assert.equal(forkgate.count(/Worker \(pid:\d+\) exited with code 1/), 3);
    assert.doesNotMatch(forkgate.output, /Next worker start|failed to boot/);
  } finally {
    await forkgate.stop();
  }
});

test('a worker that fails to boot after the pool served is retried with exponential back-off while the others serve', async () => {
  const mark = join(scratch, 'fail-boot');
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', `${FIXTURES}boot-fails-when.cjs`], { env: { FAIL_BOOT_MARK: mark } });
  try {
    const [doomed, survivor] = forkgate.workerPids();
    writeFileSync(mark, '');
    process.kill(doomed!, 'SIGKILL');
    await forkgate.waitFor(
      /Next worker start in 500 ms \(failure 1 in a row\)[\s\S]*Next worker start in 1000 ms \(failure 2 in a row\)/,
      20_000,
    );
    assert.equal((await request(forkgate.url)).body, String(survivor));
    assert.equal(forkgate.count(/Worker failed to boot/), 1, 'the same boot error is printed once');
    rmSync(mark);
    await eventually(async () => (await request(forkgate.url)).body !== String(survivor), 'a replacement that serves', 40_000);
  } finally {
    await forkgate.stop();
  }
});

test('--user and --group: workers run as that user, the master keeps root', asRoot, async () => {
  const installed = install(['ops.cjs']);
  const forkgate = await start(['-w', '1', '--user', 'nobody', '--group', 'nogroup', '-b', '127.0.0.1:0', installed.app('ops.cjs')], {
    command: installed.command,
    cwd: installed.dir,
  });
  try {
    const [worker] = forkgate.workerPids();
    const ids = (pid: number, field: string) =>
      readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+)`, 'm'))![1];
    assert.equal(ids(worker!, 'Uid'), '65534');
    assert.equal(ids(worker!, 'Gid'), '65534');
    assert.equal(ids(forkgate.pid, 'Uid'), '0');
    assert.equal((await request(`${forkgate.url}/pid`)).body, String(worker));
  } finally {
    await forkgate.stop();
    installed.remove();
  }
});

/** The installed ops.cjs under --user nobody, not waiting for it to serve. */
function startAsNobody(installed: Installation) {
  return start(['-w', '2', '--user', 'nobody', '-b', '127.0.0.1:0', installed.app('ops.cjs')], {
    command: installed.command,
    cwd: installed.dir,
    waitReady: false,
  });
}

test('--user that cannot reach the executable (a private home): exit 2 before any worker, one line naming both', asRoot, async () => {
  const installed = install(['ops.cjs']);
  chmodSync(installed.dir, 0o700);
  try {
    const forkgate = await startAsNobody(installed);
    assert.deepEqual(await forkgate.exited, { code: 2, signal: null }, forkgate.output);
    const errors = forkgate.output.split('\n').filter((line) => line.startsWith('[ERROR]'));
    assert.equal(errors.length, 1, forkgate.output);
    assert.ok(
      errors[0]!.endsWith(
        `--user nobody: the workers cannot run ${installed.executable}: they may not enter the directory ${installed.dir}`,
      ),
      errors[0],
    );
    assert.doesNotMatch(forkgate.output, /Listening at|Booting worker|undefined|^\s+at /m);
  } finally {
    installed.remove();
  }
});

test('--user that can run Node but not read the bundle (npm): exit 2 naming it', {
  skip: (process.env.FORKGATE_TEST_BIN && 'the binary is its own bundle') || asRoot.skip,
}, async () => {
  const installed = install(['ops.cjs']);
  const bundle = installed.command.at(-1)!;
  chmodSync(bundle, 0o600);
  try {
    const forkgate = await startAsNobody(installed);
    assert.deepEqual(await forkgate.exited, { code: 2, signal: null }, forkgate.output);
    assert.match(forkgate.output, new RegExp(`--user nobody: the workers cannot read ${bundle}, which they run: they may not read it\n`));
    assert.doesNotMatch(forkgate.output, /Listening at|Booting worker|MODULE_NOT_FOUND|^\s+at /m);
  } finally {
    installed.remove();
  }
});

test('a worker that cannot be started after the pool served is retried with back-off while the others serve', asRoot, async () => {
  const installed = install(['ops.cjs']);
  const forkgate = await start(['-w', '2', '--user', 'nobody', '-b', '127.0.0.1:0', installed.app('ops.cjs')], {
    command: installed.command,
    cwd: installed.dir,
  });
  try {
    const [doomed, survivor] = forkgate.workerPids();
    // The executable out of the workers' user's reach, as a private home would put it.
    chmodSync(installed.dir, 0o700);
    process.kill(doomed!, 'SIGKILL');
    await forkgate.waitFor(
      /Next worker start in 500 ms \(failure 1 in a row\)[\s\S]*Next worker start in 1000 ms \(failure 2 in a row\)/,
      20_000,
    );
    assert.equal((await request(`${forkgate.url}/pid`)).body, String(survivor));
    assert.equal(forkgate.count(/Cannot start a worker: user nobody cannot run \S+ \(EACCES\)/), 1, 'the same cause is printed once');
    assert.doesNotMatch(forkgate.output, /undefined/);
    chmodSync(installed.dir, 0o755);
    await eventually(async () => (await request(`${forkgate.url}/pid`)).body !== String(survivor), 'a replacement that serves', 40_000);
  } finally {
    await forkgate.stop();
    installed.remove();
  }
});

/** Sends the request that kills the single worker, then waits until another worker answers. */
async function killAndAwaitReplacement(forkgate: Forkgate, route: string, what: string): Promise<void> {
  const [doomed] = forkgate.workerPids();
  await request(`${forkgate.url}${route}`).catch(() => null);
  await eventually(async () => {
    const reply = await request(`${forkgate.url}/pid`).catch(() => null);
    return reply?.status === 200 && reply.body !== String(doomed);
  }, what);
}
