// The proxy's hop client (src/hop/pool.ts) against a raw server that sends canned responses one byte
// per write: every framing the parser takes, split at every boundary, on one reused connection; and the
// responses it must refuse.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HopPool, type ResponseHead } from '../src/hop/pool.ts';
import { STUCK_MIN_MS } from '../src/proxy/stuck-threshold.ts';

const scratch = mkdtempSync(join(tmpdir(), 'forkgate-hop-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A server that answers the nth request on a connection with responses[n], byte by byte; counts connections. */
async function cannedServer(responses: string[], closeAfterLast = false, byteByByte = true) {
  const path = join(scratch, `${Math.random().toString(36).slice(2)}.sock`);
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    let next = 0;
    let pending = '';
    socket.on('error', () => {}); // the client hangs up on a response it refuses
    socket.on('data', async (chunk) => {
      pending += chunk.toString('latin1');
      while (pending.includes('\r\n\r\n')) {
        pending = pending.slice(pending.indexOf('\r\n\r\n') + 4);
        const response = responses[next++]!;
        if (!byteByByte) socket.write(response, 'latin1');
        else {
          for (const byte of Buffer.from(response, 'latin1')) {
            if (socket.destroyed) return;
            socket.write(Buffer.from([byte]));
            await new Promise((resolve) => setImmediate(resolve));
          }
        }
        if (closeAfterLast && next === responses.length) socket.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, connections: () => connections, close: () => server.close() };
}

interface Outcome {
  head?: ResponseHead;
  body: string;
  error?: string;
  /** The failure's code: forkgate's own (FKG_ERR_HOP_*), or the socket's errno. */
  code?: string;
}

function exchange(pool: HopPool, method = 'GET'): Promise<Outcome> {
  return new Promise((resolve) => {
    const outcome: Outcome = { body: '' };
    pool
      .request(`${method} / HTTP/1.1\r\nHost: x\r\n\r\n`, null, method !== 'HEAD', {
        onHead: (head) => {
          outcome.head = head;
          return 'decoded';
        },
        onData: (chunk) => (outcome.body += chunk.toString('latin1')),
        onEnd: () => resolve(outcome),
        onError: (error) => resolve({ ...outcome, error: error.message, code: (error as NodeJS.ErrnoException).code }),
      })
      .end();
  });
}

test('every framing, split byte by byte, on one kept-alive connection', async () => {
  const server = await cannedServer([
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n',
    'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc',
    'HTTP/1.1 204 No Content\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n', // the answer to HEAD: a length, no body
    'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=5\r\n\r\n',
  ]);
  const pool = new HopPool({ socketPath: server.path });
  try {
    const chunked = await exchange(pool);
    assert.equal(chunked.error, undefined);
    assert.equal(chunked.body, 'hello world');
    assert.deepEqual(chunked.head!.rawHeaders, ['Transfer-Encoding', 'chunked', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2']);
    const interim = await exchange(pool);
    assert.deepEqual([interim.head!.status, interim.head!.reason, interim.body], [201, 'Created', 'abc']);
    assert.deepEqual([(await exchange(pool)).head!.status, (await exchange(pool, 'HEAD')).body], [204, '']);
    assert.equal((await exchange(pool)).head!.status, 200);
    assert.equal(server.connections(), 1, 'one connection served all five');
  } finally {
    pool.close();
    server.close();
  }
});

test('a body without a length ends with the connection, which is not reused', async () => {
  const server = await cannedServer(['HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close'], true);
  const pool = new HopPool({ socketPath: server.path });
  try {
    const outcome = await exchange(pool);
    assert.deepEqual([outcome.error, outcome.body], [undefined, 'until the close']);
    assert.deepEqual((await exchange(pool)).body, 'until the close');
    assert.equal(server.connections(), 2, 'the second request went on a new connection');
  } finally {
    pool.close();
    server.close();
  }
});

test('responses it cannot frame safely fail the request', async () => {
  const refused = [
    ['ICY 200 OK\r\n\r\n', /invalid status line/],
    ['HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd', /invalid Content-Length/],
    ['HTTP/1.1 200 OK\r\n folded: header\r\n\r\n', /invalid header line/],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /invalid chunk size/],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd', /chunk not followed by CRLF/],
    ['HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n', /101 Switching Protocols to a request that asked for no upgrade/],
  ] as const;
  for (const [response, reason] of refused) {
    const server = await cannedServer([response]);
    const pool = new HopPool({ socketPath: server.path });
    try {
      const outcome = await exchange(pool);
      assert.match(outcome.error ?? 'no error', reason, JSON.stringify(response));
      assert.equal(outcome.code, 'FKG_ERR_HOP_PARSE', JSON.stringify(response));
    } finally {
      pool.close();
      server.close();
    }
  }
});

test("a response cut short by the backend's close fails the request", async () => {
  const server = await cannedServer(['HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'], true);
  const pool = new HopPool({ socketPath: server.path });
  try {
    const outcome = await exchange(pool);
    assert.deepEqual([outcome.head?.status, outcome.body, outcome.code], [200, 'abc', 'FKG_ERR_HOP_CLOSED']);
    assert.match(outcome.error!, /closed the connection before the response was complete/);
  } finally {
    pool.close();
    server.close();
  }
});

test('bytes after a complete response: the response stands, its connection is dropped', async () => {
  const server = await cannedServer(['HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabEXTRA'], false, false);
  const pool = new HopPool({ socketPath: server.path });
  try {
    assert.equal((await exchange(pool)).body, 'ab');
    // The stray bytes came with the response: its connection is closed, never reused.
    const again = await exchange(pool);
    assert.deepEqual([again.error, again.body, server.connections()], [undefined, 'ab', 2]);
  } finally {
    pool.close();
    server.close();
  }
});

test('a connection the server closed is not reused; one that never opens fails with its code', async () => {
  // The server leaves the connection open, and would answer a second request on it: only the client's
  // reading of Connection: close keeps it from being reused.
  const close = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok';
  const server = await cannedServer([close, close]);
  const pool = new HopPool({ socketPath: server.path });
  try {
    assert.equal((await exchange(pool)).body, 'ok');
    assert.equal((await exchange(pool)).body, 'ok');
    assert.equal(server.connections(), 2, 'Connection: close was honoured: the second request opened its own');
    server.close();
    const missing = await exchange(new HopPool({ socketPath: join(scratch, 'nobody.sock') }));
    assert.match(missing.error!, /ENOENT/);
  } finally {
    pool.close();
  }
});

test('a response that comes before the request is fully written: its connection is not reused', async () => {
  // A backend that answers before reading the body (a 401, a handler that ignores it): the body's rest
  // would otherwise be read as the next request on that connection.
  const server = await cannedServer([
    'HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
  ]);
  const pool = new HopPool({ socketPath: server.path });
  try {
    const answered = await new Promise<number>((resolve) => {
      const upload = pool.request('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf', null, true, {
        onHead: (head) => {
          resolve(head.status);
          return 'decoded';
        },
        onData: () => {},
        onEnd: () => upload.write('-rest'), // too late: dropped, never sent on a pooled connection
        onError: () => resolve(0),
      });
    });
    assert.equal(answered, 401);
    assert.equal((await exchange(pool)).head!.status, 401, 'a fresh connection (its first canned answer)');
    assert.equal(server.connections(), 2);
  } finally {
    pool.close();
    server.close();
  }
});

test('a declined upgrade: its connection is closed after the answer, never pooled', async () => {
  // The backend may read what follows a declined upgrade as the body the request announced, or as the
  // new protocol: the next request must never go on that connection.
  const server = await cannedServer(['HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno', 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n']);
  const pool = new HopPool({ socketPath: server.path });
  try {
    const declined = await new Promise<Outcome>((resolve) => {
      const outcome: Outcome = { body: '' };
      pool
        .request('GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n', null, true, {
          onUpgrade: () => resolve({ ...outcome, error: 'switched protocols' }),
          onHead: (head) => {
            outcome.head = head;
            return 'decoded';
          },
          onData: (chunk) => (outcome.body += chunk.toString('latin1')),
          onEnd: () => resolve(outcome),
          onError: (error) => resolve({ ...outcome, error: error.message }),
        })
        .end();
    });
    assert.equal(declined.body, 'no');
    assert.equal((await exchange(pool)).body, 'no', 'the next request opened a connection of its own (its first canned answer)');
    assert.equal(server.connections(), 2);
  } finally {
    pool.close();
    server.close();
  }
});

test('withdraw: the withdrawal follows the request, both answers are dropped, the connection is reused', async () => {
  const seen: string[] = [];
  const path = join(scratch, 'withdraw.sock');
  let connections = 0;
  let answered!: () => void;
  const answersWritten = new Promise<void>((resolve) => (answered = resolve));
  const server = net.createServer((socket) => {
    connections++;
    let pending = '';
    socket.on('data', (chunk) => {
      pending += chunk.toString('latin1');
      while (pending.includes('\r\n\r\n')) {
        const end = pending.indexOf('\r\n\r\n') + 4;
        seen.push(pending.slice(0, end).split('\r\n')[0]!);
        pending = pending.slice(end);
        // The withdrawn request's answer and the withdrawal's come together, split across reads at random.
        if (seen.length === 2) socket.write('HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No');
        if (seen.length === 2) setImmediate(() => socket.write(' Content\r\n\r\n', () => answered()));
        if (seen.length === 3) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const pool = new HopPool({ socketPath: path });
  try {
    const calls: string[] = [];
    const withdrawn = pool.request('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n', null, true, {
      onHead: () => {
        calls.push('head');
        return 'decoded';
      },
      onData: () => calls.push('data'),
      onEnd: () => calls.push('end'),
      onError: (error) => calls.push(`error ${error.message}`),
    });
    withdrawn.end();
    assert.equal(pool.unanswered().length, 1);
    assert.equal(withdrawn.withdraw(), true);
    assert.equal(pool.unanswered().length, 0, 'a withdrawn request is no longer waiting for its answer');
    assert.equal(withdrawn.withdraw(), false, 'the handle is done once withdrawn');
    await answersWritten;
    // The answers are in the client socket's buffer; the next poll phase reads them (a unix socket).
    for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
    const next = await exchange(pool);
    assert.deepEqual([next.head?.status, next.body, next.error], [200, 'after', undefined]);
    assert.deepEqual(seen, ['GET /slow HTTP/1.1', 'OPTIONS * HTTP/1.1', 'GET / HTTP/1.1']);
    assert.deepEqual(calls, [], 'the withdrawn request hears nothing more');
    assert.equal(connections, 1, 'the connection went back to the pool');
  } finally {
    pool.close();
    server.close();
  }
});

test('withdraw is refused once any byte of the answer has come', async () => {
  // Byte by byte: the request is still under way when its 102 has come.
  const server = await cannedServer(['HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok']);
  const pool = new HopPool({ socketPath: server.path });
  try {
    let handle!: ReturnType<HopPool['request']>;
    const interim = new Promise<void>((resolve) => {
      handle = pool.request('GET / HTTP/1.1\r\nHost: x\r\n\r\n', null, true, {
        onInterim: () => resolve(),
        onHead: () => 'decoded',
        onData: () => {},
        onEnd: () => {},
        onError: () => {},
      });
    });
    handle.end();
    await interim;
    assert.equal(handle.withdraw(), false);
  } finally {
    pool.close();
    server.close();
  }
});

test('a stuck unit is asked back for the requests behind its oldest unanswered one, sent long enough ago and not confirmed', async () => {
  const path = join(scratch, 'take-back.sock');
  const seen: string[] = [];
  let onSeen = () => {};
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('data', (chunk) => {
      const target = chunk.toString('latin1').split(' ')[1]!;
      seen.push(target);
      // The unit has it in hand: it says so, and answers later (never, here).
      if (target === '/confirmed') socket.write('HTTP/1.1 102 Processing\r\n\r\n');
      onSeen();
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const pool = new HopPool({ socketPath: path });
  const offered: string[] = [];
  let confirmed = () => {};
  const send = (target: string) =>
    new Promise<void>((resolve) => {
      onSeen = resolve;
      pool
        .request(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`, null, true, {
          onInterim: () => confirmed(),
          takeBack: () => {
            offered.push(target);
            return false;
          },
          onHead: () => 'decoded',
          onData: () => {},
          onEnd: () => {},
          onError: () => {},
        })
        .end();
    });
  try {
    // One after another, each seen by the unit before the next goes: their order is certain.
    await send('/oldest');
    await send('/waiting');
    const interim = new Promise<void>((resolve) => (confirmed = resolve));
    await send('/confirmed');
    await interim;
    await send('/young');
    assert.deepEqual(seen, ['/oldest', '/waiting', '/confirmed', '/young']);
    const unanswered = pool.unanswered();
    assert.equal(unanswered.length, 3, 'the confirmed request is not waiting for its answer');
    const [, waiting, young] = unanswered;
    pool.takeBackWaiting(waiting!.sentAt + STUCK_MIN_MS - 0.001, STUCK_MIN_MS);
    assert.deepEqual(offered, [], `none sent ${STUCK_MIN_MS} ms ago yet`);
    pool.takeBackWaiting(young!.sentAt + STUCK_MIN_MS - 0.001, STUCK_MIN_MS);
    assert.deepEqual(offered, ['/waiting'], `only the one sent ${STUCK_MIN_MS} ms ago, never the oldest`);
    offered.length = 0;
    // Past the mark, not at it: (sentAt + 4) - sentAt can round below 4 for a fractional sentAt.
    pool.takeBackWaiting(young!.sentAt + STUCK_MIN_MS + 0.001, STUCK_MIN_MS);
    assert.deepEqual(offered, ['/waiting', '/young']);
  } finally {
    pool.close();
    server.close();
    for (const socket of sockets) socket.destroy();
  }
});
