// Zero-downtime reload: HUP under a steady keep-alive load, with a code change, in each balance mode.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, request, start } from './helpers/forkgate.ts';
import { freshConnectionLoad, keepAliveLoad } from './helpers/load.ts';

const scratch = mkdtempSync(join(tmpdir(), 'forkgate-reload-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const appSource = (version: string) => `module.exports = (req, res) => res.end('${version}');\n`;

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`HUP with a code change under keep-alive load: zero failed requests (${balance})`, async (t) => {
    const app = join(scratch, `app-${balance}.cjs`);
    writeFileSync(app, appSource('v1'));
    const forkgate = await start(['-w', '2', '--balance', balance, '-b', '127.0.0.1:0', app]);
    try {
      const before = forkgate.workerPids();
      const load = keepAliveLoad(`${forkgate.url}/`, { connections: 16, maxMs: 30_000 });
      await load.reached(500);
      writeFileSync(app, appSource('v2'));
      forkgate.signal('SIGHUP');
      await eventually(
        () => {
          const now = forkgate.workerPids();
          return now.length === 2 && now.every((pid) => !before.includes(pid));
        },
        'a new generation of workers',
        20_000,
      );
      const { ok, failures } = await load.stop();
      t.diagnostic(`HUP under load (${balance}): ${ok + failures.length} requests, ${failures.length} failed`);
      // On failure, what forkgate said about it (the proxy names each request it could not forward).
      const said = forkgate.output.split('\n').filter((line) => /WARNING|ERROR/.test(line));
      assert.deepEqual(failures, [], `${failures.length} failed of ${ok + failures.length}; forkgate said:\n${said.join('\n')}`);
      const afterReload = keepAliveLoad(`${forkgate.url}/`, { connections: 4, maxRequests: 200 });
      await afterReload.reached(100);
      assert.deepEqual([...(await afterReload.stop()).bodies], ['v2'], 'the new code serves');
    } finally {
      await forkgate.stop();
    }
  });
}

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`a second HUP while the first generation boots: zero failed requests, fresh connections too (${balance})`, async () => {
    const app = join(scratch, `twice-${balance}.cjs`);
    writeFileSync(app, appSource('v1'));
    const forkgate = await start(['-w', '2', '--balance', balance, '-b', '127.0.0.1:0', app]);
    try {
      const keepAlive = keepAliveLoad(`${forkgate.url}/`, { connections: 4, maxMs: 30_000 });
      const fresh = freshConnectionLoad(`${forkgate.url}/`);
      await keepAlive.reached(200);
      writeFileSync(app, appSource('v2'));
      forkgate.signal('SIGHUP');
      await forkgate.waitFor(/Reloading: generation 2/);
      writeFileSync(app, appSource('v3'));
      forkgate.signal('SIGHUP');
      await forkgate.waitFor(/Reloading: generation 3/);
      await eventually(
        async () => (await request(`${forkgate.url}/`)).body === 'v3' && forkgate.workerPids().length === 2,
        'generation 3 alone',
      );
      const { failures } = await keepAlive.stop();
      const freshFailures = await fresh.stop();
      assert.deepEqual([...failures, ...freshFailures], []);
    } finally {
      await forkgate.stop();
    }
  });
}
