// The pre-fork core: pool size, spreading, respawn, TTIN/TTOU, graceful TERM, orphans, boot failure.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import { after, describe, test } from 'node:test';
import { eventually, FIXTURES, isAlive, request, start, startRequest, type Forkgate } from './helpers/forkgate.ts';

const OPS = `${FIXTURES}ops.cjs`;

for (const balance of ['round-robin', 'reuseport'] as const) {
  describe(`pool (${balance})`, () => {
    let forkgate: Forkgate;
    after(() => forkgate?.stop());

    test('keeps the pool at its size and spreads connections over every worker', async () => {
      forkgate = await start(['-w', '3', '--balance', balance, '-b', '127.0.0.1:0', OPS]);
      assert.equal(forkgate.workerPids().length, 3);
      const seen = new Set<string>();
      for (let i = 0; i < 60 && seen.size < 3; i++) seen.add((await request(`${forkgate.url}/pid`)).body);
      assert.deepEqual(
        [...seen].map(Number).sort((a, b) => a - b),
        forkgate.workerPids(),
      );
    });

    test('replaces a worker killed with SIGKILL and keeps serving', async () => {
      const [victim] = forkgate.workerPids();
      process.kill(victim!, 'SIGKILL');
      await eventually(
        () => !isAlive(victim!) && forkgate.workerPids().length === 3 && !forkgate.workerPids().includes(victim!),
        'a replacement worker',
      );
      await forkgate.waitFor(new RegExp(`Worker \\(pid:${victim}\\) was killed by SIGKILL: perhaps out of memory`));
      for (let i = 0; i < 10; i++) assert.equal((await request(`${forkgate.url}/`)).status, 200);
    });

    test('TTIN adds a worker, TTOU removes one, never below one', async () => {
      forkgate.signal('SIGTTIN');
      await eventually(() => forkgate.workerPids().length === 4, '4 workers');
      // One at a time: the kernel merges a signal sent again before the first was handled.
      for (const expected of [/lowered to 3/, /lowered to 2/, /lowered to 1/, /stays at 1: 0 is below the minimum, 1/]) {
        forkgate.signal('SIGTTOU');
        await forkgate.waitFor(expected);
      }
      await eventually(() => forkgate.workerPids().length === 1, '1 worker');
      assert.equal((await request(`${forkgate.url}/`)).status, 200);
    });
  });
}

/** A keep-alive connection that asked which worker serves it, left open: its socket and the worker's pid. */
function openConnection(url: string): Promise<{ socket: net.Socket; pid: string }> {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  socket.write(`GET /pid HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`);
  return new Promise((resolve, reject) => {
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk;
      const body = /\r\n\r\n(\d+)$/.exec(received);
      if (body) resolve({ socket, pid: body[1]! });
    });
    socket.once('close', () => reject(new Error(`connection closed before its answer: ${received}`)));
  });
}

/** TCP connections the server on `port` has not closed yet (established, or closed by the client only), from /proc/net/tcp. */
function openAt(port: number): number {
  const local = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .filter((line) => {
      const [, address, , state] = line.trim().split(/\s+/);
      return address?.endsWith(local) && (state === '01' || state === '08');
    }).length;
}

test('round-robin: connections that closed leave the count, so new ones go to the worker with the fewest', async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', OPS]);
  try {
    // 21 open at once: the workers last counted 11 and 10 as they took them.
    const opened = [];
    for (let i = 0; i < 21; i++) opened.push(await openConnection(forkgate.url));
    for (const { socket } of opened) socket.destroy();
    const { port } = new URL(forkgate.url);
    await eventually(() => openAt(Number(port)) === 0, 'the workers closing their side');
    // Counted still as 11 and 10, two new connections would both go to the one that had 10.
    await eventually(
      async () => {
        const pair = [await openConnection(forkgate.url), await openConnection(forkgate.url)];
        for (const { socket } of pair) socket.destroy();
        return pair[0]!.pid !== pair[1]!.pid;
      },
      'two connections open at once served by both workers',
      5000,
    );
  } finally {
    await forkgate.stop();
  }
});

test('TERM lets an in-flight request finish, exits 0 and leaves no process behind', async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--graceful-timeout', '10', OPS]);
  const workers = forkgate.workerPids();
  const slow = startRequest(`${forkgate.url}/slow?ms=1500`);
  await slow.headers; // the app answers headers first: the request is in flight inside a worker
  forkgate.signal('SIGTERM');
  const reply = await slow.reply;
  assert.equal(reply.status, 200);
  assert.match(reply.body, /slept 1500 ms/);
  assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
  for (const pid of workers) assert.equal(isAlive(pid), false, `worker ${pid} outlived the master`);
});

test('workers exit when the master is killed with SIGKILL (no orphans)', async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', OPS]);
  const workers = forkgate.workerPids();
  forkgate.signal('SIGKILL');
  await forkgate.exited;
  await eventually(() => workers.every((pid) => !isAlive(pid)), 'orphaned workers to exit');
});

test('an app that fails at import: its error shown once, exit 3, no respawn storm', async () => {
  const forkgate = await start(['-w', '3', '-b', '127.0.0.1:0', `${FIXTURES}broken-import.cjs`], { waitReady: false });
  const { code } = await forkgate.exited;
  assert.equal(code, 3);
  assert.equal(forkgate.count(/Error: database url missing/), 1, forkgate.output);
  assert.match(forkgate.output, /broken-import\.cjs:\d+/);
  assert.ok(forkgate.count(/Booting worker/) <= 3, forkgate.output);
});

test('an ES module that does not parse: its file, line and message shown, exit 3', async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', `${FIXTURES}syntax-error.mjs`], { waitReady: false });
  const { code } = await forkgate.exited;
  assert.equal(code, 3);
  // Node gives an ES module's SyntaxError no location of its own (in the single binary too).
  assert.match(
    forkgate.output,
    /\/syntax-error\.mjs:3\n {2}res\.end\('hello from syntax-error'\n +\^+\nSyntaxError: missing \) after argument list\n/,
  );
});
