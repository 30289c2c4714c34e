// --threads: serving units in worker_threads, supervised like processes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, ROOT, request, start, startRequest } from './helpers/forkgate.ts';

const THREADS = `${FIXTURES}threads.cjs`;
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-threads-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

interface Who {
  pid: number;
  threadId: number;
}

async function threadsSeen(url: string, wanted: number): Promise<Who[]> {
  const seen = new Map<number, Who>();
  for (let i = 0; i < 200 && seen.size < wanted; i++) {
    const who = JSON.parse((await request(`${url}/who`)).body) as Who;
    seen.set(who.threadId, who);
  }
  return [...seen.values()];
}

test('--threads 3: one process answers from three threads; print-config shows gthread over reuseport', async () => {
  const printed = spawnSync(process.execPath, [`${ROOT}dist/forkgate.cjs`, '--threads', '3', '--print-config'], { encoding: 'utf8' });
  assert.match(printed.stdout, /^worker-class = gthread$/m);
  assert.match(printed.stdout, /^balance = reuseport$/m);
  const forkgate = await start(['-w', '1', '--threads', '3', '-b', '127.0.0.1:0', THREADS]);
  try {
    const seen = await threadsSeen(forkgate.url, 3);
    assert.equal(seen.length, 3);
    assert.deepEqual(new Set(seen.map((who) => who.pid)), new Set(forkgate.workerPids()));
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test('two threads run CPU-bound requests in parallel', async () => {
  const forkgate = await start(['-w', '1', '--threads', '2', '-b', '127.0.0.1:0', THREADS]);
  try {
    // The kernel hashes each connection to one thread's socket, so two connections may land on the same
    // thread; a few bounded rounds of four find two threads computing at the same time.
    let overlapping: { threadId: number; start: number; end: number }[] | undefined;
    for (let round = 0; round < 5 && !overlapping; round++) {
      const runs = (await Promise.all(Array.from({ length: 4 }, () => request(`${forkgate.url}/cpu`)))).map(
        (reply) => JSON.parse(reply.body) as { threadId: number; start: number; end: number },
      );
      overlapping = runs.flatMap((a) =>
        runs.filter((b) => b.threadId !== a.threadId && b.start < a.end && a.start < b.end).map((b) => [a, b]),
      )[0];
    }
    assert.ok(overlapping, 'two threads ran CPU-bound requests at the same time');
  } finally {
    await forkgate.stop();
  }
});

test('a thread that dies is replaced; the process lives on', async () => {
  const forkgate = await start(['-w', '1', '--threads', '2', '-b', '127.0.0.1:0', THREADS]);
  try {
    const [pid] = forkgate.workerPids();
    await request(`${forkgate.url}/exit`);
    await forkgate.waitFor(/Thread \d+ exited with code 1: replacing it/);
    await eventually(async () => (await threadsSeen(forkgate.url, 2)).length === 2, 'two serving threads again');
    assert.deepEqual(forkgate.workerPids(), [pid]);
  } finally {
    await forkgate.stop();
  }
});

test('a thread that fails to boot after the pool served is retried with exponential back-off while the others serve', async () => {
  const mark = join(scratch, 'fail-boot');
  const forkgate = await start(['-w', '1', '--threads', '2', '-b', '127.0.0.1:0', `${FIXTURES}boot-fails-when.cjs`], {
    env: { FAIL_BOOT_MARK: mark },
  });
  try {
    const [pid] = forkgate.workerPids();
    writeFileSync(mark, '');
    await request(`${forkgate.url}/exit`);
    await forkgate.waitFor(
      /Next thread start in 500 ms \(failure 1 in a row\)[\s\S]*Next thread start in 1000 ms \(failure 2 in a row\)/,
      20_000,
    );
    const answers = new Set<string>();
    for (let i = 0; i < 20; i++) answers.add((await request(`${forkgate.url}/thread`)).body);
    assert.equal(answers.size, 1, `the one thread left serves every request: ${[...answers]}`);
    const [survivor] = answers;
    assert.equal(forkgate.count(/Thread failed to boot/), 1, 'the same boot error is printed once');
    rmSync(mark);
    const probe = () =>
      request(`${forkgate.url}/thread`).then(
        (reply) => reply.body !== survivor,
        () => false,
      );
    await eventually(
      async () => (await Promise.all(Array.from({ length: 20 }, probe))).some(Boolean),
      'a replacement thread that serves',
      40_000,
    );
    assert.deepEqual(forkgate.workerPids(), [pid], 'the process was not replaced, only its thread');
  } finally {
    await forkgate.stop();
  }
});

test('a thread whose event loop hangs past --timeout is terminated and replaced', async () => {
  const forkgate = await start(['-w', '1', '--threads', '2', '--timeout', '2', '-b', '127.0.0.1:0', THREADS]);
  try {
    const [pid] = forkgate.workerPids();
    void request(`${forkgate.url}/hang`).catch(() => {}); // its connection ends with the thread
    await forkgate.waitFor(/THREAD TIMEOUT \(thread \d+\)/);
    // A connection the kernel queued on the hung thread's socket is reset when that socket closes
    // (unless net.ipv4.tcp_migrate_req=1): such a probe is retried.
    const probe = () =>
      threadsSeen(forkgate.url, 2).then(
        (seen) => seen.length === 2,
        () => false,
      );
    await eventually(probe, 'two serving threads again');
    assert.deepEqual(forkgate.workerPids(), [pid], 'the process was not replaced, only its thread');
  } finally {
    await forkgate.stop();
  }
});

test('--max-requests retires threads one by one; no request fails', async () => {
  const forkgate = await start(['-w', '1', '--threads', '2', '--max-requests', '3', '-b', '127.0.0.1:0', THREADS]);
  try {
    const ids = new Set<number>();
    for (let i = 0; i < 300 && ids.size < 4; i++) {
      const reply = await request(`${forkgate.url}/who`);
      assert.equal(reply.status, 200);
      ids.add((JSON.parse(reply.body) as Who).threadId);
    }
    assert.ok(ids.size >= 4, `threads were replaced: saw ${[...ids]}`);
    assert.match(forkgate.output, /Thread \d+ served 3 requests \(--max-requests\): replacing it/);
  } finally {
    await forkgate.stop();
  }
});

test('TERM drains threads: an in-flight request finishes', async () => {
  const forkgate = await start(['-w', '1', '--threads', '2', '-b', '127.0.0.1:0', THREADS]);
  const slow = startRequest(`${forkgate.url}/slow?ms=1000`);
  await slow.headers; // in flight inside a thread
  forkgate.signal('SIGTERM');
  const reply = await slow.reply;
  assert.equal(reply.status, 200);
  assert.match(reply.body, /slow done/);
  assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
});

test('-k sync --threads 2: each thread serves one request at a time and closes', async () => {
  const forkgate = await start(['-w', '1', '-k', 'sync', '--threads', '2', '-b', '127.0.0.1:0', THREADS]);
  try {
    const replies = await Promise.all(Array.from({ length: 4 }, () => request(`${forkgate.url}/who`)));
    assert.ok(replies.every((reply) => reply.status === 200 && reply.headers.connection === 'close'));
  } finally {
    await forkgate.stop();
  }
});

test('threads with round-robin, or reuseport behind a unix socket: exit 2 naming the mode that reaches them', () => {
  for (const [args, said] of [
    [
      ['--balance', 'round-robin'],
      /^forkgate: error: --balance: round-robin cannot reach threads; .*use --balance reuseport \(TCP binds\) or proxy\n$/,
    ],
    [['--balance', 'round-robin', '-b', 'unix:/tmp/forkgate-threads.sock'], /round-robin cannot reach threads; .*use --balance proxy\n$/],
    [
      ['--balance', 'reuseport', '-b', 'unix:/tmp/forkgate-threads.sock'],
      /reuseport cannot reach threads behind a unix: or fd:\/\/ bind .*use --balance proxy\n$/,
    ],
  ] as const) {
    const result = spawnSync(process.execPath, [`${ROOT}dist/forkgate.cjs`, '--threads', '2', ...args, THREADS], { encoding: 'utf8' });
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, said);
  }
});

test('--threads behind a unix socket: the proxy takes requests to every thread', async () => {
  const socketPath = join(scratch, 'threads.sock');
  const printed = spawnSync(
    process.execPath,
    [`${ROOT}dist/forkgate.cjs`, '--threads', '2', '-b', `unix:${socketPath}`, '--print-config'],
    {
      encoding: 'utf8',
    },
  );
  assert.match(printed.stdout, /^balance = proxy$/m);
  const forkgate = await start(['-w', '1', '--threads', '2', '-b', `unix:${socketPath}`, THREADS]);
  try {
    await forkgate.waitFor(/Using worker class gthread, balance proxy\n/);
    const seen = new Set<number>();
    for (let i = 0; i < 200 && seen.size < 2; i++) {
      seen.add((JSON.parse((await request('http://localhost/who', { socketPath })).body) as Who).threadId);
    }
    assert.equal(seen.size, 2, 'both threads answered');
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});
