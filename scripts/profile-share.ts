/**
 * The share of a server's CPU that some of forkgate's own modules take, from the V8 CPU profiles its
 * processes wrote (`--cpu-prof`). Every process is sampled over the same seconds, so the share does not
 * drift with the machine as two runs compared one after the other do: on these VMs two runs of the same
 * server differ by more than the 2 % a feature's cost is held to.
 *
 * A sample counts toward the modules when any frame of its stack is theirs (their callees, prom-client
 * included, count with them); samples of an idle event loop count toward nothing.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

interface Profile {
  /** Microseconds on the monotonic clock process.hrtime() reads, as are the samples' times. */
  startTime: number;
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface Share {
  /** Sampled CPU time, idle left out, over every profile. */
  busyMs: number;
  /** Of that, the samples with one of the modules on their stack. */
  matchedMs: number;
}

/**
 * Reads every .cpuprofile in `directory`, the samples taken within `window` (process.hrtime() µs); frames
 * in `bundle` (whose `.map` lies beside it) are mapped back to their sources, which `sources` is tested on.
 */
export function profileShare(directory: string, bundle: string, sources: RegExp, window: { fromUs: number; toUs: number }): Share {
  const map = new SourceMap(JSON.parse(readFileSync(`${bundle}.map`, 'utf8')) as ConstructorParameters<typeof SourceMap>[0]);
  const bundleUrl = `file://${bundle}`;
  const share: Share = { busyMs: 0, matchedMs: 0 };
  for (const name of readdirSync(directory).filter((file) => file.endsWith('.cpuprofile'))) {
    const profile = JSON.parse(readFileSync(join(directory, name), 'utf8')) as Profile;
    const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
    const parents = new Map<number, number>();
    for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
    const ours = new Map<number, boolean>();
    const isOurs = (id: number): boolean => {
      let known = ours.get(id);
      if (known === undefined) {
        const { url, lineNumber, columnNumber } = nodes.get(id)!.callFrame;
        const source = url === bundleUrl ? map.findEntry(lineNumber, columnNumber) : null;
        const parent = parents.get(id);
        const path = source && 'originalSource' in source ? String(source.originalSource) : '';
        known = sources.test(path) || (parent !== undefined && isOurs(parent));
        ours.set(id, known);
      }
      return known;
    };
    let at = profile.startTime;
    profile.samples.forEach((id, index) => {
      const delta = profile.timeDeltas[index] ?? 0;
      at += delta;
      if (at < window.fromUs || at > window.toUs || nodes.get(id)!.callFrame.functionName === '(idle)') return;
      const ms = delta / 1000;
      share.busyMs += ms;
      if (isOurs(id)) share.matchedMs += ms;
    });
  }
  return share;
}
