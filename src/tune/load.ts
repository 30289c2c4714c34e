/**
 * Load for the trials, from autocannon in this process: a fixed number of keep-alive connections,
 * each sending the next request as soon as the last one is answered (equal load for every trial).
 */
import type autocannon from 'autocannon';
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { getAsset, isSea } from 'node:sea';
import { compileFunction } from 'node:vm';
import { TuneError } from '../errors.ts';

export interface Load {
  /** Requests answered 2xx or 3xx. */
  requests: number;
  reqPerSec: number;
  /** Wall time of the run, seconds. */
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  /** Other answers, connection errors and timeouts. */
  failures: number;
  /** CPU seconds this process (the load generator) spent meanwhile. */
  generatorCpuSeconds: number;
}

/** A request slower than this counts as a failure rather than a latency. */
const REQUEST_TIMEOUT_SECONDS = 10;

export async function drive(port: number, paths: readonly string[], connections: number, seconds: number): Promise<Load> {
  const latencies: number[] = [];
  let failures = 0;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const instance = loadGenerator()({
    url: `http://127.0.0.1:${port}`,
    connections,
    duration: seconds,
    timeout: REQUEST_TIMEOUT_SECONDS,
    sampleInt: 100, // the run ends on a sample: this keeps short runs as long as asked
    requests: paths.map((path) => ({ path })),
  });
  instance.on('response', (_client, status, _bytes, responseTime) => {
    if (status >= 200 && status < 400) latencies.push(responseTime);
    else failures++;
  });
  const result = await instance;
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  latencies.sort((a, b) => a - b);
  return {
    requests: latencies.length,
    reqPerSec: latencies.length / elapsed,
    seconds: elapsed,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    failures: failures + result.errors + result.timeouts,
    generatorCpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

/** Of ascending values; 0 for none. */
export function percentile(sorted: readonly number[], fraction: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)]!;
}

let generator: typeof autocannon | null = null;

/**
 * autocannon is bundled apart from forkgate.cjs (dist/autocannon.cjs), which every worker loads: beside
 * it on disk (where the npm bin's link leads), or in the single binary an asset, run as a CommonJS module that needs only Node's own.
 */
function loadGenerator(): typeof autocannon {
  if (generator) return generator;
  if (!isSea()) {
    const bundle = realpathSync(process.argv[1]!);
    try {
      generator = createRequire(bundle)('./autocannon.cjs') as typeof autocannon;
      return generator;
    } catch (error) {
      throw new TuneError(
        `the load generator, autocannon.cjs, does not load beside ${bundle} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): it is part of forkgate's build`,
      );
    }
  }
  const module = { exports: {} };
  const source = getAsset('autocannon.cjs', 'utf8');
  compileFunction(source, ['module', 'exports', 'require'], { filename: 'autocannon.cjs' })(
    module,
    module.exports,
    createRequire(process.execPath),
  );
  generator = module.exports as typeof autocannon;
  return generator;
}
