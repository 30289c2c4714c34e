/**
 * The Node versions forkgate runs on (package.json's engines: ^22.21.0 || >=24.9.0), checked before any
 * other module of the bundle loads: on an older Node (Debian and Ubuntu package 18 or 20) the first
 * missing built-in would otherwise end it with a stack trace. The oldest of each line are those whose
 * http.createServer takes shouldUpgradeCallback (the proxy's front relies on it), which Node 23 never
 * got; everything else forkgate uses is older.
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
