/**
 * What `forkgate tune` decides, as pure functions of what it measured: the bottleneck, the grid of
 * configurations worth a trial, and the one to recommend with the sentences that say why.
 */
import type { BalanceMode, WORKER_CLASSES } from '../config/settings.ts';

export type WorkerClass = (typeof WORKER_CLASSES)[number];
export type Bottleneck = 'cpu' | 'io' | 'memory';

/** What the machine lets forkgate use. */
export interface Machine {
  /** CPUs the process may use (affinity and cgroup quota, as `--workers auto` reads them). */
  cpus: number;
  /** The memory the whole tree may use, in MiB. */
  memoryMiB: number;
  /** Where memoryMiB came from, for the report. */
  memorySource: string;
}

/** One worker process under rising load. */
export interface Profile {
  /** Mean time of a request at one connection, ms, less the time the worker waited for a CPU: the app's own latency. */
  requestMs: number;
  /** Server CPU per request (the worker's and the master's), ms. */
  cpuMs: number;
  /** Busy share of the worker's event-loop thread at saturation: running, or ready to and waiting for a CPU. */
  loopUtilization: number;
  /** Connections at which throughput stopped growing, and the throughput there. */
  saturationConnections: number;
  saturationReqPerSec: number;
  /** Each step of the rising load. */
  steps: { connections: number; reqPerSec: number; p99Ms: number }[];
  /** CPUs other programs kept busy, at most, during the rising load. */
  otherCpus: number;
  /** Resident memory, MiB: the master, one worker process with the app loaded, one more serving thread. */
  masterMiB: number;
  processMiB: number;
  threadMiB: number;
}

export interface Config {
  workers: number;
  threads: number;
  workerClass: WorkerClass;
  balance: BalanceMode;
}

/** A configuration's trial: measured, or skipped with the reason. */
export interface Trial extends Config {
  reqPerSec: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  rssMiB: number | null;
  /** Server CPU (the whole tree) per request, µs. */
  cpuUsPerReq: number | null;
  /** Responses other than 2xx and 3xx, and connection errors and timeouts, during the measurement. */
  failures: number;
  /** CPUs other programs kept busy meanwhile (neither the server nor tune): a disturbed measurement. */
  otherCpus: number | null;
  skipped: string | null;
}

/** The app's own CPU over its latency at and above which it is CPU-bound. */
const CPU_BOUND_SHARE = 0.5;
/** A worker's event loop this busy where throughput stopped growing: the CPU is what stopped it. */
const BUSY_LOOP = 0.8;
/**
 * Requests quicker than this are judged by the busy loop: their wall time at one connection is mostly
 * the client's and the kernel's. A slower one that is mostly waiting is I/O-bound, though enough
 * connections keep any loop busy.
 */
const QUICK_REQUEST_MS = 5;
/** Throughputs within this fraction of the best count as equal: the least memory among them wins. */
const NEAR_EQUAL = 0.05;

export function units(config: Config): number {
  return config.workers * config.threads;
}

/** The tree's resident memory a configuration needs, from the profile's per-copy figures. */
export function predictedMiB(config: Config, profile: Profile): number {
  return profile.masterMiB + config.workers * (profile.processMiB + (config.threads - 1) * profile.threadMiB);
}

/** Share of a request's time the server spends on the CPU. */
function cpuShare(profile: Profile): number {
  return profile.requestMs > 0 ? Math.min(1, profile.cpuMs / profile.requestMs) : 1;
}

/**
 * Memory when one worker process per CPU (what serves a CPU-bound app best, and an I/O-bound one
 * once its event loop is busy) does not fit; else CPU when the CPU is most of a request's time or, for
 * a quick request, kept one worker's event loop busy at its peak; else I/O.
 */
export function classify(profile: Profile, machine: Machine): Bottleneck {
  const perCpu: Config = { workers: machine.cpus, threads: 1, workerClass: 'async', balance: 'round-robin' };
  if (predictedMiB(perCpu, profile) > machine.memoryMiB) return 'memory';
  return cpuBound(profile) ? 'cpu' : 'io';
}

function cpuBound(profile: Profile): boolean {
  return cpuShare(profile) >= CPU_BOUND_SHARE || (profile.requestMs < QUICK_REQUEST_MS && profile.loopUtilization >= BUSY_LOOP);
}

/**
 * The configurations worth a trial: processes 1, CPU and 2 × CPU + 1; threads 2 and 4 in one process
 * (and CPU and 2 × CPU + 1 when memory is short); for CPU work sync workers, and the request-level proxy,
 * where a slow request could hold up quick ones behind it; for I/O the kernel's balancing.
 */
export function plan(machine: Machine, bottleneck: Bottleneck): Config[] {
  const cpus = machine.cpus;
  const pool = (workers: number, workerClass: WorkerClass = 'async', balance: BalanceMode = 'round-robin'): Config => ({
    workers,
    threads: 1,
    workerClass,
    balance,
  });
  const threaded = (workers: number, threads: number): Config => ({ workers, threads, workerClass: 'gthread', balance: 'reuseport' });
  const grid = [pool(1), pool(cpus), pool(2 * cpus + 1), threaded(1, 2), threaded(1, 4)];
  if (bottleneck === 'memory') grid.push(threaded(1, cpus), threaded(1, 2 * cpus + 1));
  if (bottleneck === 'cpu') grid.push(pool(cpus, 'sync'), pool(cpus, 'async', 'proxy'));
  if (bottleneck === 'io') grid.push(pool(cpus, 'async', 'reuseport'));
  const seen = new Set<string>();
  return grid.filter((config) => {
    const key = describeConfig(config);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Why a configuration gets no trial, or null when it fits the memory. */
export function skipReason(config: Config, profile: Profile, machine: Machine): string | null {
  const needs = predictedMiB(config, profile);
  return needs > machine.memoryMiB ? `needs about ${Math.round(needs)} MiB; ${Math.round(machine.memoryMiB)} MiB allowed` : null;
}

/** A trial that ran; its latencies may still be unknown (the sync class: see latencyMeasurable). */
type Measured = Trial & { reqPerSec: number; rssMiB: number };

function measured(trial: Trial): trial is Measured {
  return trial.skipped === null && trial.reqPerSec !== null && trial.rssMiB !== null;
}

/**
 * autocannon sends the next request on a connection as soon as a response ends; the sync class closes
 * it after each response, so that request is lost and its time runs on through the reconnection.
 */
export function latencyMeasurable(config: Config): boolean {
  return config.workerClass !== 'sync';
}

/**
 * The measured trial that serves most within the memory, and among those within NEAR_EQUAL of it the
 * one with the least memory (then the fewest units); null when none was measured within the memory.
 */
export function recommend(trials: readonly Trial[], machine: Machine): Measured | null {
  const fitting = trials.filter(measured).filter((trial) => trial.rssMiB <= machine.memoryMiB && trial.reqPerSec > 0);
  if (fitting.length === 0) return null;
  const best = Math.max(...fitting.map((trial) => trial.reqPerSec));
  const near = fitting.filter((trial) => trial.reqPerSec >= best * (1 - NEAR_EQUAL));
  return near.sort((a, b) => a.rssMiB - b.rssMiB || units(a) - units(b))[0]!;
}

/** The trial's flags as forkgate takes them, defaults left out. */
export function configFlags(config: Config): string[] {
  const flags = ['-w', String(config.workers)];
  if (config.threads > 1) flags.push('--threads', String(config.threads));
  if (config.workerClass !== 'async' && !(config.workerClass === 'gthread' && config.threads > 1)) flags.push('-k', config.workerClass);
  if (config.balance !== 'round-robin' && !(config.threads > 1 && config.balance === 'reuseport')) flags.push('--balance', config.balance);
  return flags;
}

export function describeConfig(config: Config): string {
  return configFlags(config).join(' ');
}

/** The recommendation as a config file. */
export function configSnippet(config: Config): string {
  const fields = [`workers: ${config.workers}`];
  if (config.threads > 1) fields.push(`threads: ${config.threads}`);
  if (config.workerClass !== 'async') fields.push(`workerClass: '${config.workerClass}'`);
  if (config.balance !== 'round-robin') fields.push(`balance: '${config.balance}'`);
  return [`import { defineConfig } from 'forkgate';`, '', `export default defineConfig({ ${fields.join(', ')} });`, ''].join('\n');
}

/** What the load generator cost, to say when it, not the server, set the ceiling. */
export interface LoadGenerator {
  /** CPUs it kept busy, at most, during a trial. */
  peakCpus: number;
}

/** Share of one CPU above which the load generator counts as a limit on throughput. */
const GENERATOR_LIMIT = 0.8;
/** CPUs other programs may use during a trial before its figures count as disturbed. */
const OTHER_LOAD_LIMIT = 0.15;

/** A few plain sentences citing the figures: the bottleneck, the choice against its rivals, threads, the generator. */
export function explain(input: {
  profile: Profile;
  machine: Machine;
  bottleneck: Bottleneck;
  trials: readonly Trial[];
  recommendation: Trial | null;
  generator: LoadGenerator;
}): string[] {
  const { profile, machine, bottleneck, trials, recommendation, generator } = input;
  const ms = (value: number) => (value >= 10 ? value.toFixed(0) : value >= 1 ? value.toFixed(1) : value.toFixed(2));
  const mib = (value: number) => `${Math.round(value)} MiB`;
  const sentences: string[] = [];
  const work = `${ms(profile.cpuMs)} ms of CPU per ${ms(profile.requestMs)} ms request`;
  if (bottleneck === 'cpu') {
    sentences.push(
      `CPU-bound: ${work}; one worker's event loop was ${pct(profile.loopUtilization)} busy at ${connections(profile.saturationConnections)}, so throughput grows with worker processes up to the ${machine.cpus} CPUs this process may use.`,
    );
  } else if (bottleneck === 'io') {
    sentences.push(
      `I/O-bound: ${work}; the app mostly waits, and one event loop serves many requests at once (${Math.round(profile.saturationReqPerSec)} req/s from one worker at ${connections(profile.saturationConnections)}).`,
    );
  } else {
    sentences.push(
      `Memory-bound: a worker process with the app loaded takes ${mib(profile.processMiB)} and the master ${mib(profile.masterMiB)}; ${machine.cpus} workers would need ${mib(predictedMiB({ workers: machine.cpus, threads: 1, workerClass: 'async', balance: 'round-robin' }, profile))}, and ${mib(machine.memoryMiB)} is allowed (${machine.memorySource}). ${cpuBound(profile) ? 'The app itself is CPU-bound' : 'The app itself is I/O-bound'}: ${work}.`,
    );
  }
  if (!recommendation || !measured(recommendation)) {
    const skipped = trials.filter((trial) => trial.skipped !== null).length;
    sentences.push(
      `No configuration was measured within ${mib(machine.memoryMiB)} (${skipped} of ${trials.length} skipped as too large); one worker process needs about ${mib(profile.masterMiB + profile.processMiB)}.`,
    );
    return sentences;
  }
  const chosen = recommendation;
  const done = trials.filter(measured);
  const fastest = done.reduce((a, b) => (b.reqPerSec > a.reqPerSec ? b : a));
  const largest = done.filter((trial) => trial.rssMiB <= machine.memoryMiB).reduce((a, b) => (b.rssMiB > a.rssMiB ? b : a));
  const figures = (trial: Measured) =>
    `${describeConfig(trial)} serves ${Math.round(trial.reqPerSec)} req/s${trial.p99Ms === null ? '' : ` (p99 ${ms(trial.p99Ms)} ms)`} in ${mib(trial.rssMiB)}`;
  if (fastest !== chosen) {
    sentences.push(
      `${figures(chosen)}; ${figures(fastest)}, within ${pct(NEAR_EQUAL)}, with ${(fastest.rssMiB / chosen.rssMiB).toFixed(1)}× the memory.`,
    );
  } else {
    // the next best, and the one that spends the most memory, if another
    const runnerUp = done
      .filter((trial) => trial !== chosen)
      .reduce<Measured | null>((a, b) => (a === null || b.reqPerSec > a.reqPerSec ? b : a), null);
    const rivals = [...new Set([runnerUp, largest])].filter((trial): trial is Measured => trial !== null && trial !== chosen);
    sentences.push(`${[`${figures(chosen)}, the most of the trials`, ...rivals.map(figures)].join('; ')}.`);
  }
  const overMemory = trials.filter((trial) => trial.skipped !== null || (trial.rssMiB !== null && trial.rssMiB > machine.memoryMiB));
  if (overMemory.length > 0) {
    sentences.push(
      `${overMemory.length} of ${trials.length} configurations did not fit ${mib(machine.memoryMiB)} (${machine.memorySource}).`,
    );
  }
  sentences.push(
    `Threads do not share the app as Python's do: each serving thread loads its own copy of the app and its own heap (${mib(profile.threadMiB)} here), and saves only the rest of a process (${mib(Math.max(0, profile.processMiB - profile.threadMiB))} of its ${mib(profile.processMiB)}).`,
  );
  if (generator.peakCpus >= GENERATOR_LIMIT) {
    sentences.push(
      `The load generator runs on the same ${machine.cpus} CPUs and used up to ${generator.peakCpus.toFixed(1)} of them: it, not the server, may set the ceiling on req/s here; the server CPU per request (µs/req) compares configurations fairly.`,
    );
  }
  const disturbed = done.filter((trial) => (trial.otherCpus ?? 0) > OTHER_LOAD_LIMIT);
  if (disturbed.length > 0 || profile.otherCpus > OTHER_LOAD_LIMIT) {
    const most = Math.max(profile.otherCpus, ...disturbed.map((trial) => trial.otherCpus!));
    const where = [
      ...(profile.otherCpus > OTHER_LOAD_LIMIT ? ['the profile'] : []),
      ...(disturbed.length > 0 ? [`${disturbed.length} of the trials`] : []),
    ].join(' and ');
    sentences.push(
      `Other programs used up to ${most.toFixed(2)} CPUs during ${where}: the figures are skewed; run tune again on a quiet machine to be sure.`,
    );
  }
  return sentences;
}

export function connections(count: number): string {
  return `${count} connection${count === 1 ? '' : 's'}`;
}

function pct(fraction: number): string {
  return `${Math.round(fraction * 100)} %`;
}
