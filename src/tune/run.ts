/**
 * The tune run: profile one worker under rising load, name the bottleneck, run the trials the
 * profile calls for, recommend. Every server is forkgate itself (server.ts); the load is autocannon's.
 */
import * as http from 'node:http';
import { TuneError } from '../errors.ts';
import { drive, type Load } from './load.ts';
import {
  classify,
  describeConfig,
  explain,
  latencyMeasurable,
  plan,
  recommend,
  skipReason,
  units,
  type Bottleneck,
  type Config,
  type Machine,
  type Profile,
  type Trial,
} from './model.ts';
import { childrenOf, cpuBetween, cpuSeconds, machineCpuSeconds, processTree, rssMiB, runQueueSeconds, treeCpu } from '../proc.ts';
import type { Progress } from './progress.ts';
import { TrialServer } from './server.ts';

export interface TuneOptions {
  app: string;
  paths: readonly string[];
  /** Seconds each trial is measured for. */
  duration: number;
  machine: Machine;
  env: NodeJS.ProcessEnv;
}

/** A path as it answered the first GET: taken into the load only if 2xx or 3xx. */
export interface PathCheck {
  path: string;
  status: number | null;
  error: string | null;
}

export interface TuneResult {
  app: string;
  machine: Machine;
  paths: PathCheck[];
  durationSeconds: number;
  /** Connections every trial is driven with. */
  connections: number;
  profile: Profile;
  bottleneck: Bottleneck;
  trials: Trial[];
  recommendation: Trial | null;
  reasons: string[];
  /** The load generator's CPU use, at most, over the trials. */
  generatorCpus: number;
}

const SINGLE: Config = { workers: 1, threads: 1, workerClass: 'async', balance: 'round-robin' };
const TWO_THREADS: Config = { workers: 1, threads: 2, workerClass: 'gthread', balance: 'reuseport' };
/** The rising load: connections multiply by STEP_FACTOR up to MAX_CONNECTIONS, until throughput grows less than GROWTH. */
const STEP_FACTOR = 4;
const MAX_CONNECTIONS = 256;
const GROWTH = 1.1;
/** An event loop this busy has no room for more: the rising load stops there. */
const FULL_LOOP = 0.95;
/** Seconds a server's start, warm-up gap and stop take besides the load, for the estimate of time left. */
const OVERHEAD_SECONDS = 1.5;

function warmupSeconds(duration: number): number {
  return Math.min(2, duration);
}

/** Seconds of each step of the profile's rising load. */
function stepSeconds(duration: number): number {
  return Math.min(1, duration / 2);
}

export async function tune(options: TuneOptions, progress: Progress): Promise<TuneResult> {
  const { app, machine, duration } = options;
  progress.phase('profile: one worker under rising load');
  const { profile, paths } = await profileApp(options);
  const good = paths.filter((check) => isGood(check.status)).map((check) => check.path);
  const bottleneck = classify(profile, machine);
  const configs = plan(machine, bottleneck);
  const largest = Math.max(...configs.map(units));
  const connections = Math.min(MAX_CONNECTIONS, Math.max(16, profile.saturationConnections * largest));

  const perTrial = warmupSeconds(duration) + duration + OVERHEAD_SECONDS;
  const fitting = configs.filter((config) => skipReason(config, profile, machine) === null).length;
  progress.plan(fitting, fitting * perTrial);
  const trials: Trial[] = [];
  let generatorCpus = 0;
  let index = 0;
  for (const config of configs) {
    const skipped = skipReason(config, profile, machine);
    if (skipped) {
      trials.push(blankTrial(config, skipped));
      progress.done(describeConfig(config), `skipped: ${skipped}`);
      continue;
    }
    progress.trial(++index, describeConfig(config), (fitting - index + 1) * perTrial);
    const { trial, load } = await runTrial(app, config, good, connections, duration, options.env);
    generatorCpus = Math.max(generatorCpus, load.generatorCpuSeconds / load.seconds);
    trials.push(trial);
    const failures = trial.failures > 0 ? `, ${trial.failures} failed requests` : '';
    const p99 = trial.p99Ms === null ? '' : `, p99 ${trial.p99Ms.toFixed(1)} ms`;
    progress.done(describeConfig(config), `${Math.round(trial.reqPerSec!)} req/s${p99}, ${Math.round(trial.rssMiB!)} MiB${failures}`);
  }
  const recommendation = recommend(trials, machine);
  const reasons = explain({ profile, machine, bottleneck, trials, recommendation, generator: { peakCpus: generatorCpus } });
  return {
    app,
    machine,
    paths,
    durationSeconds: duration,
    connections,
    profile,
    bottleneck,
    trials,
    recommendation,
    reasons,
    generatorCpus,
  };
}

function isGood(status: number | null): boolean {
  return status !== null && status >= 200 && status < 400;
}

function blankTrial(config: Config, skipped: string): Trial {
  return { ...config, reqPerSec: null, p50Ms: null, p99Ms: null, rssMiB: null, cpuUsPerReq: null, failures: 0, otherCpus: null, skipped };
}

async function profileApp(options: TuneOptions): Promise<{ profile: Profile; paths: PathCheck[] }> {
  const step = stepSeconds(options.duration);
  const server = await TrialServer.start(options.app, SINGLE, options.env);
  try {
    const paths = await Promise.all(options.paths.map((path) => check(server.port, path)));
    const good = paths.filter((entry) => isGood(entry.status)).map((entry) => entry.path);
    if (good.length === 0) {
      const answers = paths.map((entry) => `${entry.path} ${entry.status ?? entry.error}`).join(', ');
      throw new TuneError(`no path answers 2xx or 3xx, nothing to measure: ${answers}`);
    }
    const [worker] = childrenOf(server.pid);
    if (worker === undefined) throw new TuneError('the worker process was not found under the master');
    await drive(server.port, good, 8, warmupSeconds(options.duration));
    // after the same warm-up as the threaded worker's below, so the two compare
    const [masterMiB, processMiB] = [rssMiB([server.pid]), rssMiB([worker])];

    // One connection: the request's own time, less the load generator's share of it and the time
    // the worker waited for a CPU another program held.
    const single = await measured(server, worker, () => drive(server.port, good, 1, step));
    const own = single.load.seconds - single.load.generatorCpuSeconds - single.waited;
    const cpuMs = (single.cpu * 1000) / Math.max(1, single.load.requests);
    // a request takes at least its CPU: below that, the generator's share overlapped the server's
    const requestMs = Math.max(cpuMs, (own * 1000) / Math.max(1, single.load.requests));

    const steps: Profile['steps'] = [{ connections: 1, reqPerSec: single.load.reqPerSec, p99Ms: single.load.p99Ms }];
    let best = { connections: 1, reqPerSec: single.load.reqPerSec, loop: single.loop };
    let other = single.other;
    for (let connections = STEP_FACTOR; connections <= MAX_CONNECTIONS; connections *= STEP_FACTOR) {
      const next = await measured(server, worker, () => drive(server.port, good, connections, step));
      steps.push({ connections, reqPerSec: next.load.reqPerSec, p99Ms: next.load.p99Ms });
      other = Math.max(other, next.other);
      if (next.load.reqPerSec < best.reqPerSec * GROWTH) break;
      best = { connections, reqPerSec: next.load.reqPerSec, loop: next.loop };
      if (best.loop >= FULL_LOOP) break; // more connections only queue
    }
    await server.stop();
    const threadMiB = Math.max(0, (await threadedWorkerMiB(options, good)) - processMiB);
    const profile: Profile = {
      requestMs,
      cpuMs,
      loopUtilization: best.loop,
      saturationConnections: best.connections,
      saturationReqPerSec: best.reqPerSec,
      steps,
      otherCpus: other,
      masterMiB,
      processMiB,
      threadMiB,
    };
    return { profile, paths };
  } finally {
    await server.stop();
  }
}

interface Measured {
  load: Load;
  /** The tree's CPU seconds. */
  cpu: number;
  /** Share of the time the worker's event-loop thread ran or was ready to run (waiting for a CPU). */
  loop: number;
  /** Seconds the worker's event-loop thread waited for a CPU. */
  waited: number;
  /** CPUs other programs kept busy. */
  other: number;
}

async function measured(server: TrialServer, worker: number, load: () => Promise<Load>): Promise<Measured> {
  const [before, machineBefore, loopBefore, waitBefore] = [
    treeCpu(server.pid),
    machineCpuSeconds(),
    cpuSeconds(worker, worker),
    runQueueSeconds(worker),
  ];
  const result = await load();
  // tune's own waits are left in: they overlap the server's work rather than add to the request's time
  const waited = runQueueSeconds(worker) - waitBefore;
  const loop = (cpuSeconds(worker, worker) - loopBefore + waited) / result.seconds;
  const [cpu, machine] = [cpuBetween(before, treeCpu(server.pid)), machineCpuSeconds() - machineBefore];
  return { load: result, cpu, loop: Math.min(1, loop), waited, other: otherCpus(machine, cpu, result) };
}

/** CPUs neither the server nor tune itself kept busy over a load. */
function otherCpus(machineSeconds: number, serverSeconds: number, load: Load): number {
  return Math.max(0, (machineSeconds - serverSeconds - load.generatorCpuSeconds) / load.seconds);
}

/** A worker with two serving threads, warmed up as the single one was: its resident memory. */
async function threadedWorkerMiB(options: TuneOptions, paths: readonly string[]): Promise<number> {
  const server = await TrialServer.start(options.app, TWO_THREADS, options.env);
  try {
    await drive(server.port, paths, 8, warmupSeconds(options.duration));
    return rssMiB(childrenOf(server.pid));
  } finally {
    await server.stop();
  }
}

async function runTrial(
  app: string,
  config: Config,
  paths: readonly string[],
  connections: number,
  duration: number,
  env: NodeJS.ProcessEnv,
): Promise<{ trial: Trial; load: Load }> {
  const server = await TrialServer.start(app, config, env);
  try {
    await drive(server.port, paths, connections, warmupSeconds(duration));
    let [before, machineBefore] = [treeCpu(server.pid), machineCpuSeconds()];
    let load = await drive(server.port, paths, connections, duration);
    if (load.requests === 0) {
      // A machine busy with other work can hold every answer past a short trial: once more, for longer.
      [before, machineBefore] = [treeCpu(server.pid), machineCpuSeconds()];
      load = await drive(server.port, paths, connections, 2 * duration);
    }
    const [cpu, machine] = [cpuBetween(before, treeCpu(server.pid)), machineCpuSeconds() - machineBefore];
    const tree = processTree([server.pid]);
    const trial: Trial = {
      ...config,
      reqPerSec: load.reqPerSec,
      p50Ms: latencyMeasurable(config) ? load.p50Ms : null,
      p99Ms: latencyMeasurable(config) ? load.p99Ms : null,
      rssMiB: rssMiB(tree),
      cpuUsPerReq: load.requests > 0 ? (cpu * 1e6) / load.requests : null,
      failures: load.failures,
      otherCpus: otherCpus(machine, cpu, load),
      skipped: null,
    };
    return { trial, load };
  } finally {
    await server.stop();
  }
}

/** One GET: its status, or why there was none. */
function check(port: number, path: string): Promise<PathCheck> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ path, status: res.statusCode ?? null, error: null }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', (error: NodeJS.ErrnoException) => resolve({ path, status: null, error: error.code ?? error.message }));
  });
}
