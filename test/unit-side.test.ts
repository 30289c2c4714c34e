// The hop's unit side in one process: a unit's app server fed raw connections as the proxy's pool
// writes them. Requests read on time run at once; those read late are confirmed first and put aside if
// a withdrawal follows them; one whose handler awaits is confirmed started.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { markListening } from '../src/edge/app-server.ts';
import { AWAITING_HEADER, PEER_HEADER, WITHDRAWAL } from '../src/hop/protocol.ts';
import { UnitSide } from '../src/hop/unit-side.ts';
import { eventually } from './helpers/forkgate.ts';

const scratch = mkdtempSync(join(tmpdir(), 'forkgate-unit-side-'));
const path = join(scratch, 'unit.sock');
/** What the app ran: "path client-address peer-header-seen". */
const ran: string[] = [];
/** Responses that closed before they ended. */
const closedEarly: string[] = [];
let listener: net.Server;

before(async () => {
  const app = http.createServer((req, res) => {
    ran.push(`${req.url} ${req.socket.remoteAddress} ${req.headers[PEER_HEADER] !== undefined}`);
    res.on('close', () => res.writableEnded || closedEarly.push(req.url!));
    if (req.url === '/await') setTimeout(() => res.end('later'), 20);
    else if (req.url === '/stream')
      res.writeHead(200).write('first\n'); // and nothing more, ever
    else res.end('now');
  });
  const unit = new UnitSide(app, true);
  markListening(app, null);
  listener = net.createServer((socket) => unit.accept(socket));
  await new Promise<void>((resolve) => listener.listen(path, resolve));
});

after(() => {
  listener.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** Sent "now", by a clock ahead of the unit's: read on time however slow the machine. */
const ON_TIME = () => Date.now() + 60_000;
const LATE = () => Date.now() - 10;
/** The late mark the proxy sends under a 4 ms stuck threshold. */
const request = (target: string, sentAt = ON_TIME(), lateMark = 2) =>
  `GET ${target} HTTP/1.1\r\nHost: x\r\n${PEER_HEADER}: ${sentAt} ${lateMark} IPv4 203.0.113.9 4000\r\n\r\n`;

/** Writes the requests at once on a new connection; resolves with the status lines once `finals` final responses have come. */
async function send(payload: string, finals: number): Promise<string[]> {
  return [...(await sendRaw(payload, finals)).matchAll(/HTTP\/1\.1 (\d{3}) /g)].map(([, status]) => status!);
}

/** The same, resolving with the answers as they came. */
function sendRaw(payload: string, finals: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let received = '';
    const timer = setTimeout(() => reject(new Error(`no ${finals} answers within 5 s: ${received}`)), 5000);
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      const statuses = [...received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map(([, status]) => status!);
      if (statuses.filter((status) => !status.startsWith('1')).length < finals) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(received);
    });
    socket.write(payload);
  });
}

test('a request read on time runs at once, its client presented and the hop header removed', async () => {
  ran.length = 0;
  assert.deepEqual(await send(request('/now'), 1), ['200']);
  assert.deepEqual(ran, ['/now 203.0.113.9 false']);
});

test('a request whose handler awaits is confirmed started with a 102', async () => {
  ran.length = 0;
  assert.deepEqual(await send(request('/await'), 1), ['102', '200']);
  assert.deepEqual(ran, ['/await 203.0.113.9 false']);
});

test('only a handler that awaits is confirmed as awaiting: a request read late is confirmed plainly first', async () => {
  const awaiting = `HTTP/1.1 102 Processing\r\n${AWAITING_HEADER}: 1\r\n\r\n`;
  assert.ok((await sendRaw(request('/await'), 1)).startsWith(`${awaiting}HTTP/1.1 200 `));
  assert.ok((await sendRaw(request('/await', LATE()), 1)).startsWith(`HTTP/1.1 102 Processing\r\n\r\n${awaiting}HTTP/1.1 200 `));
  assert.ok((await sendRaw(request('/now', LATE()), 1)).startsWith('HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 '));
});

test('a request read late is confirmed at once, then runs', async () => {
  ran.length = 0;
  assert.deepEqual(await send(request('/now', LATE()), 1), ['102', '200']);
  assert.deepEqual(ran, ['/now 203.0.113.9 false']);
});

test('late is judged by the mark the request came with: 10 ms after it was sent is on time under a mark of 60 ms', async () => {
  ran.length = 0;
  assert.deepEqual(await send(request('/now', Date.now() - 10, 60), 1), ['200']);
  assert.deepEqual(ran, ['/now 203.0.113.9 false']);
});

test('a request read late with a withdrawal behind it is put aside: both answered 204, the app sees neither', async () => {
  ran.length = 0;
  assert.deepEqual(await send(request('/now', LATE()) + WITHDRAWAL + request('/after'), 3), ['102', '204', '204', '200']);
  assert.deepEqual(ran, ['/after 203.0.113.9 false'], 'the connection serves on');
});

test('a withdrawal behind a request read on time is too late: the request runs, and the connection ends after its answer', async () => {
  ran.length = 0;
  const socket = net.connect(path);
  let received = '';
  socket.on('data', (chunk) => (received += chunk.toString('latin1')));
  socket.write(request('/now') + WITHDRAWAL);
  await once(socket, 'end');
  socket.destroy();
  assert.match(received, /^HTTP\/1\.1 200 [\s\S]*now$/);
  assert.deepEqual(ran, ['/now 203.0.113.9 false']);
});

test('a withdrawal behind a stream read on time: the proxy sent it elsewhere, so this copy closes rather than run on', async () => {
  closedEarly.length = 0;
  const socket = net.connect(path);
  socket.resume();
  socket.write(request('/stream') + WITHDRAWAL);
  await once(socket, 'end');
  socket.destroy(); // as the proxy does with a connection the unit ends
  await eventually(() => closedEarly.includes('/stream'), "the stream's response to close");
});

for (const route of ['/exit', '/throw']) {
  test(`a handler that ends its unit (${route}) has its request confirmed before the unit's sockets close`, async () => {
    const socketPath = join(scratch, `exiting${route.slice(1)}.sock`);
    const unit = spawn(process.execPath, [join(import.meta.dirname, 'fixtures/exiting-unit.ts'), socketPath], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = once(unit, 'exit');
    await once(unit.stdout, 'data');
    const socket = net.connect(socketPath);
    let received = '';
    socket.on('data', (chunk) => (received += chunk.toString('latin1')));
    socket.on('error', () => {});
    socket.write(request(route));
    await once(socket, 'close');
    await exited;
    // The proxy takes back no request with any byte of its answer come: it fails, on this unit only.
    assert.match(received, /^HTTP\/1\.1 102 Processing\r\n\r\n$/);
  });
}
