/**
 * The Node versions forkgate runs on (package.json's engines), checked before any other module loads:
 * on an older Node the first missing built-in would end it with a stack trace. The floors are the
 * first releases whose http.createServer takes shouldUpgradeCallback, which the proxy's front needs.
 */
import { ExitCode } from './errors.ts';

const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
if (!(major > 24 || (major === 24 && minor >= 9) || (major === 22 && minor >= 21))) {
  process.stderr.write(
    `forkgate: error: needs Node >= 24.9, or a Node 22 from 22.21 on; this is Node ${process.version} (${process.execPath}). ` +
      'Install a newer Node, pin one in the project (npm install --save-dev node@24; npx and npm scripts then run it), ' +
      'or use the single binary, which carries its own Node\n',
  );
  process.exit(ExitCode.usage);
}
