import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface CpuBudget {
  /** CPUs the process may really use: what `--workers auto` sizes the pool by. */
  cpus: number;
  /** CPUs the scheduler lets the process run on (sched_getaffinity). */
  affinity: number;
  /** The tightest cgroup v2 cpu.max as a CPU count (1.5 = 150ms per 100ms), null when unlimited or unknown. */
  quota: number | null;
  /** One line for the debug log saying where the number came from. */
  reason: string;
}

interface CpuMax {
  quota: number;
  period: number;
  /** The cgroup directory the limit was read from, as the system names it. */
  at: string;
}

/**
 * How many CPUs this process may use: os.cpus() counts the host's, which oversizes the pool in a
 * container, so the affinity mask and the cgroup v2 cpu.max quota cap it. Never throws. `root`: for
 * tests, a fixture tree with proc/self/cgroup and sys/fs/cgroup.
 */
export function effectiveCpuCount(options: { root?: string; affinity?: number } = {}): CpuBudget {
  const root = options.root ?? '/';
  const affinity = options.affinity ?? os.availableParallelism();
  const limit = tightestCpuMax(root);
  const quota = limit ? limit.quota / limit.period : null;
  // A fractional quota rounds up: 1.5 CPUs of time per period is spread over 2 CPUs running at once.
  const cpus = Math.max(1, quota === null ? affinity : Math.min(affinity, Math.ceil(quota)));
  const source = limit ? `cgroup cpu.max ${limit.quota}/${limit.period} at ${limit.at}` : 'no cgroup cpu.max quota';
  return { cpus, affinity, quota, reason: `affinity ${affinity}, ${source} → ${cpus} ${cpus === 1 ? 'CPU' : 'CPUs'}` };
}

/** The pool size Gunicorn recommends: (2 × CPU) + 1. */
export function autoWorkerCount(budget: CpuBudget): number {
  return 2 * budget.cpus + 1;
}

/**
 * Limits are hierarchical (a child cannot use more than its parent allows), so the effective one is
 * the smallest quota/period ratio from the process's cgroup up to the hierarchy's root.
 */
function tightestCpuMax(root: string): CpuMax | null {
  const membership = readText(path.join(root, 'proc/self/cgroup'));
  // cgroup v2 has a single `0::/path` line; v1-only systems list `N:controllers:/path` lines.
  const line = membership?.split('\n').find((entry) => entry.startsWith('0::'));
  if (!line) return null;
  const segments = line.slice('0::'.length).split('/').filter(Boolean);

  let tightest: CpuMax | null = null;
  for (let depth = segments.length; depth >= 0; depth--) {
    const at = path.posix.join('/sys/fs/cgroup', ...segments.slice(0, depth));
    const limit = parseCpuMax(readText(path.join(root, at, 'cpu.max')), at);
    if (limit && (!tightest || limit.quota / limit.period < tightest.quota / tightest.period)) tightest = limit;
  }
  return tightest;
}

/** `max 100000` is unlimited; `150000 100000` allows 1.5 CPUs. Anything unparseable counts as no limit. */
function parseCpuMax(text: string | null, at: string): CpuMax | null {
  const [quota, period] = (text ?? '').trim().split(/\s+/).map(Number);
  if (!(quota > 0) || !(period > 0)) return null;
  return { quota, period, at };
}

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}
