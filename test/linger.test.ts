// The lingering close after a refusal, under a manual clock: the answer reaches the client, what it
// still sends is read and dropped, and the connection closes when the client closes, after five quiet
// seconds, or after thirty in all.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as net from 'node:net';
import { test } from 'node:test';
import { LINGER_MS, LINGER_QUIET_MS, Lingering } from '../src/edge/linger.ts';
import { ManualClock } from './helpers/manual-clock.ts';

/** A loopback connection: the server's end lingering after its answer, and the client's, half-open. */
async function setUp() {
  const clock = new ManualClock();
  const lingering = new Lingering(clock);
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const [served] = await accepted;
  server.close();
  let received = '';
  client.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  const clientEnded = once(client, 'end');
  served.write('answer');
  lingering.close(served);
  await clientEnded;
  assert.equal(received, 'answer');
  /** The client sends, and returns once the server has read it. */
  const send = async (text: string) => {
    const read = once(served, 'data');
    client.write(text);
    await read;
  };
  return { clock, lingering, served, client, send };
}

test('the connection closes at once when the client closes its side', async () => {
  const { served, client, send } = await setUp();
  await send('more body');
  const closed = once(served, 'close');
  client.end();
  await closed;
});

test('a quiet client is closed after five seconds without a byte, each byte starting them again', async () => {
  const { clock, served, client, send } = await setUp();
  try {
    clock.advance(LINGER_QUIET_MS - 1000);
    await send('more body');
    clock.advance(LINGER_QUIET_MS - 1);
    assert.equal(served.destroyed, false);
    clock.advance(1);
    assert.equal(served.destroyed, true);
  } finally {
    client.destroy();
  }
});

test('a client that never stops sending is closed after thirty seconds in all', async () => {
  const { clock, served, client, send } = await setUp();
  try {
    for (let elapsed = 0; elapsed < LINGER_MS - 1000; elapsed += 1000) {
      clock.advance(1000);
      await send('more body');
    }
    assert.equal(served.destroyed, false);
    clock.advance(1000);
    assert.equal(served.destroyed, true);
  } finally {
    client.destroy();
  }
});

test('a stop closes every lingering connection now', async () => {
  const { lingering, served, client } = await setUp();
  try {
    lingering.closeAll();
    assert.equal(served.destroyed, true);
  } finally {
    client.destroy();
  }
});
