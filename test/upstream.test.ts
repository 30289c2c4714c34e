// --upstream: forkgate starts no workers and fronts other HTTP servers (here plain Node processes, one on
// TCP and one on a unix socket) with the proxy's dispatch, queue, health checks, retries and edge.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, request, start, type Forkgate } from './helpers/forkgate.ts';
import { exchange, statusOf } from './helpers/edge.ts';
import { freePort } from './helpers/free-port.ts';
import { keepAliveLoad } from './helpers/load.ts';

const UPSTREAM = `${FIXTURES}plain-upstream.cjs`;
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-upstream-'));
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(scratch, { recursive: true, force: true });
});

interface Upstream {
  kill(): Promise<void>;
}

/** Runs the plain upstream fixture on a port or a socket path and waits until it listens. */
async function spawnUpstream(where: string, name: string): Promise<Upstream> {
  const child = spawn(process.execPath, [UPSTREAM, where, name], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => children.delete(child));
  await new Promise<void>((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => reject(new Error(`upstream ${name} did not listen; it said: ${output}`)), 10_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes(`listening ${name}`)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then(() => reject(new Error(`upstream ${name} exited; it said: ${output}`)));
  });
  return {
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Starts forkgate in front of upstreams: no worker pool to wait for, so wait until a request is served. */
async function front(args: string[]): Promise<Forkgate> {
  const forkgate = await start([...args, '-b', '127.0.0.1:0'], { waitReady: false });
  try {
    const [, url] = (await forkgate.waitFor(/Listening at: (\S+)/)) as [string, string];
    forkgate.url = url;
    await eventually(
      () =>
        request(`${url}/`).then(
          (reply) => reply.status === 200,
          () => false,
        ),
      'a request served through the upstreams',
    );
    return forkgate;
  } catch (error) {
    await forkgate.stop();
    throw error;
  }
}

/** Names of the upstreams that answered a batch of concurrent requests (each one's status must be 200). */
async function namesOf(url: string, count = 8): Promise<string[]> {
  const replies = await Promise.all(Array.from({ length: count }, () => request(`${url}/who`)));
  return replies.map((reply) => {
    assert.equal(reply.status, 200, `${reply.status} ${reply.body}`);
    return (JSON.parse(reply.body) as { name: string }).name;
  });
}

/** Sends batches until one is answered by the named upstream (bounded). */
async function untilServedBy(url: string, name: string, what: string): Promise<void> {
  await eventually(async () => (await namesOf(url)).includes(name), what, 10_000);
}

test('two upstreams (TCP and unix): both serve; one killed under load fails at most what it held, with 502; health checks take it out and bring it back', async () => {
  const port = await freePort();
  const socketPath = join(scratch, 'u.sock');
  let tcp = await spawnUpstream(String(port), 'tcp');
  const unix = await spawnUpstream(socketPath, 'unix');
  const forkgate = await front([
    '--upstream',
    `http://127.0.0.1:${port}`,
    '--upstream',
    `unix:${socketPath}`,
    '--upstream-health',
    '/healthz',
  ]);
  try {
    assert.deepEqual(forkgate.workerPids(), [], 'forkgate started no workers');
    assert.doesNotMatch(forkgate.output, /Booting worker/);
    await untilServedBy(forkgate.url, 'tcp', 'the TCP upstream to serve');
    await untilServedBy(forkgate.url, 'unix', 'the unix-socket upstream to serve');
    const seen = JSON.parse((await request(`${forkgate.url}/who`)).body) as { headers: Record<string, string> };
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen.headers['x-forkgate-peer'], undefined, "forkgate's internal header never leaves it");

    // Killed mid-load: a request sent to it after it died, or on a kept-alive connection it left unanswered,
    // is retried on the other. One it got on a fresh connection and never answered may have been what
    // killed it, so that one is answered 502, never retried: at most one per connection of the load.
    const connections = 8;
    const load = keepAliveLoad(`${forkgate.url}/who`, { connections, maxMs: 20_000 });
    await load.reached(200);
    await tcp.kill();
    const killedAt = Date.now();
    await load.reached(600);
    const { ok, failures, failureStarts } = await load.stop();
    assert.ok(failures.length <= connections, `${failures.length} failed of ${ok + failures.length}: ${failures.join(', ')}`);
    for (const failure of failures) assert.equal(failure, 'status 502');
    assert.deepEqual(
      failureStarts.filter((at) => at >= killedAt),
      [],
      'every request sent once it had died was served',
    );
    assert.deepEqual(new Set(await namesOf(forkgate.url, 20)), new Set(['unix']), 'only the live upstream serves');
    assert.equal(forkgate.process.exitCode, null);

    // Back on the same port: a health check passes and it is in rotation again.
    tcp = await spawnUpstream(String(port), 'tcp');
    await untilServedBy(forkgate.url, 'tcp', 'the restarted upstream to be back in rotation');

    // Failing its health check (while it still answers requests) takes the unix upstream out.
    const direct = (path: string) => request(`http://upstream${path}`, { socketPath });
    assert.equal((await direct('/set-health?status=500')).status, 200);
    await eventually(
      async () => (await namesOf(forkgate.url)).every((name) => name === 'tcp'),
      'the unhealthy upstream to be out of rotation',
    );
    const servedBefore = (await direct('/served')).body;
    assert.deepEqual(new Set(await namesOf(forkgate.url, 20)), new Set(['tcp']));
    assert.equal((await direct('/served')).body, servedBefore, 'the unhealthy upstream got no request');
    assert.equal((await direct('/set-health?status=200')).status, 200);
    await untilServedBy(forkgate.url, 'unix', 'the recovered upstream to be back in rotation');
  } finally {
    await forkgate.stop();
    await tcp.kill();
    await unix.kill();
  }
});

test('a kept-alive connection the upstream drops as a request goes out: a GET is retried, a POST answered 502', async () => {
  // The keep-alive race, made certain: the upstream answers the first request on each connection and
  // resets the connection at the next, as the kernel does for a server that closes an idle connection
  // just as a request comes in (the request unread).
  const paths: string[] = [];
  const upstream = net.createServer((socket) => {
    let answered = false;
    socket.on('data', (chunk) => {
      for (const [, path] of chunk.toString('latin1').matchAll(/^[A-Z]+ (\S+) HTTP\/1\.1\r$/gm)) paths.push(path!);
      if (answered) return void socket.resetAndDestroy();
      answered = true;
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const forkgate = await front(['--upstream', `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`]);
  try {
    // Served on a connection that answered before: dropped, then sent again on a new one.
    const get = await request(`${forkgate.url}/retried`);
    assert.deepEqual([get.status, get.body], [200, 'ok']);
    assert.deepEqual(
      paths.filter((path) => path === '/retried'),
      ['/retried', '/retried'],
    );
    // A POST may have been acted on before the connection dropped: never sent twice.
    const post = await request(`${forkgate.url}/once`, { method: 'POST' });
    assert.equal(post.status, 502);
    assert.deepEqual(
      paths.filter((path) => path === '/once'),
      ['/once'],
    );
  } finally {
    await forkgate.stop();
    upstream.close();
  }
});

test('an upstream that dies with several pooled connections: a GET waits for it to come back, not a 502', async () => {
  // A dead server's pooled connections each reset the next request sent on them; with more of them than
  // forkgate retries, every try used to land on one and the client got a 502 for a request never read.
  const paths: string[] = [];
  let dead = false;
  const serve = (socket: net.Socket) => {
    socket.on('data', (chunk) => {
      for (const [, path] of chunk.toString('latin1').matchAll(/^[A-Z]+ (\S+) HTTP\/1\.1\r$/gm)) paths.push(path!);
      if (dead) return void socket.resetAndDestroy();
      setTimeout(() => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), 50);
    });
  };
  const first = net.createServer(serve);
  await new Promise<void>((resolve) => first.listen(0, '127.0.0.1', resolve));
  const port = (first.address() as net.AddressInfo).port;
  const forkgate = await front(['--upstream', `http://127.0.0.1:${port}`, '--queue-timeout', '10']);
  let second: net.Server | null = null;
  try {
    // Five requests at once: five pooled connections.
    const warm = await Promise.all(Array.from({ length: 5 }, () => request(`${forkgate.url}/warm`)));
    assert.deepEqual(
      warm.map(({ status }) => status),
      [200, 200, 200, 200, 200],
    );
    dead = true;
    first.close();
    const reply = request(`${forkgate.url}/after`);
    await eventually(() => paths.includes('/after'), 'the request to reach a dead pooled connection');
    second = net.createServer((socket) => {
      dead = false;
      serve(socket);
    });
    await new Promise<void>((resolve) => second!.listen(port, '127.0.0.1', resolve));
    const { status, body } = await reply;
    assert.deepEqual([status, body], [200, 'ok']);
    assert.equal(paths.filter((path) => path === '/after').length, 2, 'one reset, then served on a new connection');
  } finally {
    await forkgate.stop();
    second?.close();
  }
});

test('the only upstream killed: requests get 502 or 503 promptly, forkgate lives on, and serves again once it is back; /healthz follows; no pool to resize (400)', async () => {
  const port = await freePort();
  let only = await spawnUpstream(String(port), 'only');
  const admin = join(scratch, 'admin-only.sock');
  const forkgate = await front([
    '--upstream',
    `http://127.0.0.1:${port}`,
    '--upstream-health',
    '/healthz',
    '--queue-timeout',
    '2',
    '--admin-bind',
    `unix:${admin}`,
  ]);
  const ask = (path: string) => request(`http://admin${path}`, { socketPath: admin });
  try {
    assert.equal((await ask('/healthz')).status, 200);
    const status = JSON.parse((await ask('/status')).body) as { balance: string; backends: { name: string }[] };
    assert.equal(status.balance, 'proxy');
    assert.deepEqual(
      status.backends.map(({ name }) => name),
      [`http://127.0.0.1:${port}`],
    );
    const resize = await request('http://admin/workers/+1', { socketPath: admin, method: 'POST' });
    assert.deepEqual([resize.status, JSON.parse(resize.body).error], [400, 'no worker pool to resize: forkgate fronts --upstream servers']);
    await only.kill();
    for (let i = 0; i < 3; i++) {
      const reply = await request(`${forkgate.url}/who`);
      assert.ok([502, 503].includes(reply.status), `got ${reply.status} ${reply.body}`);
    }
    assert.equal(forkgate.process.exitCode, null, 'forkgate is still running');
    await eventually(async () => (await ask('/healthz')).status === 503, '/healthz to fail with no upstream in rotation');
    only = await spawnUpstream(String(port), 'only');
    await eventually(() => request(`${forkgate.url}/who`).then((reply) => reply.status === 200), 'the upstream to serve again', 10_000);
    assert.equal((await ask('/healthz')).status, 200);
  } finally {
    await forkgate.stop();
    await only.kill();
  }
});

test("HUP applies a new --worker-connections to the upstreams (each one's requests at once)", async () => {
  const port = await freePort();
  const upstream = await spawnUpstream(String(port), 'reloaded');
  const config = join(scratch, 'upstream-capacity.json');
  writeFileSync(config, JSON.stringify({ workerConnections: 3 }));
  const admin = join(scratch, 'admin-capacity.sock');
  const forkgate = await front(['-c', config, '--upstream', `http://127.0.0.1:${port}`, '--admin-bind', `unix:${admin}`]);
  const capacities = async () => {
    const status = JSON.parse((await request('http://admin/status', { socketPath: admin })).body) as { backends: { capacity: number }[] };
    return status.backends.map(({ capacity }) => capacity);
  };
  try {
    assert.deepEqual(await capacities(), [3]);
    writeFileSync(config, JSON.stringify({ workerConnections: 7 }));
    forkgate.signal('SIGHUP');
    await eventually(async () => (await capacities())[0] === 7, 'the upstream to take 7 requests at once');
    assert.equal((await request(`${forkgate.url}/who`)).status, 200);
  } finally {
    await forkgate.stop();
    await upstream.kill();
  }
});

test('the edge limits apply in front of upstreams; the master logs every request, refused or served', async () => {
  const port = await freePort();
  const upstream = await spawnUpstream(String(port), 'limited');
  const log = join(scratch, 'limits-access.log');
  const forkgate = await front([
    '--upstream',
    `http://127.0.0.1:${port}`,
    '--access-logfile',
    log,
    '--access-logformat',
    '%(s)s %(U)s %(p)s',
  ]);
  try {
    const fields = (count: number) => Array.from({ length: count }, (_, i) => `X-Field-${i}: ${i}\r\n`).join('');
    const status = async (payload: string) => statusOf(await exchange(forkgate.url, payload));
    const served = async () => Number((await request(`http://127.0.0.1:${port}/served`)).body);
    const servedBefore = await served();
    assert.equal(await status(`GET /who HTTP/1.1\r\nHost: x\r\n${fields(98)}Connection: close\r\n\r\n`), 200);
    assert.equal(await status(`GET /who HTTP/1.1\r\nHost: x\r\n${fields(100)}\r\n`), 431);
    assert.equal(await status(`GET /${'a'.repeat(4094 - 13)} HTTP/1.1\r\nHost: x\r\n\r\n`), 414);
    assert.equal(await status('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'), 400);
    assert.equal(await status('GET /two-hosts HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n'), 400);
    assert.equal(await served(), servedBefore + 1, 'only the accepted request reached the upstream');
    const master = forkgate.process.pid!;
    // What Node's parser refused (431, the first 400) has no request to log, as in Gunicorn.
    const expected = [`200 /who <${master}>`, `400 /two-hosts <${master}>`, `414 /${'a'.repeat(4094 - 13)} <${master}>`];
    // after the requests that found the upstream serving (front()), each of these once
    const logged = () =>
      readFileSync(log, 'utf8')
        .split('\n')
        .filter((line) => line && line !== `200 / <${master}>`)
        .sort();
    await eventually(() => logged().length >= expected.length, 'the access log lines');
    assert.deepEqual(logged(), expected);
  } finally {
    await forkgate.stop();
    await upstream.kill();
  }
});

for (const { name, args, expect } of [
  { name: 'an app and --upstream', args: ['--upstream', 'http://127.0.0.1:9', `${FIXTURES}listener.cjs`], expect: /--upstream/ },
  { name: 'neither an app nor --upstream', args: [], expect: /no app given.*--upstream/ },
  {
    name: '--upstream with --balance round-robin',
    args: ['--upstream', 'http://127.0.0.1:9', '--balance', 'round-robin'],
    expect: /--balance/,
  },
]) {
  test(`${name}: exit 2 with a message naming the setting`, async () => {
    const forkgate = await start(['-b', '127.0.0.1:0', ...args], { waitReady: false });
    const { code } = await forkgate.exited;
    assert.equal(code, 2, forkgate.output);
    assert.match(forkgate.output, expect);
  });
}
