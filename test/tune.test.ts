// forkgate tune end to end, on a tiny budget: real trial servers, real load. What is asserted is the
// shape of what it reports, never timing or which configuration wins (the machine is shared).
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Browser, CHROMIUM, NO_CHROMIUM } from './helpers/chromium.ts';
import { runCli, type Run } from './helpers/cli.ts';
import { eventually, FIXTURES } from './helpers/forkgate.ts';

const scratch = mkdtempSync(join(tmpdir(), 'forkgate-tune-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const APP = join(scratch, 'tuned.cjs');
copyFileSync(`${FIXTURES}tune.cjs`, APP);

const TRIAL_KEYS = ['workers', 'threads', 'workerClass', 'balance', 'reqPerSec', 'p50Ms', 'p99Ms', 'rssMiB'];

/** Runs `forkgate tune ARGS` to its end, bounded at two minutes. */
function tune(args: string[], cwd = scratch): Promise<Run> {
  return runCli(['tune', ...args], { cwd, timeoutMs: 120_000 });
}

/** Processes whose command line names this app: servers tune left behind. */
function leftBehind(app: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(app);
      } catch {
        return false;
      }
    })
    .map(Number);
}

interface Report {
  bottleneck: string;
  paths: { path: string; status: number | null }[];
  profile: Record<string, unknown> & { steps: unknown[] };
  trials: (Record<string, unknown> & { skipped: string | null; failures: number })[];
  recommendation: Record<string, unknown> | null;
  reasons: string[];
  command: string | null;
}

/** What the recommendation must be: a measured trial, serving within 10 % of the best measured. */
function assertRecommendationMeasured(result: Report): void {
  const chosen = result.recommendation!;
  assert.ok(
    result.trials.some((trial) => JSON.stringify(trial) === JSON.stringify(chosen)),
    'the recommendation is a measured trial',
  );
  const best = Math.max(...result.trials.map((trial) => (trial.reqPerSec as number | null) ?? 0));
  assert.ok((chosen.reqPerSec as number) >= 0.9 * best, `${chosen.reqPerSec} req/s against the best, ${best}`);
}

describe('forkgate tune', { concurrency: true }, () => {
  let cpuReport: (report: string) => void;
  let cpuFailed: (error: unknown) => void;
  const cpuReportWritten = new Promise<string>((resolve, reject) => {
    cpuReport = resolve;
    cpuFailed = reject;
  });

  test('a CPU-bound app (milliseconds of hashing per request): cpu is the bottleneck', async () => {
    const report = join(scratch, 'cpu-report.html');
    try {
      const run = await tune([`${FIXTURES}tune-cpu.cjs`, '--duration', '1', '--json', '--report', report]);
      assert.equal(run.code, 0, run.stderr);
      const result = JSON.parse(run.stdout) as Report;
      assert.equal(result.bottleneck, 'cpu', result.reasons.join(' '));
      assertRecommendationMeasured(result);
      cpuReport(report);
    } catch (error) {
      cpuFailed(error);
      throw error;
    }
  });

  test('an I/O-bound app (30 ms of waiting per request): io is the bottleneck', async () => {
    const run = await tune([`${FIXTURES}tune-io.cjs`, '--duration', '1', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as Report;
    assert.equal(result.bottleneck, 'io', result.reasons.join(' '));
    assertRecommendationMeasured(result);
  });

  test('the report renders in a real headless Chromium: every chart, one point per measurement', {
    skip: CHROMIUM ? false : NO_CHROMIUM,
  }, async (t) => {
    const report = await cpuReportWritten;
    const html = readFileSync(report, 'utf8');
    const browser = await Browser.open(1200, 2400);
    try {
      await browser.navigate(`file://${report}`);
      await eventually(async () => (await browser.evaluate('document.readyState')) === 'complete', 'the report loaded');
      // laid out with a size of their own: drawn, not only present in the markup
      const drawn = (selector: string) =>
        browser.evaluate(
          `[...document.querySelectorAll('${selector}')].filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length`,
        );
      assert.equal(await drawn('svg'), html.match(/<svg/g)?.length, 'the charts');
      assert.equal(await drawn('circle.point'), html.match(/<circle class="point"/g)?.length, 'the points');
      t.diagnostic(`report screenshot: ${await browser.screenshot('forkgate-tune-report.png')}`);
      assert.deepEqual(browser.errors, [], 'errors on the page');
    } finally {
      await browser.close();
    }
  });

  test('measures a grid, reports a path that does not answer 2xx, recommends a measured trial, and writes a self-contained report', async () => {
    const report = join(scratch, 'report.html');
    // a copy of its own: no other test's servers name it
    const app = join(scratch, 'reported.cjs');
    copyFileSync(APP, app);
    const run = await tune([app, '--duration', '1', '--path', '/', '--path', '/missing', '--json', '--report', report]);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as Report;

    assert.deepEqual(result.paths, [
      { path: '/', status: 200, error: null },
      { path: '/missing', status: 404, error: null },
    ]);
    assert.ok(['cpu', 'io', 'memory'].includes(result.bottleneck));
    for (const key of ['requestMs', 'cpuMs', 'loopUtilization', 'saturationConnections', 'masterMiB', 'processMiB', 'threadMiB']) {
      assert.equal(typeof result.profile[key], 'number', `profile.${key}`);
    }
    assert.ok(result.profile.steps.length >= 2);
    assert.ok(result.trials.length >= 5, `${result.trials.length} trials`);
    for (const trial of result.trials) {
      for (const key of TRIAL_KEYS) assert.ok(key in trial, `trial.${key}`);
      assert.equal(trial.skipped, null);
      assert.ok((trial.reqPerSec as number) > 0 && (trial.rssMiB as number) > 0, JSON.stringify(trial));
    }
    // the 404 path was left out of the load, not measured (on -w 1 alone: a slow trial may time a request out)
    const single = result.trials.find((trial) => trial.workers === 1 && trial.threads === 1)!;
    assert.equal(single.failures, 0, JSON.stringify(single));
    const chosen = result.recommendation!;
    assert.deepEqual(Object.keys(chosen), Object.keys(result.trials[0]!));
    assert.ok(
      result.trials.some((trial) => JSON.stringify(trial) === JSON.stringify(chosen)),
      'the recommendation is a measured trial',
    );
    assert.match(result.command!, new RegExp(`^forkgate -w ${chosen.workers}.* ${app}$`));
    assert.ok(result.reasons.length >= 2);

    // not a terminal: plain progress lines on stderr
    assert.match(run.stderr, /^tune: trial 1\/\d+: -w 1 \(about \d+ s left\)$/m);

    const html = readFileSync(report, 'utf8');
    assert.doesNotMatch(html, /https?:\/\//);
    assert.match(html, /<svg/);
    // throughput and memory for every trial, p99 where measured (not for sync workers), the profile's steps
    const withLatency = result.trials.filter((trial) => trial.p99Ms !== null).length;
    assert.equal(withLatency, result.trials.filter((trial) => trial.workerClass !== 'sync').length);
    assert.equal(html.match(/<circle class="point"/g)?.length, 2 * result.trials.length + withLatency + result.profile.steps.length);
    assert.deepEqual(leftBehind(app), [], 'every server it started is stopped');
  });

  test('skips every configuration that does not fit --memory, and recommends none', async () => {
    const run = await tune([APP, '--duration', '1', '--memory', '1', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as Report;
    assert.equal(result.bottleneck, 'memory');
    assert.ok(result.trials.length > 0);
    for (const trial of result.trials) {
      assert.match(trial.skipped!, /^needs about \d+ MiB; 1 MiB allowed$/);
      assert.equal(trial.reqPerSec, null);
    }
    assert.equal(result.recommendation, null);
    assert.equal(result.command, null);
  });

  test('a memory-heavy app under --memory: memory is the bottleneck, and what it recommends fits', async () => {
    const run = await tune([`${FIXTURES}tune-memory.cjs`, '--duration', '1', '--memory', '400', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as Report;
    assert.equal(result.bottleneck, 'memory');
    assert.ok(
      result.trials.some((trial) => trial.skipped !== null),
      'larger configurations are skipped',
    );
    assert.ok((result.recommendation!.rssMiB as number) <= 400, JSON.stringify(result.recommendation));
    assert.ok(result.trials.some((trial) => JSON.stringify(trial) === JSON.stringify(result.recommendation)));
  });

  test('with no path answering 2xx or 3xx, there is nothing to measure: exit 1', async () => {
    const run = await tune([APP, '--duration', '1', '--path', '/missing']);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /^forkgate: error: tune: no path answers 2xx or 3xx, nothing to measure: \/missing 404$/m);
    assert.equal(run.stdout, '');
  });

  test("an app that fails to load: exit 3 with the app's own error", async () => {
    const run = await tune([`${FIXTURES}broken-import.cjs`, '--duration', '1']);
    assert.equal(run.code, 3, run.stderr);
    assert.match(run.stderr, /^forkgate: error: tune: .*broken-import\.cjs does not load: /m);
    assert.match(run.stderr, /Error: database url missing/);
    assert.doesNotMatch(run.stderr, /internal error/);
  });

  test('each server runs as tune configures it, whatever the config file says of threads', async () => {
    const project = mkdtempSync(join(scratch, 'configured-'));
    writeFileSync(join(project, 'forkgate.config.json'), '{ "threads": 2 }');
    // /unthreaded answers 409 from a serving thread: the profile's single worker must have none
    const run = await tune([APP, '--duration', '1', '--memory', '1', '--path', '/unthreaded', '--json'], project);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual((JSON.parse(run.stdout) as Report).paths, [{ path: '/unthreaded', status: 200, error: null }]);
  });

  test('a setting the config file gives that forkgate refuses: exit 2, as forkgate says it', async () => {
    const project = mkdtempSync(join(scratch, 'project-'));
    writeFileSync(join(project, 'forkgate.config.json'), '{ "workerConnections": "lots" }');
    const run = await tune([APP, '--duration', '1'], project);
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /^forkgate: error: tune: \S+forkgate\.config\.json: workerConnections: expected a whole number ≥ 1; got "lots"$/m,
    );
  });

  for (const [args, said] of [
    [['--duration', '0'], /--duration: expected a whole number of seconds ≥ 1; got '0'/],
    [['--duration', '1.5'], /--duration: expected a whole number of seconds ≥ 1; got '1.5'/],
    [['--memory', 'lots'], /--memory: expected a whole number of MiB ≥ 1; got 'lots'/],
    [['--path', 'missing'], /--path: expected a path starting with '\/'; got 'missing'/],
    [['--workers', '2'], /unknown option '--workers'; see forkgate tune --help/],
    [['--report', '/nonexistent-dir/report.html'], /--report: cannot write \/nonexistent-dir\/report\.html: ENOENT/],
  ] as const) {
    test(`bad usage exits 2 naming the flag: ${args.join(' ')}`, async () => {
      const run = await tune([APP, ...args]);
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, new RegExp(`^forkgate: error: tune: ${said.source}\\n$`));
      assert.equal(run.stdout, '');
    });
  }

  test('no app: exit 2', async () => {
    const run = await tune(['--duration', '1']);
    assert.equal(run.code, 2);
    assert.equal(run.stderr, 'forkgate: error: tune: expected one app (PATH[:EXPORT]); got none\n');
  });
});
