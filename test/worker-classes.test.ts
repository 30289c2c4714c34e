// Worker classes: async caps connections in service without dropping any; sync serves one at a time.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { eventually, FIXTURES, request, start, startRequest } from './helpers/forkgate.ts';

const OPS = `${FIXTURES}ops.cjs`;

test('async: --worker-connections caps what is in service; the rest wait and all succeed', async () => {
  const forkgate = await start(['-w', '1', '--worker-connections', '2', '-b', '127.0.0.1:0', OPS]);
  try {
    const replies = await Promise.all(Array.from({ length: 8 }, () => request(`${forkgate.url}/slow?ms=150`)));
    assert.deepEqual(
      replies.map((reply) => reply.status),
      Array(8).fill(200),
    );
    assert.equal((await request(`${forkgate.url}/max-in-flight`)).body, '2');
  } finally {
    await forkgate.stop();
  }
});

test('async: a single worker serves many requests at once', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', OPS]);
  try {
    const replies = await Promise.all(Array.from({ length: 20 }, () => request(`${forkgate.url}/slow?ms=300`)));
    assert.ok(replies.every((reply) => reply.status === 200));
    assert.ok(Number((await request(`${forkgate.url}/max-in-flight`)).body) > 1);
  } finally {
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'reuseport']) {
  test(`sync (${balance}): one request at a time per worker, Connection: close after each`, async () => {
    const forkgate = await start(['-w', '1', '-k', 'sync', '--balance', balance, '-b', '127.0.0.1:0', OPS]);
    try {
      const replies = await Promise.all(Array.from({ length: 5 }, () => request(`${forkgate.url}/slow?ms=100`)));
      assert.deepEqual(
        replies.map((reply) => reply.status),
        Array(5).fill(200),
      );
      assert.ok(replies.every((reply) => reply.headers.connection === 'close'));
      assert.equal((await request(`${forkgate.url}/max-in-flight`)).body, '1');
    } finally {
      await forkgate.stop();
    }
  });
}

/** One sync worker behind round-robin, and how many connections wait in the master (from /status). */
async function startSyncWorker() {
  const scratch = mkdtempSync(join(tmpdir(), 'forkgate-sync-'));
  const admin = join(scratch, 'admin.sock');
  const forkgate = await start(['-w', '1', '-k', 'sync', '-b', '127.0.0.1:0', '--admin-bind', `unix:${admin}`, OPS]);
  const queued = async () => JSON.parse((await request('http://admin/status', { socketPath: admin })).body).queued as number;
  return { forkgate, queued, scratch };
}

test('sync, round-robin: connections beyond what the workers serve wait in the master, and outlive a worker that dies', async () => {
  const { forkgate, queued, scratch } = await startSyncWorker();
  try {
    const [worker] = forkgate.workerPids();
    const slow = startRequest(`${forkgate.url}/slow?ms=5000`);
    await slow.headers;
    const waiting = Array.from({ length: 5 }, () => request(`${forkgate.url}/pid`));
    await eventually(async () => (await queued()) === 5, 'five connections waiting in the master');
    process.kill(worker!, 'SIGKILL');
    await assert.rejects(slow.reply, 'the request the worker was running dies with it');
    const replies = await Promise.all(waiting);
    assert.deepEqual(
      replies.map((reply) => reply.status),
      Array(5).fill(200),
    );
    assert.ok(
      replies.every((reply) => reply.body !== String(worker)),
      'served by the replacement',
    );
  } finally {
    await forkgate.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
});

test('sync, round-robin: a graceful stop serves the connections waiting in the master before the workers drain', async () => {
  const { forkgate, queued, scratch } = await startSyncWorker();
  try {
    const slow = startRequest(`${forkgate.url}/slow?ms=300`);
    await slow.headers;
    // accepted by the master, their worker busy: they wait in the master when the stop comes
    const waiting = Array.from({ length: 3 }, () => request(`${forkgate.url}/pid`));
    await eventually(async () => (await queued()) === 3, 'three connections waiting in the master');
    forkgate.signal('SIGTERM');
    const replies = await Promise.all([slow.reply, ...waiting]);
    assert.deepEqual(
      replies.map((reply) => reply.status),
      Array(4).fill(200),
    );
    assert.deepEqual(await forkgate.exited, { code: 0, signal: null });
  } finally {
    await forkgate.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
});
