// The chaos harness's quick subset against the built forkgate: every run completes, and the verdict is a
// pass (no master died, every pool refilled within 15 s, no request failed that its fault does not
// excuse; the rule is in scripts/chaos.ts and docs/reliability.md). And the rule itself, on made-up
// records, so that a change making it lenient cannot pass unseen.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { judge } from '../scripts/chaos/verdict.ts';
import { ROOT } from './helpers/forkgate.ts';

/** What --quick runs: [fault, mode]. */
const QUICK = [
  ['kill-repeat', 'round-robin'],
  ['exit', 'proxy'],
  ['kill-all', 'proxy'],
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

test('the chaos rule excuses only failures in the hands of a unit the fault took down, while it went', () => {
  const base = { path: '/pid', reused: true, connectedAt: 0, bytesReceived: 0, failure: 'reset' as const };
  const records = [
    { ...base, id: 'held', unitBefore: '10/10', sentAt: 100, endedAt: 130 },
    { ...base, id: 'logged', unitBefore: null, reused: false, sentAt: 100, endedAt: 130 },
    { ...base, id: 'thread', unitBefore: '20/21', sentAt: 100, endedAt: 130 },
    { ...base, id: 'elsewhere', unitBefore: '11/11', sentAt: 100, endedAt: 130 },
    { ...base, id: 'after', unitBefore: '10/10', sentAt: 150, endedAt: 160 },
    { ...base, id: 'before', unitBefore: '10/10', sentAt: 50, endedAt: 90 },
    { ...base, id: 'poison', unitBefore: null, sentAt: 100, endedAt: 130, poison: true },
    { ...base, id: 'answered', unitBefore: '10/10', sentAt: 100, endedAt: 130, status: 200, failure: undefined },
    // A new connection the unit took (logged by client port) before it read the request on it.
    { ...base, id: 'port', unitBefore: null, reused: false, localPort: 5000, connectedAt: 90, sentAt: 100, endedAt: 130 },
    // The same client port logged for an earlier connection: not this one's.
    { ...base, id: 'stale', unitBefore: null, reused: false, localPort: 5001, connectedAt: 90, sentAt: 100, endedAt: 130 },
  ];
  const faulted = [
    { unit: '10/10', since: 95 },
    { unit: '20/20', since: 95 }, // a whole process of threads
  ];
  const goneAt = new Map([
    ['10/10', 120],
    ['20/20', 120],
  ]);
  const receipts = new Map([
    ['logged', [{ unit: '10/10', at: 101 }]],
    ['@5000', [{ unit: '10/10', at: 95 }]],
    ['@5001', [{ unit: '10/10', at: 10 }]],
  ]);
  const excused = (connectionsReachUnits: boolean) =>
    judge(records, faulted, goneAt, receipts, connectionsReachUnits)
      .allowed.map((record) => record.id)
      .sort();
  assert.deepEqual(excused(true), ['held', 'logged', 'poison', 'port', 'thread']);
  // Behind the proxy a client's connection ends in the master: only the fixture's log places a request.
  assert.deepEqual(excused(false), ['logged', 'poison']);
  assert.equal(judge(records, faulted, goneAt, receipts, true).failed.length, 9);
});
