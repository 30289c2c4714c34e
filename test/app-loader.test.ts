import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { AppLoadError } from '../src/errors.ts';
import { loadApp, parseAppSpec, type LoadedApp, type LoadOptions } from '../src/worker/app-loader.ts';

const fixtures = join(import.meta.dirname, 'fixtures', 'apps');
const appAddress: AddressInfo = { address: '127.0.0.1', family: 'IPv4', port: 8123 };

function options(overrides: Partial<LoadOptions> = {}): LoadOptions {
  return { cwd: fixtures, address: appAddress, listenWaitMs: 1000, onListenerError: () => {}, ...overrides };
}

/** Accepts on a real port and feeds each connection to the app, as a worker does. */
async function feed(t: TestContext, loaded: LoadedApp): Promise<string> {
  const sockets = new Set<net.Socket>();
  const front = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    loaded.server.emit('connection', socket);
  });
  front.listen(0, '127.0.0.1');
  await once(front, 'listening');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    front.close();
  });
  return `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const response = await fetch(url);
  return { status: response.status, body: await response.text() };
}

/** Records every real (not faked) listen() call, so a test can tell that the app bound nothing. */
function recordRealListens(t: TestContext): net.Server[] {
  const bound: net.Server[] = [];
  const realListen = net.Server.prototype.listen;
  t.mock.method(net.Server.prototype, 'listen', function (this: net.Server, ...args: unknown[]) {
    bound.push(this);
    return Reflect.apply(realListen, this, args) as net.Server;
  });
  t.after(() => {
    for (const server of bound) server.close();
  });
  return bound;
}

describe('parseAppSpec', () => {
  it('splits on the last colon only before an identifier', () => {
    assert.deepEqual(parseAppSpec('app.js'), { path: 'app.js', exportName: undefined, callFactory: false });
    assert.deepEqual(parseAppSpec('src/app.ts:server'), { path: 'src/app.ts', exportName: 'server', callFactory: false });
    assert.deepEqual(parseAppSpec('a:b/app.mjs:createApp()'), { path: 'a:b/app.mjs', exportName: 'createApp', callFactory: true });
    assert.deepEqual(parseAppSpec('C:\\apps\\app.cjs'), { path: 'C:\\apps\\app.cjs', exportName: undefined, callFactory: false });
    assert.deepEqual(parseAppSpec('app.js:$app_1'), { path: 'app.js', exportName: '$app_1', callFactory: false });
    assert.deepEqual(parseAppSpec('app.js:1x'), { path: 'app.js:1x', exportName: undefined, callFactory: false });
  });

  it('refuses a spec without a path', () => {
    assert.throws(() => parseAppSpec(':app'), AppLoadError);
  });
});

describe('loadApp serves each app shape', () => {
  const shapes = [
    ['listener.cjs', 'listener', 'hello from listener'],
    ['listener-esm.mjs', 'listener', 'hello from listener-esm'],
    ['express.cjs', 'listener', 'hello from express'],
    ['koa.mjs', 'koa', 'hello from koa'],
    ['hono.ts', 'fetch', 'hello from hono'],
    ['fetch-object.mjs', 'fetch', 'hello from fetch-object'],
    ['http-server.cjs', 'http-server', 'hello from http-server'],
    ['fastify.mjs', 'fastify', 'hello from fastify'],
    ['tla.mjs', 'listener', 'hello from tla'],
    ['factory.mjs:createApp', 'listener', 'hello from factory'],
    ['factory.mjs:named', 'listener', 'hello from named'],
    ['factory.mjs:createApp()', 'listener', 'hello from factory'],
  ] as const;
  for (const [spec, shape, greeting] of shapes) {
    it(`${spec} → ${shape}`, async (t) => {
      const loaded = await loadApp(parseAppSpec(spec), options());
      assert.equal(loaded.shape, shape);
      assert.equal(loaded.server.listening, false, 'the server the worker feeds never binds');
      const url = await feed(t, loaded);
      assert.deepEqual(await get(url), { status: 200, body: greeting });
      assert.deepEqual(await get(`${url}/pid`), { status: 200, body: String(process.pid) });
    });
  }

  it('finds the file when the extension is left out', async () => {
    const loaded = await loadApp(parseAppSpec('express'), options());
    assert.equal(loaded.shape, 'listener');
  });
});

describe('fetch-style apps', () => {
  it('stream response bodies chunk by chunk, keep every Set-Cookie and read request bodies', async (t) => {
    const url = await feed(t, await loadApp(parseAppSpec('hono.ts'), options()));

    const arrivals: number[] = [];
    let body = '';
    await new Promise<void>((resolve, reject) => {
      http
        .get(`${url}/stream`, (response) => {
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => {
            arrivals.push(Date.now());
            body += chunk;
          });
          response.on('end', resolve);
        })
        .on('error', reject);
    });
    assert.equal(body, 'chunk 1\nchunk 2\nchunk 3\n');
    assert.ok(arrivals.length >= 3, `expected 3 separate chunks, got ${arrivals.length}`);
    assert.ok(arrivals.at(-1)! - arrivals[0]! >= 150, 'the first chunk came only with the last');

    const cookies = await fetch(`${url}/cookies`);
    assert.deepEqual(cookies.headers.getSetCookie(), ['a=1; Path=/', 'b=2; Path=/']);

    const echo = await fetch(`${url}/echo`, { method: 'POST', body: 'ping body' });
    assert.equal(await echo.text(), 'ping body');
  });

  it('answer 500 and report when the handler throws', async (t) => {
    const errors: unknown[] = [];
    const loaded = await loadApp(parseAppSpec('fetch-object.mjs'), options({ onListenerError: (e) => errors.push(e) }));
    const url = await feed(t, loaded);
    assert.deepEqual(await get(`${url}/throw`), { status: 500, body: 'Internal Server Error' });
    assert.equal((errors[0] as Error).message, 'fetch handler failed');
    assert.deepEqual(await get(url), { status: 200, body: 'hello from fetch-object' });
  });
});

describe('listener errors', () => {
  it('answer 500 for a throw or a rejection, cut the connection after headers, and keep serving', async (t) => {
    const errors: unknown[] = [];
    const loaded = await loadApp(parseAppSpec('throws.cjs'), options({ onListenerError: (e) => errors.push(e) }));
    const url = await feed(t, loaded);

    assert.deepEqual(await get(`${url}/throw`), { status: 500, body: 'Internal Server Error' });
    assert.deepEqual(await get(`${url}/reject`), { status: 500, body: 'Internal Server Error' });
    await assert.rejects(get(`${url}/partial`));
    assert.deepEqual(await get(url), { status: 200, body: 'hello from throws' });
    assert.deepEqual(
      errors.map((e) => (e as Error).message),
      ['listener threw', 'listener rejected', 'listener threw after its headers'],
    );
  });
});

describe('an http.Server app', () => {
  it('receives upgrades', async (t) => {
    const url = new URL(await feed(t, await loadApp(parseAppSpec('ws-upgrade.cjs'), options())));
    const socket = net.connect(Number(url.port), url.hostname);
    t.after(() => socket.destroy());
    socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
    let received = '';
    let pinged = false;
    socket.setEncoding('utf8');
    for await (const chunk of socket) {
      received += chunk as string;
      if (!pinged && received.includes('\r\n\r\n')) {
        pinged = true;
        socket.write('ping');
      }
      if (received.endsWith('\r\n\r\nping')) break;
    }
    assert.match(received, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  });
});

describe('apps that call listen() themselves', () => {
  it('an Express app listening on 3000 binds nothing and sees the given address', async (t) => {
    const realListens = recordRealListens(t);
    const listenBefore = net.Server.prototype.listen;
    const log = t.mock.method(console, 'log', () => {});
    const loaded = await loadApp(parseAppSpec('listen-express.cjs'), options());
    assert.equal(loaded.shape, 'listen-call');
    assert.deepEqual(realListens, []);
    assert.equal(net.Server.prototype.listen, listenBefore, 'listen() is restored');
    assert.equal(loaded.server.listening, true);
    assert.deepEqual(loaded.server.address(), appAddress);

    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(log.mock.calls[0]?.arguments, ['listen-express listening at', appAddress]);

    // Port 3000 is still free: the app never took it.
    const probe = net.createServer().listen(3000);
    await once(probe, 'listening');
    probe.close();

    const url = await feed(t, loaded);
    assert.deepEqual(await get(url), { status: 200, body: 'hello from listen-express' });
  });

  it('a Fastify app awaiting listen() binds nothing, not even its second localhost address', async (t) => {
    const realListens = recordRealListens(t);
    // Against 0.0.0.0, fastify binds 127.0.0.1 as a second server: it must be faked too.
    const wildcard: AddressInfo = { address: '0.0.0.0', family: 'IPv4', port: 8123 };
    const loaded = await loadApp(parseAppSpec('listen-fastify.mjs'), options({ address: wildcard }));
    assert.equal(loaded.shape, 'listen-call');
    assert.deepEqual(realListens, []);
    assert.deepEqual(loaded.server.address(), wildcard);
    const url = await feed(t, loaded);
    assert.deepEqual(await get(url), { status: 200, body: 'hello from listen-fastify' });
  });

  it('a server of another shape listening after the app binds for real', async (t) => {
    const realListens = recordRealListens(t);
    const loaded = await loadApp(parseAppSpec('listen-with-metrics.cjs'), options());
    const [metrics] = realListens;
    assert.equal(realListens.length, 1);
    await once(metrics!, 'listening');
    const metricsPort = (metrics!.address() as AddressInfo).port;
    assert.deepEqual(await get(`http://127.0.0.1:${metricsPort}/`), { status: 200, body: 'metrics' });

    const url = await feed(t, loaded);
    assert.deepEqual(await get(url), { status: 200, body: 'hello from listen-with-metrics' });
  });

  it('an app calling listen() after its import finished is waited for', async (t) => {
    const loaded = await loadApp(parseAppSpec('listen-late.mjs'), options({ listenWaitMs: 2000 }));
    assert.equal(loaded.shape, 'listen-call');
    const url = await feed(t, loaded);
    assert.deepEqual(await get(url), { status: 200, body: 'hello from listen-late' });
  });
});

describe('load errors', () => {
  const realListen = net.Server.prototype.listen;

  it('no app, no listen() call and nothing pending: fails at once, naming the path, what was looked for and what is accepted', async () => {
    const started = Date.now();
    await assert.rejects(loadApp(parseAppSpec('no-export.cjs'), options({ listenWaitMs: 30_000 })), (error) => {
      assert.ok(error instanceof AppLoadError);
      assert.ok(error.message.includes(join(fixtures, 'no-export.cjs')), error.message);
      assert.match(error.message, /default export.*'app'.*called no listen\(\) and waits on nothing.*Koa/s);
      return true;
    });
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
    assert.equal(net.Server.prototype.listen, realListen);
  });

  it('no app and no listen() call while the app waits on something: fails after listenWaitMs', async () => {
    const started = Date.now();
    await assert.rejects(loadApp(parseAppSpec('no-export-pending.cjs'), options({ listenWaitMs: 300 })), (error) => {
      assert.ok(error instanceof AppLoadError);
      assert.match(error.message, /no listen\(\) call came within 300 ms/);
      return true;
    });
    assert.ok(Date.now() - started >= 290);
    assert.equal(net.Server.prototype.listen, realListen);
  });

  it('no app and no listen() call: fails once what the app waited on is over', async () => {
    const started = Date.now();
    await assert.rejects(loadApp(parseAppSpec('no-export-settles.cjs'), options({ listenWaitMs: 30_000 })), /waits on nothing/);
    const took = Date.now() - started;
    assert.ok(took >= 290 && took < 2000, `took ${took} ms, not the 300 ms the app waited`);
  });

  it('lists the exports when the module has no default export', async () => {
    await assert.rejects(loadApp(parseAppSpec('factory.mjs'), options({ listenWaitMs: 50 })), /createApp, named, nestedFactory/);
  });

  it('the app’s own import error propagates as is', async () => {
    await assert.rejects(loadApp(parseAppSpec('broken-import.cjs'), options()), (error) => {
      assert.ok(error instanceof Error && !(error instanceof AppLoadError));
      assert.equal(error.message, 'database url missing');
      assert.ok(error.stack?.includes(join(fixtures, 'broken-import.cjs')), error.stack);
      return true;
    });
    await assert.rejects(loadApp(parseAppSpec('syntax-error.mjs'), options()), SyntaxError);
    assert.equal(net.Server.prototype.listen, realListen);
  });

  it('missing file', async () => {
    await assert.rejects(loadApp(parseAppSpec('nope/app.js:app'), options()), {
      name: 'AppLoadError',
      message: `cannot find app file ${join(fixtures, 'nope/app.js')} (from 'nope/app.js')`,
    });
  });

  it('a directory: its file asked for, not a stack from the module loader', async () => {
    const dir = join(fixtures, '..');
    await assert.rejects(loadApp(parseAppSpec(dir), options()), {
      name: 'AppLoadError',
      message: `app ${dir} is a directory (from '${dir}'); name the app's file in it, such as ${join(dir, 'index.js')}`,
    });
  });

  it('missing named export lists the exports there are', async () => {
    await assert.rejects(loadApp(parseAppSpec('factory.mjs:createAp'), options()), (error) => {
      assert.ok(error instanceof AppLoadError);
      assert.match(error.message, /factory\.mjs has no export 'createAp'; it exports: createApp, named, nestedFactory/);
      return true;
    });
  });

  it('a factory returning a factory', async () => {
    await assert.rejects(loadApp(parseAppSpec('factory.mjs:nestedFactory'), options()), {
      name: 'AppLoadError',
      message: /nestedFactory.*returned another factory/,
    });
  });
});
