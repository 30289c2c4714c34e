// --reload: editing a file the app loaded reloads the pool; a broken edit leaves the old workers serving.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, request, start } from './helpers/forkgate.ts';

const scratch = mkdtempSync(join(tmpdir(), 'forkgate-dev-reload-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

test('--reload follows edits of the app and its modules, and survives a broken edit; the log names the edit, not a signal', async () => {
  const app = join(scratch, 'app.cjs');
  const message = join(scratch, 'message.cjs');
  writeFileSync(message, "module.exports = 'v1';\n");
  writeFileSync(app, "const message = require('./message.cjs');\nmodule.exports = (req, res) => res.end(message);\n");
  const forkgate = await start(['-w', '2', '--reload', '-b', '127.0.0.1:0', app]);
  const body = async () => (await request(`${forkgate.url}/`)).body;
  try {
    assert.equal(await body(), 'v1');

    writeFileSync(message, "module.exports = 'v2';\n");
    await forkgate.waitFor(/message\.cjs changed: reloading/);
    await eventually(async () => (await body()) === 'v2', 'the edit to be served');
    // Both v1 workers gone, not just one v2 worker ready: the broken edit below must find only v2 serving.
    await eventually(() => forkgate.count(/Worker exited/) >= 2, 'both v1 workers to exit');

    writeFileSync(message, "module.exports = 'v3' +;\n");
    await forkgate.waitFor(/Worker failed to boot[\s\S]*SyntaxError/);
    for (let i = 0; i < 10; i++) assert.equal(await body(), 'v2', 'the old generation serves on');

    writeFileSync(message, "module.exports = 'v4';\n");
    await eventually(async () => (await body()) === 'v4', 'the fixed edit to be served');
    assert.equal(forkgate.count(/Handling signal/), 0, 'no signal came: the log says what changed instead');
  } finally {
    await forkgate.stop();
  }
});
