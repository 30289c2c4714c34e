// Operations: max-requests recycling, hung-worker timeout, HUP reload, USR1 log reopening, access log.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, isAlive, request, start, startRequest, type Forkgate, type StartOptions } from './helpers/forkgate.ts';
import { install, type Installation } from './helpers/install.ts';
import { keepAliveLoad } from './helpers/load.ts';
import { UUID } from './helpers/edge.ts';

const OPS = `${FIXTURES}ops.cjs`;
const asRoot = { skip: process.getuid?.() !== 0 && 'needs root' };
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-ops-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Two workers as nobody, installed where nobody can read them, writing their access log where only root may create files. */
async function startWithAccessLogAsNobody(): Promise<{ installed: Installation; log: string; forkgate: Forkgate }> {
  const installed = install(['ops.cjs']);
  const log = join(logDirectory(installed), 'access.log');
  const forkgate = await start(
    [
      '-w',
      '2',
      '-u',
      'nobody',
      '-b',
      '127.0.0.1:0',
      '--access-logfile',
      log,
      '--access-logformat',
      '%(p)s "%(r)s" %(s)s',
      installed.app('ops.cjs'),
    ],
    { command: installed.command, cwd: installed.dir },
  );
  return { installed, log, forkgate };
}

/** A log directory as /var/log/app is: root's, mode 0755, where the workers' user cannot create a file. */
function logDirectory(installed: Installation): string {
  const dir = join(installed.dir, 'log');
  mkdirSync(dir, { mode: 0o755 });
  return dir;
}

function contents(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** The pids in access log lines written with `%(p)s` first, one entry per line. */
function pidsIn(file: string): number[] {
  return [...contents(file).matchAll(/^<(\d+)>/gm)].map((match) => Number(match[1]));
}

/** With --error-logfile the master writes there: readiness and the URL are read from the file. */
async function readyIn(errorLog: string): Promise<string> {
  const match = await eventually(
    () => contents(errorLog).match(/Listening at: (\S+)[\s\S]*Ready: \d+ workers? serving/),
    'the pool to be ready',
  );
  return match[1]!;
}

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

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`--max-requests is a bound: a worker at its limit gets nothing more once another serves (${balance})`, async () => {
    const forkgate = await start(['-w', '2', '--balance', balance, '--max-requests', '20', '-b', '127.0.0.1:0', OPS]);
    try {
      // Fast sequential traffic, a new connection per request: who answered each, in order. At least
      // 150 requests, and on until a fourth worker has answered (replacements boot meanwhile; bounded).
      const answeredBy: string[] = [];
      for (let i = 0; i < 3000 && (i < 150 || new Set(answeredBy).size < 4); i++) {
        const reply = await request(`${forkgate.url}/pid`);
        assert.equal(reply.status, 200);
        answeredBy.push(reply.body);
      }
      assert.ok(new Set(answeredBy).size >= 3, `expected recycling, saw ${[...new Set(answeredBy)]}`);
      // Once a worker has served 20, it answers again only until a worker below its own limit has
      // answered: it was the last one serving, and served on until its replacement was ready. With
      // reuseport the kernel queues connections to it until its retirement has gone to the master and
      // back: a millisecond or so, ten on a loaded machine. A worker kept on until its replacement is
      // ready serves it for hundreds of milliseconds.
      const slack = balance === 'reuseport' ? 15 : 0;
      const served = new Map<string, number>();
      const spentSince = new Map<string, boolean>(); // a worker at its limit, and whether one below it answered since
      const late = new Map<string, number>();
      for (const pid of answeredBy) {
        served.set(pid, (served.get(pid) ?? 0) + 1);
        if (spentSince.get(pid)) late.set(pid, (late.get(pid) ?? 0) + 1);
        if (served.get(pid)! <= 20) for (const other of spentSince.keys()) if (other !== pid) spentSince.set(other, true);
        if (served.get(pid) === 20) spentSince.set(pid, false);
      }
      for (const [pid, count] of late)
        assert.ok(count <= slack, `worker ${pid} served ${count} past its limit while another served: ${answeredBy.join(' ')}`);
    } finally {
      await forkgate.stop();
    }
  });
}

for (const balance of ['round-robin', 'proxy']) {
  test(`--max-requests closes a keep-alive connection at the limit: its next requests go to other workers (${balance})`, async () => {
    const forkgate = await start(['-w', '4', '--balance', balance, '--max-requests', '5', '-b', '127.0.0.1:0', OPS]);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      // One client on one keep-alive connection at a time, as curl with several URLs.
      const answeredBy: string[] = [];
      let closedAtLimit = 0;
      for (let i = 0; i < 12; i++) {
        const reply = await request(`${forkgate.url}/pid`, { agent });
        assert.equal(reply.status, 200);
        answeredBy.push(reply.body);
        if (reply.headers.connection === 'close') closedAtLimit++;
      }
      const served = new Map<string, number>();
      for (const pid of answeredBy) served.set(pid, (served.get(pid) ?? 0) + 1);
      assert.ok(Math.max(...served.values()) <= 5, `a worker served past its limit of 5: ${answeredBy.join(' ')}`);
      assert.ok(balance === 'proxy' || closedAtLimit >= 2, `expected Connection: close at each limit: ${answeredBy.join(' ')}`);
    } finally {
      agent.destroy();
      await forkgate.stop();
    }
  });
}

test('a worker whose event loop hangs past --timeout: its stack is logged (not where the inspector listens), then it is killed and replaced', async () => {
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
    // Of Node's inspector only "Debugger attached." shows, right after the line of forkgate's that explains it.
    const lines = forkgate.output.split('\n');
    const inspector = lines.flatMap((line, index) =>
      line.startsWith('Debugger') || line.startsWith('For help') ? [[lines[index - 1], line]] : [],
    );
    assert.equal(inspector.length, 1, forkgate.output);
    assert.match(inspector[0]![0]!, new RegExp(`WORKER TIMEOUT \\(pid:${hung}\\): .*; reading its stack through the inspector$`));
    assert.equal(inspector[0]![1], 'Debugger attached.');
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

test('the log says one worker in the singular: at start and on HUP', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', OPS]);
  try {
    forkgate.signal('SIGHUP');
    await forkgate.waitFor(/Reloading: generation 2 with \d+ workers?\n/);
    assert.match(forkgate.output, /Ready: 1 worker serving\n/);
    assert.match(forkgate.output, /Reloading: generation 2 with 1 worker\n/);
  } finally {
    await forkgate.stop();
  }
});

test('HUP re-reads the config file: what a reload applies is applied (the process titles too), what takes a restart is named in the log', async () => {
  const config = join(scratch, 'forkgate.json');
  writeFileSync(config, JSON.stringify({ workers: 1, backlog: 100, queueLimit: 10, name: 'shop' }));
  const forkgate = await start(['-c', config, '--balance', 'proxy', '-b', '127.0.0.1:0', OPS]);
  // The title is the first string of the command line; the binary's workers show their --node-options after it.
  const title = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0];
  try {
    const before = forkgate.workerPids();
    assert.equal(before.length, 1);
    assert.equal(title(forkgate.pid), `shop: master [${OPS}]`);
    assert.equal(title(before[0]!), `shop: worker [${OPS}]`);
    writeFileSync(config, JSON.stringify({ workers: 2, backlog: 200, socketMode: '0660', queueLimit: 20, name: 'shop-v2' }));
    forkgate.signal('SIGHUP');
    // Two new workers with the old one gone: a reload of one worker runs two for a moment anyway.
    await eventually(() => {
      const now = forkgate.workerPids();
      return now.length === 2 && now.every((pid) => !before.includes(pid));
    }, 'a new generation of two workers, from the new config');
    await forkgate.waitFor(/Reloading: generation \d+ with 2 workers/);
    // The listen socket's backlog in every mode; the proxy's queue, which the master holds, with --balance proxy.
    // Only what changed is named (not --bind, the same on the command line), in a sentence for one or more.
    await forkgate.waitFor(/\] --backlog and --socket-mode take effect on restart, not on reload\n/);
    await forkgate.waitFor(/\] with --balance proxy, --queue-limit takes effect on restart, not on reload\n/);
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

test('HUP to a config whose error log cannot be opened is refused, and the master serves and logs on', async () => {
  const config = join(scratch, 'error-log.json');
  writeFileSync(config, JSON.stringify({ workers: 1 }));
  const forkgate = await start(['-c', config, '-b', '127.0.0.1:0', OPS]);
  try {
    const before = forkgate.workerPids();
    writeFileSync(config, JSON.stringify({ workers: 1, errorLogfile: join(scratch, 'missing', 'error.log') }));
    forkgate.signal('SIGHUP');
    await forkgate.waitFor(
      /Reload aborted, settings unchanged: --error-logfile: ENOENT: no such file or directory, open '.+\/missing\/error\.log'/,
    );
    assert.equal((await request(`${forkgate.url}/pid`)).body, String(before[0]));
    forkgate.signal('SIGTTIN');
    await forkgate.waitFor(/Pool size raised to 2/);
  } finally {
    await forkgate.stop();
  }
});

test('--access-logformat json: one JSON object per request in the access log', async () => {
  const logFile = join(scratch, 'access.json.log');
  const forkgate = await start([
    '-w',
    '1',
    '-b',
    '127.0.0.1:0',
    '--access-logfile',
    logFile,
    '--access-logformat',
    'json',
    `${FIXTURES}listener.cjs`,
  ]);
  try {
    await request(`${forkgate.url}/first?q=1`, { headers: { 'user-agent': 'tester/1', 'x-request-id': 'abc' } });
    await request(`${forkgate.url}/second`);
    const lines = await eventually(() => {
      const text = readFileSync(logFile, 'utf8');
      return text.split('\n').length > 2 ? text : null;
    }, 'two access log lines');
    const [first, second] = lines
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    assert.deepEqual(
      [first.remote_addr, first.method, first.path, first.query, first.status, first.user_agent, first.request_id, first.pid],
      ['127.0.0.1', 'GET', '/first', 'q=1', 200, 'tester/1', 'abc', forkgate.workerPids()[0]],
    );
    assert.equal(typeof first.duration_us, 'number');
    assert.equal(second.path, '/second');
    // The json format logs the request id, so a request that brings none is given one.
    assert.match(second.request_id, UUID);
  } finally {
    await forkgate.stop();
  }
});

test('access log: Gunicorn format; USR1 reopens the file after logrotate moved it', async () => {
  const logFile = join(scratch, 'access.log');
  const forkgate = await start([
    '-w',
    '1',
    '-b',
    '127.0.0.1:0',
    '--access-logfile',
    logFile,
    '--access-logformat',
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s %({x-trace}i)s %({content-type}o)s',
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

test(
  '--user, access log in a root-owned directory: logrotate (mv, USR1) under keep-alive load loses no request, the workers write the new file',
  asRoot,
  async (t) => {
    const { installed, log, forkgate } = await startWithAccessLogAsNobody();
    try {
      const workers = forkgate.workerPids();
      const load = keepAliveLoad(`${forkgate.url}/pid`, { connections: 4, maxMs: 30_000 });
      await load.reached(100);
      renameSync(log, `${log}.1`);
      forkgate.signal('SIGUSR1');
      await forkgate.waitFor(/Handling signal: usr1/);
      await eventually(() => workers.every((pid) => pidsIn(log).includes(pid)), 'lines from every worker in the new file');
      await load.reached(300);
      const { ok, failures } = await load.stop();
      t.diagnostic(`logrotate under load: ${ok + failures.length} requests, ${failures.length} failed`);
      assert.deepEqual(failures, [], `${failures.length} failed of ${ok + failures.length}`);
      assert.equal(statSync(log).uid, 65534, "the new file is the workers' own");
      // Every request has its line, in the old file before the rotation or the new one after.
      await eventually(() => pidsIn(`${log}.1`).length + pidsIn(log).length === ok, 'a line for every request');
      assert.ok(pidsIn(`${log}.1`).length >= 100);
      assert.deepEqual([...new Set([...pidsIn(`${log}.1`), ...pidsIn(log)])].sort(), workers);
      assert.deepEqual(forkgate.workerPids(), workers, 'no worker died');
      assert.doesNotMatch(forkgate.output, /not reopened|EACCES/);
    } finally {
      await forkgate.stop();
      installed.remove();
    }
  },
);

test(
  '--user: log files that cannot be reopened (a directory now at their path) are named once; master and workers write on to the old files',
  asRoot,
  async () => {
    const installed = install(['ops.cjs']);
    const dir = logDirectory(installed);
    const [accessLog, errorLog] = [join(dir, 'access.log'), join(dir, 'error.log')];
    const forkgate = await start(
      [
        '-w',
        '2',
        '-u',
        'nobody',
        '-b',
        '127.0.0.1:0',
        '--access-logfile',
        accessLog,
        '--access-logformat',
        '%(p)s "%(r)s" %(s)s',
        '--error-logfile',
        errorLog,
        installed.app('ops.cjs'),
      ],
      { command: installed.command, cwd: installed.dir, waitReady: false },
    );
    try {
      const url = await readyIn(errorLog);
      const workers = forkgate.workerPids();
      for (const log of [accessLog, errorLog]) {
        renameSync(log, `${log}.1`);
        mkdirSync(log);
      }
      forkgate.signal('SIGUSR1');
      await eventually(() => contents(`${errorLog}.1`).includes('Handling signal: usr1'), 'the master to take USR1');
      // Connections reach the workers over the channel that carried the reopen: these come after it.
      const served = new Set<string>();
      for (let i = 0; i < 20 && served.size < workers.length; i++) served.add((await request(`${url}/pid`)).body);
      assert.deepEqual([...served].map(Number).sort(), workers);
      await eventually(() => pidsIn(`${accessLog}.1`).length >= 2, 'the lines in the old access log');
      const errors = contents(`${errorLog}.1`)
        .split('\n')
        .filter((line) => line.startsWith('[ERROR]'));
      assert.equal(errors.length, 2, errors.join('\n'));
      assert.match(
        errors[0]!,
        new RegExp(`\\[${forkgate.pid}\\] Log file not reopened, writing on to the old file: EISDIR: .*'${accessLog}'$`),
      );
      assert.match(
        errors[1]!,
        new RegExp(`\\[${forkgate.pid}\\] Log file not reopened, writing on to the old file: EISDIR: .*'${errorLog}'$`),
      );
      assert.deepEqual(forkgate.workerPids(), workers, 'no worker died');
    } finally {
      await forkgate.stop();
      installed.remove();
    }
  },
);

test(
  '--user: a worker started after logrotate moved the access log, before USR1, boots: the master makes the file for it',
  asRoot,
  async () => {
    const { installed, log, forkgate } = await startWithAccessLogAsNobody();
    try {
      const [doomed, survivor] = forkgate.workerPids();
      renameSync(log, `${log}.1`);
      process.kill(doomed!, 'SIGKILL');
      const reply = await eventually(async () => {
        const { body } = await request(`${forkgate.url}/pid`);
        return body !== String(doomed) && body !== String(survivor) && body;
      }, 'the replacement to serve');
      assert.equal(statSync(log).uid, 65534);
      await eventually(() => pidsIn(log).includes(Number(reply)), 'its line in the new file');
      assert.doesNotMatch(forkgate.output, /failed to boot|Cannot start a worker/);
    } finally {
      await forkgate.stop();
      installed.remove();
    }
  },
);

test('a worker that cannot open its error log at boot: the master logs why, and retries it with back-off', async () => {
  const dir = mkdtempSync(join(scratch, 'error-log-'));
  const errorLog = join(dir, 'error.log');
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--error-logfile', errorLog, OPS], { waitReady: false });
  try {
    const url = await readyIn(errorLog);
    const [doomed, survivor] = forkgate.workerPids();
    renameSync(errorLog, `${errorLog}.1`);
    mkdirSync(errorLog);
    process.kill(doomed!, 'SIGKILL');
    await eventually(
      () =>
        /Worker failed to boot \(pid:\d+\):\nError: EISDIR: illegal operation on a directory, open '.+error\.log'[\s\S]*Next worker start in 500 ms/.test(
          contents(`${errorLog}.1`),
        ),
      'the boot failure and its cause in the error log',
    );
    assert.equal((await request(`${url}/pid`)).body, String(survivor));
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

for (const [balance, umask] of [
  ['round-robin', '077'],
  ['proxy', '000'],
] as const) {
  test(`unix sockets keep their modes whatever --umask (-m ${umask}): 0666 for clients, 0600 for the admin endpoint (${balance})`, async () => {
    const socketPath = join(scratch, `modes-${balance}.sock`);
    const admin = join(scratch, `modes-${balance}-admin.sock`);
    const forkgate = await start([
      '-w',
      '1',
      '--balance',
      balance,
      '-m',
      umask,
      '-b',
      `unix:${socketPath}`,
      '--admin-bind',
      `unix:${admin}`,
      OPS,
    ]);
    try {
      const modes = [socketPath, admin].map((path) => statSync(path).mode & 0o777);
      assert.deepEqual(
        modes.map((mode) => mode.toString(8)),
        ['666', '600'],
      );
      assert.equal((await request('http://localhost/pid', { socketPath })).status, 200);
    } finally {
      await forkgate.stop();
    }
  });
}

test('--socket-mode and --socket-group set the mode and group of a unix socket for clients', {
  skip: process.getuid?.() !== 0 && 'needs root',
}, async () => {
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
    const forkgate = await start(['--socket-group', group, '-b', `unix:${join(scratch, 'refused.sock')}`, OPS], {
      ...options,
      waitReady: false,
    });
    assert.equal((await forkgate.exited).code, 2, forkgate.output);
    return forkgate.output;
  };
  assert.match(await refused('no-such-group'), /--socket-group: no 'no-such-group' in \/etc\/group/);
  const notOwn = /--socket-group: the master is neither root nor in group '4242'/;
  if (process.getuid?.() !== 0) return assert.match(await refused('4242'), notOwn);
  // As root: a master run as nobody, from an installation nobody can read.
  const installed = install([]);
  try {
    const launcher = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    assert.match(await refused('4242', { launcher, command: installed.command, cwd: installed.dir }), notOwn);
  } finally {
    installed.remove();
  }
});

test('a rejection no one handles ends the worker, which the log calls by its name', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', `${FIXTURES}chaos.cjs`]);
  try {
    await request(`${forkgate.url}/reject`).catch(() => {}); // the worker dies with the request in hand
    await forkgate.waitFor(/Worker crashed: unhandled promise rejection\nError: chaos: unhandled rejection in a request/);
  } finally {
    await forkgate.stop();
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
    // the error log names the request, as Gunicorn's does
    await forkgate.waitFor(/Error handling request GET \/throw\n/);
    await forkgate.waitFor(/Error handling request GET \/reject\n/);
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
      assert.match(
        await raw('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'),
        /^HTTP\/1\.1 400/,
      );
      assert.equal((await request(`${forkgate.url}/`)).status, 200);
      assert.deepEqual(forkgate.workerPids(), [pid]);
    } finally {
      await forkgate.stop();
    }
  });
}

test("a worker's warning hints at --node-option=--trace-warnings, which then shows where the warning was created", async () => {
  const app = `${FIXTURES}warns.cjs`;
  const plain = await start(['-w', '1', '-b', '127.0.0.1:0', app]);
  try {
    // Node emits warnings on a later tick: they may follow the ready line.
    await plain.waitFor(/\(node:\d+\) \[FORKGATE_TEST_DEP\] DeprecationWarning: something deprecated\n/);
    assert.match(
      plain.output,
      /\(node:\d+\) \[FORKGATE_TEST_WARNING\] Warning: something to warn about\n\(Use `forkgate --node-option=--trace-warnings \.\.\.` to show where the warning was created\)\n/,
    );
    assert.equal(plain.count(/\(Use `/), 1, 'the hint comes once');
  } finally {
    await plain.stop();
  }
  const traced = await start(['-w', '1', '--node-option=--trace-warnings', '-b', '127.0.0.1:0', app]);
  try {
    await traced.waitFor(new RegExp(`Warning: something to warn about\\n\\s+at \\S+ \\(${app}:2:\\d+\\)`));
    await traced.waitFor(/DeprecationWarning: something deprecated\n/);
    assert.doesNotMatch(traced.output, /\(Use `/);
  } finally {
    await traced.stop();
  }
});
