import { isSea } from 'node:sea';

/**
 * The arguments a worker process is started with: the same executable as the master (the worker role
 * travels in its environment), with the master's own Node options and --node-option values.
 */
export function workerArgv(nodeOptions: readonly string[]): string[] {
  const options = [...process.execArgv, ...nodeOptions];
  // The single binary has its script built in, and takes Node options only as --node-options="..."
  // (sea-config execArgvExtension "cli"): it ignores NODE_OPTIONS.
  if (isSea()) return options.length > 0 ? [`--node-options=${options.map(quoted).join(' ')}`] : [];
  return [...options, process.argv[1]!];
}

/** NODE_OPTIONS syntax: spaces separate options; double quotes (with \-escapes) keep one together. */
function quoted(option: string): string {
  return /[\s"\\]/.test(option) ? `"${option.replace(/["\\]/g, '\\$&')}"` : option;
}
