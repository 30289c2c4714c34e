// forkgate tune's decisions, on synthetic profiles and trials: the bottleneck, the grid, the
// recommendation and its reasons, the report's shape; and the memory budget from a fixture cgroup tree.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { memoryBudget } from '../src/tune/machine.ts';
import {
  classify,
  configFlags,
  configSnippet,
  describeConfig,
  explain,
  latencyMeasurable,
  plan,
  predictedMiB,
  recommend,
  skipReason,
  type Config,
  type Machine,
  type Profile,
  type Trial,
} from '../src/tune/model.ts';
import { renderHtml, renderJson, renderText } from '../src/tune/report.ts';
import type { TuneResult } from '../src/tune/run.ts';

const MACHINE: Machine = { cpus: 2, memoryMiB: 4096, memorySource: "the machine's memory" };

function profile(overrides: Partial<Profile>): Profile {
  return {
    requestMs: 4,
    cpuMs: 3.9,
    loopUtilization: 0.97,
    saturationConnections: 4,
    saturationReqPerSec: 250,
    steps: [
      { connections: 1, reqPerSec: 240, p99Ms: 5 },
      { connections: 4, reqPerSec: 250, p99Ms: 17 },
    ],
    otherCpus: 0,
    masterMiB: 60,
    processMiB: 80,
    threadMiB: 45,
    ...overrides,
  };
}

const CPU_BOUND = profile({});
const IO_BOUND = profile({ requestMs: 30.4, cpuMs: 0.1, loopUtilization: 0.2, saturationConnections: 256, saturationReqPerSec: 8000 });
const MEMORY_HEAVY = profile({ processMiB: 400, threadMiB: 350 });

function config(
  workers: number,
  threads = 1,
  workerClass: Config['workerClass'] = threads > 1 ? 'gthread' : 'async',
  balance: Config['balance'] = threads > 1 ? 'reuseport' : 'round-robin',
): Config {
  return { workers, threads, workerClass, balance };
}

function trial(of: Config, reqPerSec: number, rssMiB: number, p99Ms = 10): Trial {
  return { ...of, reqPerSec, p50Ms: p99Ms / 2, p99Ms, rssMiB, cpuUsPerReq: 4000, failures: 0, otherCpus: 0, skipped: null };
}

function skipped(of: Config, why: string): Trial {
  return { ...of, reqPerSec: null, p50Ms: null, p99Ms: null, rssMiB: null, cpuUsPerReq: null, failures: 0, otherCpus: null, skipped: why };
}

describe('the bottleneck', () => {
  test('CPU time close to the request time is cpu', () => {
    assert.equal(classify(CPU_BOUND, MACHINE), 'cpu');
  });

  test('CPU a small part of the request time is io', () => {
    assert.equal(classify(IO_BOUND, MACHINE), 'io');
  });

  test("a quick request with a worker's event loop busy where throughput stopped growing is cpu", () => {
    // a quick request whose wall time the client's and the kernel's share make look like waiting
    assert.equal(classify(profile({ requestMs: 0.2, cpuMs: 0.05, loopUtilization: 0.9 }), MACHINE), 'cpu');
    assert.equal(classify(profile({ requestMs: 0.2, cpuMs: 0.05, loopUtilization: 0.6 }), MACHINE), 'io');
    // 30 ms of waiting: enough connections keep any loop busy; the request is still mostly waiting
    assert.equal(classify(profile({ requestMs: 32, cpuMs: 1.3, loopUtilization: 0.81 }), MACHINE), 'io');
  });

  test('one worker per CPU not fitting the memory is memory, whatever the CPU share', () => {
    // 60 + 2 × 400 = 860 MiB
    assert.equal(classify(MEMORY_HEAVY, { ...MACHINE, memoryMiB: 859 }), 'memory');
    assert.equal(classify(MEMORY_HEAVY, { ...MACHINE, memoryMiB: 860 }), 'cpu');
  });
});

describe('the grid', () => {
  test('processes 1, CPU and 2 × CPU + 1, threads 2 and 4, and for a CPU-bound app sync workers and the proxy', () => {
    assert.deepEqual(plan(MACHINE, 'cpu').map(describeConfig), [
      '-w 1',
      '-w 2',
      '-w 5',
      '-w 1 --threads 2',
      '-w 1 --threads 4',
      '-w 2 -k sync',
      '-w 2 --balance proxy',
    ]);
  });

  test('an I/O-bound app is tried with reuseport instead, and no sync workers', () => {
    assert.deepEqual(plan(MACHINE, 'io').map(describeConfig), [
      '-w 1',
      '-w 2',
      '-w 5',
      '-w 1 --threads 2',
      '-w 1 --threads 4',
      '-w 2 --balance reuseport',
    ]);
  });

  test('when memory is short, more threads in one process are tried, without duplicates', () => {
    const grid = plan({ ...MACHINE, cpus: 4 }, 'memory').map(describeConfig);
    assert.deepEqual(grid, ['-w 1', '-w 4', '-w 9', '-w 1 --threads 2', '-w 1 --threads 4', '-w 1 --threads 9']);
  });

  test('a configuration that would not fit is skipped, saying what it needs', () => {
    const machine = { ...MACHINE, memoryMiB: 1000 };
    assert.equal(predictedMiB(config(2), MEMORY_HEAVY), 860);
    assert.equal(predictedMiB(config(1, 4), MEMORY_HEAVY), 60 + 400 + 3 * 350);
    assert.equal(skipReason(config(2), MEMORY_HEAVY, machine), null);
    assert.equal(skipReason(config(5), MEMORY_HEAVY, machine), 'needs about 2060 MiB; 1000 MiB allowed');
  });
});

describe('the recommendation', () => {
  test('the most throughput, and among near-equals the least memory', () => {
    const trials = [trial(config(1), 250, 140), trial(config(2), 480, 200), trial(config(5), 478, 480), trial(config(1, 2), 440, 190)];
    assert.equal(recommend(trials, MACHINE), trials[1]);
    // within 5 % of the best (480): 460 qualifies, and uses less memory
    trials[3]!.reqPerSec = 460;
    assert.equal(recommend(trials, MACHINE), trials[3]);
    trials[3]!.reqPerSec = 450;
    assert.equal(recommend(trials, MACHINE), trials[1]);
  });

  test('never a skipped trial, nor one whose measured memory is over the limit', () => {
    const trials = [trial(config(1), 250, 140), trial(config(2), 480, 300), skipped(config(5), 'needs about 600 MiB; 250 MiB allowed')];
    assert.equal(recommend(trials, { ...MACHINE, memoryMiB: 250 }), trials[0]);
    assert.equal(recommend(trials, { ...MACHINE, memoryMiB: 100 }), null);
  });

  test('the reasons cite the measured figures, the memory it saves, and what threads save in Node', () => {
    const trials = [trial(config(1), 250, 140, 30), trial(config(2), 470, 200, 20), trial(config(5), 480, 480, 12)];
    const chosen = recommend(trials, MACHINE);
    assert.equal(chosen, trials[1]);
    const reasons = explain({
      profile: CPU_BOUND,
      machine: MACHINE,
      bottleneck: 'cpu',
      trials,
      recommendation: chosen,
      generator: { peakCpus: 0.3 },
    });
    assert.match(reasons[0]!, /^CPU-bound: 3\.9 ms of CPU per 4\.0 ms request/);
    assert.equal(
      reasons[1],
      '-w 2 serves 470 req/s (p99 20 ms) in 200 MiB; -w 5 serves 480 req/s (p99 12 ms) in 480 MiB, within 5 %, with 2.4× the memory.',
    );
    assert.match(
      reasons[2]!,
      /each serving thread loads its own copy of the app and its own heap \(45 MiB here\), and saves only the rest of a process \(35 MiB of its 80 MiB\)/,
    );
    assert.equal(reasons.length, 3, 'nothing about the load generator below its limit');
  });

  test('a load generator near a full CPU, and other programs, are said to limit the figures', () => {
    const trials = [trial(config(1), 25_000, 140), { ...trial(config(2), 24_000, 200), otherCpus: 0.4 }];
    const reasons = explain({
      profile: IO_BOUND,
      machine: MACHINE,
      bottleneck: 'io',
      trials,
      recommendation: recommend(trials, MACHINE),
      generator: { peakCpus: 0.95 },
    });
    assert.match(reasons[0]!, /^I\/O-bound: 0\.10 ms of CPU per 30 ms request/);
    assert.ok(
      reasons.some((reason) => /load generator .* used up to 0\.9 of them/.test(reason)),
      reasons.join('\n'),
    );
    assert.ok(
      reasons.some((reason) => /Other programs used up to 0\.40 CPUs during 1 of the trials: the figures are skewed/.test(reason)),
      reasons.join('\n'),
    );
    const profiled = explain({
      profile: { ...IO_BOUND, otherCpus: 0.5 },
      machine: MACHINE,
      bottleneck: 'io',
      trials,
      recommendation: recommend(trials, MACHINE),
      generator: { peakCpus: 0 },
    });
    assert.ok(
      profiled.some((reason) => /Other programs used up to 0\.50 CPUs during the profile and 1 of the trials/.test(reason)),
      profiled.join('\n'),
    );
  });

  /** The reasons for a CPU-bound app on MACHINE, with a load generator that took no CPU of its own. */
  const explainCpuBound = (trials: Trial[], chosen: Trial | null) =>
    explain({ profile: CPU_BOUND, machine: MACHINE, bottleneck: 'cpu', trials, recommendation: chosen, generator: { peakCpus: 0 } });

  test('the fastest, when it is also the choice, is set beside the next best and the largest', () => {
    const trials = [trial(config(1), 250, 140), trial(config(2), 480, 240), trial(config(1, 2), 490, 205), trial(config(5), 400, 500)];
    const chosen = recommend(trials, MACHINE);
    assert.equal(chosen, trials[2]);
    const reasons = explainCpuBound(trials, chosen);
    assert.equal(
      reasons[1],
      '-w 1 --threads 2 serves 490 req/s (p99 10 ms) in 205 MiB, the most of the trials; -w 2 serves 480 req/s (p99 10 ms) in 240 MiB; -w 5 serves 400 req/s (p99 10 ms) in 500 MiB.',
    );
  });

  test('a trial without latencies (sync workers) is still recommended on its throughput', () => {
    const trials = [trial(config(1), 250, 140), { ...trial(config(2, 1, 'sync'), 480, 200), p50Ms: null, p99Ms: null }];
    assert.equal(latencyMeasurable(trials[1]!), false);
    const chosen = recommend(trials, MACHINE);
    assert.equal(chosen, trials[1]);
    const reasons = explainCpuBound(trials, chosen);
    assert.equal(
      reasons[1],
      '-w 2 -k sync serves 480 req/s in 200 MiB, the most of the trials; -w 1 serves 250 req/s (p99 10 ms) in 140 MiB.',
    );
  });

  test('nothing fitting says what one worker needs', () => {
    const machine = { ...MACHINE, memoryMiB: 100 };
    const trials = plan(machine, 'memory').map((of) => skipped(of, skipReason(of, MEMORY_HEAVY, machine)!));
    const reasons = explain({
      profile: MEMORY_HEAVY,
      machine,
      bottleneck: 'memory',
      trials,
      recommendation: null,
      generator: { peakCpus: 0 },
    });
    assert.match(
      reasons[0]!,
      /^Memory-bound: a worker process with the app loaded takes 400 MiB and the master 60 MiB; 2 workers would need 860 MiB, and 100 MiB is allowed/,
    );
    assert.match(
      reasons[1]!,
      /No configuration was measured within 100 MiB \(6 of 6 skipped as too large\); one worker process needs about 460 MiB/,
    );
  });

  test('flags and the config file say only what differs from the defaults', () => {
    assert.deepEqual(configFlags(config(2)), ['-w', '2']);
    assert.deepEqual(configFlags(config(1, 4)), ['-w', '1', '--threads', '4']);
    assert.deepEqual(configFlags(config(2, 1, 'sync')), ['-w', '2', '-k', 'sync']);
    assert.deepEqual(configFlags(config(2, 1, 'async', 'proxy')), ['-w', '2', '--balance', 'proxy']);
    assert.equal(
      configSnippet(config(1, 4)),
      "import { defineConfig } from 'forkgate';\n\nexport default defineConfig({ workers: 1, threads: 4, workerClass: 'gthread', balance: 'reuseport' });\n",
    );
  });
});

describe('the report', () => {
  const trials = [
    trial(config(1), 250, 140),
    trial(config(2), 480, 200),
    trial(config(1, 2), 470, 190),
    skipped(config(5), 'needs about 600 MiB; 500 MiB allowed'),
  ];
  const result: TuneResult = {
    app: 'app<1>.js',
    machine: { ...MACHINE, memoryMiB: 500, memorySource: '--memory' },
    paths: [
      { path: '/', status: 200, error: null },
      { path: '/missing', status: 404, error: null },
    ],
    durationSeconds: 8,
    connections: 20,
    profile: CPU_BOUND,
    bottleneck: 'cpu',
    trials,
    recommendation: trials[1]!,
    reasons: ['CPU-bound: a reason with <markup> & "quotes".'],
    generatorCpus: 0.5,
  };

  test('the HTML page is self-contained: no URL, no script, SVG charts with one point per measured trial', () => {
    const html = renderHtml(result);
    assert.doesNotMatch(html, /https?:\/\//);
    assert.doesNotMatch(html, /<script|<link|src=/i);
    const charts = html.match(/<svg[\s\S]*?<\/svg>/g) ?? [];
    assert.equal(charts.length, 4);
    for (const chart of charts.slice(0, 3)) assert.equal(chart.match(/<circle class="point"/g)?.length, 3);
    assert.equal(charts[3]!.match(/<circle class="point"/g)?.length, CPU_BOUND.steps.length);
    assert.match(charts[2]!, /limit 500 MiB/);
    assert.match(html, /app&#60;1&#62;\.js/);
    assert.match(html, /&#60;markup&#62; &#38; &#34;quotes&#34;/);
    assert.match(html, /\/missing answered 404: left out of the load/);
    assert.match(html, /forkgate -w 2 app&#60;1&#62;\.js/);
  });

  test('the JSON carries every trial and the recommendation with the same keys', () => {
    const json = JSON.parse(renderJson(result)) as Record<string, unknown> & {
      trials: Record<string, unknown>[];
      recommendation: Record<string, unknown>;
    };
    assert.equal(json.bottleneck, 'cpu');
    assert.equal(json.trials.length, 4);
    assert.deepEqual(Object.keys(json.recommendation), Object.keys(json.trials[0]!));
    assert.equal(json.command, 'forkgate -w 2 app<1>.js');
    assert.deepEqual(json.generator, { peakCpus: 0.5 });
  });

  test('the text marks the recommendation and the skipped trials, and prints the config file', () => {
    const text = renderText(result);
    assert.match(text, /^\*\s+-w 2\s/m);
    assert.match(text, /-w 5 .*skipped: needs about 600 MiB; 500 MiB allowed/);
    assert.match(text, /path \/missing answered 404: left out of the load/);
    assert.match(text, /recommended: forkgate -w 2 app<1>\.js/);
    assert.match(text, /export default defineConfig\(\{ workers: 2 \}\);/);
  });
});

describe('the memory budget', () => {
  const roots: string[] = [];
  after(() => {
    for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
  });
  function fixture(files: Record<string, string>): string {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'forkgate-memory-'));
    roots.push(root);
    for (const [name, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
      fs.writeFileSync(path.join(root, name), text);
    }
    return root;
  }
  const GiB = 2 ** 30;

  test("without a cgroup limit, the machine's memory", () => {
    const root = fixture({ 'proc/self/cgroup': '0::/app\n', 'sys/fs/cgroup/app/memory.max': 'max\n' });
    assert.deepEqual(memoryBudget({ root, totalBytes: 8 * GiB }), { memoryMiB: 8192, memorySource: "the machine's memory" });
  });

  test('the tightest memory.max from the cgroup up to the root', () => {
    const root = fixture({
      'proc/self/cgroup': '0::/pod/app\n',
      'sys/fs/cgroup/pod/app/memory.max': `${2 * GiB}\n`,
      'sys/fs/cgroup/pod/memory.max': `${GiB}\n`,
    });
    assert.deepEqual(memoryBudget({ root, totalBytes: 8 * GiB }), {
      memoryMiB: 1024,
      memorySource: 'cgroup memory.max at /sys/fs/cgroup/pod',
    });
  });

  test('--memory when it is smaller, else the limit', () => {
    const root = fixture({ 'proc/self/cgroup': '0::/app\n', 'sys/fs/cgroup/app/memory.max': `${GiB}\n` });
    assert.deepEqual(memoryBudget({ root, totalBytes: 8 * GiB, requestedMiB: 300 }), { memoryMiB: 300, memorySource: '--memory' });
    assert.equal(memoryBudget({ root, totalBytes: 8 * GiB, requestedMiB: 4000 }).memorySource, 'cgroup memory.max at /sys/fs/cgroup/app');
  });
});
