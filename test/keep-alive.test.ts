// Idle keep-alive connections never hold new clients off: a unit at --worker-connections closes the one
// idle longest to admit a new connection, and never one with a request in progress.
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, request, silentConnection, start, startRequest, within } from './helpers/forkgate.ts';

const OPS = `${FIXTURES}ops.cjs`;

/** Far below the 65 s --keep-alive a connection waiting behind idle ones would wait. */
const PROMPTLY_MS = 5_000;

/** A GET on the agent's connection; resolves with the status and that connection once the body has come. */
function getOn(agent: http.Agent, url: string): Promise<{ status: number; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, socket: req.socket! }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** Writes to the connection and resolves with what comes back, once it matches. */
function exchange(socket: net.Socket, data: string, reply: RegExp): Promise<string> {
  const replied = new Promise<string>((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (!reply.test(text)) return;
      socket.off('data', onData).off('close', onClose);
      resolve(text);
    };
    const onClose = () => reject(new Error(`connection closed before ${reply}; got ${JSON.stringify(text)}`));
    socket.on('data', onData).once('close', onClose);
    socket.write(data);
  });
  return within(PROMPTLY_MS, `a reply matching ${reply}`, replied);
}

const UNITS: [string, string[]][] = [
  ['round-robin', ['--balance', 'round-robin']],
  ['reuseport', ['--balance', 'reuseport']],
  ['gthread', ['-k', 'gthread', '--threads', '1']],
];

for (const [name, args] of UNITS) {
  test(`${name}: a new client is served at once when idle keep-alive connections fill the unit, the one idle longest closed for it`, async () => {
    const forkgate = await start(['-w', '1', '--worker-connections', '10', ...args, '-b', '127.0.0.1:0', OPS]);
    const agents = Array.from({ length: 10 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    try {
      const sockets: net.Socket[] = [];
      for (const agent of agents) {
        // One after another, so the first has been idle longest.
        const { status, socket } = await getOn(agent, `${forkgate.url}/`);
        assert.equal(status, 200);
        sockets.push(socket);
      }

      const reply = await within(PROMPTLY_MS, "the new client's request", request(`${forkgate.url}/`));
      assert.equal(reply.status, 200);

      await eventually(() => sockets[0]!.destroyed, 'the connection idle longest to be closed');
      for (const agent of agents.slice(1)) {
        assert.equal((await request(`${forkgate.url}/`, { agent })).reused, true, 'the other idle connections stay open');
      }
    } finally {
      for (const agent of agents) agent.destroy();
      await forkgate.stop();
    }
  });
}

for (const balance of ['round-robin', 'reuseport']) {
  test(`${balance}: at the limit with every connection busy, a new client waits, and is served once a request ends`, async () => {
    const forkgate = await start(['-w', '1', '--worker-connections', '2', '--balance', balance, '-b', '127.0.0.1:0', OPS]);
    const agents = Array.from({ length: 2 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    try {
      const busy = agents.map((agent) => startRequest(`${forkgate.url}/slow?ms=1500`, { agent }));
      await Promise.all(busy.map((request) => request.headers));

      // Its request runs only after one of the busy ones has ended (the app has never had three at once),
      // and well before the busy connections, kept alive, would time out.
      const waiting = within(PROMPTLY_MS + 1500, "the waiting client's request", request(`${forkgate.url}/max-in-flight`));
      const replies = await Promise.all(busy.map((request) => request.reply));
      for (const reply of replies) {
        assert.equal(reply.status, 200);
        assert.match(reply.body, /^slept 1500 ms/, 'a busy connection is never closed');
      }
      const late = await waiting;
      assert.equal(late.status, 200);
      assert.equal(late.body, '2');
    } finally {
      for (const agent of agents) agent.destroy();
      await forkgate.stop();
    }
  });
}

test('a connection upgraded after a request is never closed for a new client, though it went idle first', async () => {
  const forkgate = await start(['-w', '1', '--worker-connections', '2', '-b', '127.0.0.1:0', `${FIXTURES}ws-upgrade.cjs`]);
  const { hostname, port } = new URL(forkgate.url);
  const upgraded = net.connect(Number(port), hostname);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    await exchange(upgraded, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', /hello from ws-upgrade$/);
    await exchange(
      upgraded,
      'GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n',
      /^HTTP\/1.1 101 [\s\S]*\r\n\r\n$/,
    );
    const { status, socket: idle } = await getOn(agent, `${forkgate.url}/`);
    assert.equal(status, 200);

    const reply = await within(PROMPTLY_MS, "the new client's request", request(`${forkgate.url}/`));
    assert.equal(reply.status, 200);

    await eventually(() => idle.destroyed, 'the idle keep-alive connection to be closed');
    assert.equal(await exchange(upgraded, 'still here', /still here$/), 'still here');
  } finally {
    upgraded.destroy();
    agent.destroy();
    await forkgate.stop();
  }
});

test('only a connection between requests is closed for a new client: not one that has sent nothing, nor one whose next request has begun', async () => {
  const forkgate = await start(['-w', '1', '--worker-connections', '3', '-b', '127.0.0.1:0', OPS]);
  const { hostname, port } = new URL(forkgate.url);
  const silent = net.connect(Number(port), hostname);
  const begun = net.connect(Number(port), hostname);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    await exchange(begun, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', /ok \d+$/);
    begun.write('GET / HTTP/1.1\r\n'); // its next request, begun: idle longest, but no longer idle
    const { status, socket: idle } = await getOn(agent, `${forkgate.url}/`);
    assert.equal(status, 200);

    const reply = await within(PROMPTLY_MS, "the new client's request", request(`${forkgate.url}/`));
    assert.equal(reply.status, 200);

    await eventually(() => idle.destroyed, 'the idle keep-alive connection to be closed');
    assert.match(await exchange(begun, 'Host: x\r\n\r\n', /ok \d+$/), /^HTTP\/1.1 200/);
    assert.match(await exchange(silent, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', /ok \d+$/), /^HTTP\/1.1 200/);
  } finally {
    silent.destroy();
    begun.destroy();
    agent.destroy();
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`a graceful stop closes a connection that has sent nothing, without waiting out --graceful-timeout (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '--graceful-timeout', '60', '-b', '127.0.0.1:0', OPS]);
    // The request after the silent connection is served once it has been accepted and handed over: one
    // worker takes its connections in order.
    const { socket: silent, closed } = await silentConnection(forkgate.url);
    try {
      assert.equal((await request(`${forkgate.url}/`)).status, 200);
      const stopped = forkgate.stop();
      await within(30_000, 'the silent connection to be closed', closed);
      assert.equal((await within(30_000, 'the stop', stopped)).code, 0);
    } finally {
      silent.destroy();
    }
  });
}

/**
 * Sends a request for a route of proxy.cjs that holds its response, waits for `until` in what comes
 * back, then sends a FIN, as a client that leaves does.
 */
async function leave(url: string, target: string, until: string): Promise<void> {
  const { port } = new URL(url);
  const socket = net.connect(Number(port), '127.0.0.1');
  let received = '';
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.includes(until)) resolve();
    });
    socket.on('error', reject);
    socket.write(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`, () => until === '' && resolve());
  });
  socket.end();
}

const logs = mkdtempSync(join(tmpdir(), 'forkgate-keep-alive-'));
after(() => rmSync(logs, { recursive: true, force: true }));

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  for (const [when, target, until, logged] of [
    ['before its answer starts', '/held', '', '499 -'],
    ['while its answer streams', '/stream', 'first chunk', '200 '],
  ] as const) {
    test(`a client that closes ${when} is leaving, as nginx and Node take it: the app's response closes at once (${balance})`, async () => {
      const accessLog = join(logs, `${balance}-${target.slice(1)}.log`);
      const forkgate = await start([
        '-w',
        '1',
        '--balance',
        balance,
        '-b',
        '127.0.0.1:0',
        '--access-logfile',
        accessLog,
        `${FIXTURES}proxy.cjs`,
      ]);
      try {
        // The app writes nothing more for 10 s on its own: only the client's leaving can close it sooner.
        await leave(forkgate.url, target, until);
        await eventually(
          async () => (await request(`${forkgate.url}/stream-stats`)).body === JSON.stringify({ open: 0, closedEarly: 1 }),
          "the app's response to close when the client left",
        );
        // nginx's 499 for a client gone before any answer; the status sent for one gone mid-answer.
        const line = await eventually(
          () =>
            existsSync(accessLog) ? readFileSync(accessLog, 'utf8').match(new RegExp(`"GET ${target} HTTP/1\\.1" .*`))?.[0] : undefined,
          `the access log line of ${target}`,
        );
        assert.ok(line.startsWith(`"GET ${target} HTTP/1.1" ${logged}`), line);
      } finally {
        await forkgate.stop();
      }
    });
  }
}
