// The admin endpoint (--admin-bind): handed over on USR2, and guarded against what a browser could send it.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, isAlive, request, start, startRequest, type Forkgate, type RequestOptions } from './helpers/forkgate.ts';

const OPS = `${FIXTURES}ops.cjs`;
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-admin-'));
const successors: number[] = [];
after(() => {
  for (const pid of successors) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(scratch, { recursive: true, force: true });
});

/** The admin endpoint's URL from the master's log, with the port it bound for 127.0.0.1:0. */
async function adminUrl(forkgate: Forkgate): Promise<string> {
  const [, address] = (await forkgate.waitFor(/Admin endpoint at: (\S+)/)) as [string, string];
  return `http://${address}`;
}

async function statusPid(url: string, options: RequestOptions = {}): Promise<number> {
  return (JSON.parse((await request(`${url}/status`, options)).body) as { master: { pid: number } }).master.pid;
}

/** A request as HTTP/1.0 clients send it, without a Host header; resolves with the raw response. */
function requestWithoutHost(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`GET ${path} HTTP/1.0\r\n\r\n`));
    let response = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (response += chunk));
    socket.on('end', () => resolve(response));
    socket.on('error', reject);
    socket.setTimeout(15_000, () => socket.destroy(new Error(`no answer to GET ${path}`)));
  });
}

/**
 * USR2 while a slow request keeps the old master draining; returns the new master's pid once the old
 * one has said it stops (it is still alive then, finishing the slow request).
 */
async function upgradeWhileBusy(forkgate: Forkgate): Promise<{ successor: number; slow: Promise<{ status: number }> }> {
  const slow = startRequest(`${forkgate.url}/slow?ms=3000`);
  await slow.headers;
  forkgate.signal('SIGUSR2');
  const [, pid] = (await forkgate.waitFor(/Upgrading: started a new master \(pid:(\d+)\)/)) as [string, string];
  const successor = Number(pid);
  successors.push(successor);
  await forkgate.waitFor(new RegExp(`New master \\(pid:${successor}\\) is serving: this one stops`));
  return { successor, slow: slow.reply };
}

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`USR2 with the admin endpoint on TCP: the new master answers on the same port, the old one no more (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', '--admin-bind', '127.0.0.1:0', OPS]);
    try {
      const admin = await adminUrl(forkgate);
      assert.equal(await statusPid(admin), forkgate.pid);
      const { successor, slow } = await upgradeWhileBusy(forkgate);
      assert.ok(isAlive(forkgate.pid), 'the old master still drains');
      for (let i = 0; i < 10; i++) assert.equal(await statusPid(admin), successor, 'only the new master answers');
      assert.equal((await slow).status, 200);
      assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
      assert.equal(await statusPid(admin), successor);
      assert.match(forkgate.output, new RegExp(`\\[${successor}\\] Admin endpoint at: ${admin.slice('http://'.length)}`));
      process.kill(successor, 'SIGTERM');
      await eventually(() => !isAlive(successor), 'the new master to stop');
    } finally {
      await forkgate.stop();
    }
  });
}

test('USR2 with the admin endpoint on a unix socket: the socket file stays and the new master answers on it', async () => {
  const socketPath = join(scratch, 'upgrade.sock');
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS]);
  try {
    const { successor, slow } = await upgradeWhileBusy(forkgate);
    assert.equal((await slow).status, 200);
    assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
    assert.ok(existsSync(socketPath), 'the socket file outlives the old master');
    assert.equal(await statusPid('http://localhost', { socketPath }), successor);
    process.kill(successor, 'SIGTERM');
    await eventually(() => !isAlive(successor), 'the new master to stop');
  } finally {
    await forkgate.stop();
  }
});

test('a Host that is a domain name is refused with 403; IP literals, localhost and no Host are served', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', '127.0.0.1:0', OPS]);
  try {
    const admin = await adminUrl(forkgate);
    const port = Number(new URL(admin).port);
    const asHost = (host: string, method = 'GET', path = '/status') => request(`${admin}${path}`, { method, headers: { host } });
    for (const [method, path] of [
      ['GET', '/status'],
      ['POST', '/workers/+1'],
    ] as const) {
      const refused = await asHost(`forkgate.example:${port}`, method, path);
      assert.equal(refused.status, 403, `${method} ${path}`);
      assert.match(JSON.parse(refused.body).error, /^Host 'forkgate\.example:\d+' is not an IP address or localhost/);
    }
    for (const host of [`127.0.0.1:${port}`, `[::1]:${port}`, `localhost:${port}`, 'LOCALHOST', '127.0.0.1']) {
      assert.equal((await asHost(host)).status, 200, host);
    }
    assert.match(await requestWithoutHost(port, '/healthz'), /^HTTP\/1\.1 200 /);
  } finally {
    await forkgate.stop();
  }
});

for (const over of ['TCP', 'a unix socket']) {
  test(`a request from another Origin is refused with 403, the same origin served (over ${over})`, async () => {
    const socketPath = join(scratch, 'origin.sock');
    const bind = over === 'TCP' ? '127.0.0.1:0' : `unix:${socketPath}`;
    const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', bind, OPS]);
    try {
      const admin = over === 'TCP' ? await adminUrl(forkgate) : 'http://localhost';
      const fromOrigin = (origin: string, method = 'GET', path = '/status') =>
        request(`${admin}${path}`, { method, headers: { origin }, socketPath: over === 'TCP' ? undefined : socketPath });
      for (const origin of ['http://forkgate.example', admin.replace('http:', 'https:'), 'null']) {
        for (const [method, path] of [
          ['GET', '/status'],
          ['POST', '/workers/+1'],
        ] as const) {
          const refused = await fromOrigin(origin, method, path);
          assert.equal(refused.status, 403, `${method} ${path} from ${origin}`);
          assert.match(JSON.parse(refused.body).error, /^Origin '.*' is not this endpoint's own/);
        }
      }
      const served = JSON.parse((await fromOrigin(admin)).body) as { target: number };
      assert.equal(served.target, 1, 'the same origin is served; the refused POSTs changed nothing');
    } finally {
      await forkgate.stop();
    }
  });
}

/** POST an action, with `Authorization: Bearer TOKEN` when a token is given. */
function act(url: string, path: string, token?: string, options: RequestOptions = {}) {
  return request(`${url}${path}`, { ...options, method: 'POST', headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
}

async function target(url: string, options: RequestOptions = {}): Promise<number> {
  return (JSON.parse((await request(`${url}/status`, options)).body) as { target: number }).target;
}

test('over TCP without --admin-token-file, actions are refused with 403 naming it, and GETs stay open', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', '127.0.0.1:0', OPS]);
  try {
    const admin = await adminUrl(forkgate);
    for (const path of ['/workers/+1', '/workers/-1', '/workers/3', '/reload', '/stop']) {
      const refused = await act(admin, path);
      assert.equal(refused.status, 403, path);
      assert.match(JSON.parse(refused.body).error, /--admin-token-file/);
    }
    for (const path of ['/healthz', '/readyz', '/status']) assert.equal((await request(`${admin}${path}`)).status, 200, path);
    assert.equal(await target(admin), 1);
    assert.equal(forkgate.count(/Handling (signal|admin request)/), 0, 'no action was taken');
  } finally {
    await forkgate.stop();
  }
});

test('a path the endpoint does not serve is 404 whatever the method (POST /reload/ too); a known one asked wrongly is 405 with Allow', async () => {
  const socketPath = join(scratch, 'paths.sock');
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS]);
  try {
    await forkgate.waitFor(/Admin endpoint at: /);
    const ask = (method: string, path: string) => request(`http://localhost${path}`, { method, socketPath });
    for (const [method, path] of [
      ['POST', '/reload/'],
      ['POST', '/stopp'],
      ['POST', '/status/'],
      ['GET', '/reload/'],
      ['DELETE', '/nowhere'],
    ] as const) {
      const missing = await ask(method, path);
      assert.equal(missing.status, 404, `${method} ${path}`);
      assert.match(JSON.parse(missing.body).error, new RegExp(`^no ${path}; try GET /, `));
    }
    for (const [method, path, allow] of [
      ['GET', '/reload', 'POST'],
      ['PUT', '/workers/2', 'POST'],
      ['POST', '/status', 'GET, HEAD'],
      ['DELETE', '/', 'GET, HEAD'],
    ] as const) {
      const wrong = await ask(method, path);
      assert.equal(wrong.status, 405, `${method} ${path}`);
      assert.equal(wrong.headers.allow, allow, `${method} ${path}`);
      assert.equal(JSON.parse(wrong.body).error, `${method} ${path} is not allowed; use ${allow}`);
    }
    assert.equal(forkgate.count(/Handling (signal|admin request)/), 0, 'no action was taken');
  } finally {
    await forkgate.stop();
  }
});

test('with --admin-token-file, an action without the bearer token or with a wrong one is refused with 401', async () => {
  const tokenFile = join(scratch, 'refused.token');
  writeFileSync(tokenFile, 'the-right-token\n');
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', '127.0.0.1:0', '--admin-token-file', tokenFile, OPS]);
  try {
    const admin = await adminUrl(forkgate);
    for (const token of [undefined, 'a-wrong-token', 'the-right-toke', 'the-right-token-and-more']) {
      const refused = await act(admin, '/workers/+1', token);
      assert.equal(refused.status, 401, `token ${token}`);
      assert.equal(refused.headers['www-authenticate'], 'Bearer');
    }
    assert.equal(await target(admin), 1);
  } finally {
    await forkgate.stop();
  }
});

test('with --admin-token-file, an action with the bearer token is accepted (202) and done; a new token in the file replaces it', async () => {
  const tokenFile = join(scratch, 'rotated.token');
  writeFileSync(tokenFile, '  first-token \n');
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', '127.0.0.1:0', '--admin-token-file', tokenFile, OPS]);
  try {
    const admin = await adminUrl(forkgate);
    assert.equal((await act(admin, '/workers/+1', 'first-token')).status, 202);
    await eventually(() => forkgate.workerPids().length === 2, '2 workers');
    assert.equal(await target(admin), 2);

    writeFileSync(tokenFile, 'second-token\n');
    assert.equal((await act(admin, '/workers/-1', 'first-token')).status, 401, 'the old token is refused once the file changed');
    assert.equal((await act(admin, '/workers/-1', 'second-token')).status, 202);
    await eventually(() => forkgate.workerPids().length === 1, '1 worker');
    assert.equal(await target(admin), 1);
  } finally {
    await forkgate.stop();
  }
});

test('over a unix socket with --admin-token-file, actions need the bearer token too', async () => {
  const tokenFile = join(scratch, 'unix.token');
  const socketPath = join(scratch, 'token.sock');
  writeFileSync(tokenFile, 'unix-token\n');
  const forkgate = await start([
    '-w',
    '1',
    '-b',
    '127.0.0.1:0',
    '--admin-bind',
    `unix:${socketPath}`,
    '--admin-token-file',
    tokenFile,
    OPS,
  ]);
  try {
    const admin = 'http://localhost';
    assert.equal((await act(admin, '/workers/+1', undefined, { socketPath })).status, 401);
    assert.equal((await act(admin, '/workers/+1', 'unix-token', { socketPath })).status, 202);
    await eventually(() => forkgate.workerPids().length === 2, '2 workers');
  } finally {
    await forkgate.stop();
  }
});

test('TTIN and POST /workers/+1 never take the pool past 4 workers per CPU', async () => {
  const socketPath = join(scratch, 'cap.sock');
  // One CPU for the master, as its affinity: the maximum is then 4 workers.
  const forkgate = await start(['-w', '3', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS], {
    launcher: ['taskset', '-c', '0'],
  });
  try {
    forkgate.signal('SIGTTIN');
    await forkgate.waitFor(/Pool size raised to 4/);
    forkgate.signal('SIGTTIN');
    await forkgate.waitFor(/Pool size stays at 4: 5 is above the maximum, 4 \(4 × 1 CPU\)/);
    const refused = await act('http://localhost', '/workers/+1', undefined, { socketPath });
    assert.equal(refused.status, 400);
    assert.deepEqual(JSON.parse(refused.body), { error: 'pool size stays at 4: 5 is above the maximum, 4 (4 × 1 CPU)', target: 4 });
    assert.equal(await target('http://localhost', { socketPath }), 4);
    assert.equal(forkgate.count(/Pool size raised/), 1, forkgate.output);
  } finally {
    await forkgate.stop();
  }
});

test('POST /workers/N sets the pool size, /workers/+N and /workers/-N change it: 202 with the new target', async () => {
  const socketPath = join(scratch, 'resize.sock');
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS]);
  try {
    for (const [path, workers, previous] of [
      ['/workers/3', 3, 1],
      ['/workers/-2', 1, 3],
      ['/workers/+1', 2, 1],
      ['/workers/2', 2, 2],
    ] as const) {
      const accepted = await act('http://localhost', path, undefined, { socketPath });
      assert.equal(accepted.status, 202, path);
      assert.deepEqual(JSON.parse(accepted.body), { accepted: path, target: workers, previous }, path);
      await eventually(() => forkgate.workerPids().length === workers, `${workers} workers after POST ${path}`);
    }
    assert.match(forkgate.output, /Handling admin request: POST \/workers\/3\n[^\n]*Pool size raised to 3\n/);
    assert.match(forkgate.output, /Handling admin request: POST \/workers\/-2\n[^\n]*Pool size lowered to 1\n/);
  } finally {
    await forkgate.stop();
  }
});

test('a pool size below 1, above the maximum or malformed is refused with 400, and the pool stays', async () => {
  const socketPath = join(scratch, 'bounds.sock');
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS], {
    launcher: ['taskset', '-c', '0'],
  });
  try {
    const cases = [
      ['/workers/5', /^pool size stays at 2: 5 is above the maximum, 4 \(4 × 1 CPU\)$/],
      ['/workers/+3', /^pool size stays at 2: 5 is above the maximum, 4/],
      ['/workers/0', /^pool size stays at 2: 0 is below the minimum, 1$/],
      ['/workers/-2', /^pool size stays at 2: 0 is below the minimum, 1$/],
      ['/workers/99999999999999999999', /above the maximum, 4/],
      ['/workers/two', /^expected \/workers\/N \(the pool size\), \/workers\/\+N or \/workers\/-N; got \/workers\/two$/],
      ['/workers/1.5', /^expected \/workers\/N/],
      ['/workers/', /^expected \/workers\/N/],
      ['/workers/+-1', /^expected \/workers\/N/],
    ] as const;
    for (const [path, error] of cases) {
      const refused = await act('http://localhost', path, undefined, { socketPath });
      assert.equal(refused.status, 400, path);
      assert.match(JSON.parse(refused.body).error, error, path);
    }
    assert.equal(await target('http://localhost', { socketPath }), 2);
    assert.equal(forkgate.workerPids().length, 2);
    assert.equal(forkgate.count(/Pool size (raised|lowered)/), 0, forkgate.output);
  } finally {
    await forkgate.stop();
  }
});

test('POST /stop stops as TERM does: /readyz turns 503, the in-flight request completes, exit 0', async () => {
  const socketPath = join(scratch, 'stop.sock');
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, '--shutdown-delay', '1', OPS]);
  try {
    const slow = startRequest(`${forkgate.url}/slow?ms=1500`);
    await slow.headers;
    const accepted = await act('http://localhost', '/stop', undefined, { socketPath });
    assert.deepEqual([accepted.status, JSON.parse(accepted.body)], [202, { accepted: '/stop' }]);
    await forkgate.waitFor(/Handling admin request: POST \/stop\n[^\n]*Shutdown delay: serving 1 s more/);
    assert.equal((await request('http://localhost/readyz', { socketPath })).status, 503);
    assert.equal((await slow.reply).status, 200);
    assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
    assert.equal(forkgate.count(/Handling signal/), 0, forkgate.output);
  } finally {
    await forkgate.stop();
  }
});

test('with --workers above 4 per CPU, TTIN keeps the pool at --workers', async () => {
  const forkgate = await start(['-w', '5', '-b', '127.0.0.1:0', OPS], { launcher: ['taskset', '-c', '0'] });
  try {
    forkgate.signal('SIGTTIN');
    await forkgate.waitFor(/Pool size stays at 5: 6 is above the maximum, 5 \(--workers 5\)/);
    assert.equal(forkgate.count(/Pool size raised/), 0, forkgate.output);
  } finally {
    await forkgate.stop();
  }
});
