/** Processes as /proc shows them, for the bench and chaos scripts (Linux). */
import { readdirSync, readFileSync } from 'node:fs';

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
export function processTree(roots: number[]): number[] {
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
