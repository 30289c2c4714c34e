// /metrics: forkgate's own counts exact across the pool in every balance mode, kept past worker exits;
// the app's own prom-client metrics summed over the workers; --metrics-bind serves nothing else.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import { linkSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout } from 'node:timers/promises';
import { eventually, FIXTURES, isAlive, request, ROOT, start, within, type Forkgate } from './helpers/forkgate.ts';
import { Browser, CHROMIUM, NO_CHROMIUM } from './helpers/chromium.ts';
import { freePort } from './helpers/free-port.ts';
import type { PoolSnapshot } from '../src/metrics/pool-metrics.ts';

const OPS = `${FIXTURES}ops.cjs`;
const PROM_APP = `${FIXTURES}prom-counter.cjs`;
const THREADS = `${FIXTURES}threads.cjs`;
const HAS_PROMTOOL = spawnSync('promtool', ['--version']).status === 0;
const HAS_PROMETHEUS = spawnSync('prometheus', ['--version']).status === 0;
const PROM_CLIENT_NAMING = /^forkgate_master_nodejs_\w+_total non-counter metrics should not have "_total" suffix$/;

type Samples = Map<string, number>;

/**
 * The exposition, parsed strictly: every line a comment (# HELP / # TYPE) or `name{labels} value`;
 * samples by `name{labels}` as written. promtool checks it too, where it is installed.
 */
async function scrape(url: string): Promise<Samples> {
  const reply = await request(url);
  assert.equal(reply.status, 200, reply.body);
  assert.match(String(reply.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  const samples: Samples = new Map();
  for (const line of reply.body.split('\n')) {
    if (line === '' || /^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* /.test(line)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?) (-?[0-9.e+-]+|NaN|[+-]Inf)$/.exec(
      line,
    );
    assert.ok(match, `not an exposition line: ${line}`);
    assert.ok(!samples.has(match[1]!), `sample twice: ${match[1]}`);
    samples.set(match[1]!, Number(match[2]));
  }
  if (HAS_PROMTOOL) {
    const check = spawnSync('promtool', ['check', 'metrics'], { input: reply.body, encoding: 'utf8' });
    // prom-client's default metrics name two gauges *_total (nodejs_active_handles_total, ...): its naming, not ours.
    const problems = `${check.stdout}${check.stderr}`.split('\n').filter((line) => line && !PROM_CLIENT_NAMING.test(line));
    assert.deepEqual(problems, [], 'promtool check metrics');
  }
  return samples;
}

function value(samples: Samples, key: string): number {
  return samples.get(key) ?? 0;
}

/** Per-worker series of a metric: slot → value. */
function bySlot(samples: Samples, name: string): Map<string, number> {
  const slots = new Map<string, number>();
  for (const [key, sample] of samples) {
    const slot = new RegExp(`^${name}\\{worker="(\\d+)"\\}$`).exec(key)?.[1];
    if (slot) slots.set(slot, sample);
  }
  return slots;
}

async function send(url: string, count: number, path = '/'): Promise<void> {
  for (let i = 0; i < count; i++) assert.equal((await request(`${url}${path}`)).status, 200);
}

async function metricsUrl(forkgate: Forkgate): Promise<string> {
  const [, url] = (await forkgate.waitFor(/Metrics at: (\S+)/)) as [string, string];
  return url;
}

const REQUESTS = 60;
const MODES: [string, string[], string][] = [
  ['round-robin', ['-w', '2', '--balance', 'round-robin'], OPS],
  ['reuseport', ['-w', '2', '--balance', 'reuseport'], OPS],
  ['proxy', ['-w', '2', '--balance', 'proxy'], OPS],
  ['threads', ['-w', '2', '--threads', '2'], THREADS],
];

for (const [mode, args, app] of MODES) {
  test(`after ${REQUESTS} requests forkgate_http_requests_total has grown by exactly ${REQUESTS} (${mode})`, async () => {
    const forkgate = await start([...args, '-b', '127.0.0.1:0', '--metrics-bind', '127.0.0.1:0', app]);
    try {
      const url = await metricsUrl(forkgate);
      const before = await scrape(url);
      await send(forkgate.url, REQUESTS);
      const after = await scrape(url);
      const key = 'forkgate_http_requests_total{method="GET",code="200"}';
      assert.equal(value(after, key) - value(before, key), REQUESTS);
      const count = 'forkgate_http_request_duration_seconds_count';
      assert.equal(value(after, count) - value(before, count), REQUESTS);
      assert.equal(
        value(after, 'forkgate_http_request_duration_seconds_bucket{le="+Inf"}') -
          value(before, 'forkgate_http_request_duration_seconds_bucket{le="+Inf"}'),
        REQUESTS,
      );
      const perWorker = bySlot(after, 'forkgate_worker_requests_total');
      assert.deepEqual([...perWorker.keys()].sort(), ['1', '2']);
      assert.equal(
        [...perWorker.values()].reduce((a, b) => a + b, 0),
        value(after, key),
      );
      assert.equal(value(after, 'forkgate_workers{state="ready"}'), 2);
      assert.ok(value(after, 'forkgate_master_process_cpu_seconds_total') > 0, 'the master reports its own process metrics');
    } finally {
      assert.equal((await forkgate.stop()).code, 0);
    }
  });
}

test('kill -9 of a worker: no counter goes backwards, the restart is counted, slots stay 1 and 2', async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--metrics-bind', '127.0.0.1:0', OPS]);
  try {
    const url = await metricsUrl(forkgate);
    await send(forkgate.url, REQUESTS);
    const before = await scrape(url);
    assert.equal(before.get('forkgate_worker_restarts_total{reason="killed"}'), 0, 'every reason is there before its first restart');
    const victim = forkgate.workerPids()[0]!;
    process.kill(victim, 'SIGKILL');
    await forkgate.waitFor(/was killed by SIGKILL/);
    await eventually(() => forkgate.workerPids().length === 2 && !forkgate.workerPids().includes(victim), 'a replacement');
    const after = await eventually(async () => {
      const samples = await scrape(url);
      return value(samples, 'forkgate_workers{state="ready"}') === 2 ? samples : null;
    }, 'the replacement ready');
    for (const [key, sample] of before) {
      if (/_total(\{|$)|_count$|_sum$|_bucket\{/.test(key) && !key.startsWith('forkgate_master_')) {
        assert.ok(value(after, key) >= sample, `${key} went from ${sample} to ${value(after, key)}`);
      }
    }
    assert.equal(value(after, 'forkgate_http_requests_total{method="GET",code="200"}'), REQUESTS);
    assert.equal(value(after, 'forkgate_worker_restarts_total{reason="killed"}'), 1);
    assert.deepEqual([...bySlot(after, 'forkgate_worker_resident_memory_bytes').keys()].sort(), ['1', '2']);
    assert.deepEqual(bySlot(after, 'forkgate_worker_requests_total'), bySlot(before, 'forkgate_worker_requests_total'));
    await send(forkgate.url, 10);
    assert.equal(value(await scrape(url), 'forkgate_http_requests_total{method="GET",code="200"}'), REQUESTS + 10);
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test('a worker that crashes once ready, before any client (a crash loop), is a crash restart, not a boot failure', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--metrics-bind', '127.0.0.1:0', `${FIXTURES}crash-on-signal.cjs`]);
  try {
    const url = await metricsUrl(forkgate);
    process.kill(forkgate.workerPids()[0]!, 'SIGUSR2');
    await forkgate.waitFor(/Worker crashed: uncaught exception/);
    const samples = await eventually(async () => {
      const scraped = await scrape(url);
      return value(scraped, 'forkgate_worker_restarts_total{reason="crash"}') === 1 ? scraped : null;
    }, 'the crash counted');
    assert.equal(value(samples, 'forkgate_worker_boot_failures_total'), 0);
  } finally {
    await forkgate.stop();
  }
});

test('workers retired by --max-requests send their last counts as they exit: the total stays exact', async () => {
  const forkgate = await start(['-w', '2', '--max-requests', '10', '-b', '127.0.0.1:0', '--metrics-bind', '127.0.0.1:0', OPS]);
  try {
    const url = await metricsUrl(forkgate);
    // No scrape before they exit: only their last reports can carry what they served.
    await send(forkgate.url, 45);
    await forkgate.waitFor(/Worker exited[\s\S]*Worker exited/);
    const samples = await eventually(async () => {
      const scraped = await scrape(url);
      return value(scraped, 'forkgate_worker_restarts_total{reason="max-requests"}') >= 2 ? scraped : null;
    }, 'two restarts counted');
    assert.equal(value(samples, 'forkgate_http_requests_total{method="GET",code="200"}'), 45);
    assert.deepEqual([...bySlot(samples, 'forkgate_worker_requests_total').keys()].sort(), ['1', '2']);
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test("the app's own prom-client counter and histogram are summed over 2 workers, a killed worker's kept", async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--metrics-bind', '127.0.0.1:0', PROM_APP]);
  try {
    const url = await metricsUrl(forkgate);
    await send(forkgate.url, 30, '/a');
    await send(forkgate.url, 10, '/b');
    const samples = await scrape(url);
    assert.equal(value(samples, 'app_hits_total{path="/a"}'), 30);
    assert.equal(value(samples, 'app_hits_total{path="/b"}'), 10);
    assert.equal(value(samples, 'app_latency_seconds_count'), 40);
    assert.equal(value(samples, 'app_latency_seconds_bucket{le="0.1"}'), 40);
    // Both workers counted: each answered some of them.
    assert.equal(bySlot(samples, 'forkgate_worker_requests_total').size, 2);
    assert.ok([...bySlot(samples, 'forkgate_worker_requests_total').values()].every((served) => served > 0));
    // What a killed worker counted stays, once folded into the retired totals (5 s after its exit) too.
    const victim = forkgate.workerPids()[0]!;
    process.kill(victim, 'SIGKILL');
    const killedAt = Date.now();
    await eventually(
      async () => value(await scrape(url), 'forkgate_workers{state="ready"}') === 2 && !forkgate.workerPids().includes(victim),
      'a replacement',
    );
    const replaced = await scrape(url);
    assert.equal(value(replaced, 'app_hits_total{path="/a"}'), 30);
    assert.equal(value(replaced, 'app_up'), 2, "the killed worker's gauge went with it");
    await eventually(() => Date.now() - killedAt > 5500, 'its report folded', 10_000);
    await send(forkgate.url, 5, '/a');
    const later = await scrape(url);
    assert.equal(value(later, 'app_hits_total{path="/a"}'), 35);
    assert.equal(value(later, 'app_latency_seconds_count'), 45);
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test('--metrics-bind serves only GET /metrics; the admin endpoint serves /metrics as well', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--metrics-bind', '127.0.0.1:0', '--admin-bind', '127.0.0.1:0', OPS]);
  try {
    const url = await metricsUrl(forkgate);
    const base = url.replace(/\/metrics$/, '');
    for (const [method, path, status] of [
      ['POST', '/metrics', 405],
      ['PUT', '/metrics', 405],
      ['POST', '/reload', 404],
      ['POST', '/stop', 404],
      ['POST', '/workers/3', 404],
      ['GET', '/status', 404],
      ['GET', '/', 404],
    ] as const) {
      assert.equal((await request(`${base}${path}`, { method })).status, status, `${method} ${path}`);
    }
    assert.doesNotMatch(forkgate.output, /Handling admin request/);
    const [, admin] = (await forkgate.waitFor(/Admin endpoint at: (\S+)/)) as [string, string];
    await send(forkgate.url, 5);
    assert.equal(value(await scrape(`http://${admin}/metrics`), 'forkgate_http_requests_total{method="GET",code="200"}'), 5);
    // The admin endpoint's guards apply to /metrics as to /status.
    assert.equal((await request(`http://${admin}/metrics`, { headers: { host: 'evil.example' } })).status, 403);
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test("statsd: a UDP listener receives Gunicorn's names from the workers and the master", async () => {
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
  const lines: string[] = [];
  udp.on('message', (datagram) => lines.push(...datagram.toString().split('\n')));
  const port = (udp.address() as net.AddressInfo).port;
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--statsd-host', `127.0.0.1:${port}`, '--statsd-prefix', 'app', PROM_APP]);
  try {
    await send(forkgate.url, 20);
    assert.equal((await request(`${forkgate.url}/missing`)).status, 404);
    const sum = (pattern: RegExp) => lines.reduce((total, line) => total + Number(pattern.exec(line)?.[1] ?? 0), 0);
    await eventually(() => sum(/^app\.gunicorn\.requests:(\d+)\|c$/) === 21, `21 requests counted; got ${lines.join(' ')}`);
    assert.equal(sum(/^app\.gunicorn\.request\.status\.200:(\d+)\|c$/), 20);
    assert.equal(sum(/^app\.gunicorn\.request\.status\.404:(\d+)\|c$/), 1);
    assert.ok(
      lines.some((line) => /^app\.gunicorn\.request\.duration:\d+\.\d+\|ms$/.test(line)),
      'durations in ms',
    );
    await eventually(() => lines.some((line) => line === 'app.gunicorn.workers:2|g'), 'the master sends gunicorn.workers');
    process.kill(forkgate.workerPids()[0]!, 'SIGKILL');
    await eventually(() => sum(/^app\.gunicorn\.log\.error:(\d+)\|c$/) >= 1, 'the error the kill is logged with, counted');
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
    udp.close();
  }
});

test('statsd to a host whose name does not resolve: said once by the master, and serving goes on', async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--statsd-host', 'no-such-host.invalid:8125', OPS]);
  try {
    await forkgate.waitFor(/--statsd-host no-such-host\.invalid:8125: cannot be reached \(\w+\); its metrics are dropped until it can\n/);
    assert.equal((await request(`${forkgate.url}/pid`)).status, 200);
    assert.equal(forkgate.count(/--statsd-host no-such-host/), 1, 'once, by the master alone');
  } finally {
    await forkgate.stop();
  }
});

test('statsd with --dogstatsd-tags: every line carries the tags, counts and durations alike', async () => {
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
  const lines: string[] = [];
  udp.on('message', (datagram) => lines.push(...datagram.toString().split('\n')));
  const port = (udp.address() as net.AddressInfo).port;
  const forkgate = await start([
    '-w',
    '1',
    '-b',
    '127.0.0.1:0',
    '--statsd-host',
    `127.0.0.1:${port}`,
    '--dogstatsd-tags',
    'env:prod, web',
    PROM_APP,
  ]);
  try {
    await send(forkgate.url, 3);
    await eventually(
      () => lines.some((line) => /^gunicorn\.requests:\d+\|c\|#env:prod,web$/.test(line)),
      `tagged counts; got ${lines.join(' ')}`,
    );
    assert.ok(
      lines.some((line) => /^gunicorn\.request\.duration:\d+\.\d+\|ms\|#env:prod,web$/.test(line)),
      lines.join(' '),
    );
    assert.deepEqual(
      lines.filter((line) => line !== '' && !line.endsWith('|#env:prod,web')),
      [],
      'no line without the tags',
    );
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
    udp.close();
  }
});

test("threads: the app's prom-client metrics are summed over the threads; a thread that dies takes nothing back", async () => {
  const forkgate = await start(['-w', '1', '--threads', '2', '-b', '127.0.0.1:0', '--metrics-bind', '127.0.0.1:0', PROM_APP]);
  try {
    const url = await metricsUrl(forkgate);
    await send(forkgate.url, 30, '/a');
    const before = await scrape(url);
    assert.equal(value(before, 'app_hits_total{path="/a"}'), 30);
    assert.equal(value(before, 'forkgate_http_requests_total{method="GET",code="200"}'), 30);
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
  const threads = await start(['-w', '1', '--threads', '2', '-b', '127.0.0.1:0', '--metrics-bind', '127.0.0.1:0', THREADS]);
  try {
    const url = await metricsUrl(threads);
    await send(threads.url, 30);
    assert.equal(value(await scrape(url), 'forkgate_http_requests_total{method="GET",code="200"}'), 30);
    await request(`${threads.url}/exit`);
    await threads.waitFor(/Thread \d+ exited with code 1: replacing it/);
    const after = await scrape(url);
    assert.ok(value(after, 'forkgate_http_requests_total{method="GET",code="200"}') >= 30);
    await send(threads.url, 10);
    assert.ok(value(await scrape(url), 'forkgate_http_requests_total{method="GET",code="200"}') >= 40);
  } finally {
    assert.equal((await threads.stop()).code, 0);
  }
});

test('a real Prometheus scrapes --metrics-bind, and PromQL returns the requests sent', {
  skip: HAS_PROMETHEUS ? false : 'prometheus is not installed (Debian: apt-get install prometheus)',
}, async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--metrics-bind', '127.0.0.1:0', PROM_APP]);
  const dir = mkdtempSync(join(tmpdir(), 'forkgate-prometheus-'));
  let prometheus: ChildProcess | null = null;
  try {
    const target = new URL(await metricsUrl(forkgate)).host;
    writeFileSync(
      join(dir, 'prometheus.yml'),
      `global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: forkgate\n    static_configs:\n      - targets: ['${target}']\n`,
    );
    const port = await freePort();
    let log = '';
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus.stdout!.on('data', (chunk: Buffer) => (log += chunk));
    prometheus.stderr!.on('data', (chunk: Buffer) => (log += chunk));
    await send(forkgate.url, 25, '/a');
    const query = async (promql: string) => {
      const reply = await request(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(promql)}`).catch(() => null);
      if (reply?.status !== 200) return null;
      const result = (JSON.parse(reply.body) as { data: { result: { value: [number, string] }[] } }).data.result;
      return result.length === 1 ? Number(result[0]!.value[1]) : null;
    };
    const forkgateCount = 'sum(forkgate_http_requests_total{job="forkgate"})';
    await eventually(async () => (await query(forkgateCount)) === 25, `PromQL ${forkgateCount} = 25; prometheus said:\n${log}`, 30_000);
    assert.equal(await query('sum(app_hits_total{job="forkgate"})'), 25);
    assert.equal(await query('up{job="forkgate"}'), 1);
  } finally {
    prometheus?.kill('SIGTERM');
    if (prometheus && prometheus.exitCode === null) await new Promise((resolve) => prometheus!.once('exit', resolve));
    rmSync(dir, { recursive: true, force: true });
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test('deploy/prometheus.yml is a configuration Prometheus accepts', {
  skip: HAS_PROMTOOL ? false : 'promtool is not installed (Debian: apt-get install prometheus)',
}, () => {
  const check = spawnSync('promtool', ['check', 'config', `${ROOT}deploy/prometheus.yml`], { encoding: 'utf8' });
  assert.equal(check.status, 0, `${check.stdout}${check.stderr}`);
});

test('--balance proxy: a request queued and one shed are counted; the app counts only what it answered', async () => {
  const forkgate = await start([
    '-w',
    '1',
    '-k',
    'sync',
    '--balance',
    'proxy',
    '--queue-limit',
    '1',
    '-b',
    '127.0.0.1:0',
    '--metrics-bind',
    '127.0.0.1:0',
    OPS,
  ]);
  try {
    const url = await metricsUrl(forkgate);
    // One holds the unit (the proxy relays the head with the body, so no answer tells which), one queues.
    const first = request(`${forkgate.url}/slow?ms=1000`);
    const second = request(`${forkgate.url}/`);
    await eventually(async () => value(await scrape(url), 'forkgate_queue_length') === 1, 'a request queued');
    assert.equal((await request(`${forkgate.url}/`)).status, 503);
    assert.equal((await first).status, 200);
    assert.equal((await second).status, 200);
    const samples = await scrape(url);
    assert.equal(value(samples, 'forkgate_proxy_shed_total{reason="queue full"}'), 1);
    assert.equal(value(samples, 'forkgate_proxy_queue_wait_seconds_count'), 1);
    assert.ok(value(samples, 'forkgate_proxy_queue_wait_seconds_sum') > 0.1);
    assert.equal(value(samples, 'forkgate_http_requests_total{method="GET",code="200"}'), 2);
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

test('the admin endpoint serves a self-contained dashboard and a stream of the pool', async () => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--admin-bind', '127.0.0.1:0', OPS]);
  try {
    const [, admin] = (await forkgate.waitFor(/Admin endpoint at: (\S+)/)) as [string, string];
    const page = await request(`http://${admin}/`);
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.doesNotMatch(page.body, /(src|href)=["']?(https?:)?\/\//, 'nothing loaded from elsewhere');
    await send(forkgate.url, 7);
    const event = await firstEvent(`http://${admin}/events`);
    assert.equal(event.requests, 7);
    assert.deepEqual(
      event.workers.map((worker) => worker.slot),
      [1, 2],
    );
    assert.deepEqual(new Set(event.workers.map((worker) => worker.pid)), new Set(forkgate.workerPids()));
  } finally {
    assert.equal((await forkgate.stop()).code, 0);
  }
});

/** The first server-sent event of a stream, parsed. */
function firstEvent(url: string): Promise<PoolSnapshot> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        const end = text.indexOf('\n\n');
        if (end < 0) return;
        req.destroy();
        resolve(JSON.parse(text.slice(text.indexOf('data: ') + 6, end)) as PoolSnapshot);
      });
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('no event within 10 s')));
  });
}

test('in a real headless Chromium the dashboard shows the workers, follows requests and a kill, with no console error', {
  skip: CHROMIUM ? false : NO_CHROMIUM,
}, async (t) => {
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--admin-bind', '127.0.0.1:0', OPS]);
  let browser: Browser | null = null;
  try {
    const [, admin] = (await forkgate.waitFor(/Admin endpoint at: (\S+)/)) as [string, string];
    browser = await Browser.open();
    const page = browser;
    await page.navigate(`http://${admin}/`);
    const shown = (expression: string) => page.evaluate(expression);
    const workerPids = () => shown(`[...document.querySelectorAll('#workers tr')].map((tr) => Number(tr.dataset.pid)).sort().join(' ')`);
    await eventually(async () => (await workerPids()) === forkgate.workerPids().join(' '), 'the two workers shown');
    await send(forkgate.url, 25);
    await eventually(
      async () => /^25 requests since start$/.test(String(await shown(`document.getElementById('status').textContent`))),
      'the requests counted on the page',
    );
    const victim = forkgate.workerPids()[0]!;
    process.kill(victim, 'SIGKILL');
    await eventually(
      async () => /killed/.test(String(await shown(`document.getElementById('restarts').textContent`))),
      'the restart shown with its reason',
    );
    await eventually(async () => {
      const pids = forkgate.workerPids();
      return pids.length === 2 && !pids.includes(victim) && (await workerPids()) === pids.join(' ');
    }, 'the replacement shown');
    await send(forkgate.url, 5);
    await eventually(
      async () => /^30 requests since start$/.test(String(await shown(`document.getElementById('status').textContent`))),
      'the count carried past the kill',
    );
    t.diagnostic(`dashboard screenshot: ${await page.screenshot('forkgate-dashboard.png')}`);
    assert.deepEqual(page.errors, [], 'console errors');
  } finally {
    const stopped = await forkgate.stop();
    await browser?.close();
    assert.equal(stopped.code, 0);
  }
});

test('a second master given the same --metrics-bind exits 1 naming it; the first serves on', async () => {
  const port = await freePort();
  const bind = `127.0.0.1:${port}`;
  const first = await start(['-w', '1', '-b', '127.0.0.1:0', '--metrics-bind', bind, OPS]);
  const second = await start(['-w', '1', '-b', '127.0.0.1:0', '--metrics-bind', bind, OPS], { waitReady: false });
  try {
    const exit = await within(20_000, 'the second master exits', second.exited);
    assert.equal(exit.code, 1, second.output);
    assert.match(
      second.output,
      new RegExp(`Cannot serve metrics: listen EADDRINUSE: address already in use ${bind.replaceAll('.', '\\.')}\n`),
    );
    assert.doesNotMatch(second.output, /Metrics at:|^\s+at /m);
    await send(first.url, 3);
    const samples = await scrape(`http://${bind}/metrics`);
    assert.equal(value(samples, 'forkgate_http_requests_total{method="GET",code="200"}'), 3);
  } finally {
    await second.stop();
    assert.equal((await first.stop()).code, 0);
  }
});

test('unix: a socket file left by a crash is replaced; one a master serves on is left to it', async () => {
  const scratch = mkdtempSync(join(tmpdir(), 'forkgate-metrics-'));
  const socketPath = join(scratch, 'metrics.sock');
  // A crashed server's socket file: nothing listens on it any more.
  const crashed = net.createServer().listen(socketPath);
  await once(crashed, 'listening');
  linkSync(socketPath, `${socketPath}.kept`);
  await new Promise((resolve) => crashed.close(resolve));
  renameSync(`${socketPath}.kept`, socketPath);
  const first = await start(['-w', '1', '-b', '127.0.0.1:0', '--metrics-bind', `unix:${socketPath}`, OPS]);
  const second = await start(['-w', '1', '-b', '127.0.0.1:0', '--metrics-bind', `unix:${socketPath}`, OPS], { waitReady: false });
  try {
    await first.waitFor(new RegExp(`Metrics at: unix:${socketPath.replaceAll('.', '\\.')}\n`));
    const exit = await within(20_000, 'the second master exits', second.exited);
    assert.equal(exit.code, 1, second.output);
    assert.ok(second.output.includes(`Cannot serve metrics: listen EADDRINUSE: address already in use ${socketPath}\n`), second.output);
    await send(first.url, 2);
    const reply = await request('http://localhost/metrics', { socketPath });
    assert.equal(reply.status, 200);
    assert.match(reply.body, /^forkgate_http_requests_total\{method="GET",code="200"\} 2$/m);
  } finally {
    await second.stop();
    assert.equal((await first.stop()).code, 0);
    rmSync(scratch, { recursive: true, force: true });
  }
});

test('USR2: the new master serves --metrics-bind on the same port and socket file, then alone', async () => {
  const scratch = mkdtempSync(join(tmpdir(), 'forkgate-metrics-'));
  const port = await freePort();
  const socketPath = join(scratch, 'metrics.sock');
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--metrics-bind', `127.0.0.1:${port}`, OPS]);
  let successor = 0;
  try {
    // Scraped all through the upgrade: every scrape answers, from one master or the other. Paced, as
    // prom-client's event loop lag has no sample in a scrape within 10 ms of the last (NaN).
    let oldGone = false;
    void forkgate.exited.then(() => (oldGone = true));
    const scrapes = (async () => {
      const statuses: number[] = [];
      const deadline = Date.now() + 30_000;
      while (!oldGone && statuses.length < 1_000 && Date.now() < deadline) {
        statuses.push((await request(`http://127.0.0.1:${port}/metrics`).catch(() => ({ status: 0 }))).status);
        await setTimeout(20);
      }
      return statuses;
    })();
    forkgate.signal('SIGUSR2');
    const [, pid] = (await forkgate.waitFor(/Upgrading: started a new master \(pid:(\d+)\)/)) as [string, string];
    successor = Number(pid);
    await forkgate.waitFor(new RegExp(`\\[${successor}\\] Metrics at: http://127\\.0\\.0\\.1:${port}/metrics`));
    await forkgate.waitFor(new RegExp(`New master \\(pid:${successor}\\) is serving: this one stops`));
    assert.equal((await forkgate.exited).code, 0);
    const statuses = await scrapes;
    assert.ok(statuses.length > 0, 'scraped during the upgrade');
    assert.deepEqual(
      statuses.filter((status) => status !== 200),
      [],
      `${statuses.length} scrapes`,
    );
    await send(forkgate.url, 4);
    const samples = await scrape(`http://127.0.0.1:${port}/metrics`);
    assert.equal(value(samples, 'forkgate_http_requests_total{method="GET",code="200"}'), 4);
  } finally {
    await forkgate.stop();
    if (successor && isAlive(successor)) process.kill(successor, 'SIGTERM');
    await eventually(() => !successor || !isAlive(successor), 'the new master gone');
  }
  const unix = await start(['-w', '1', '-b', '127.0.0.1:0', '--metrics-bind', `unix:${socketPath}`, OPS]);
  successor = 0;
  try {
    unix.signal('SIGUSR2');
    const [, pid] = (await unix.waitFor(/Upgrading: started a new master \(pid:(\d+)\)/)) as [string, string];
    successor = Number(pid);
    assert.equal((await unix.exited).code, 0);
    const reply = await request('http://localhost/metrics', { socketPath });
    assert.equal(reply.status, 200);
    assert.match(reply.body, /forkgate_workers\{state="ready"\} 1/);
  } finally {
    await unix.stop();
    if (successor && isAlive(successor)) process.kill(successor, 'SIGTERM');
    await eventually(() => !successor || !isAlive(successor), 'the new master gone');
    rmSync(scratch, { recursive: true, force: true });
  }
});

test('forkgate top prints the pool from the admin endpoint, frame by frame', async () => {
  const scratch = mkdtempSync(join(tmpdir(), 'forkgate-top-'));
  const socketPath = join(scratch, 'admin.sock');
  const forkgate = await start(['-w', '2', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS]);
  try {
    await send(forkgate.url, 12);
    const run = spawnSync(process.execPath, [`${ROOT}dist/forkgate.cjs`, 'top', '--frames', '2', '--admin', `unix:${socketPath}`], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(run.status, 0, run.stderr);
    const frames = run.stdout.split(/^(?=\d+ req\/s)/m);
    assert.equal(frames.length, 2, run.stdout);
    assert.match(frames[1]!, /12 requests since start/);
    assert.match(frames[1]!, /^SLOT\s+PID\s+STATE\s+REQUESTS/m);
    for (const pid of forkgate.workerPids()) assert.match(frames[1]!, new RegExp(`^\\d\\s+${pid}\\s+ready\\s+\\d+`, 'm'));
    const unreachable = spawnSync(
      process.execPath,
      [`${ROOT}dist/forkgate.cjs`, 'top', '--admin', `unix:${join(scratch, 'nobody.sock')}`],
      { encoding: 'utf8' },
    );
    assert.equal(unreachable.status, 1);
    assert.match(unreachable.stderr, /^forkgate: error: top: cannot reach the admin endpoint/);

    // watched while it stops: top says so and fails, rather than leave the last frame as if all were well
    const watching = spawn(process.execPath, [`${ROOT}dist/forkgate.cjs`, 'top', '--admin', `unix:${socketPath}`]);
    let shown = '';
    let told = '';
    watching.stdout.setEncoding('utf8').on('data', (chunk: string) => (shown += chunk));
    watching.stderr.setEncoding('utf8').on('data', (chunk: string) => (told += chunk));
    const ended = new Promise<number | null>((resolve) => watching.once('exit', resolve));
    await eventually(() => /req\/s/.test(shown), 'a first frame');
    assert.equal((await forkgate.stop()).code, 0);
    assert.equal(await within(10_000, 'top to end', ended), 1);
    assert.match(told, /^forkgate: error: top: the master at unix:\S+ stopped: its stream of the pool ended\n$/);
  } finally {
    await forkgate.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
});
