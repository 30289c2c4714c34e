/**
 * The benchmark: forkgate against plain Node baselines, in one run, on one machine, with the same apps.
 *
 *   npm run bench                    full run (~11 min): every workload and configuration, 10 s each
 *   npm run bench -- --quick         < 60 s: hello, cpu and io; the baselines and both balancers, 2 s each
 *   npm run bench -- --only cpu      one workload: hello, cpu, io, mixed, paced or tail
 *   npm run bench -- --repeat 3      each row the median of 3 runs, interleaved across servers
 *   npm run bench -- --metrics       hello, forkgate with and without --metrics-bind (scraped every second),
 *                                    and with it under --cpu-prof: the share of CPU the metrics code takes
 *
 * Load comes from wrk (one thread, so it takes at most one of the cores); it shares the machine with the
 * server, so req/s alone cannot tell servers apart. The figure that does is the server's CPU time per
 * request: utime + stime of the server's whole process tree over the measured window, over requests done.
 *
 * `tail` is the exception: a saturated server's p99 is the queue of its bottleneck, not where requests
 * were sent. Its load is paced well below capacity (scripts/paced-load.ts, each connection waiting after
 * every response) and its app (bench/apps/tail.mjs) holds a process 20 ms on every 500th request, so its
 * p99 and p99.9 show how many quick requests were dispatched to a busy process. `paced` is the same load
 * on hello, with no slow request: each server's p99 floor on this machine, which tail's cannot go below.
 *
 * Results: a markdown table on stdout and in bench/results/latest.md, raw numbers in latest.json
 * (quick and --metrics runs write quick.* / metrics.* so they never replace a full run; BENCH_RESULTS_DIR moves them).
 *
 * `scripts/bench.ts --serve plain|reuseport|cluster APP PORT|SOCKET WORKERS` is the baseline server itself,
 * started by the bench: plain Node with http.createServer, nothing of forkgate.
 *
 * Fronts (hello and mixed, beside forkgate --balance proxy): one process forwarding each request to N plain
 * backends (`--serve plain APP SOCKET 1`, on unix sockets as forkgate's units are): nginx, http-proxy,
 * http-proxy-3 and node:http piping, in bench/fronts/; for hello, also the floors of a Node front (the
 * least relay on node:http's server, the same on llhttp driven directly, and an L4 relay with no HTTP at all); for tail, nginx least_conn and HAProxy leastconn,
 * which send each request to the backend with the fewest in progress. For them and forkgate, "front
 * µs/req" is the CPU of the front alone (forkgate's master), the proxy's own cost per request.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import cluster from 'node:cluster';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isAlive, processTree, statFields } from '../src/proc.ts';
import { profileShare } from './profile-share.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const APPS = `${ROOT}bench/apps/`;
const FRONTS = `${ROOT}bench/fronts/`;
const SELF = fileURLToPath(import.meta.url);
const PACED_LOAD = fileURLToPath(new URL('paced-load.ts', import.meta.url));
const CLI = `${ROOT}dist/forkgate.cjs`;
const HOST = '127.0.0.1';

// ---------------------------------------------------------------- what runs

interface Workload {
  name: string;
  connections: number;
  /** For io: the Little's-law ceiling, connections / 20 ms. */
  littleLimit?: number;
  /** Each connection waits this long after a response before its next request (scripts/paced-load.ts); without it, wrk sends flat out. */
  paceMs?: number;
  /** The app in bench/apps/ it runs, if not the one named after it. */
  app?: string;
}

const WORKLOADS: Workload[] = [
  { name: 'hello', connections: 64 },
  { name: 'cpu', connections: 64 },
  { name: 'io', connections: 256, littleLimit: 256 / 0.02 },
  { name: 'mixed', connections: 32 },
  { name: 'paced', connections: 32, paceMs: 8, app: 'hello' },
  { name: 'tail', connections: 32, paceMs: 8 },
];

/** The workloads of --quick. */
const QUICK = ['hello', 'cpu', 'io'];

/** What a configuration needs beyond Node and dist/: a build may predate --threads or --balance proxy; nginx or HAProxy may be absent. */
type Requirement = '--threads' | '--balance proxy' | 'nginx' | 'haproxy' | '--metrics-bind';

interface ServerConfig {
  name: string;
  /** One entry per root process (Node scripts); reuseport-plain and the fronts start several, everything else one. */
  commands: (app: string, port: number) => string[][];
  /** Printed once per root when it serves (forkgate: once all its workers are ready). */
  readyPattern: RegExp;
  /** The processes that only forward requests (forkgate's master, a front): their CPU is "front µs/req". */
  front?: (roots: number[]) => number[];
  requires?: Requirement;
  /** A unix socket (in the working directory) that serves /metrics, scraped every second while measured. */
  metricsSocket?: (port: number) => string;
  /** Its processes write CPU profiles, which tell the share of its CPU its metrics take (metricsPercent). */
  profiled?: boolean;
}

const N = availableParallelism();

function baseline(name: string, mode: 'plain' | 'reuseport' | 'cluster', workers: number): ServerConfig {
  const roots = mode === 'reuseport' ? workers : 1;
  return {
    name,
    commands: (app, port) => Array.from({ length: roots }, () => [SELF, '--serve', mode, app, `${port}`, `${workers}`]),
    readyPattern: /^bench: ready/m,
    // cluster's primary distributes the connections, as forkgate's master does in round-robin
    front: mode === 'cluster' ? (roots) => roots : undefined,
  };
}

function forkgate(flags: string): ServerConfig {
  return {
    name: `forkgate ${flags}`,
    commands: (app, port) => [[CLI, ...flags.split(' '), '-b', `${HOST}:${port}`, app]],
    readyPattern: /Ready: \d+ workers? serving/,
    front: (roots) => roots, // the master alone, not its workers
    requires: flags.includes('--threads') ? '--threads' : flags.includes('--balance proxy') ? '--balance proxy' : undefined,
  };
}

/**
 * `bench/fronts/SCRIPT [ARG] PORT SOCKET...` in front of N plain backends, each a root of its own on a unix
 * socket in the bench's working directory (named after the port, which no two live servers share).
 */
function front(name: string, command: string, requires?: Requirement): ServerConfig {
  const [script, ...args] = command.split(' ');
  return {
    name: `${name} → ${N} backends`,
    commands: (app, port) => {
      const sockets = Array.from({ length: N }, (_, unit) => `backend-${port}-${unit}.sock`);
      return [
        [`${FRONTS}${script}`, ...args, `${port}`, ...sockets],
        ...sockets.map((socket) => [SELF, '--serve', 'plain', app, socket, '1']),
      ];
    },
    readyPattern: /^bench: ready/m,
    front: (roots) => processTree(roots.slice(0, 1)), // nginx: its master and its worker; HAProxy: one process
    requires,
  };
}

/** The same forkgate with --metrics-bind, scraped every second as Prometheus would. */
function withMetrics(config: ServerConfig): ServerConfig {
  const socket = (port: number) => `metrics-${port}.sock`;
  return {
    ...config,
    name: `${config.name} + metrics`,
    commands: (app, port) =>
      config.commands(app, port).map((command) => [...command.slice(0, -1), '--metrics-bind', `unix:${socket(port)}`, command.at(-1)!]),
    metricsSocket: socket,
    requires: '--metrics-bind',
  };
}

const SINGLE = baseline('single', 'plain', 1);
const PLAIN = baseline('reuseport-plain', 'reuseport', N);
const CLUSTER = baseline('cluster', 'cluster', N);
const FG_RR = forkgate(`--balance round-robin -w ${N}`);
const FG_REUSEPORT = forkgate(`--balance reuseport -w ${N}`);
const BASE = [SINGLE, PLAIN, CLUSTER, FG_RR, FG_REUSEPORT];

const FG_PROXY = forkgate(`--balance proxy -w ${N}`);
const NGINX = front('nginx (worker_processes 1)', 'nginx.mjs', 'nginx');
const HTTP_PROXY = front('http-proxy', 'node.mjs http-proxy');
/** What --balance proxy is measured against: nginx, the bar to aim at, and three Node forwarding engines on equal footing. */
const PROXY_ROWS = [FG_PROXY, NGINX, HTTP_PROXY, front('http-proxy-3', 'node.mjs http-proxy-3'), front('node:http pipe', 'node.mjs pipe')];
/** The least a Node front costs: on node:http's server, on llhttp driven directly, and with no HTTP at all. */
const NODE_FLOORS = [
  front('node:http floor', 'node.mjs floor'),
  front('llhttp floor', 'node.mjs llhttp'),
  front('Node L4 relay', 'node.mjs l4'),
];
/** Fronts that send each request to the backend with the fewest in progress, as --balance proxy does. */
const NGINX_LEAST_CONN = front('nginx least_conn (worker_processes 1)', 'nginx.mjs least_conn', 'nginx');
const HAPROXY = front('HAProxy leastconn (nbthread 1)', 'haproxy.mjs', 'haproxy');

/** The same with metrics, its processes profiled: what share of their CPU the metrics code takes. */
function profiled(config: ServerConfig): ServerConfig {
  return { ...withMetrics(config), name: `${config.name} + metrics, profiled`, profiled: true };
}

/** What metrics cost: each forkgate mode without and with them, and with them profiled. */
const METRICS_ROWS = [FG_RR, FG_REUSEPORT, FG_PROXY].flatMap((config) => [config, withMetrics(config), profiled(config)]);

/** The configurations each workload runs in a full run; --quick keeps BASE for hello, cpu and io. */
const FULL_PLAN: Record<string, ServerConfig[]> = {
  hello: [
    ...BASE,
    forkgate(`--balance round-robin -w ${2 * N + 1}`),
    forkgate(`--balance reuseport -w ${2 * N + 1}`),
    ...PROXY_ROWS,
    ...NODE_FLOORS,
    withMetrics(FG_RR),
    withMetrics(FG_REUSEPORT),
    withMetrics(FG_PROXY),
  ],
  cpu: [
    ...BASE,
    forkgate(`--balance round-robin -w ${2 * N + 1}`),
    forkgate(`--balance reuseport -w ${2 * N + 1}`),
    // equal unit count: 2 threads in one process vs -w 2 above; 4 threads in one process vs 4 processes
    // (--threads implies --balance reuseport, so the process rows it compares with use it too)
    forkgate('--threads 2 -w 1'),
    forkgate('--threads 4 -w 1'),
    forkgate('--balance reuseport -w 4'),
  ],
  io: [...BASE, forkgate(`-k sync -w ${N}`), forkgate(`-k sync -w ${2 * N + 1}`)],
  mixed: [...BASE, ...PROXY_ROWS],
  paced: [CLUSTER, FG_RR, FG_PROXY, NGINX_LEAST_CONN, HAPROXY],
  tail: [PLAIN, CLUSTER, FG_RR, FG_PROXY, NGINX_LEAST_CONN, HAPROXY],
};

// ---------------------------------------------------------------- one measurement

/** What wrk's report script and scripts/paced-load.ts print. */
interface LoadResult {
  requests: number;
  durationUs: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  non2xx: number;
  socketErrors: number;
}

interface Row {
  workload: string;
  server: string;
  connections: number;
  skipped?: string;
  error?: string;
  requests?: number;
  reqPerSec?: number;
  p50Ms?: number;
  p99Ms?: number;
  p999Ms?: number;
  non2xx?: number;
  socketErrors?: number;
  processes?: number;
  rssMiB?: number;
  cpuSeconds?: number;
  cpuUsPerReq?: number;
  /** The same for the front processes alone (ServerConfig.front). */
  frontCpuUsPerReq?: number;
  /** CPU used by other programs during the measurement, in cores: above ~0.1 the row is disturbed. */
  otherCores?: number;
  /** This row over reuseport-plain / over cluster, for the same workload. */
  vsPlain?: { reqPerSec: number; cpuUsPerReq: number };
  vsCluster?: { reqPerSec: number; cpuUsPerReq: number };
  /** io only: req/s over connections / 20 ms. */
  littleFraction?: number;
  /** A paced workload's wait between a response and the next request: its req/s is the load's, not the server's. */
  paceMs?: number;
  /** A profiled row: the percent of its processes' sampled CPU with forkgate's metrics code on the stack. */
  metricsPercent?: number;
}

// wrk's done() hook prints the numbers as JSON: sturdier than parsing its human-readable report.
// (errors.status counts responses with a status ≥ 400; the bench apps answer 200 or, on a throw, 500.)
const WRK_SCRIPT = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"durationUs":%.0f,"p50Us":%.0f,"p99Us":%.0f,"p999Us":%.0f,"non2xx":%.0f,"socketErrors":%.0f}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.status, e.connect + e.read + e.write + e.timeout))
end
`;

let wrkScriptPath = '';

/** wrk, or the paced load for a paced workload: a process apart from the server either way. */
function runLoad(workload: Workload, port: number, seconds: number): Promise<LoadResult> {
  const { connections, paceMs } = workload;
  const [command, args] =
    paceMs === undefined
      ? ['wrk', ['-t', '1', '-c', `${connections}`, '-d', `${seconds}s`, '--timeout', '5s', '-s', wrkScriptPath, `http://${HOST}:${port}/`]]
      : [process.execPath, [PACED_LOAD, `${port}`, `${connections}`, `${paceMs}`, `${seconds}`]];
  return new Promise((resolve, reject) => {
    const load = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    load.stdout.on('data', (chunk: Buffer) => (output += chunk));
    load.stderr.on('data', (chunk: Buffer) => (output += chunk));
    const guard = setTimeout(() => load.kill('SIGKILL'), (seconds + 15) * 1000); // its duration bounds it; this bounds a hang
    load.on('error', reject);
    load.on('exit', (code) => {
      clearTimeout(guard);
      const json = /^BENCH_JSON (.*)$/m.exec(output);
      if (code === 0 && json) resolve(JSON.parse(json[1]!) as LoadResult);
      else reject(new Error(`${paceMs === undefined ? 'wrk' : 'paced load'} exited ${code}: ${output.trim()}`));
    });
  });
}

// ---- the server's process tree, from /proc

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** utime + stime in seconds per process of the tree (all threads of each process included). */
function cpuSeconds(roots: number[]): Map<number, number> {
  const usage = new Map<number, number>();
  for (const pid of processTree(roots)) {
    const fields = statFields(pid);
    // utime and stime are stat fields 14 and 15; fields[] starts at field 3
    if (fields) usage.set(pid, (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS);
  }
  return usage;
}

/** CPU seconds the whole machine spent in user and system mode (softirq time, which no process is charged with, left out). */
function machineCpuSeconds(): number {
  const [user, nice, system] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  return (user! + nice! + system!) / CLOCK_TICKS;
}

/** CPU seconds of this process plus its reaped children: the bench's own share, its load's (wrk, paced-load) included. */
function benchCpuSeconds(): number {
  const fields = statFields(process.pid)!;
  // utime, stime, cutime, cstime are stat fields 14 to 17
  return fields.slice(11, 15).reduce((sum, ticks) => sum + Number(ticks), 0) / CLOCK_TICKS;
}

function rssMiB(roots: number[]): { rssMiB: number; processes: number } {
  const tree = processTree(roots);
  let kib = 0;
  for (const pid of tree) {
    try {
      kib += Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // ended while we looked
    }
  }
  return { rssMiB: kib / 1024, processes: tree.length };
}

// ---- starting and stopping a server

class Server {
  /** Started and not yet stopped: killed if the bench itself is interrupted. */
  static readonly running = new Set<Server>();
  readonly processes: ChildProcess[];
  output = '';

  constructor(commands: string[][], cwd: string, env: NodeJS.ProcessEnv) {
    Server.running.add(this);
    this.processes = commands.map((args) => {
      const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
      const keep = (chunk: Buffer) => (this.output = (this.output + chunk).slice(-20_000));
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      return child;
    });
  }

  get roots(): number[] {
    return this.processes.map((child) => child.pid!);
  }

  private exited(child: ChildProcess): boolean {
    return child.exitCode !== null || child.signalCode !== null;
  }

  /** Every root said it serves and a GET answers 200; bounded by `timeoutMs`. */
  async ready(port: number, pattern: RegExp, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const everywhere = new RegExp(pattern.source, `${pattern.flags}g`);
    for (;;) {
      const dead = this.processes.find((child) => this.exited(child));
      if (dead) throw new Error(`server exited (${dead.exitCode ?? dead.signalCode}) before it was ready:\n${this.output.trim()}`);
      if ((this.output.match(everywhere) ?? []).length >= this.processes.length && (await getStatus(port)) === 200) return;
      if (Date.now() > deadline) throw new Error(`server not ready after ${timeoutMs / 1000} s:\n${this.output.trim()}`);
      await sleep(100);
    }
  }

  /** SIGTERM, then SIGKILL for the whole tree after 10 s; also reaps descendants a root left behind. */
  async stop(): Promise<void> {
    const tree = processTree(this.roots);
    for (const child of this.processes) if (!this.exited(child)) child.kill('SIGTERM');
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && tree.some(isAlive)) await sleep(50);
    for (const pid of tree) {
      try {
        if (isAlive(pid)) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await Promise.all(this.processes.map((child) => (this.exited(child) ? null : new Promise((resolve) => child.once('exit', resolve)))));
    Server.running.delete(this);
  }

  kill(): void {
    for (const pid of processTree(this.roots)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

function getStatus(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: HOST, port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(2000, () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** GET /metrics over a unix socket, the answer read and dropped (the server is not up yet: nothing). */
function scrape(socketPath: string): void {
  http
    .get({ socketPath, path: '/metrics', agent: false }, (res) => res.resume())
    .on('error', () => {})
    .setTimeout(2000, function (this: http.ClientRequest) {
      this.destroy();
    });
}

/** A port free right now on 127.0.0.1 (the kernel picks it; every process of a server then binds it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, HOST, () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** Whole seconds: wrk's -d takes no fractions. */
interface Timing {
  warmupSeconds: number;
  seconds: number;
}

/** How the paced workloads load the server (they share their connections and pace). */
function pacedLoadText(repeat: number): string {
  const paced = WORKLOADS.filter((workload) => workload.paceMs !== undefined);
  const [{ connections, paceMs }] = paced as [Workload];
  const names = paced.map((workload) => `${workload.name}${workload.app ? ` (the ${workload.app} app)` : ''}`).join(' and ');
  return (
    `${names} ${paced.length > 1 ? 'are' : 'is'} paced instead (scripts/paced-load.ts): ${connections} keep-alive connections, each waiting ${paceMs} ms ` +
    `after a response before its next request, well below capacity; percentiles exact from every sample${repeat > 1 ? ', the median by p99' : ''}. `
  );
}

async function measure(workload: Workload, config: ServerConfig, timing: Timing, context: RunContext): Promise<Row> {
  const named: Row = { workload: workload.name, server: config.name, connections: workload.connections, paceMs: workload.paceMs };
  if (config.requires && context.unavailable.has(config.requires)) return { ...named, skipped: `${config.requires} not available` };
  const port = await freePort();
  const profiles = config.profiled ? mkdtempSync(join(context.cwd, 'profiles-')) : null;
  const env = profiles ? { ...context.env, NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profiles}` } : context.env;
  const server = new Server(config.commands(`${APPS}${workload.app ?? workload.name}.mjs`, port), context.cwd, env);
  const scraper = config.metricsSocket ? setInterval(() => scrape(join(context.cwd, config.metricsSocket!(port))), 1000) : null;
  const window = { fromUs: 0, toUs: 0 };
  let row: Row;
  try {
    await server.ready(port, config.readyPattern);
    await runLoad(workload, port, timing.warmupSeconds);
    const frontPids = new Set(config.front?.(server.roots));
    const [before, machineBefore, benchBefore] = [cpuSeconds(server.roots), machineCpuSeconds(), benchCpuSeconds()];
    window.fromUs = Number(process.hrtime.bigint() / 1000n);
    // RSS at the end of the load, while the connections are still busy
    let memory = { rssMiB: 0, processes: 0 };
    const sampler = setTimeout(() => (memory = rssMiB(server.roots)), Math.max(0, timing.seconds - 0.5) * 1000);
    const load = await runLoad(workload, port, timing.seconds);
    clearTimeout(sampler);
    window.toUs = Number(process.hrtime.bigint() / 1000n);
    const [after, machineAfter, benchAfter] = [cpuSeconds(server.roots), machineCpuSeconds(), benchCpuSeconds()];
    let cpu = 0;
    let frontCpu = 0;
    for (const [pid, seconds] of after) {
      cpu += seconds - (before.get(pid) ?? 0);
      if (frontPids.has(pid)) frontCpu += seconds - (before.get(pid) ?? 0);
    }
    const reqPerSec = load.requests / (load.durationUs / 1e6);
    // What neither the server nor the bench and its load used: another program competing for the cores.
    const otherCores = (machineAfter - machineBefore - cpu - (benchAfter - benchBefore)) / (load.durationUs / 1e6);
    row = {
      ...named,
      requests: load.requests,
      reqPerSec,
      p50Ms: load.p50Us / 1000,
      p99Ms: load.p99Us / 1000,
      p999Ms: load.p999Us / 1000,
      non2xx: load.non2xx,
      socketErrors: load.socketErrors,
      ...memory,
      cpuSeconds: cpu,
      otherCores: Math.max(0, otherCores),
      cpuUsPerReq: load.requests > 0 ? (cpu * 1e6) / load.requests : undefined,
      frontCpuUsPerReq: config.front && load.requests > 0 ? (frontCpu * 1e6) / load.requests : undefined,
      littleFraction: workload.littleLimit ? reqPerSec / workload.littleLimit : undefined,
    };
  } catch (error) {
    row = { ...named, error: (error as Error).message.replace(/\s+/g, ' ').slice(0, 300) };
  } finally {
    if (scraper) clearInterval(scraper);
    await server.stop(); // a graceful stop: each process writes its profile as it exits
  }
  if (profiles && row.requests !== undefined) {
    const share = profileShare(profiles, CLI, /\bsrc\/metrics\//, window);
    row.metricsPercent = share.busyMs > 0 ? (100 * share.matchedMs) / share.busyMs : undefined;
  }
  return row;
}

// ---------------------------------------------------------------- the run

/** Cores other programs may use during a measurement before its numbers count as disturbed. */
const OTHER_LOAD_LIMIT = 0.15;

interface RunContext {
  cwd: string;
  env: NodeJS.ProcessEnv;
  unavailable: Set<Requirement>;
}

function parseOptions(argv: string[]): { quick: boolean; only: string | undefined; repeat: number; metrics: boolean } {
  let quick = false;
  let metrics = false;
  let only: string | undefined;
  let repeat = 1;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') quick = true;
    else if (argv[i] === '--metrics') metrics = true;
    else if (argv[i] === '--only' && WORKLOADS.some((workload) => workload.name === argv[i + 1])) only = argv[++i];
    else if (argv[i] === '--repeat' && /^[1-9]$/.test(argv[i + 1] ?? '')) repeat = Number(argv[++i]);
    else {
      console.error(
        `usage: node scripts/bench.ts [--quick] [--only ${WORKLOADS.map((workload) => workload.name).join('|')}] [--repeat 1-9] [--metrics]`,
      );
      process.exit(2);
    }
  }
  return { quick, only, repeat, metrics };
}

/**
 * The row of median throughput among a configuration's repeated runs, or of median p99 for a paced
 * workload (whose throughput the pace sets). The runs of a workload's configurations are interleaved, so
 * the machine's speed drift spreads over all of them alike.
 */
function medianRow(runs: Row[], by: 'reqPerSec' | 'p99Ms'): Row {
  const failed = runs.find((row) => row.error ?? row.skipped);
  if (failed) return failed;
  const sorted = [...runs].sort((a, b) => a[by]! - b[by]!);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function ensureWrk(): void {
  if (spawnSync('wrk', ['-v']).error === undefined) return;
  if (process.getuid?.() === 0) {
    console.error('wrk not found; installing it with apt-get');
    spawnSync('apt-get', ['install', '-y', 'wrk'], { stdio: 'inherit' });
    if (spawnSync('wrk', ['-v']).error === undefined) return;
  }
  console.error('The benchmark needs wrk (https://github.com/wg/wrk): apt-get install wrk, or brew install wrk.');
  process.exit(2);
}

/** A build from before --threads or --balance proxy rejects the flag with exit 2; nginx or HAProxy may not be installed. */
function unavailable(cwd: string): Set<Requirement> {
  const rejects = (...flags: string[]) =>
    spawnSync(process.execPath, [CLI, ...flags, '--print-config'], { cwd, stdio: 'ignore' }).status === 2;
  const missing = new Set<Requirement>();
  if (rejects('--threads', '2')) missing.add('--threads');
  if (rejects('--balance', 'proxy')) missing.add('--balance proxy');
  if (spawnSync('nginx', ['-v'], { stdio: 'ignore' }).error !== undefined) missing.add('nginx');
  if (spawnSync('haproxy', ['-v'], { stdio: 'ignore' }).error !== undefined) missing.add('haproxy');
  if (rejects('--metrics-bind', '127.0.0.1:0')) missing.add('--metrics-bind');
  return missing;
}

/** Cores busy over one second before the run: other work skews every number. */
async function busyCores(): Promise<number> {
  const before = machineCpuSeconds() - benchCpuSeconds();
  await sleep(1000);
  return machineCpuSeconds() - benchCpuSeconds() - before;
}

function machine(): { date: string; node: string; cpu: string; nproc: number; commit: string; build: string } {
  const git = (...args: string[]) => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
  const dirty = git('status', '--porcelain', '--', 'src', 'scripts/build.ts', 'package.json') !== '';
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    nproc: N,
    commit: `${git('rev-parse', '--short', 'HEAD') || 'unknown'}${dirty ? ' (with uncommitted changes)' : ''}`,
    build: statSync(CLI).mtime.toISOString(),
  };
}

/** Ratios against reuseport-plain and cluster of the same workload. */
function addRatios(rows: Row[]): void {
  const ratio = (row: Row, reference: Row | undefined) =>
    reference?.reqPerSec && reference.cpuUsPerReq && row.reqPerSec !== undefined && row.cpuUsPerReq !== undefined
      ? { reqPerSec: row.reqPerSec / reference.reqPerSec, cpuUsPerReq: row.cpuUsPerReq / reference.cpuUsPerReq }
      : undefined;
  for (const row of rows) {
    const same = (server: string) => rows.find((other) => other.workload === row.workload && other.server === server);
    row.vsPlain = ratio(row, same(PLAIN.name));
    row.vsCluster = ratio(row, same(CLUSTER.name));
  }
}

/** A ratio of two rows of one workload that is a target for --balance proxy, or that puts one in context. */
interface Target {
  workload: string;
  metric: 'reqPerSec' | 'cpuUsPerReq' | 'frontCpuUsPerReq' | 'backendCpuUsPerReq' | 'p99Ms' | 'metricsPercent';
  server: string;
  /** The row the server's figure is divided by; without one, the figure itself is held to the bound. */
  reference?: string;
  /** The bound the ratio must meet; without one, the ratio is there to be read. */
  atLeast?: number;
  atMost?: number;
  note?: string;
}

const TARGETS: Target[] = [
  { workload: 'hello', metric: 'reqPerSec', server: FG_PROXY.name, reference: HTTP_PROXY.name, atLeast: 1.5 },
  { workload: 'hello', metric: 'cpuUsPerReq', server: FG_PROXY.name, reference: HTTP_PROXY.name },
  {
    workload: 'hello',
    metric: 'frontCpuUsPerReq',
    server: FG_PROXY.name,
    reference: HTTP_PROXY.name,
    note: "the master's cost per request over http-proxy's",
  },
  { workload: 'hello', metric: 'reqPerSec', server: FG_PROXY.name, reference: NGINX.name, note: 'nginx is the bar to aim at' },
  { workload: 'hello', metric: 'cpuUsPerReq', server: FG_PROXY.name, reference: NGINX.name },
  { workload: 'hello', metric: 'frontCpuUsPerReq', server: FG_PROXY.name, reference: NGINX.name, atMost: 1.5 },
  {
    workload: 'hello',
    metric: 'backendCpuUsPerReq',
    server: FG_PROXY.name,
    reference: NGINX.name,
    atMost: 1.2,
    note: "forkgate's units against plain Node processes",
  },
  {
    workload: 'hello',
    metric: 'frontCpuUsPerReq',
    server: NODE_FLOORS[0]!.name,
    reference: NGINX.name,
    note: 'the least a front on node:http costs',
  },
  {
    workload: 'hello',
    metric: 'frontCpuUsPerReq',
    server: NODE_FLOORS[1]!.name,
    reference: NGINX.name,
    note: "the least a front on Node's HTTP parser costs, without node:http's server",
  },
  {
    workload: 'hello',
    metric: 'frontCpuUsPerReq',
    server: NODE_FLOORS[2]!.name,
    reference: NGINX.name,
    note: "the least Node's sockets cost",
  },
  ...[FG_RR, FG_REUSEPORT].flatMap((config): Target[] => [
    {
      workload: 'hello',
      metric: 'cpuUsPerReq',
      server: config.name,
      reference: CLUSTER.name,
      atMost: 1.05,
      note: 'every unconfigured feature free',
    },
    { workload: 'hello', metric: 'reqPerSec', server: config.name, reference: CLUSTER.name, atLeast: 0.97 },
  ]),
  { workload: 'mixed', metric: 'p99Ms', server: FG_PROXY.name, reference: FG_RR.name, atMost: 0.5 },
  {
    workload: 'paced',
    metric: 'p99Ms',
    server: FG_PROXY.name,
    reference: CLUSTER.name,
    note: "with no slow request: the floor under tail's ratio on this machine",
  },
  { workload: 'tail', metric: 'p99Ms', server: FG_PROXY.name, reference: CLUSTER.name, atMost: 0.25 },
  { workload: 'tail', metric: 'p99Ms', server: FG_PROXY.name, reference: HAPROXY.name, atMost: 0.5 },
  ...[FG_RR, FG_REUSEPORT, FG_PROXY].map(
    (config): Target => ({
      workload: 'hello',
      metric: 'cpuUsPerReq',
      server: withMetrics(config).name,
      reference: config.name,
      atMost: 1.02,
      note: 'what metrics cost, as far as two runs tell it',
    }),
  ),
  ...[FG_RR, FG_REUSEPORT, FG_PROXY].map(
    (config): Target => ({
      workload: 'hello',
      metric: 'metricsPercent',
      server: profiled(config).name,
      atMost: 2,
      note: 'what metrics cost, from CPU profiles of one run',
    }),
  ),
];

const METRIC_LABELS: Record<Target['metric'], string> = {
  reqPerSec: 'req/s',
  cpuUsPerReq: 'CPU µs/req',
  frontCpuUsPerReq: 'front µs/req',
  backendCpuUsPerReq: 'backends µs/req',
  p99Ms: 'p99',
  metricsPercent: 'metrics % of CPU',
};

interface TargetResult extends Target {
  ratio?: number;
  met?: boolean;
  /** Why there is no ratio: a row skipped or failed. */
  missing?: string;
}

/** The targets whose two rows this run has (--quick has none), measured or not. */
function evaluateTargets(rows: Row[]): TargetResult[] {
  const find = (workload: string, server: string) => rows.find((row) => row.workload === workload && row.server === server);
  return TARGETS.flatMap((target) => {
    const row = find(target.workload, target.server);
    const reference = target.reference === undefined ? null : find(target.workload, target.reference);
    if (!row || reference === undefined) return [];
    const [value, base] = [metricOf(row, target.metric), reference ? metricOf(reference, target.metric) : 1];
    if (value === undefined || !base) {
      const reason = [row, reference].map((which) => which?.skipped ?? which?.error).find(Boolean);
      return { ...target, missing: `not measured${reason ? ` (${reason})` : ''}` };
    }
    const ratio = value / base;
    const met = target.atLeast !== undefined ? ratio >= target.atLeast : target.atMost !== undefined ? ratio <= target.atMost : undefined;
    return { ...target, ratio, met };
  });
}

/** A row's figure; the backends' CPU is the whole tree's less the front's. */
function metricOf(row: Row, metric: Target['metric']): number | undefined {
  if (metric !== 'backendCpuUsPerReq') return row[metric];
  return row.cpuUsPerReq !== undefined && row.frontCpuUsPerReq !== undefined ? row.cpuUsPerReq - row.frontCpuUsPerReq : undefined;
}

function targetsTable(results: TargetResult[]): string {
  const lines = ['| workload | figure | value | target |', '|---|---|--:|---|'];
  for (const result of results) {
    const bound = result.atLeast !== undefined ? `≥ ${result.atLeast}` : result.atMost !== undefined ? `≤ ${result.atMost}` : '';
    const verdict = result.missing ?? (result.met === undefined ? '' : result.met ? `${bound}: met` : `${bound}: **not met**`);
    const target = [verdict, result.note].filter(Boolean).join('; ');
    lines.push(
      `| ${result.workload} | ${METRIC_LABELS[result.metric]}: ${result.server}${result.reference ? ` ÷ ${result.reference}` : ''} | ${result.ratio?.toFixed(2) ?? ''} | ${target} |`,
    );
  }
  return lines.join('\n');
}

function table(rows: Row[]): string {
  const fixed = (value: number | undefined, digits: number) => (value === undefined ? '' : value.toFixed(digits));
  // ratios far below 1 (the sync rows) keep two significant digits instead of rounding to 0.00
  const ratio = (value: number | undefined) => (value === undefined ? '' : value >= 0.1 ? value.toFixed(2) : value.toPrecision(2));
  const percent = (fraction: number) => (fraction >= 0.1 ? (fraction * 100).toFixed(0) : (fraction * 100).toPrecision(2));
  const whole = (value: number | undefined) => (value === undefined ? '' : Math.round(value).toLocaleString('en-US'));
  const lines = [
    '| workload | server | conns | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx + socket errors | RSS MiB (procs) | CPU µs/req | front µs/req | req/s ÷ plain | µs/req ÷ plain | req/s ÷ cluster | µs/req ÷ cluster | note |',
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|',
  ];
  for (const row of rows) {
    const notes = row.error ? [`ERROR: ${row.error}`] : row.skipped ? [`skipped: ${row.skipped}`] : [];
    if (row.littleFraction !== undefined) notes.push(`${percent(row.littleFraction)} % of Little's limit`);
    if (row.metricsPercent !== undefined) notes.push(`metrics: ${row.metricsPercent.toFixed(2)} % of its CPU (profiled)`);
    if (row.otherCores! > OTHER_LOAD_LIMIT) notes.push(`busy machine: other programs used ${row.otherCores!.toFixed(2)} cores`);
    const note = notes.join('; ');
    const measured = row.requests !== undefined;
    lines.push(
      `| ${[
        row.workload,
        row.server,
        row.connections,
        whole(row.reqPerSec),
        fixed(row.p50Ms, 2),
        fixed(row.p99Ms, 2),
        fixed(row.p999Ms, 2),
        measured ? `${row.non2xx} + ${row.socketErrors}` : '',
        measured ? `${fixed(row.rssMiB, 0)} (${row.processes})` : '',
        fixed(row.cpuUsPerReq, 1),
        fixed(row.frontCpuUsPerReq, 1),
        ratio(row.vsPlain?.reqPerSec),
        ratio(row.vsPlain?.cpuUsPerReq),
        ratio(row.vsCluster?.reqPerSec),
        ratio(row.vsCluster?.cpuUsPerReq),
        note,
      ].join(' | ')} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  ensureWrk();
  if (!existsSync(CLI)) {
    console.error(`${CLI} is missing: build it first with \`npm run build\`.`);
    process.exit(2);
  }
  // An empty working directory: no forkgate.config.* is picked up; and no FORKGATE_*/PORT/WEB_CONCURRENCY
  // from the caller's environment changes a configuration.
  const cwd = mkdtempSync(join(tmpdir(), 'forkgate-bench-'));
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const server of Server.running) server.kill();
      rmSync(cwd, { recursive: true, force: true });
      process.exit(130);
    });
  }
  wrkScriptPath = join(cwd, 'report.lua');
  writeFileSync(wrkScriptPath, WRK_SCRIPT);
  const { ROUNDS_PER_MS } = (await import(pathToFileURL(`${APPS}cpu.mjs`).href)) as { ROUNDS_PER_MS: number };
  const env: NodeJS.ProcessEnv = { BENCH_CPU_ROUNDS_PER_MS: `${ROUNDS_PER_MS}` };
  for (const [name, value] of Object.entries(process.env)) {
    if (!/^(FORKGATE_|WEB_CONCURRENCY$|PORT$|NODE_OPTIONS$|BENCH_)/.test(name)) env[name] = value;
  }
  const context: RunContext = { cwd, env, unavailable: unavailable(cwd) };
  const timing: Timing = options.quick ? { warmupSeconds: 1, seconds: 2 } : { warmupSeconds: 1, seconds: 10 };
  const only = options.metrics ? 'hello' : options.only;
  const plan = WORKLOADS.filter((workload) => (only ? workload.name === only : !options.quick || QUICK.includes(workload.name)));

  const busyBefore = await busyCores();
  if (busyBefore > OTHER_LOAD_LIMIT) console.error(`warning: other programs kept ${busyBefore.toFixed(2)} cores busy before the run`);
  const started = Date.now();
  const configsOf = (workload: Workload) => (options.metrics ? METRICS_ROWS : options.quick ? BASE : FULL_PLAN[workload.name]!);
  let measurementsLeft = plan.reduce((sum, workload) => sum + configsOf(workload).length, 0) * options.repeat;
  const rows: Row[] = [];
  try {
    for (const workload of plan) {
      const configs = configsOf(workload);
      const runs = new Map(configs.map((config) => [config, [] as Row[]]));
      for (let round = 1; round <= options.repeat; round++) {
        for (const config of configs) {
          let row = await measure(workload, config, timing, context);
          measurementsLeft--;
          // Another program took a share of the cores: a full run measures again and keeps the least
          // disturbed, up to twice per row and while the run, with this retry and the rows left (each
          // load's seconds plus ~1-2 s to start and stop the server; 3 s counted), ends within 14 minutes.
          const secondsAhead = () => (measurementsLeft + 1) * (timing.warmupSeconds + timing.seconds + 3);
          const mayRetry = () =>
            !options.quick && Date.now() - started + secondsAhead() * 1000 < 14 * 60_000 && row.otherCores! > OTHER_LOAD_LIMIT;
          for (let retry = 0; retry < 2 && mayRetry(); retry++) {
            const again = await measure(workload, config, timing, context);
            if (again.otherCores! < row.otherCores!) row = again;
          }
          runs.get(config)!.push(row);
          const summary =
            row.error ??
            row.skipped ??
            `${Math.round(row.reqPerSec!)} req/s, ${row.cpuUsPerReq?.toFixed(1)} µs/req, other programs ${row.otherCores?.toFixed(2)} cores`;
          console.error(
            `${workload.name.padEnd(6)} ${config.name.padEnd(40)} ${options.repeat > 1 ? `[${round}/${options.repeat}] ` : ''}${summary}`,
          );
        }
      }
      for (const config of configs) rows.push(medianRow(runs.get(config)!, workload.paceMs === undefined ? 'reqPerSec' : 'p99Ms'));
    }
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
  addRatios(rows);
  const targets = evaluateTargets(rows);

  const meta = {
    ...machine(),
    mode: options.metrics ? 'metrics' : options.quick ? 'quick' : 'full',
    repeat: options.repeat,
    seconds: timing.seconds,
    warmupSeconds: timing.warmupSeconds,
    cpuRoundsPerMs: ROUNDS_PER_MS,
    otherCoresBefore: busyBefore,
    elapsedSeconds: Math.round((Date.now() - started) / 1000),
  };
  const markdown = [
    `# forkgate benchmark (${meta.mode} run)`,
    '',
    `${meta.date} · Node ${meta.node} · ${meta.cpu} · nproc ${meta.nproc} · commit ${meta.commit} · dist built ${meta.build}`,
    '',
    `wrk -t 1, ${timing.seconds} s per row after ${timing.warmupSeconds} s of warm-up, on the same machine as the server` +
      `${options.repeat > 1 ? `; each row the median (by req/s) of ${options.repeat} runs interleaved with the other servers'` : ''}. ` +
      pacedLoadText(options.repeat) +
      "CPU µs/req: utime + stime of the server's whole process tree over the measured window, over requests completed. " +
      'RSS: VmRSS summed over that tree near the end of the load. "plain" = reuseport-plain (N processes with SO_REUSEPORT, no master). ' +
      "Little's limit for io: connections / 20 ms = 12,800 req/s. " +
      `"→ ${N} backends": one front process forwarding each request, round-robin over keep-alive connections, to ${N} plain Node processes on unix sockets ` +
      '(bench/fronts/: nginx 1 worker process with upstream keepalive, http-proxy 1.18 and http-proxy-3 with a keep-alive http.Agent, http.request piped both ways with the same agent; ' +
      "node:http floor: the least relay on node:http's server, no edge, a response with a length passed on as it came; llhttp floor: the same relay on node:http's parser driven directly, each socket read natively into it, no IncomingMessage or ServerResponse; Node L4 relay: each client connection piped to one backend, no HTTP); " +
      'nginx least_conn and HAProxy leastconn (1 thread, http-reuse always) send each request to the backend with the fewest in progress instead. ' +
      "front µs/req: the CPU of the front alone (forkgate: its master; cluster: its primary), the forwarding's own cost per request.",
    '',
    ...(rows.some((row) => row.otherCores! > OTHER_LOAD_LIMIT)
      ? [
          `**Warning: other programs used more than ${OTHER_LOAD_LIMIT} cores during the rows marked "busy machine"; their numbers are skewed.**`,
          '',
        ]
      : []),
    table(rows),
    '',
    ...(targets.length > 0 ? ['## Targets', '', targetsTable(targets), ''] : []),
  ].join('\n');
  console.log(markdown);
  const directory = process.env.BENCH_RESULTS_DIR ?? `${ROOT}bench/results`;
  mkdirSync(directory, { recursive: true });
  const base = options.metrics ? 'metrics' : options.quick ? 'quick' : 'latest';
  writeFileSync(join(directory, `${base}.md`), markdown);
  writeFileSync(join(directory, `${base}.json`), `${JSON.stringify({ meta, rows, targets }, null, 2)}\n`);
  if (rows.some((row) => row.error)) process.exitCode = 1;
}

// ---------------------------------------------------------------- the baseline server

async function serveBaseline([mode, app, address, workers]: string[]): Promise<void> {
  if (mode === 'cluster' && cluster.isPrimary) {
    // The primary does not load the app, as in the usual cluster set-up; it only distributes connections.
    let listening = 0;
    cluster.on('listening', () => ++listening === Number(workers) && console.log('bench: ready'));
    process.on('SIGTERM', () => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
      cluster.on('exit', () => Object.keys(cluster.workers ?? {}).length === 0 && process.exit(0));
    });
    for (let i = 0; i < Number(workers); i++) cluster.fork();
    return;
  }
  const listener = ((await import(pathToFileURL(app!).href)) as { default: http.RequestListener }).default;
  const onSocket = !/^\d+$/.test(address!); // a front's backend
  if (onSocket) rmSync(address!, { force: true }); // left by an earlier server killed with the same port in its name
  http
    .createServer(listener)
    .listen(
      onSocket
        ? { path: address, readableAll: true, writableAll: true }
        : { host: HOST, port: Number(address), reusePort: mode === 'reuseport' },
      () => {
        if (mode !== 'cluster') console.log('bench: ready');
      },
    );
}

if (process.argv[2] === '--serve') await serveBaseline(process.argv.slice(3));
else await main();
