// The benchmark's harness: quick mode end to end (every configuration measured, the table printed, no
// errors), the paced load, the least-connections fronts, and reading a share of CPU from profiles. It checks the harness, not the numbers (the
// test suite runs beside it and shares the cores).
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { eventually, FIXTURES, request, ROOT, startRequest } from './helpers/forkgate.ts';
import { freePort } from './helpers/free-port.ts';
import { profileShare } from '../scripts/profile-share.ts';

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
        // req/s, p50, p99, p99.9 and CPU µs/req are numbers
        const cells = row.split('|').map((cell) => cell.trim());
        for (const column of [4, 5, 6, 7, 10]) assert.match(cells[column]!, /^[\d,.]+$/, `column ${column} of ${row}`);
      }
    }
    const json = JSON.parse(readFileSync(join(results, 'quick.json'), 'utf8')) as { rows: { reqPerSec?: number }[] };
    assert.equal(json.rows.length, 3 * CONFIGURATIONS.length);
    assert.ok(json.rows.every((row) => row.reqPerSec! > 0));
  } finally {
    rmSync(results, { recursive: true, force: true });
  }
});

/** Runs a program to its end (bounded), with what it printed. */
function run(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
    const guard = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(guard);
      resolve({ code, stdout, stderr });
    });
  });
}

test('the paced load waits its pace after every response, on one connection each, and counts every answer', {
  timeout: 30_000,
}, async () => {
  const PACE_MS = 50;
  let served = 0;
  const answeredAt = new Map<net.Socket, number>();
  const gapsMs: number[] = [];
  // Every 10th request answers after 100 ms, every 7th with a 503.
  const server = http.createServer((req, res) => {
    const previous = answeredAt.get(req.socket);
    if (previous !== undefined) gapsMs.push(performance.now() - previous);
    const count = ++served;
    const answer = () => {
      res.on('finish', () => answeredAt.set(req.socket, performance.now()));
      res.statusCode = count % 7 === 0 ? 503 : 200;
      res.end('ok\n');
    };
    if (count % 10 === 0) setTimeout(answer, 100);
    else answer();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as net.AddressInfo;
    const { code, stdout, stderr } = await run([`${ROOT}scripts/paced-load.ts`, `${port}`, '2', `${PACE_MS}`, '2'], 20_000);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(/^BENCH_JSON (.*)$/m.exec(stdout)![1]!) as Record<string, number>;

    assert.equal(answeredAt.size, 2, 'one keep-alive connection per loop');
    assert.equal(result.requests, served);
    assert.ok(served <= 2 * (2000 / PACE_MS + 1), `${served} requests in 2 s: more than the pace allows`);
    assert.ok(served >= 10, `only ${served} requests`);
    // (a timer counts from the event loop's cached clock, which may lag by a few ms under load)
    assert.ok(Math.min(...gapsMs) >= PACE_MS * 0.8, `a request came ${Math.min(...gapsMs).toFixed(1)} ms after the previous answer`);
    assert.equal(result.non2xx, Math.floor(served / 7));
    assert.equal(result.socketErrors, 0);
    // a tenth of the answers took 100 ms: p99 is one of them, p50 is not
    assert.ok(result.p50Us! < 100_000 && result.p99Us! >= 100_000 && result.p999Us! >= result.p99Us!, stdout);
  } finally {
    server.close();
  }
});

const noNginx = spawnSync('nginx', ['-v']).error !== undefined && 'nginx not installed';
const noHaproxy = spawnSync('haproxy', ['-v']).error !== undefined && 'haproxy not installed';

/** Output of a started process, kept to wait on. */
function started(args: string[], cwd: string): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk));
  return { child, output: () => output };
}

/**
 * Which backends answered six requests sent one after another through the front `script args`, while the
 * other backend has a request in progress (held 3 s); and that backend's pid.
 */
async function answeredWhileOneIsBusy(script: string, args: string[]): Promise<{ held: number; answered: number[]; servingUser: string }> {
  const cwd = mkdtempSync(join(tmpdir(), 'forkgate-front-test-'));
  const processes: ChildProcess[] = [];
  try {
    const backends = ['b0.sock', 'b1.sock'].map((socket) =>
      started([`${ROOT}scripts/bench.ts`, '--serve', 'plain', `${FIXTURES}bench-backend.mjs`, socket, '1'], cwd),
    );
    processes.push(...backends.map((backend) => backend.child));
    await eventually(() => backends.every((backend) => backend.output().includes('bench: ready')), 'the backends');
    const port = await freePort();
    const front = started([`${ROOT}bench/fronts/${script}`, ...args, `${port}`, 'b0.sock', 'b1.sock'], cwd);
    processes.push(front.child);
    const url = `http://127.0.0.1:${port}/`;
    await eventually(
      () =>
        request(url).then(
          (reply) => reply.status === 200,
          () => false,
        ),
      `the front: ${front.output()}`,
    );

    let holdDone = false;
    const hold = startRequest(`${url}hold`).reply.finally(() => (holdDone = true));
    const holding = await eventually(() => backends.find((backend) => backend.output().includes('holding')), 'the held request');
    const answered: number[] = [];
    for (let i = 0; i < 6; i++) answered.push(Number((await request(url)).headers['x-backend']));
    assert.ok(!holdDone, 'the held request ended before the six others did: the test proves nothing');
    await hold;
    return { held: holding.child.pid!, answered, servingUser: servingUser(front.child.pid!) };
  } finally {
    for (const child of processes) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await Promise.all(
      processes.map((child) => (child.exitCode ?? child.signalCode) !== null || new Promise((resolve) => child.once('exit', resolve))),
    );
    rmSync(cwd, { recursive: true, force: true });
  }
}

/** Who the front's process that serves runs as: nginx's worker, or HAProxy itself (run as root, it drops to its user). */
function servingUser(pid: number): string {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ').filter(Boolean);
  const serving = children[0] ?? String(pid);
  const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${serving}/status`, 'utf8'))![1]!;
  return spawnSync('id', ['-nu', uid], { encoding: 'utf8' }).stdout.trim();
}

const asRoot = process.getuid?.() === 0;

test('HAProxy leastconn sends requests around a backend with one in progress', { skip: noHaproxy, timeout: 30_000 }, async () => {
  const { held, answered, servingUser } = await answeredWhileOneIsBusy('haproxy.mjs', []);
  if (asRoot) assert.equal(servingUser, 'haproxy', 'run as root, HAProxy serves as its own user, as Debian runs it');
  assert.ok(
    answered.every((pid) => pid !== held),
    `${answered} (held: ${held})`,
  );
});

test('nginx least_conn sends requests around a backend with one in progress; plain nginx alternates', {
  skip: noNginx,
  timeout: 30_000,
}, async () => {
  const leastConn = await answeredWhileOneIsBusy('nginx.mjs', ['least_conn']);
  if (asRoot) assert.equal(leastConn.servingUser, 'www-data', "run as root, nginx's worker serves as www-data, as Debian runs it");
  assert.ok(
    leastConn.answered.every((pid) => pid !== leastConn.held),
    `${leastConn.answered} (held: ${leastConn.held})`,
  );
  const roundRobin = await answeredWhileOneIsBusy('nginx.mjs', []);
  assert.equal(roundRobin.answered.filter((pid) => pid === roundRobin.held).length, 3, `${roundRobin.answered} (held: ${roundRobin.held})`);
});

test("a share of CPU from profiles: samples in the window with the modules' code on their stack, idle left out", () => {
  const directory = mkdtempSync(join(tmpdir(), 'forkgate-profiles-'));
  try {
    // A bundle of two lines, the first from src/metrics/recorder.ts, the second from src/edge/edge.ts.
    const bundle = join(directory, 'bundle.cjs');
    writeFileSync(bundle, 'a()\nb()\n');
    writeFileSync(
      `${bundle}.map`,
      JSON.stringify({ version: 3, sources: ['../src/metrics/recorder.ts', '../src/edge/edge.ts'], names: [], mappings: 'AAAA;ACAA' }),
    );
    const frame = (functionName: string, url: string, lineNumber: number) => ({ functionName, url, lineNumber, columnNumber: 0 });
    const url = `file://${bundle}`;
    const profile = {
      startTime: 1_000,
      nodes: [
        { id: 1, callFrame: frame('(root)', '', -1), children: [2, 3, 5] },
        { id: 2, callFrame: frame('recorded', url, 0), children: [4] },
        { id: 3, callFrame: frame('edge', url, 1) },
        // Node's own code called from the metrics': counted with them.
        { id: 4, callFrame: frame('write', 'node:internal/streams', 10) },
        { id: 5, callFrame: frame('(idle)', '', -1) },
      ],
      // at 1,100 (before the window), then 1,300, 1,600, 1,700, 1,900 and 2,400 (after it)
      samples: [2, 4, 3, 5, 2, 3],
      timeDeltas: [100, 200, 300, 100, 200, 500],
    };
    writeFileSync(join(directory, 'one.cpuprofile'), JSON.stringify(profile));
    const share = profileShare(directory, bundle, /\bsrc\/metrics\//, { fromUs: 1_200, toUs: 2_000 });
    assert.deepEqual(share, { busyMs: 0.7, matchedMs: 0.4 });
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});
