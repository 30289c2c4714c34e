// The benchmark's quick mode runs end to end: every configuration measured, the table printed, no errors.
// It checks the harness, not the numbers (the test suite runs beside it and shares the cores).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers/forkgate.ts';

const CONFIGURATIONS = ['single', 'reuseport-plain', 'cluster', 'forkgate --balance round-robin -w 2', 'forkgate --balance reuseport -w 2'];

test('npm run bench -- --quick prints a row per workload and configuration, without errors', { timeout: 90_000 }, async () => {
  const results = mkdtempSync(join(tmpdir(), 'forkgate-bench-test-'));
  try {
    const bench = spawn(process.execPath, [`${ROOT}scripts/bench.ts`, '--quick'], {
      cwd: ROOT,
      env: { ...process.env, BENCH_RESULTS_DIR: results }, // never replace the committed results
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    bench.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
    bench.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
    const guard = setTimeout(() => bench.kill('SIGKILL'), 85_000);
    const code = await new Promise<number | null>((resolve) => bench.once('exit', resolve));
    clearTimeout(guard);
    assert.equal(code, 0, `bench exited ${code}:\n${stderr}\n${stdout}`);
    assert.doesNotMatch(stdout, /ERROR/);

    const N = Number(/nproc (\d+)/.exec(stdout)?.[1]);
    for (const workload of ['hello', 'cpu', 'io']) {
      for (const configuration of CONFIGURATIONS) {
        const server = configuration.replace('-w 2', `-w ${N}`);
        const row = stdout.split('\n').find((line) => line.startsWith(`| ${workload} | ${server} |`));
        assert.ok(row, `no row for ${workload} / ${server} in:\n${stdout}`);
        // req/s, p50, p99 and CPU µs/req are numbers
        const cells = row.split('|').map((cell) => cell.trim());
        for (const column of [4, 5, 6, 9]) assert.match(cells[column]!, /^[\d,.]+$/, `column ${column} of ${row}`);
      }
    }
    const json = JSON.parse(readFileSync(join(results, 'quick.json'), 'utf8')) as { rows: { reqPerSec?: number }[] };
    assert.equal(json.rows.length, 3 * CONFIGURATIONS.length);
    assert.ok(json.rows.every((row) => row.reqPerSec! > 0));
  } finally {
    rmSync(results, { recursive: true, force: true });
  }
});
