// forkgate in a project of its user's, laid out as npm lays one out: npm init writes "type": "commonjs"
// into package.json, the code is TypeScript with import and export, and forkgate itself is not installed
// beside it (the single binary, a global install).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { request, ROOT, start } from './helpers/forkgate.ts';

const project = mkdtempSync(join(tmpdir(), 'forkgate-project-'));
after(() => rmSync(project, { recursive: true, force: true }));

const packageJson = {
  name: 'shop',
  version: '1.0.0',
  description: '',
  main: 'index.js',
  scripts: { test: 'echo "Error: no test specified" && exit 1' },
  keywords: [],
  author: '',
  license: 'ISC',
  type: 'commonjs',
};
const files: Record<string, string> = {
  'package.json': `${JSON.stringify(packageJson, null, 2)}\n`,
  'forkgate.config.ts': [
    "import { defineConfig } from 'forkgate';",
    '',
    "export default defineConfig({ workers: 2, bind: ['127.0.0.1:0'] });",
    '',
  ].join('\n'),
  'app.ts': [
    "import type { IncomingMessage, ServerResponse } from 'node:http';",
    "import { greeting } from './greeting.ts';",
    '',
    'export default function app(req: IncomingMessage, res: ServerResponse): void {',
    '  res.end(greeting);',
    '}',
    '',
  ].join('\n'),
  'greeting.ts': "export const greeting: string = 'hello from TypeScript';\n",
  'legacy.ts': [
    "const { STATUS_CODES } = require('node:http');",
    'module.exports = (req: unknown, res: { end(text: string): void }) => res.end(STATUS_CODES[200]);',
    '',
  ].join('\n'),
};
for (const [name, content] of Object.entries(files)) writeFileSync(join(project, name), content);

test("a .ts app with import syntax and forkgate.config.ts importing 'forkgate' serve in a CommonJS project without forkgate installed", async () => {
  const forkgate = await start(['app.ts'], { cwd: project });
  try {
    assert.match(forkgate.output, /Ready: 2 workers serving/, 'the config file was read');
    const reply = await request(forkgate.url);
    assert.equal(reply.status, 200);
    assert.equal(reply.body, 'hello from TypeScript');
    assert.doesNotMatch(forkgate.output, /Warning/);
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test('a .ts file written as CommonJS (require, module.exports) in that project still loads as CommonJS', () => {
  const bin = process.env.FORKGATE_TEST_BIN;
  const [command, ...args] = bin ? [bin] : [process.execPath, `${ROOT}dist/forkgate.cjs`];
  const result = spawnSync(command!, [...args, '--check-config', 'legacy.ts'], { cwd: project, encoding: 'utf8', timeout: 30_000 });
  assert.equal(result.status, 0, result.stderr);
  assert.equal(result.stdout, 'Config OK: legacy.ts loads as a listener app\n');
});

test('the npm package ships the bundles and their types, never the single binary built beside them', () => {
  // A copy of this package's manifest beside a dist/ as a full build leaves it: what would `npm pack` take?
  const packed = mkdtempSync(join(tmpdir(), 'forkgate-pack-'));
  try {
    writeFileSync(join(packed, 'package.json'), readFileSync(`${ROOT}package.json`));
    mkdirSync(join(packed, 'dist/types'), { recursive: true });
    for (const file of ['forkgate', 'forkgate.cjs', 'forkgate.cjs.map', 'index.cjs', 'autocannon.cjs', 'types/index.d.ts'])
      writeFileSync(join(packed, 'dist', file), '');
    const pack = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: packed, encoding: 'utf8' });
    assert.equal(pack.status, 0, pack.stderr);
    const shipped = (JSON.parse(pack.stdout) as [{ files: { path: string }[] }])[0].files.map(({ path }) => path).sort();
    assert.deepEqual(shipped, [
      'dist/autocannon.cjs',
      'dist/forkgate.cjs',
      'dist/forkgate.cjs.map',
      'dist/index.cjs',
      'dist/types/index.d.ts',
      'package.json',
    ]);
  } finally {
    rmSync(packed, { recursive: true, force: true });
  }
});
