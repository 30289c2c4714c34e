// Bundles src/ into dist/: the CLI (forkgate.cjs, also the single binary's entry) and the library
// entry (index.cjs + index.d.ts) that config files import defineConfig from.
import { build } from 'esbuild';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';

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

await Promise.all([
  build({ ...common, entryPoints: ['src/cli.ts'], outfile: 'dist/forkgate.cjs', banner: { js: '#!/usr/bin/env node' } }),
  build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/index.cjs' }),
]);
chmodSync(new URL('dist/forkgate.cjs', root), 0o755);

// The public types are few: written by hand here rather than pulling in a declaration bundler.
mkdirSync(new URL('dist', root), { recursive: true });
writeFileSync(
  new URL('dist/index.d.ts', root),
  `export type ForkgateConfig = Record<string, unknown> & import('../src/index.ts').ForkgateConfig;\n` +
    `export declare function defineConfig(config: ForkgateConfig): ForkgateConfig;\n`,
);
