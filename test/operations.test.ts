// Operations: max-requests recycling, hung-worker timeout, HUP reload, USR1 log reopening, access log.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, installInto, isAlive, request, start, startRequest, type StartOptions } from './helpers/forkgate.ts';

const OPS = `${FIXTURES}ops.cjs`;
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-ops-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

test('--max-requests retires a worker after N requests; its replacement is ready first, nothing fails', async () => {
  const forkgate = await start(['-w', '1', '--max-requests', '5', '-b', '127.0.0.1:0', OPS]);
  try {
    const pids = new Set<string>();
    // The retiring worker serves on until its replacement is ready, so keep asking (bounded).
    for (let i = 0; i < 400 && pids.size < 3; i++) {
      const reply = await request(`${forkgate.url}/pid`);
      assert.equal(reply.status, 200);
      pids.add(reply.body);
    }
    assert.ok(pids.size >= 3, `expected recycling, saw pids ${[...pids]}`);
    assert.match(forkgate.output, /served 5 requests \(--max-requests\): replacing it/);
  } finally {
    await forkgate.stop();
  }
});

test('a worker whose event loop hangs past --timeout: its stack is logged, then it is killed and replaced', async () => {
  const forkgate = await start(['-w', '1', '--timeout', '2', '-b', '127.0.0.1:0', OPS]);
  try {
    const [hung] = forkgate.workerPids();
    const hang = startRequest(`${forkgate.url}/hang`);
    void hang.reply.catch(() => {}); // its connection dies with the worker
    await hang.headers;
    // Handed to the hung worker, which never takes it: the master gives it to the replacement.
    const handedToHung = request(`${forkgate.url}/pid`);
    await forkgate.waitFor(new RegExp(`WORKER TIMEOUT \\(pid:${hung}\\)`));
    // Its blocked JavaScript stack is logged, naming the app's file and line, before the kill.
    await forkgate.waitFor(new RegExp(`Worker \\(pid:${hung}\\) was blocked at:\\n\\s+at \\S+ \\(${OPS}:\\d+:\\d+\\)`));
    await eventually(() => !isAlive(hung!), 'the hung worker to die');
    const reply = await eventually(() => request(`${forkgate.url}/pid`).catch(() => null), 'the replacement to serve');
    assert.notEqual(reply.body, String(hung));
    assert.deepEqual([(await handedToHung).status, (await handedToHung).body], [200, reply.body]);
  } finally {
    await forkgate.stop();
  }
});

test('HUP starts a new generation and retires the old one after it is ready', async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', OPS]);
  try {
    const before = forkgate.workerPids();
    forkgate.signal('SIGHUP');
    await eventually(() => {
      const now = forkgate.workerPids();
      return now.length === 2 && now.every((pid) => !before.includes(pid));
    }, 'all workers replaced');
    for (let i = 0; i < 10; i++) {
      const reply = await request(`${forkgate.url}/pid`);
      assert.ok(!before.includes(Number(reply.body)), 'served by the new generation');
    }
  } finally {
    await forkgate.stop();
  }
});

test('HUP re-reads the config file: what a reload applies is applied (the process titles too), what takes a restart is named in the log', async () => {
  const config = join(scratch, 'forkgate.json');
  writeFileSync(config, JSON.stringify({ workers: 1, backlog: 100, queueLimit: 10, name: 'shop' }));
  const forkgate = await start(['-c', config, '--balance', 'proxy', '-b', '127.0.0.1:0', OPS]);
  const title = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '');
  try {
    const before = forkgate.workerPids();
    assert.equal(before.length, 1);
    assert.equal(title(forkgate.pid), `shop: master [${OPS}]`);
    assert.equal(title(before[0]!), `shop: worker [${OPS}]`);
    writeFileSync(config, JSON.stringify({ workers: 2, backlog: 200, queueLimit: 20, name: 'shop-v2' }));
    forkgate.signal('SIGHUP');
    // Two new workers with the old one gone: a reload of one worker runs two for a moment anyway.
    await eventually(() => {
      const now = forkgate.workerPids();
      return now.length === 2 && now.every((pid) => !before.includes(pid));
    }, 'a new generation of two workers, from the new config');
    await forkgate.waitFor(/Reloading: generation \d+ with 2 workers/);
    // The listen socket's backlog in every mode; the proxy's queue, which the master holds, with --balance proxy.
    await forkgate.waitFor(/--backlog: take effect on restart, not on reload/);
    await forkgate.waitFor(/--queue-limit: with --balance proxy, take effect on restart, not on reload/);
    assert.equal((await request(`${forkgate.url}/pid`)).status, 200);
    // --name: the master and the new workers take the new title (Gunicorn's proc_name does the same).
    assert.equal(title(forkgate.pid), `shop-v2: master [${OPS}]`);
    assert.deepEqual(forkgate.workerPids().map(title), [`shop-v2: worker [${OPS}]`, `shop-v2: worker [${OPS}]`]);
  } finally {
    await forkgate.stop();
  }
});

test('HUP to a config that adds --threads to a round-robin pool is refused, and the pool serves on', async () => {
  const config = join(scratch, 'threads.json');
  writeFileSync(config, JSON.stringify({ workers: 1 }));
  const forkgate = await start(['-c', config, '-b', '127.0.0.1:0', OPS]);
  try {
    const before = forkgate.workerPids();
    // Threads would need reuseport (or the proxy), and --balance takes a restart.
    writeFileSync(config, JSON.stringify({ workers: 1, threads: 2 }));
    forkgate.signal('SIGHUP');
    await forkgate.waitFor(/Reload aborted, settings unchanged: the running --balance round-robin: round-robin cannot reach threads/);
    assert.equal((await request(`${forkgate.url}/pid`)).body, String(before[0]));
    assert.deepEqual(forkgate.workerPids(), before);
  } finally {
    await forkgate.stop();
  }
});

test('access log: Gunicorn format; USR1 reopens the file after logrotate moved it', async () => {
  const logFile = join(scratch, 'access.log');
  const forkgate = await start([
    '-w', '1', '-b', '127.0.0.1:0', '--access-logfile', logFile,
    '--access-logformat', '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s %({x-trace}i)s %({content-type}o)s',
    `${FIXTURES}listener.cjs`,
  ]);
  try {
    await request(`${forkgate.url}/first?q=1`, { headers: { 'user-agent': 'tester/1', referer: 'http://ref.example/', 'x-trace': 'abc' } });
    const line = await eventually(() => readFileSync(logFile, 'utf8').trim(), 'the access log line');
    assert.match(
      line,
      /^127\.0\.0\.1 - - \[\d{2}\/\w{3}\/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET \/first\?q=1 HTTP\/1\.1" 200 \d+ "http:\/\/ref\.example\/" "tester\/1" \d+ abc \S+$/,
    );
    renameSync(logFile, `${logFile}.1`);
    forkgate.signal('SIGUSR1');
    await forkgate.waitFor(/Handling signal: usr1/);
    await eventually(async () => {
      await request(`${forkgate.url}/second`);
      try {
        return readFileSync(logFile, 'utf8').includes('GET /second');
      } catch {
        return false; // the worker has not reopened yet
      }
    }, 'a line in the reopened file');
    // From now on every line goes to the new file, none to the rotated one.
    await request(`${forkgate.url}/third`);
    await eventually(() => readFileSync(logFile, 'utf8').includes('GET /third'), 'the third request logged');
    assert.doesNotMatch(readFileSync(`${logFile}.1`, 'utf8'), /GET \/third/);
    assert.match(readFileSync(`${logFile}.1`, 'utf8'), /GET \/first/);
  } finally {
    await forkgate.stop();
  }
});

test('serves on a unix socket', async () => {
  const socketPath = join(scratch, 'forkgate.sock');
  const forkgate = await start(['-w', '2', '-b', `unix:${socketPath}`, OPS]);
  try {
    const reply = await request('http://localhost/pid', { socketPath });
    assert.ok(forkgate.workerPids().includes(Number(reply.body)));
  } finally {
    await forkgate.stop();
  }
});

for (const [balance, umask] of [['round-robin', '077'], ['proxy', '000']] as const) {
  test(`unix sockets keep their modes whatever --umask (-m ${umask}): 0666 for clients, 0600 for the admin endpoint (${balance})`, async () => {
    const socketPath = join(scratch, `modes-${balance}.sock`);
    const admin = join(scratch, `modes-${balance}-admin.sock`);
    const forkgate = await start(['-w', '1', '--balance', balance, '-m', umask, '-b', `unix:${socketPath}`, '--admin-bind', `unix:${admin}`, OPS]);
    try {
      const modes = [socketPath, admin].map((path) => statSync(path).mode & 0o777);
      assert.deepEqual(modes.map((mode) => mode.toString(8)), ['666', '600']);
      assert.equal((await request('http://localhost/pid', { socketPath })).status, 200);
    } finally {
      await forkgate.stop();
    }
  });
}

test('--socket-mode and --socket-group set the mode and group of a unix socket for clients', { skip: process.getuid?.() !== 0 && 'needs root' }, async () => {
  const socketPath = join(scratch, 'group.sock');
  const forkgate = await start(['-w', '1', '--socket-mode', '0660', '--socket-group', '4242', '-b', `unix:${socketPath}`, OPS]);
  try {
    const { uid, gid, mode } = statSync(socketPath);
    assert.deepEqual({ uid, gid, mode: mode & 0o777 }, { uid: 0, gid: 4242, mode: 0o660 });
  } finally {
    await forkgate.stop();
  }
});

test('a --socket-group the master cannot give exits 2 and says why: no such group; not root, a group not its own', async () => {
  const refused = async (group: string, options: StartOptions = {}) => {
    const forkgate = await start(['--socket-group', group, '-b', `unix:${join(scratch, 'refused.sock')}`, OPS], { ...options, waitReady: false });
    assert.equal((await forkgate.exited).code, 2, forkgate.output);
    return forkgate.output;
  };
  assert.match(await refused('no-such-group'), /--socket-group: no 'no-such-group' in \/etc\/group/);
  const notOwn = /--socket-group: the master is neither root nor in group '4242'/;
  if (process.getuid?.() !== 0) return assert.match(await refused('4242'), notOwn);
  // As root: a master run as nobody, from an installation nobody can read.
  const home = mkdtempSync(join(tmpdir(), 'forkgate-nobody-'));
  try {
    chmodSync(home, 0o755);
    const launcher = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    assert.match(await refused('4242', { launcher, command: installInto(home, []).command, cwd: home }), notOwn);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('a throwing listener answers 500 and the worker lives on', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', `${FIXTURES}throws.cjs`]);
  try {
    const [pid] = forkgate.workerPids();
    assert.equal((await request(`${forkgate.url}/throw`)).status, 500);
    assert.equal((await request(`${forkgate.url}/reject`)).status, 500);
    assert.equal((await request(`${forkgate.url}/`)).status, 200);
    assert.deepEqual(forkgate.workerPids(), [pid]);
  } finally {
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'reuseport']) {
  test(`malformed and oversized requests get 400/431, never a crashed worker (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', OPS]);
    try {
      const [pid] = forkgate.workerPids();
      const { port } = new URL(forkgate.url);
      const raw = (payload: string) =>
        new Promise<string>((resolve, reject) => {
          const socket = net.connect(Number(port), '127.0.0.1', () => socket.end(payload));
          let answer = '';
          socket.on('data', (chunk) => (answer += chunk));
          socket.on('close', () => resolve(answer));
          socket.on('error', reject);
        });
      assert.match(await raw('THIS IS NOT HTTP\r\n\r\n'), /^HTTP\/1\.1 400/);
      assert.match(await raw(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), /^HTTP\/1\.1 431/);
      assert.match(await raw('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'), /^HTTP\/1\.1 400/);
      assert.equal((await request(`${forkgate.url}/`)).status, 200);
      assert.deepEqual(forkgate.workerPids(), [pid]);
    } finally {
      await forkgate.stop();
    }
  });
}
