// The chaos harness's quick subset against the built forkgate: every run completes, and the verdict is a
// pass (no master died, every pool refilled within 15 s, no request failed that its fault does not
// excuse; the rule is in scripts/chaos.ts and docs/reliability.md).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { ROOT } from './helpers/forkgate.ts';

/** What --quick runs: [fault, mode]. */
const QUICK = [
  ['kill-repeat', 'round-robin'],
  ['exit', 'proxy'],
  ['fuzz', 'proxy'],
  ['idle', 'round-robin'],
];

test('npm run chaos -- --quick: the master survives, the pools refill, no unexcused request fails', { timeout: 110_000 }, async () => {
  const chaos = spawn(process.execPath, [`${ROOT}scripts/chaos.ts`, '--quick'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  chaos.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
  chaos.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
  // SIGINT first: the harness then kills the forkgate it runs; SIGKILL if it does not end.
  const interrupt = setTimeout(() => chaos.kill('SIGINT'), 95_000);
  const kill = setTimeout(() => chaos.kill('SIGKILL'), 100_000);
  const code = await new Promise<number | null>((resolve) => chaos.once('exit', resolve));
  clearTimeout(interrupt);
  clearTimeout(kill);

  for (const [fault, mode] of QUICK) {
    const row = stdout.split('\n').find((line) => line.startsWith(`| ${fault} | ${mode} |`));
    assert.ok(row, `no row for ${fault} in ${mode}:\n${stderr}\n${stdout}`);
    assert.doesNotMatch(row, /\*\*ERROR\*\*/, `the harness could not run ${fault} in ${mode}:\n${row}`);
  }
  assert.match(stdout, /^verdict: /m);
  assert.equal(code, 0, `the chaos run failed:\n${stdout}`);
});
