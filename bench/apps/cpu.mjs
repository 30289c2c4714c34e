// bench workload `cpu`: ~2 ms of synchronous work per request, then the hello body.
//
// The work is a fixed number of PBKDF2 rounds (native code: its speed does not depend on how V8 happens
// to tier up a JavaScript loop, which can change it several-fold mid-run), not "spin until 2 ms passed":
// a process that shares a core then takes longer instead of doing less, so CPU per request stays
// comparable across servers. The bench driver calibrates once on an idle machine and passes
// BENCH_CPU_ROUNDS_PER_MS to every server, so all processes do the same work (calibrating in each
// worker while the pool boots would not).
import { pbkdf2Sync } from 'node:crypto';

/** `rounds` PBKDF2-SHA256 iterations, synchronously. */
export function spin(rounds) {
  pbkdf2Sync('forkgate', 'bench', Math.max(1, rounds), 32, 'sha256');
}

/**
 * Rounds per millisecond of CPU on this machine: the best of 20 short runs, timed in CPU time (not wall
 * time) so that processes competing for the core do not skew it. (On a shared VM a core's speed still
 * drifts by tens of percent from one second to the next: the best run stands for an idle core.)
 */
export function calibrate() {
  const rounds = 20_000;
  spin(rounds);
  let best = Infinity;
  for (let run = 0; run < 20; run++) {
    const start = process.cpuUsage();
    spin(rounds);
    const used = process.cpuUsage(start);
    best = Math.min(best, (used.user + used.system) / 1000);
  }
  return Math.round(rounds / best);
}

export const ROUNDS_PER_MS = Number(process.env.BENCH_CPU_ROUNDS_PER_MS) || calibrate();

/** About `ms` milliseconds of CPU on an idle core. */
export function burn(ms) {
  spin(Math.round(ms * ROUNDS_PER_MS));
}

export default function cpu(req, res) {
  burn(2);
  res.setHeader('content-type', 'text/plain');
  res.end('Hello world\n');
}
