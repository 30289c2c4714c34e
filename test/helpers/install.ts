/**
 * forkgate installed as a deployment with --user has it (docs/deploy.md: the executable in
 * /usr/local/bin, the app in /srv/app): in a directory every user may enter, so that the workers' user
 * can run the executable and read the bundle and the app, wherever the checkout is (a clone in a
 * private `mktemp -d` directory, mode 0700, is not).
 */
import { chmodSync, copyFileSync, linkSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, ROOT } from './forkgate.ts';

export interface Installation {
  readonly dir: string;
  /** The executable the master runs, and so its workers: Node, or the single binary (FORKGATE_TEST_BIN). */
  readonly executable: string;
  /** What starts forkgate from here, for `start(args, { command })`. */
  readonly command: string[];
  /** The path of a fixture app copied in. */
  app(name: string): string;
  remove(): void;
}

export function install(apps: string[]): Installation {
  const dir = mkdtempSync(join(tmpdir(), 'forkgate-install-'));
  chmodSync(dir, 0o755);
  const bin = process.env.FORKGATE_TEST_BIN;
  const executable = join(dir, bin ? 'forkgate' : 'node');
  linkOrCopy(bin ?? process.execPath, executable);
  const command = [executable];
  if (!bin) {
    copyFileSync(`${ROOT}dist/forkgate.cjs`, join(dir, 'forkgate.cjs'));
    command.push(join(dir, 'forkgate.cjs'));
  }
  for (const app of apps) copyFileSync(`${FIXTURES}${app}`, join(dir, app));
  return {
    dir,
    executable,
    command,
    app: (name) => join(dir, name),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The executable is over 100 MB: a hard link where the file system allows one. */
function linkOrCopy(from: string, to: string): void {
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}
