/** What this machine lets the server use: CPUs as `--workers auto` counts them, and memory. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { effectiveCpuCount } from '../config/cpu.ts';
import type { Machine } from './model.ts';

const MIB = 2 ** 20;

/**
 * The memory the tree may use: the tightest cgroup v2 memory.max from this process's cgroup up, or
 * else the machine's memory, and `--memory` when it is smaller still.
 * `root` defaults to '/' so tests can point it at a fixture tree with proc/self/cgroup and sys/fs/cgroup.
 */
export function memoryBudget(
  options: { requestedMiB?: number | null; root?: string; totalBytes?: number } = {},
): Pick<Machine, 'memoryMiB' | 'memorySource'> {
  const root = options.root ?? '/';
  const limit = tightestMemoryMax(root);
  let budget = limit
    ? { memoryMiB: limit.bytes / MIB, memorySource: `cgroup memory.max at ${limit.at}` }
    : { memoryMiB: (options.totalBytes ?? os.totalmem()) / MIB, memorySource: "the machine's memory" };
  if (options.requestedMiB != null && options.requestedMiB < budget.memoryMiB) {
    budget = { memoryMiB: options.requestedMiB, memorySource: '--memory' };
  }
  return budget;
}

export function readMachine(requestedMiB: number | null): Machine {
  return { cpus: effectiveCpuCount().cpus, ...memoryBudget({ requestedMiB }) };
}

/** Limits are hierarchical: the smallest memory.max from the process's cgroup up to the root counts. */
function tightestMemoryMax(root: string): { bytes: number; at: string } | null {
  const membership = readText(path.join(root, 'proc/self/cgroup'));
  // cgroup v2 has a single `0::/path` line.
  const line = membership?.split('\n').find((entry) => entry.startsWith('0::'));
  if (!line) return null;
  const segments = line.slice('0::'.length).split('/').filter(Boolean);
  let tightest: { bytes: number; at: string } | null = null;
  for (let depth = segments.length; depth >= 0; depth--) {
    const at = path.posix.join('/sys/fs/cgroup', ...segments.slice(0, depth));
    const bytes = Number(readText(path.join(root, at, 'memory.max'))?.trim()); // `max` reads as NaN: no limit
    if (bytes > 0 && (!tightest || bytes < tightest.bytes)) tightest = { bytes, at };
  }
  return tightest;
}

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}
