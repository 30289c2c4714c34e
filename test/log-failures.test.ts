// Logs that cannot be written: a full disk (/dev/full answers every write with ENOSPC) and a reader that
// went away (stderr's pipe closed, EPIPE). Lines are dropped and said so; no process ends of it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eventually, FIXTURES, isAlive, request, start } from './helpers/forkgate.ts';
import { freePort } from './helpers/free-port.ts';

const APP = `${FIXTURES}ops.cjs`;

test('an access log on a full disk: its lines are dropped, said once in the error log; the worker serves on', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--access-logfile', '/dev/full', APP]);
  try {
    const [worker] = forkgate.workerPids();
    for (let i = 0; i < 20; i++) assert.equal((await request(`${forkgate.url}/pid`)).body, String(worker));
    assert.equal(forkgate.count(/Access log \/dev\/full: cannot write \(ENOSPC\): its lines are dropped until it can/), 1);
    assert.doesNotMatch(forkgate.output, /Worker crashed/);
  } finally {
    await forkgate.stop();
  }
});

test('an error log on a full disk: said on stderr; the master lives on and replaces a killed worker', async () => {
  const port = await freePort();
  const forkgate = await start(['-w', '1', '-b', `127.0.0.1:${port}`, '--error-logfile', '/dev/full', APP], { waitReady: false });
  try {
    const url = `http://127.0.0.1:${port}`;
    const first = (await eventually(() => request(`${url}/pid`).catch(() => null), 'the pool to serve')).body;
    process.kill(Number(first), 'SIGKILL'); // the master logs the kill: more lines for the full disk
    await eventually(async () => (await request(`${url}/pid`).catch(() => null))?.body !== first || null, 'a replacement');
    assert.ok(isAlive(forkgate.pid), 'the master lives on');
    assert.equal(
      forkgate.count(
        new RegExp(`forkgate \\[${forkgate.pid}\\]: error log /dev/full: cannot write \\(ENOSPC\\): its lines are dropped until it can`),
      ),
      1,
      "the master's, once",
    );
  } finally {
    await forkgate.stop();
  }
});

test("stdout's and stderr's reader gone (a log shipper that exited): the master and workers live on and serve", async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', APP]);
  try {
    const [worker] = forkgate.workerPids();
    forkgate.process.stderr!.destroy();
    forkgate.process.stdout!.destroy();
    process.kill(worker!, 'SIGKILL'); // the master logs the kill and the new worker's boot: EPIPE
    const replacement = await eventually(async () => {
      const pid = Number((await request(`${forkgate.url}/pid`).catch(() => null))?.body);
      return pid && pid !== worker ? pid : null;
    }, 'a replacement that serves');
    // The app's own console output goes nowhere now, and costs it nothing.
    for (let i = 0; i < 5; i++) assert.equal((await request(`${forkgate.url}/print`)).body, String(replacement));
    assert.ok(isAlive(forkgate.pid), 'the master lives on');
  } finally {
    await forkgate.stop();
  }
});
