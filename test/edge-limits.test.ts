// The HTTP edge's limits, in every balance mode: Gunicorn's names, defaults and status codes, the
// connection closed after each refusal, and the worker that refused still the one serving.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, request, start } from './helpers/forkgate.ts';
import { collect, echoOf, exchange, statusOf, type Exchange } from './helpers/edge.ts';

const ECHO = `${FIXTURES}edge-echo.cjs`;
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-edge-limits-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const get = (target: string, headers = '') => `GET ${target} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`;
const fields = (count: number) => Array.from({ length: count }, (_, i) => `X-Field-${i}: ${i}\r\n`).join('');
const chunk = (size: number) => `${size.toString(16)}\r\n${'a'.repeat(size)}\r\n`;
const chunkedPost = (...chunks: string[]) =>
  `POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunks.join('')}`;

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`limits answer 414, 431, 413, 400, 405 and 408 and close the connection; the worker serves on (${balance})`, async () => {
    const forkgate = await start([
      '-w',
      '1',
      '--balance',
      balance,
      '-b',
      '127.0.0.1:0',
      '--limit-request-body',
      '1000',
      '--headers-timeout',
      '1',
      ECHO,
    ]);
    try {
      const [pid] = forkgate.workerPids();
      const status = async (payload: string) => statusOf(await exchange(forkgate.url, payload));

      // Request line: the default 4094 bytes ("GET " + target + " HTTP/1.1").
      assert.equal(await status(get(`/${'a'.repeat(4094 - 14)}`, 'Connection: close\r\n')), 200);
      assert.equal(await status(get(`/${'a'.repeat(4094 - 13)}`)), 414);
      // Header fields: at most 100 (Host is one of them).
      assert.equal(await status(get('/', `${fields(98)}Connection: close\r\n`)), 200);
      assert.equal(await status(get('/', fields(100))), 431);
      // A field ("Name: value") of at most 8190 bytes.
      assert.equal(await status(get('/', `X-Big: ${'a'.repeat(8190 - 7)}\r\nConnection: close\r\n`)), 200);
      assert.equal(await status(get('/', `X-Big: ${'a'.repeat(8190 - 6)}\r\n`)), 431);
      // Body: Content-Length over the limit at once, before any body byte; a chunked body once it passes.
      assert.equal(await status('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n'), 413);
      const within = await exchange(forkgate.url, chunkedPost(chunk(600), chunk(400), '0\r\n\r\n'));
      assert.equal(echoOf(within).bodyBytes, 1000);
      const beyond = await exchange(forkgate.url, chunkedPost(chunk(600), chunk(401), '0\r\n\r\n'));
      assert.equal(statusOf(beyond), 413);
      assert.equal(beyond.received.match(/HTTP\/1\.1/g)!.length, 1, 'the app never answered the cut-off request');
      // Malformed, and request smuggling: Content-Length with Transfer-Encoding.
      assert.equal(await status('THIS IS NOT HTTP\r\n\r\n'), 400);
      assert.equal(await status('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'), 400);
      assert.equal(await status('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'), 400);
      // RFC 9112: more than one Host field (§3.2) or Transfer-Encoding in HTTP/1.0 (§6.1) is a 400;
      // forkgate is no forward proxy: CONNECT is a 405.
      assert.equal(await status('GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'), 400);
      assert.equal(await status('POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'), 400);
      assert.equal(await status(get('/', 'host: b\r\nUpgrade: echo\r\nConnection: Upgrade\r\n')), 400);
      assert.equal(await status('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'), 405);
      // HTTP/1.x only, as Gunicorn: an HTTP/2.0 or HTTP/0.9 request line is a 400.
      assert.equal(await status('GET / HTTP/2.0\r\nHost: x\r\n\r\n'), 400);
      assert.equal(await status('GET /\r\n\r\n'), 400);
      // An upgrade request is held to the same limits.
      const upgrade = 'Upgrade: echo\r\nConnection: Upgrade\r\n';
      assert.equal(await status(get('/', upgrade)), 101);
      assert.equal(await status(get(`/${'a'.repeat(4094 - 13)}`, upgrade)), 414);
      // Slowloris: headers never finished, or nothing sent at all.
      assert.equal(await status('GET / HTTP/1.1\r\nHost: x\r\n'), 408);
      assert.equal(await status(''), 408);

      assert.equal((await request(`${forkgate.url}/`)).status, 200);
      assert.deepEqual(forkgate.workerPids(), [pid]);
    } finally {
      await forkgate.stop();
    }
  });
}

test('0 turns a limit off, as in Gunicorn', async () => {
  const forkgate = await start([
    '-w',
    '1',
    '-b',
    '127.0.0.1:0',
    '--limit-request-line',
    '0',
    '--limit-request-fields',
    '0',
    '--limit-request-field-size',
    '0',
    ECHO,
  ]);
  try {
    const close = 'Connection: close\r\n';
    assert.equal(statusOf(await exchange(forkgate.url, get(`/${'a'.repeat(10_000)}`, close))), 200);
    assert.equal(statusOf(await exchange(forkgate.url, get('/', `${fields(300)}${close}`))), 200);
    assert.equal(statusOf(await exchange(forkgate.url, get('/', `X-Big: ${'a'.repeat(20_000)}\r\n${close}`))), 200);
  } finally {
    await forkgate.stop();
  }
});

test('a client that resets its connection while it waits for a slot crashes nothing and frees its place', async () => {
  const admin = join(scratch, 'admin.sock');
  const forkgate = await start([
    '-w',
    '1',
    '--worker-connections',
    '1',
    '--balance',
    'reuseport',
    '-b',
    '127.0.0.1:0',
    '--admin-bind',
    `unix:${admin}`,
    ECHO,
  ]);
  const openConnections = async () => {
    const status = JSON.parse((await request('http://admin/status', { socketPath: admin })).body) as { workers: { connections: number }[] };
    return status.workers[0]!.connections;
  };
  const { hostname, port } = new URL(forkgate.url);
  const holder = net.connect(Number(port), hostname); // idle, it holds the only slot
  const waiting = net.connect(Number(port), hostname, () => waiting.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  waiting.on('error', () => {});
  try {
    const [pid] = forkgate.workerPids();
    await eventually(async () => (await openConnections()) === 2, 'the worker to hold both connections');
    waiting.resetAndDestroy();
    await eventually(async () => (await openConnections()) === 1, 'the reset connection to leave the queue');
    holder.destroy();
    assert.equal((await request(`${forkgate.url}/`)).status, 200);
    assert.deepEqual(forkgate.workerPids(), [pid]);
  } finally {
    holder.destroy();
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`an upgrade the app does not take is answered as a request, and its connection closed: nothing pipelined behind it hangs (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', `${FIXTURES}ops.cjs`]);
    try {
      const answered = await exchange(forkgate.url, [
        'GET /pid HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n',
        'GET /pid HTTP/1.1\r\nHost: x\r\n\r\n',
      ]);
      assert.equal(statusOf(answered), 200);
      assert.equal(answered.received.match(/HTTP\/1\.1 /g)!.length, 1, answered.received);
    } finally {
      await forkgate.stop();
    }
  });
}

/**
 * Streams a body far over the limit in 64 KiB writes, as curl does: on past the answer until all is
 * sent, reading what comes back. Then ends its side, or with `hold` stays open and silent.
 */
function upload(url: string, framing: 'chunked' | 'length', options: { hold?: boolean } = {}): Promise<Exchange & { stopped: number }> {
  const total = 8 * 1024 * 1024;
  const piece = Buffer.alloc(64 * 1024, 'a');
  const head =
    framing === 'chunked'
      ? 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
      : `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${total}\r\n\r\n`;
  const frame = framing === 'chunked' ? [Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')] : [piece];
  const { hostname, port } = new URL(url);
  // Half-open: the server's FIN after its answer does not end the upload.
  const socket = net.connect({ port: Number(port), host: hostname, allowHalfOpen: true });
  const { sofar, closed } = collect(socket, 'the upload did not finish');
  let stopped = 0;
  const sent = new Promise<void>((resolve) => {
    let written = 0;
    const pump = () => {
      while (written < total && !socket.destroyed) {
        written += piece.length;
        if (!socket.write(Buffer.concat(frame))) return void socket.once('drain', pump);
      }
      stopped = performance.now();
      resolve();
    };
    socket.once('connect', () => {
      socket.write(head);
      pump();
    });
  });
  if (options.hold) {
    closed.catch(() => {}); // the test closes what it held
    // The answer can trail the last write: once all is sent, wait for it whole (or for the close).
    const answered = sent.then(() =>
      eventually(() => (whole(sofar().received) ? { ...sofar(), stopped } : null), 'the answer to the held upload', 5000),
    );
    return Promise.race([answered, closed.then((done) => ({ ...done, stopped }))]);
  }
  void sent.then(() => socket.end());
  return closed.then((done) => ({ ...done, stopped }));
}

/** Whether a response arrived to its last byte, by its framing. */
function whole(received: string): boolean {
  const bodyAt = received.indexOf('\r\n\r\n') + 4;
  if (bodyAt < 4) return false;
  const head = received.slice(0, bodyAt);
  if (/^transfer-encoding: chunked\r$/im.test(head)) return received.endsWith('\r\n0\r\n\r\n');
  const length = /^content-length: (\d+)\r$/im.exec(head);
  return length !== null && received.length - bodyAt === Number(length[1]);
}

for (const balance of ['round-robin', 'proxy']) {
  test(`a client still sending a body over the limit reads the whole 413 before the connection closes, never a reset (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', '--limit-request-body', '1000', ECHO]);
    try {
      const [pid] = forkgate.workerPids();
      for (let attempt = 0; attempt < 3; attempt++) {
        for (const framing of ['chunked', 'length'] as const) {
          const answered = await upload(forkgate.url, framing);
          assert.equal(statusOf(answered), 413, `${framing}, attempt ${attempt}: ${answered.received.slice(0, 200)}`);
          assert.ok(whole(answered.received), `${framing}, attempt ${attempt}: a cut answer: ${answered.received}`);
          assert.equal(answered.reset, false, `${framing}, attempt ${attempt}: the connection was reset`);
        }
      }
      assert.equal((await request(`${forkgate.url}/`)).status, 200);
      assert.deepEqual(forkgate.workerPids(), [pid]);
    } finally {
      await forkgate.stop();
    }
  });
}

test('a refused client that stops sending but keeps its connection open frees its slot after five quiet seconds', async () => {
  const admin = join(scratch, 'admin-linger.sock');
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--limit-request-body', '1000', '--admin-bind', `unix:${admin}`, ECHO]);
  const openConnections = async () => {
    const status = JSON.parse((await request('http://admin/status', { socketPath: admin })).body) as { workers: { connections: number }[] };
    return status.workers[0]!.connections;
  };
  try {
    const held = await upload(forkgate.url, 'chunked', { hold: true });
    assert.equal(statusOf(held), 413);
    await eventually(async () => (await openConnections()) === 1, 'the worker to report the connection');
    await eventually(async () => (await openConnections()) === 0, 'the lingering connection to close');
    const lingered = performance.now() - held.stopped;
    // Heartbeats carry the count once a second.
    assert.ok(lingered > 4000 && lingered < 8000, `closed ${Math.round(lingered)} ms after the client went quiet`);
  } finally {
    await forkgate.stop();
  }
});

test('a sync worker does not linger: a refused client that keeps its connection open does not hold the worker', async () => {
  const forkgate = await start(['-w', '1', '-k', 'sync', '-b', '127.0.0.1:0', '--limit-request-body', '1000', ECHO]);
  try {
    const held = await upload(forkgate.url, 'chunked', { hold: true });
    // Closing on the unread rest of the upload resets the connection, which may destroy the 413 before
    // the client reads it: the price of not lingering, which a sync worker pays to stay free.
    assert.ok(statusOf(held) === 413 || (statusOf(held) === null && held.reset), JSON.stringify(held).slice(0, 200));
    // Lingering would keep the worker's one connection for five quiet seconds.
    const served = performance.now();
    assert.equal((await request(`${forkgate.url}/`)).status, 200);
    assert.ok(performance.now() - served < 3000, `the next client waited ${Math.round(performance.now() - served)} ms`);
  } finally {
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'proxy']) {
  test(`bytes the parser refuses after a request: that request is answered first, then the 400 (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', `${FIXTURES}ops.cjs`]);
    try {
      // an answer that comes later than the bad bytes; Node's own handler would write its 400 instead
      const { received } = await exchange(forkgate.url, `${get('/slow?ms=100')}NOT HTTP\r\n\r\n`);
      const heads = received.match(/^HTTP\/1\.1 \d{3}/gm);
      assert.deepEqual(heads, ['HTTP/1.1 200', 'HTTP/1.1 400'], received);
      assert.match(received, /slept 100 ms/);
    } finally {
      await forkgate.stop();
    }
  });
}

for (const balance of ['round-robin', 'proxy']) {
  test(`Expect: 100-continue over --limit-request-body is answered 413, never invited to send (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', '--limit-request-body', '1000', ECHO]);
    try {
      const expecting = (length: number) =>
        `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`;
      // the head alone: a client that waits for 100 Continue before its body
      const refused = await exchange(forkgate.url, expecting(5000));
      assert.match(refused.received, /^HTTP\/1\.1 413 /, refused.received);
      assert.doesNotMatch(refused.received, /100 Continue/);

      const { hostname, port } = new URL(forkgate.url);
      const socket = net.connect(Number(port), hostname, () => socket.write(expecting(3)));
      const reply = collect(socket, 'the accepted upload to be answered');
      await eventually(() => reply.sofar().received.startsWith('HTTP/1.1 100 Continue\r\n'), 'the invitation to send the body');
      socket.write('abc'); // not end(): Node ends a connection its client half-closed before answering
      const { received } = await reply.closed;
      assert.match(received, /HTTP\/1\.1 200 /, received);
    } finally {
      await forkgate.stop();
    }
  });
}
