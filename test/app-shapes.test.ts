// Every app shape forkgate accepts, served through a real pool in both balance modes.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { describe, test } from 'node:test';
import { FIXTURES, request, start } from './helpers/forkgate.ts';

const SHAPES: [file: string, expected: string][] = [
  ['listener.cjs', 'hello from listener'],
  ['listener-esm.mjs', 'hello from listener-esm'],
  ['express.cjs', 'hello from express'],
  ['koa.mjs', 'hello from koa'],
  ['hono.ts', 'hello from hono'],
  ['fetch-object.mjs', 'hello from fetch-object'],
  ['http-server.cjs', 'hello from http-server'],
  ['fastify.mjs', 'hello from fastify'],
  ['factory.mjs:createApp', 'hello from factory'],
  ['factory.mjs:named', 'hello from named'],
  ['listen-express.cjs', 'hello from listen-express'],
  ['listen-fastify.mjs', 'hello from listen-fastify'],
  ['tla.mjs', 'hello from tla'],
];

for (const balance of ['round-robin', 'reuseport']) {
  describe(`app shapes (${balance})`, () => {
    for (const [app, expected] of SHAPES) {
      test(app, async () => {
        const forkgate = await start(['-w', '2', '--balance', balance, '-b', '127.0.0.1:0', `${FIXTURES}${app}`]);
        try {
          const reply = await request(`${forkgate.url}/`);
          assert.equal(reply.status, 200);
          assert.equal(reply.body, expected);
          const pids = new Set<string>();
          for (let i = 0; i < 40 && pids.size < 2; i++) pids.add((await request(`${forkgate.url}/pid`)).body);
          assert.deepEqual(
            [...pids].map(Number).sort((a, b) => a - b),
            forkgate.workerPids(),
            'both workers serve the app',
          );
        } finally {
          assert.equal((await forkgate.stop()).code, 0);
        }
      });
    }
  });
}

test('a fetch-style app streams its body and keeps every Set-Cookie header', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', `${FIXTURES}hono.ts`]);
  try {
    const response = await fetch(`${forkgate.url}/stream`);
    const chunks: string[] = [];
    const decoder = new TextDecoder();
    const reader = response.body!.getReader();
    for (let read = await reader.read(); !read.done; read = await reader.read()) chunks.push(decoder.decode(read.value));
    assert.ok(chunks.length >= 2, `expected several chunks, got ${JSON.stringify(chunks)}`);
    const cookies = await fetch(`${forkgate.url}/cookies`);
    assert.deepEqual(cookies.headers.getSetCookie(), ['a=1; Path=/', 'b=2; Path=/']);
    const echo = await fetch(`${forkgate.url}/echo`, { method: 'POST', body: 'posted body' });
    assert.equal(await echo.text(), 'posted body');
  } finally {
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`upgrade requests reach the app's upgrade listener (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', `${FIXTURES}ws-upgrade.cjs`]);
    try {
      const { port } = new URL(forkgate.url);
      const echoed = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(Number(port), '127.0.0.1', () => {
          socket.write('GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
        });
        let received = '';
        socket.on('data', (chunk) => {
          received += chunk;
          if (received.includes('\r\n\r\n') && !received.includes('ping')) socket.write('ping');
          if (received.includes('ping')) {
            socket.end();
            resolve(received);
          }
        });
        socket.on('error', reject);
      });
      assert.match(echoed, /^HTTP\/1\.1 101 /);
      assert.match(echoed, /ping$/);
    } finally {
      await forkgate.stop();
    }
  });
}
