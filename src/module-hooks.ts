/**
 * How the user's modules load, beyond Node's own rules:
 * - `'forkgate'` is the running forkgate's API (defineConfig): the single binary and a global install
 *   have no node_modules/forkgate beside the project.
 * - A .ts file with import/export in a "type": "commonjs" package (npm init writes it) loads as an ES
 *   module: type stripping keeps import and export, so it could never run as CommonJS.
 */
import { registerHooks, stripTypeScriptTypes } from 'node:module';
import * as vm from 'node:vm';

/** The library entry (src/index.ts) as built, put into the bundle by scripts/build.ts. */
declare const FORKGATE_API: string;

const API_URL = 'forkgate:api';

/** What V8 says of import, export and import.meta compiled as CommonJS: Node's own test for module syntax. */
const MODULE_SYNTAX_ERRORS = [
  'Cannot use import statement outside a module',
  "Unexpected token 'export'",
  "Cannot use 'import.meta' outside a module",
];

/** Once per thread: every role loads user modules (the master its config file, workers and threads the app). */
export function registerModuleHooks(): void {
  registerHooks({
    resolve(specifier, context, nextResolve) {
      if (specifier === 'forkgate') return { url: API_URL, format: 'commonjs', shortCircuit: true };
      return nextResolve(specifier, context);
    },
    load(url, context, nextLoad) {
      if (url === API_URL) return { format: 'commonjs', source: FORKGATE_API, shortCircuit: true };
      const loaded = nextLoad(url, context);
      // .cts says CommonJS in its name; a .ts file only inherits it from package.json.
      if (loaded.format !== 'commonjs-typescript' || !new URL(url).pathname.endsWith('.ts') || loaded.source === undefined) return loaded;
      const source = typeof loaded.source === 'string' ? loaded.source : new TextDecoder().decode(loaded.source);
      return hasModuleSyntax(source) ? { ...loaded, format: 'module-typescript' } : loaded;
    },
  });
}

function hasModuleSyntax(typescript: string): boolean {
  let code: string;
  try {
    code = stripTypes(typescript);
  } catch {
    return false; // not valid TypeScript: Node reports it as it loads the file
  }
  try {
    vm.compileFunction(code, ['exports', 'require', 'module', '__filename', '__dirname']);
    return false;
  } catch (error) {
    return error instanceof SyntaxError && MODULE_SYNTAX_ERRORS.includes(error.message);
  }
}

/** Node warns once per process that stripTypeScriptTypes is experimental: forkgate's own use, not the app's. */
function stripTypes(typescript: string): string {
  const emitWarning = process.emitWarning;
  process.emitWarning = () => {};
  try {
    return stripTypeScriptTypes(typescript);
  } finally {
    process.emitWarning = emitWarning;
  }
}
