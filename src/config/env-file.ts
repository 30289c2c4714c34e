/**
 * --env-file: the workers' environment from files of KEY=VALUE lines, parsed by Node's own parser (what
 * `node --env-file` reads: comments, quotes, multi-line values). The master reads them at start and on
 * HUP, and starts its workers with the variables.
 */
import { parseEnv } from 'node:util';
import { readSettingFile } from './setting-file.ts';

/**
 * The environment the workers start from: the files' variables (a later file's over an earlier one's)
 * under the master's own environment, which wins as it does over `node --env-file`. -e goes on top.
 */
export function workerEnvironment(envFiles: readonly string[], env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const fromFiles = envFiles.map((file) => parseEnv(readSettingFile('env-file', file).toString('utf8')));
  return Object.assign({}, ...fromFiles, env) as NodeJS.ProcessEnv;
}
