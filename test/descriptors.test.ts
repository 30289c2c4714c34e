// The open-file limit: forkgate warns at start when it cannot hold --worker-connections, answers 503
// beyond what the limit leaves it (libuv would close those connections unanswered), logs it, and keeps
// serving the connections it holds.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { test } from 'node:test';
import { eventually, FIXTURES, request, start } from './helpers/forkgate.ts';

const OPS = `${FIXTURES}ops.cjs`;
const LIMIT = ['prlimit', '--nofile=256:256', '--'];

type Outcome = 'served' | 'refused' | 'unanswered';

/** A kept-alive connection that sends one request and stays open; resolves with how it was answered. */
function connectAndAsk(url: string): Promise<{ outcome: Outcome; socket: net.Socket }> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GET /pid HTTP/1.1\r\nHost: x\r\n\r\n'));
    let received = '';
    const settle = (outcome: Outcome) => {
      clearTimeout(timer);
      resolve({ outcome, socket });
    };
    const timer = setTimeout(() => settle('unanswered'), 5_000);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.includes('\r\n\r\n')) settle(received.startsWith('HTTP/1.1 503 ') ? 'refused' : 'served');
    });
    socket.on('error', () => settle('unanswered'));
    socket.on('close', () => settle('unanswered'));
  });
}

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`at the open-file limit, new connections are answered 503 and logged; those held are served (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', OPS], { launcher: LIMIT });
    const sockets: net.Socket[] = [];
    try {
      assert.match(forkgate.output, /Open-file limit 256 \(ulimit -n\) leaves .* about \d+ connections/);
      const [worker] = forkgate.workerPids();
      const counts: Record<Outcome, number> = { served: 0, refused: 0, unanswered: 0 };
      // More clients than 256 descriptors hold, all at once, each keeping its connection open.
      for (const { outcome, socket } of await Promise.all(Array.from({ length: 400 }, () => connectAndAsk(forkgate.url)))) {
        counts[outcome]++;
        sockets.push(socket);
      }
      assert.equal(counts.unanswered, 0, JSON.stringify(counts));
      assert.ok(counts.served >= 50 && counts.refused > 0, JSON.stringify(counts));
      await forkgate.waitFor(/At the open-file limit: answered .*503/);
      for (const socket of sockets.splice(0)) socket.destroy();
      await eventually(async () => (await request(`${forkgate.url}/pid`)).status === 200, 'room again once the clients left');
      assert.deepEqual(forkgate.workerPids(), [worker], 'the worker lived on');
      assert.equal(forkgate.process.exitCode, null);
    } finally {
      for (const socket of sockets) socket.destroy();
      await forkgate.stop();
    }
  });
}
