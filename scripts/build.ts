// Bundles src/ into dist/: the CLI (forkgate.cjs, also the single binary's entry) and the library
// entry (index.cjs + types/) that config files import defineConfig from. The CLI carries the library
// entry's code too, and gives it to the modules it loads as 'forkgate' (src/module-hooks.ts).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('..', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { version: string };
const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node22',
  sourcemap: 'linked',
  absWorkingDir: root.pathname,
  define: { FORKGATE_VERSION: JSON.stringify(pkg.version) },
  logLevel: 'warning',
} as const;

const api = await build({ ...common, entryPoints: ['src/index.ts'], sourcemap: false, write: false });
await Promise.all([
  build({
    ...common,
    entryPoints: ['src/cli.ts'],
    outfile: 'dist/forkgate.cjs',
    banner: { js: '#!/usr/bin/env node' },
    define: { ...common.define, FORKGATE_API: JSON.stringify(api.outputFiles[0]!.text) },
  }),
  build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/index.cjs' }),
  // forkgate tune's load generator, a file of its own: in forkgate.cjs every worker would load it too.
  build({ ...common, entryPoints: ['autocannon'], outfile: 'dist/autocannon.cjs', sourcemap: false }),
]);
chmodSync(new URL('dist/forkgate.cjs', root), 0o755);

// Declarations for `import { defineConfig } from 'forkgate'`. tsc keeps the sources' `.ts` import
// specifiers in .d.ts output; rewritten to `.js` they resolve to the emitted declarations.
const typesDir = new URL('dist/types/', root);
execFileSync(
  process.execPath,
  [
    fileURLToPath(import.meta.resolve('typescript/bin/tsc')),
    'src/index.ts',
    '--declaration',
    '--emitDeclarationOnly',
    '--outDir',
    fileURLToPath(typesDir),
    '--module',
    'nodenext',
    '--moduleResolution',
    'nodenext',
    '--target',
    'es2023',
    '--allowImportingTsExtensions',
    '--strict',
    '--skipLibCheck',
    '--types',
    'node',
  ],
  { cwd: fileURLToPath(root), stdio: 'inherit' },
);
for (const file of readdirSync(typesDir, { recursive: true, encoding: 'utf8' })) {
  if (!file.endsWith('.d.ts')) continue;
  const path = new URL(file, typesDir);
  writeFileSync(path, readFileSync(path, 'utf8').replace(/(from '\.{1,2}\/[^']+)\.ts'/g, "$1.js'"));
}
