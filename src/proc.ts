/** Processes as Linux's /proc shows them: alive or not, trees, CPU time, resident memory (the master's pid file, tune, the bench and chaos scripts). */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let clockTicks: number | null = null;

/** Kernel clock ticks per second, the unit of /proc's CPU times. */
function ticksPerSecond(): number {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return clockTicks;
}

/** Fields after the parenthesised command name (which may contain spaces): [state, ppid, ...]; of a thread with tid. */
export function statFields(pid: number, tid = pid): string[] | null {
  try {
    const stat = readFileSync(tid === pid ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null; // the process ended while we looked
  }
}

/** Alive: exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const state = statFields(pid)?.[0];
  return state !== undefined && state !== 'Z' && state !== 'X';
}

/** The live roots and all their live descendants. */
export function processTree(roots: readonly number[]): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(Number(entry));
    if (!fields || fields[0] === 'Z') continue;
    const ppid = Number(fields[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const tree = new Set<number>();
  const pending = roots.filter(isAlive);
  while (pending.length > 0) {
    const pid = pending.pop()!;
    if (tree.has(pid)) continue;
    tree.add(pid);
    pending.push(...(children.get(pid) ?? []));
  }
  return [...tree];
}

/** The direct children of a process (a master's workers). */
export function childrenOf(pid: number): number[] {
  return processTree([pid]).filter((candidate) => statFields(candidate)?.[1] === String(pid));
}

/** utime + stime in seconds: of every thread of the process, or of one thread (tid) alone. */
export function cpuSeconds(pid: number, tid = pid): number {
  const fields = statFields(pid, tid);
  // utime and stime are stat fields 14 and 15; fields[] starts at field 3
  return fields ? (Number(fields[11]) + Number(fields[12])) / ticksPerSecond() : 0;
}

/**
 * Seconds one thread spent runnable but waiting for a CPU (schedstat's second field): time another
 * program took from it. 0 where the kernel keeps no schedstat.
 */
export function runQueueSeconds(pid: number, tid = pid): number {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[1]) / 1e9 || 0;
  } catch {
    return 0;
  }
}

/** CPU seconds of each process of the tree, so a measurement counts only what each spent in between. */
export function treeCpu(root: number): Map<number, number> {
  return new Map(processTree([root]).map((pid) => [pid, cpuSeconds(pid)]));
}

/** CPU seconds the tree spent between two readings (a process that ended in between is not counted). */
export function cpuBetween(before: Map<number, number>, after: Map<number, number>): number {
  let seconds = 0;
  for (const [pid, now] of after) seconds += now - (before.get(pid) ?? 0);
  return seconds;
}

/** Resident memory (VmRSS) in MiB, of one process or summed over a tree. */
export function rssMiB(pids: readonly number[]): number {
  let kib = 0;
  for (const pid of pids) {
    try {
      kib += Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // ended while we looked
    }
  }
  return kib / 1024;
}

/** CPU seconds the whole machine spent in user and system mode. */
export function machineCpuSeconds(): number {
  const [user, nice, system] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  return (user! + nice! + system!) / ticksPerSecond();
}
