/**
 * Node's hint after the first warning ("Use `<argv0> --trace-warnings ...`") names a worker's process
 * title, which no one can run, and the option reaches a worker only through forkgate: workers print
 * warnings as Node does, with a hint at --node-option instead.
 */

/** Options with which Node's own printer does what this one does not: write to a file, skip some. */
const LEFT_TO_NODE = ['--redirect-warnings', '--disable-warning'];

export function printWarningsWithForkgateHint(): void {
  const [nodePrinter] = process.listeners('warning');
  // None under --no-warnings or NODE_NO_WARNINGS=1: nothing is printed, and nothing is to be.
  if (!nodePrinter) return;
  const options = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  if (options.some((option) => LEFT_TO_NODE.some((name) => option.startsWith(name)))) return;
  process.off('warning', nodePrinter);
  let hinted = false;
  process.on('warning', (warning: Error & { code?: string; detail?: string }) => {
    if (!(warning instanceof Error)) return;
    const deprecation = warning.name === 'DeprecationWarning';
    if (deprecation && process.noDeprecation) return;
    // --trace-warnings, --trace-deprecation: Node prints where the warning was created, and no hint.
    if (process.traceProcessWarnings || (deprecation && process.traceDeprecation)) return nodePrinter(warning);
    let text = `(${process.release.name}:${process.pid}) ${warning.code ? `[${warning.code}] ` : ''}${String(warning)}`;
    if (typeof warning.detail === 'string') text += `\n${warning.detail}`;
    if (!hinted) {
      const trace = deprecation ? '--trace-deprecation' : '--trace-warnings';
      text += `\n(Use \`forkgate --node-option=${trace} ...\` to show where the warning was created)`;
      hinted = true;
    }
    process.stderr.write(`${text}\n`);
  });
}
