// --balance proxy: the master terminates HTTP and sends each request to the least busy serving unit over
// a private unix socket. Least-busy dispatch, streaming both ways, buffering slow uploads ahead of sync
// workers, the queue and its limits, retries and failures, threads, and the edge applied by the master.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, request, start } from './helpers/forkgate.ts';
import { echoOf, exchange, statusOf, UUID } from './helpers/edge.ts';

const PROXY = `${FIXTURES}proxy.cjs`;
const ECHO = `${FIXTURES}edge-echo.cjs`;
const THREADS = `${FIXTURES}threads.cjs`;
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-proxy-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const proxyArgs = (...more: string[]) => ['--balance', 'proxy', '-b', '127.0.0.1:0', ...more];

/**
 * Starts /spin in the background and resolves once the app is spinning (its pid written to the mark
 * file); with a log, the unit first appends `spin <pid>` to it.
 */
async function startSpin(url: string, ms: number, name: string, log?: string) {
  const mark = join(scratch, name);
  const state = { done: false };
  const reply = request(`${url}/spin?ms=${ms}&mark=${mark}${log ? `&log=${log}` : ''}`).finally(() => (state.done = true));
  const pid = await eventually(() => existsSync(mark) && readFileSync(mark, 'utf8'), 'the app to start spinning');
  return { pid, reply, state };
}

/** A streamed response: resolves at its first chunk, with the rest to come. */
function firstChunk(url: string): Promise<{ first: string; rest: Promise<string>; abort: () => void }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      res.setEncoding('utf8');
      let rest = '';
      let resolveRest!: (text: string) => void;
      let rejectRest!: (error: Error) => void;
      const restPromise = new Promise<string>((ok, fail) => {
        resolveRest = ok;
        rejectRest = fail;
      });
      restPromise.catch(() => {});
      res.once('data', (first: string) => {
        res.on('data', (chunk: string) => (rest += chunk));
        resolve({ first, rest: restPromise, abort: () => req.destroy() });
      });
      res.on('end', () => resolveRest(rest));
      res.on('error', (error) => rejectRest(error));
    });
    req.on('error', reject);
    setTimeout(() => reject(new Error(`no first chunk from ${url} within 5 s`)), 5_000).unref();
  });
}

test('least busy: while one worker spins on the CPU, every quick request goes to the other, and all finish first', async () => {
  const forkgate = await start(['-w', '2', ...proxyArgs(PROXY)]);
  try {
    assert.match(forkgate.output, /Using worker class async, balance proxy/);
    const spin = await startSpin(forkgate.url, 1500, 'least-busy');
    // The unit has had a request in flight and completed none for 50 ms: past the ~4 ms that ranks it busy.
    const spinning = Date.now();
    await eventually(() => Date.now() - spinning >= 50, 'the spin to run for 50 ms');
    const quick: { pid: string; spinDone: boolean }[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < 20) {
          next++;
          const reply = await request(`${forkgate.url}/pid`);
          assert.equal(reply.status, 200);
          quick.push({ pid: reply.body, spinDone: spin.state.done });
        }
      }),
    );
    const spun = await spin.reply;
    assert.equal(spun.status, 200);
    assert.equal(spun.body, `spun in ${spin.pid}`);
    assert.equal(quick.length, 20);
    const others = forkgate
      .workerPids()
      .filter((pid) => String(pid) !== spin.pid)
      .map(String);
    assert.equal(others.length, 1);
    assert.deepEqual(
      quick.filter(({ pid }) => pid !== others[0]),
      [],
      'every quick request went to the worker that was not spinning',
    );
    assert.deepEqual(
      quick.filter(({ spinDone }) => spinDone),
      [],
      'every quick request finished before the spin',
    );
  } finally {
    await forkgate.stop();
  }
});

test('requests sent to a unit before it started to spin are taken back and answered by the other unit', async () => {
  const admin = join(scratch, 'taken-back-admin.sock');
  const args = ['-w', '2', '--worker-connections', '3', '--log-level', 'debug', '--admin-bind', `unix:${admin}`];
  const forkgate = await start([...args, ...proxyArgs(PROXY)]);
  const log = join(scratch, 'taken-back.log');
  try {
    // Only a unit that has answered before is taken from: one just started is slow, not stuck.
    const answeredBy = new Set<string>();
    for (let i = 0; i < 50 && answeredBy.size < 2; i++) answeredBy.add((await request(`${forkgate.url}/pid`)).body);
    assert.equal(answeredBy.size, 2, 'both units answered');
    // The spin and 5 quick requests pipelined behind it, dispatched together: the other unit takes 3,
    // so the spinning unit gets 2 (stuck or not), and one at least is not the oldest it has unanswered.
    const burst = Array.from(
      { length: 5 },
      (_, id) => `GET /logged?id=${id}&log=${log} HTTP/1.1\r\nHost: x\r\n${id === 4 ? 'Connection: close\r\n' : ''}\r\n`,
    );
    const { received } = await exchange(forkgate.url, `GET /spin?ms=1000 HTTP/1.1\r\nHost: x\r\n\r\n${burst.join('')}`);
    assert.equal(received.match(/HTTP\/1\.1 200 OK/g)?.length, 6, received);
    const spinner = /spun in (\d+)/.exec(received)![1]!;
    const takenBack = [...forkgate.output.matchAll(/GET \/logged\?id=(\d+)&\S* waited behind a busy \S*\/(\d+)-\d+\.sock/g)];
    const fromSpinner = takenBack.filter(([, , pid]) => pid === spinner).map(([, id]) => id!);
    const runs = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((line) => line.split(' '));
    const ranElsewhere = fromSpinner.filter((id) => runs.some(([ran, pid]) => ran === id && pid !== spinner));
    assert.ok(ranElsewhere.length > 0, `requests taken back from the spinning unit ran on the other: ${fromSpinner}`);
    const status = JSON.parse((await request('http://admin/status', { socketPath: admin })).body) as { backends: { takenBack: number }[] };
    assert.equal(
      status.backends.reduce((sum, { takenBack: count }) => sum + count, 0),
      takenBack.length,
      '/status counts what was taken back',
    );
  } finally {
    await forkgate.stop();
  }
});

test('requests a unit has started and awaits are never taken back, even when the unit then spins', async (t) => {
  const forkgate = await start(['-w', '2', '--log-level', 'debug', ...proxyArgs(PROXY)]);
  const log = join(scratch, 'awaited.log');
  const idsOf = (lines: string[]) => lines.map((line) => Number(line.split(' ')[0]));
  try {
    // Both units answer first: the master takes requests back only from a unit that has answered.
    const answeredBy = new Set<string>();
    for (let i = 0; i < 4; i++) answeredBy.add((await request(`${forkgate.url}/pid`)).body);
    assert.equal(answeredBy.size, 2, 'both units answered');
    const replies = Array.from({ length: 12 }, (_, id) => request(`${forkgate.url}/wait?ms=1000&id=${id}&log=${log}`));
    // Every one has started (logged as its handler began, confirmed to the proxy right after)...
    const lines = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []);
    await eventually(() => new Set(idsOf(lines())).size === 12, 'the 12 requests to start');
    // ...and now a unit stops making progress: what it has started stays with it. Its "spin" line in
    // the log parts what ran before the spin from what ran after.
    const spin = await startSpin(forkgate.url, 600, 'awaited-spin', log);
    const startedIn = lines().map((line) => line.split(' ')[1]);
    assert.ok(startedIn.includes(String(spin.pid)), 'the spinning unit has some of the awaited requests');
    // The other unit keeps answering meanwhile: the spinning one is stuck beside a unit that moves, so
    // whatever it has not started is taken back now.
    let quick = 0;
    while (!spin.state.done && quick++ < 1000) assert.equal((await request(`${forkgate.url}/pid`)).status, 200);
    assert.equal((await spin.reply).status, 200);
    assert.deepEqual(
      (await Promise.all(replies)).map(({ status }) => status),
      Array(12).fill(200),
    );
    const all = lines();
    const spinAt = all.indexOf(`spin ${spin.pid}`);
    const before = idsOf(all.slice(0, spinAt));
    assert.deepEqual(
      idsOf(all.slice(spinAt + 1)).filter((id) => before.includes(id)),
      [],
      'no request started before the spin ran again after it',
    );
    // While the 12 were dispatched, one the proxy took back just as its unit read it ran twice (the
    // race docs/architecture.md names): never more than that.
    const runs = before.sort((a, b) => a - b);
    assert.deepEqual([...new Set(runs)], [...Array(12).keys()], 'each request ran');
    assert.ok(
      [...Array(12).keys()].every((id) => runs.filter((run) => run === id).length <= 2),
      `each request ran at most twice: ${runs.join(' ')}`,
    );
    t.diagnostic(`${runs.length - 12} of the 12 ran twice as they were dispatched`);
  } finally {
    await forkgate.stop();
  }
});

test('a WebSocket is piped through the proxy to the app and echoes', async () => {
  const forkgate = await start(['-w', '1', ...proxyArgs(`${FIXTURES}websocket.cjs`)]);
  try {
    const { port } = new URL(forkgate.url);
    const socket = new WebSocket(`ws://127.0.0.1:${port}/chat`);
    const echoes = await new Promise<string[]>((resolve, reject) => {
      const received: string[] = [];
      const timer = setTimeout(() => reject(new Error('no WebSocket echo within 10 s')), 10_000);
      socket.addEventListener('open', () => socket.send('hello'));
      socket.addEventListener('message', (event) => {
        received.push(String(event.data));
        if (received.length === 1) socket.send('again');
        else {
          clearTimeout(timer);
          resolve(received);
        }
      });
      socket.addEventListener('error', () => reject(new Error(`WebSocket failed; forkgate said:\n${forkgate.output}`)));
    });
    socket.close();
    assert.deepEqual(echoes, ['echo: hello', 'echo: again']);
    // Plain requests go on alongside.
    assert.equal((await request(`${forkgate.url}/`)).body, 'hello from websocket app');
  } finally {
    await forkgate.stop();
  }
});

test('response bodies reach the client byte for byte: small and large, with a length and chunked', async () => {
  const forkgate = await start(['-w', '1', ...proxyArgs(PROXY)]);
  try {
    for (const size of [1, 256, 16 * 1024, 16 * 1024 + 1, 200_000]) {
      for (const framing of ['', '&chunked']) {
        const body = await new Promise<Buffer>((resolve, reject) => {
          http
            .get(`${forkgate.url}/bytes?size=${size}${framing}`, (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (chunk: Buffer) => chunks.push(chunk)).on('end', () => resolve(Buffer.concat(chunks)));
            })
            .on('error', reject);
        });
        const expected = Buffer.alloc(size, 0).map((_, i) => i % 256);
        assert.ok(
          body.equals(expected),
          `size ${size}${framing}: ${body.length} bytes, first difference at ${body.findIndex((byte, i) => byte !== expected[i])}`,
        );
      }
    }
  } finally {
    await forkgate.stop();
  }
});

/** A response as the client got it: status line, fields by lower-case name, and the body's bytes as sent. */
function splitResponse(text: string) {
  const end = text.indexOf('\r\n\r\n');
  const [status, ...lines] = text.slice(0, end).split('\r\n');
  const fields = new Map(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
  return { status, fields, body: text.slice(end + 4) };
}

test("the relay keeps the unit's framing byte for byte: a length, chunked with trailers, HEAD, 204, 304, after a 1xx", async () => {
  const forkgate = await start(['-w', '1', ...proxyArgs(PROXY)]);
  const get = async (kind: string, method = 'GET', version = '1.1') =>
    splitResponse(
      (await exchange(forkgate.url, `${method} /framed?kind=${kind} HTTP/${version}\r\nHost: x\r\nConnection: close\r\n\r\n`)).received,
    );
  try {
    const length = await get('length');
    assert.equal(length.status, 'HTTP/1.1 200 OK');
    assert.deepEqual(
      [length.fields.get('content-length'), length.fields.get('transfer-encoding'), length.fields.get('x-app')],
      ['5', undefined, 'a'],
    );
    assert.equal(length.fields.get('connection'), 'close', "the client's connection, not the hop's");
    assert.equal(length.fields.get('keep-alive'), undefined);
    assert.equal(length.body, 'hello');

    const chunked = await get('chunked');
    assert.equal(chunked.fields.get('transfer-encoding'), 'chunked');
    assert.equal(chunked.fields.get('trailer'), 'x-digest', 'the trailers announced with them');
    assert.equal(chunked.body, '3\r\nhel\r\n2\r\nlo\r\n0\r\nx-digest: abc\r\n\r\n', 'chunks and trailers as the app framed them');

    const head = await get('length', 'HEAD');
    assert.deepEqual([head.status, head.fields.get('content-length'), head.body], ['HTTP/1.1 200 OK', '5', '']);
    const noContent = await get('no-content');
    assert.deepEqual([noContent.status, noContent.fields.get('x-app'), noContent.body], ['HTTP/1.1 204 No Content', 'a', '']);
    const notModified = await get('not-modified');
    assert.deepEqual([notModified.status, notModified.fields.get('etag'), notModified.body], ['HTTP/1.1 304 Not Modified', '"v1"', '']);
    const hinted = await get('early-hints');
    assert.deepEqual([hinted.status, hinted.body], ['HTTP/1.1 200 OK', 'hi'], 'the interim 103 stays at the proxy');

    // An HTTP/1.0 client cannot take chunked: the body reaches it whole, ended by the close.
    const old = await get('chunked', 'GET', '1.0');
    assert.deepEqual([old.fields.get('transfer-encoding'), old.fields.get('trailer'), old.body], [undefined, undefined, 'hello']);

    // All of them pipelined on one connection: each response ends where its framing says.
    const kinds = ['length', 'chunked', 'no-content', 'not-modified', 'early-hints', 'length'];
    const pipelined = kinds.map(
      (kind, i) => `GET /framed?kind=${kind} HTTP/1.1\r\nHost: x\r\n${i === kinds.length - 1 ? 'Connection: close\r\n' : ''}\r\n`,
    );
    const { received } = await exchange(forkgate.url, pipelined.join(''));
    assert.deepEqual(
      [...received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map(([, status]) => status),
      ['200', '200', '204', '304', '200', '200'],
    );
    assert.ok(received.endsWith('\r\n\r\nhello'), received.slice(-100));
  } finally {
    await forkgate.stop();
  }
});

test('a streamed response reaches the client chunk by chunk; a client that leaves drops the upstream request', async () => {
  const forkgate = await start(['-w', '1', ...proxyArgs(PROXY)]);
  try {
    const stream = await firstChunk(`${forkgate.url}/stream`);
    assert.equal(stream.first, 'first chunk\n');
    // The app had not ended the response when the first chunk arrived: /release is what ends it.
    assert.equal((await request(`${forkgate.url}/release`)).body, '1');
    assert.equal(await stream.rest, 'last chunk\n');

    const left = await firstChunk(`${forkgate.url}/stream`);
    assert.equal(left.first, 'first chunk\n');
    left.abort();
    await eventually(
      async () => (await request(`${forkgate.url}/stream-stats`)).body === JSON.stringify({ open: 0, closedEarly: 1 }),
      "the app's response to close when the client left",
    );
  } finally {
    await forkgate.stop();
  }
});

test('a head the app sends before its body reaches the client at once, as server-sent events need', async () => {
  const forkgate = await start(['-w', '1', ...proxyArgs(PROXY)]);
  try {
    const { status, body } = await new Promise<{ status: number; body: Promise<string> }>((resolve, reject) => {
      http
        .get(`${forkgate.url}/head-first`, { agent: false }, (res) => {
          res.setEncoding('utf8');
          let text = '';
          res.on('data', (chunk: string) => (text += chunk));
          resolve({ status: res.statusCode!, body: new Promise((done) => res.on('end', () => done(text))) });
        })
        .on('error', reject);
    });
    // The head came while the app still holds its body: only /release ends it.
    assert.equal(status, 200);
    assert.equal((await request(`${forkgate.url}/release`)).body, '1');
    assert.equal(await body, 'released\n');
  } finally {
    await forkgate.stop();
  }
});

for (const [bufferSize, firstPart] of [
  ['0', 'part-one'],
  ['1024', 'x'.repeat(2000)],
] as const) {
  test(`--buffer-size ${bufferSize}: a body ${bufferSize === '0' ? 'of any size' : 'larger than the buffer'} streams to the app while the client is still sending`, async () => {
    const forkgate = await start(['-w', '1', ...proxyArgs('--buffer-size', bufferSize, PROXY)]);
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error('the app did not see the first part of the body while the client was still sending')),
          5_000,
        );
        const req = http.request(
          `${forkgate.url}/upload`,
          { method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } },
          (res) => {
            let received = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              received += chunk;
              if (received.includes('received') && !req.writableEnded) {
                clearTimeout(timer);
                req.end('part-two');
              }
            });
            res.on('end', () => resolve(received));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.flushHeaders();
        req.write(firstPart);
      });
      assert.equal(body.replace(/\nreceived /g, ''), `received ${firstPart}part-two\nend\n`);
    } finally {
      await forkgate.stop();
    }
  });
}

/** A POST whose body is trickled `piece` bytes at a time: `lastSent` resolves when the final byte is written. */
function trickledUpload(url: string, size: number, piece: number, everyMs: number) {
  const { hostname, port } = new URL(url);
  let markFirstSent!: () => void;
  let markLastSent!: () => void;
  const firstSent = new Promise<void>((resolve) => (markFirstSent = resolve));
  const lastSent = new Promise<void>((resolve) => (markLastSent = resolve));
  const reply = new Promise<string>((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => {
      socket.write(`POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`);
      let sent = 0;
      const sendPiece = () => {
        const n = Math.min(piece, size - sent);
        socket.write('u'.repeat(n));
        sent += n;
        if (sent === n) markFirstSent();
        if (sent < size) setTimeout(sendPiece, everyMs);
        else markLastSent();
      };
      sendPiece();
    });
    let received = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(received);
    });
    const timer = setTimeout(() => socket.destroy(new Error(`upload got no complete answer; got ${received.slice(0, 200)}`)), 15_000);
  });
  return { firstSent, lastSent, reply };
}

test('-k sync: 40 slow uploads are buffered by the master; quick requests are served meanwhile', async () => {
  const forkgate = await start(['-w', '2', '-k', 'sync', ...proxyArgs(PROXY)]);
  try {
    // 200 bytes, 10 every 100 ms: about 2 s per upload, far longer than two workers would last.
    const uploads = Array.from({ length: 40 }, () => trickledUpload(forkgate.url, 200, 10, 100));
    await Promise.all(uploads.map((upload) => upload.firstSent));
    let anyUploadComplete = false;
    void Promise.race(uploads.map((upload) => upload.lastSent)).then(() => (anyUploadComplete = true));

    const quick: boolean[] = [];
    for (let i = 0; i < 10; i++) {
      const reply = await request(`${forkgate.url}/pid`);
      assert.equal(reply.status, 200);
      quick.push(anyUploadComplete);
    }
    assert.deepEqual(quick, Array(10).fill(false), 'every quick request was answered before any upload had been sent in full');

    for (const received of await Promise.all(uploads.map((upload) => upload.reply))) {
      assert.match(received, /^HTTP\/1\.1 200 /);
      const counted = JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4)) as { bytes: number; receivingMs: number };
      assert.equal(counted.bytes, 200);
      // The whole body reached the app at once, not over the client's ~2 s.
      assert.ok(counted.receivingMs < 500, `the app spent ${counted.receivingMs} ms receiving a buffered body`);
    }
  } finally {
    await forkgate.stop();
  }
});

test('--queue-limit: requests beyond it get 503 with Retry-After at once, the queued ones are served, the connection stays usable', async () => {
  const forkgate = await start(['-w', '1', '-k', 'sync', ...proxyArgs('--queue-limit', '2', PROXY)]);
  const agents = Array.from({ length: 3 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  try {
    const spin = await startSpin(forkgate.url, 1500, 'queue-limit');
    const replies = await Promise.all(
      agents.map(async (agent) => ({ ...(await request(`${forkgate.url}/pid`, { agent: agent })), spinDone: spin.state.done, agent })),
    );
    assert.equal((await spin.reply).status, 200);
    assert.deepEqual(replies.map(({ status }) => status).sort(), [200, 200, 503]);
    const refused = replies.find(({ status }) => status === 503)!;
    assert.ok(refused.headers['retry-after'], 'a 503 from a full queue says Retry-After');
    assert.equal(refused.spinDone, false, 'the refusal came at once, not after waiting for the unit');
    const again = await request(`${forkgate.url}/pid`, { agent: refused.agent });
    assert.equal(again.status, 200);
    assert.equal(again.reused, true, 'the refused request left its connection usable');
  } finally {
    for (const agent of agents) agent.destroy();
    await forkgate.stop();
  }
});

test('--queue-timeout: a request that waited that long for a unit gets 503 with Retry-After', async () => {
  const forkgate = await start(['-w', '1', '-k', 'sync', ...proxyArgs('--queue-timeout', '1', PROXY)]);
  try {
    const spin = await startSpin(forkgate.url, 3000, 'queue-timeout');
    const began = Date.now();
    const waited = await request(`${forkgate.url}/pid`);
    const waitedMs = Date.now() - began;
    assert.equal(waited.status, 503);
    assert.ok(waited.headers['retry-after'], 'a 503 from the queue says Retry-After');
    assert.equal(spin.state.done, false, 'the 503 came before the unit was free');
    assert.ok(waitedMs >= 900, `the request waited ${waitedMs} ms, less than --queue-timeout`);
    assert.equal((await spin.reply).status, 200);
    assert.equal((await request(`${forkgate.url}/pid`)).status, 200);
  } finally {
    await forkgate.stop();
  }
});

test('a unit that dies before answering, or mid-header: 502, never a retry that kills another; the pool recovers', async () => {
  const forkgate = await start(['-w', '2', ...proxyArgs(PROXY)]);
  try {
    const exits = /Worker \(pid:(\d+)\) exited with code 1/g;
    const recovered = async (deaths: number) => {
      await eventually(
        () => forkgate.count(exits) >= deaths && forkgate.workerPids().length === 2,
        `${deaths} crashed workers replaced`,
        15_000,
      );
      assert.equal(forkgate.count(exits), deaths, 'each crashing request killed one worker, no retry killed another');
    };
    // Requests wait in the master while a replacement boots, then are served by the live workers.
    const servedByTheLiving = async () => {
      const dead = [...forkgate.output.matchAll(exits)].map((match) => match[1]);
      for (let i = 0; i < 5; i++) {
        const reply = await request(`${forkgate.url}/pid`);
        assert.equal(reply.status, 200);
        assert.ok(!dead.includes(reply.body), `answered by dead worker ${reply.body}`);
      }
    };

    const died = await request(`${forkgate.url}/crash`);
    assert.equal(died.status, 502, `${died.status} ${died.body}`);
    await recovered(1);
    await servedByTheLiving();

    // On a kept-alive connection too: the unit read the request before it died, so it is not retried.
    const warm = () => Promise.all(Array.from({ length: 8 }, () => request(`${forkgate.url}/pid`)));
    await warm();
    const diedOnPooled = await request(`${forkgate.url}/crash`);
    assert.equal(diedOnPooled.status, 502, `${diedOnPooled.status} ${diedOnPooled.body}`);
    await recovered(2);
    await servedByTheLiving();

    // With kept-alive connections to both units in the pools, a response that had begun is still not retried.
    await warm();
    const cut = await request(`${forkgate.url}/crash-mid-header`);
    assert.equal(cut.status, 502, `${cut.status} ${cut.body}`);
    await recovered(3);
    await servedByTheLiving();
  } finally {
    await forkgate.stop();
  }
});

test("a killed worker's unit socket is removed from the units' directory", async () => {
  const admin = join(scratch, 'units-admin.sock');
  const forkgate = await start(['-w', '2', '--admin-bind', `unix:${admin}`, ...proxyArgs(PROXY)]);
  const sockets = async () =>
    (JSON.parse((await request('http://admin/status', { socketPath: admin })).body).backends as { name: string }[]).map(({ name }) => name);
  try {
    const before = await sockets();
    assert.equal(before.length, 2);
    const [doomed] = forkgate.workerPids();
    const doomedSocket = before.find((name) => name.includes(`/${doomed}-`))!;
    assert.ok(existsSync(doomedSocket), doomedSocket);
    process.kill(doomed!, 'SIGKILL');
    await eventually(async () => (await sockets()).length === 2 && !(await sockets()).includes(doomedSocket), 'a replacement unit');
    assert.ok(!existsSync(doomedSocket), `${doomedSocket} is left behind`);
    for (const name of await sockets()) assert.ok(existsSync(name), name);
  } finally {
    await forkgate.stop();
  }
});

test('a request whose unit hung past --timeout is answered 502, never retried on another unit', async () => {
  const forkgate = await start(['-w', '2', '--timeout', '1', ...proxyArgs(PROXY)]);
  try {
    // Kept-alive connections to both units in the pools, as under any load.
    await Promise.all(Array.from({ length: 8 }, () => request(`${forkgate.url}/pid`)));
    const hung = await request(`${forkgate.url}/spin?ms=60000`);
    assert.equal(hung.status, 502, `${hung.status} ${hung.body}`);
    // A retry would have hung the other worker too, and the answer would have waited for its timeout.
    assert.equal(forkgate.count(/WORKER TIMEOUT/), 1, forkgate.output);
    await eventually(() => forkgate.workerPids().length === 2, 'the hung worker replaced');
    assert.equal((await request(`${forkgate.url}/pid`)).status, 200);
  } finally {
    await forkgate.stop();
  }
});

test('a unit that dies after the response headers: the client connection is cut, not answered twice', async () => {
  const forkgate = await start(['-w', '1', ...proxyArgs(PROXY)]);
  try {
    const [pid] = forkgate.workerPids();
    const outcome = await new Promise<{ status: number; body: string; complete: boolean }>((resolve, reject) => {
      const req = http.get(`${forkgate.url}/crash-mid-body`, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('close', () => resolve({ status: res.statusCode!, body, complete: res.complete }));
      });
      req.on('error', () => {}); // the cut shows as res.complete === false
      req.setTimeout(10_000, () => {
        reject(new Error('the response was neither ended nor cut within 10 s'));
        req.destroy();
      });
    });
    assert.equal(outcome.status, 200);
    assert.equal(outcome.body, 'some of the body\n');
    assert.equal(outcome.complete, false, 'the response was cut, not ended as if whole');
    await eventually(() => forkgate.workerPids().length === 1 && forkgate.workerPids()[0] !== pid, 'a replacement worker');
    // The request waits in the master while the replacement boots.
    const reply = await request(`${forkgate.url}/pid`);
    assert.equal(reply.status, 200);
    assert.equal(reply.body, String(forkgate.workerPids()[0]));
  } finally {
    await forkgate.stop();
  }
});

test('--threads 2 -w 1 --balance proxy: requests in flight at once are served by both threads of the one worker', async () => {
  const forkgate = await start(['-w', '1', '--threads', '2', ...proxyArgs(THREADS)]);
  try {
    assert.equal(forkgate.workerPids().length, 1);
    const replies = await Promise.all(Array.from({ length: 4 }, () => request(`${forkgate.url}/slow?ms=300`)));
    const threads = new Set(replies.map((reply) => reply.body.match(/^slow done in thread (\d+)$/)?.[1]));
    assert.equal(threads.size, 2, `threads seen: ${[...threads].join(', ')}`);
    assert.ok(![...threads].includes(undefined));
  } finally {
    await forkgate.stop();
  }
});

test('the master applies the trust rules: spoofed forwarding headers from an untrusted peer are not believed, hop-by-hop headers stop at the master', async () => {
  const forkgate = await start([
    '-w',
    '1',
    ...proxyArgs('--proxy-protocol', 'auto', '--forwarded-allow-ips', '10.1.0.0/16', '--request-id', ECHO),
  ]);
  try {
    const reply = await request(forkgate.url, {
      headers: {
        'x-forwarded-for': '198.51.100.7',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'evil.example',
        forwarded: 'for=198.51.100.7;proto=https',
        'keep-alive': 'timeout=5',
        'proxy-authorization': 'Basic eDp5',
        'proxy-connection': 'keep-alive',
        // The header that carries the client over the internal hop: a client's own is never believed.
        'x-forkgate-peer': 'IPv4 6.6.6.6 6666',
      },
    });
    const seen = JSON.parse(reply.body) as { remoteAddress: string; headers: Record<string, string> };
    assert.equal(seen.remoteAddress, '127.0.0.1');
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen.headers['x-forkgate-peer'], undefined);
    for (const name of ['x-forwarded-proto', 'x-forwarded-host', 'forwarded']) assert.equal(seen.headers[name], undefined, name);
    for (const name of ['keep-alive', 'proxy-authorization', 'proxy-connection'])
      assert.equal(seen.headers[name], undefined, `${name} went past the master`);
    assert.match(seen.headers['x-request-id']!, UUID);
    assert.equal(reply.headers['x-request-id'], seen.headers['x-request-id']);

    // The client a PROXY header names is the one --forwarded-allow-ips judges.
    const spoofing = 'X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\n';
    const ask = (client: string) =>
      `PROXY TCP4 ${client} 127.0.0.1 1 80\r\nGET / HTTP/1.1\r\nHost: x\r\n${spoofing}Connection: close\r\n\r\n`;
    const trusted = echoOf(await exchange(forkgate.url, ask('10.1.2.3')));
    assert.equal(trusted.remoteAddress, '10.1.2.3');
    assert.equal(trusted.headers['x-forwarded-for'], '198.51.100.7');
    assert.equal(trusted.headers['x-forwarded-proto'], 'https');
    const untrusted = echoOf(await exchange(forkgate.url, ask('10.2.2.3')));
    assert.equal(untrusted.remoteAddress, '10.2.2.3');
    assert.equal(untrusted.headers['x-forwarded-for'], '10.2.2.3');
    assert.equal(untrusted.headers['x-forwarded-proto'], undefined);

    // An upgrade request too.
    const upgraded = await exchange(
      forkgate.url,
      `GET / HTTP/1.1\r\nHost: x\r\n${spoofing}X-Forkgate-Peer: IPv4 6.6.6.6 6666\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n`,
    );
    assert.equal(statusOf(upgraded), 101);
    assert.equal(echoOf(upgraded).remoteAddress, '127.0.0.1');
    assert.equal(echoOf(upgraded).headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(echoOf(upgraded).headers['x-forwarded-proto'], undefined);
  } finally {
    await forkgate.stop();
  }
});

test('an upgrade the app declines: its answer is relayed and the connection closed, so nothing more reaches the unit', async () => {
  const forkgate = await start(['-w', '1', ...proxyArgs(PROXY)]);
  try {
    const declined = await exchange(forkgate.url, [
      'GET /pid HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n',
      'GET /pid HTTP/1.1\r\nHost: x\r\nX-Forkgate-Peer: IPv4 6.6.6.6 1\r\n\r\n',
    ]);
    assert.equal(statusOf(declined), 200);
    assert.equal(declined.received.match(/HTTP\/1\.1 /g)!.length, 1, 'one answer, then the connection closed');
  } finally {
    await forkgate.stop();
  }
});

test('an upgrade pipelined behind a request is answered after it, in order', async () => {
  const forkgate = await start(['-w', '1', ...proxyArgs(`${FIXTURES}ops.cjs`)]);
  try {
    const answered = await exchange(forkgate.url, [
      'GET /slow?ms=100 HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /pid HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n',
    ]);
    const second = answered.received.indexOf('HTTP/1.1 ', 1);
    assert.ok(second > answered.received.indexOf('slept 100 ms'), answered.received);
    assert.ok(second > 0, 'the upgrade was answered too');
  } finally {
    await forkgate.stop();
  }
});

test('an upgrade request with a body is served as an ordinary request: the body reaches the app, the next client is unaffected', async () => {
  const forkgate = await start(['-w', '1', ...proxyArgs(PROXY)]);
  try {
    const upgradeWithBody = 'POST /count HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\nContent-Length: 10\r\n\r\n';
    const served = await exchange(forkgate.url, [upgradeWithBody, '0123456789']);
    assert.equal(statusOf(served), 200, served.received);
    assert.equal(JSON.parse(served.received.slice(served.received.indexOf('\r\n\r\n') + 4)).bytes, 10);
    // A body announced and never sent, to a route that answers without reading it: whatever the unit
    // waits for must never be taken from the next client's request.
    const client = net.connect(Number(new URL(forkgate.url).port), '127.0.0.1');
    client.on('error', () => {});
    client.write('GET /pid HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\nContent-Length: 100000\r\n\r\n');
    try {
      for (let i = 0; i < 3; i++) assert.equal((await request(`${forkgate.url}/pid`)).status, 200);
    } finally {
      client.destroy();
    }
    // Its body will never come: the connection closes with the client, and holds no stop.
    assert.equal((await forkgate.stop()).code, 0);
  } finally {
    await forkgate.stop();
  }
});

test('pipelined requests still in service together: all answered in order, with no listener leak warning', async () => {
  // /slow sends its head at once and its body later: every response is under way at the same time.
  const forkgate = await start(['-w', '1', ...proxyArgs(`${FIXTURES}ops.cjs`)]);
  try {
    const pipelined = Array.from({ length: 30 }, () => 'GET /slow?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n');
    const answered = await exchange(forkgate.url, [...pipelined, 'GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n']);
    assert.equal(answered.received.match(/HTTP\/1\.1 200 /g)?.length, 31);
    assert.doesNotMatch(forkgate.output, /MaxListenersExceededWarning/);
  } finally {
    await forkgate.stop();
  }
});

test('-k sync: a client that leaves mid-stream gives its unit back', async () => {
  const forkgate = await start(['-w', '1', '-k', 'sync', ...proxyArgs('--queue-timeout', '2', PROXY)]);
  try {
    const stream = await firstChunk(`${forkgate.url}/stream`);
    stream.abort();
    await eventually(
      async () => (await request(`${forkgate.url}/stream-stats`)).body === JSON.stringify({ open: 0, closedEarly: 1 }),
      'the stream to be dropped',
    );
    assert.match((await request(`${forkgate.url}/pid`)).body, /^\d+$/);
  } finally {
    await forkgate.stop();
  }
});

test('long requests spread over the units by fewest in flight: a unit whose handler awaits is busy, not stuck', async () => {
  const forkgate = await start(['-w', '4', ...proxyArgs(`${FIXTURES}ops.cjs`)]);
  try {
    const replies: Promise<string>[] = [];
    for (let i = 0; i < 8; i++) {
      replies.push(request(`${forkgate.url}/slow?ms=1500`).then((reply) => reply.body.split(' ').at(-1)!));
      await new Promise((resolve) => setTimeout(resolve, 50)); // the load's pace, not a wait for readiness
    }
    const served = new Map<string, number>();
    for (const pid of await Promise.all(replies)) served.set(pid, (served.get(pid) ?? 0) + 1);
    // Two each when every confirmation comes on time; a unit descheduled for a moment may miss one.
    assert.ok(served.size >= 3 && Math.max(...served.values()) <= 3, `requests per unit: ${[...served.values()].join(' ')}`);
  } finally {
    await forkgate.stop();
  }
});

test('an answer before a body larger than --buffer-size: the rest is read and dropped, and the connection serves on', async () => {
  const forkgate = await start(proxyArgs('-w', '1', '--buffer-size', '65536', PROXY));
  try {
    const size = 1024 * 1024;
    const bodies = {
      length: [`Content-Length: ${size}`, Buffer.alloc(size, 'x')],
      chunked: [
        'Transfer-Encoding: chunked',
        Buffer.concat([Buffer.from(`${size.toString(16)}\r\n`), Buffer.alloc(size, 'x'), Buffer.from('\r\n0\r\n\r\n')]),
      ],
    } as const;
    for (const [framing, [header, body]] of Object.entries(bodies)) {
      const { port } = new URL(forkgate.url);
      const socket = net.connect(Number(port), '127.0.0.1');
      socket.setEncoding('latin1');
      // The default route answers without reading the body; /pid follows on the same connection.
      socket.write(`POST /early HTTP/1.1\r\nHost: x\r\n${header}\r\n\r\n`);
      socket.write(body);
      socket.write('GET /pid HTTP/1.1\r\nHost: x\r\n\r\n');
      const received = await new Promise<string>((resolve, reject) => {
        let text = '';
        const timer = setTimeout(() => reject(new Error(`${framing}: no answer to the request after the body; got ${text}`)), 10_000);
        socket.on('data', (chunk: string) => {
          text += chunk;
          if (/\r\n\r\n\d+$/.test(text) && text.split('HTTP/1.1 ').length === 3) {
            clearTimeout(timer);
            resolve(text);
          }
        });
      });
      socket.destroy();
      assert.match(received, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok \d+HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n\d+$/, framing);
    }
  } finally {
    await forkgate.stop();
  }
});
