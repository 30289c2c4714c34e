import type { Settings } from '../../config/settings.ts';
import { asyncWorkerClass } from './async.ts';
import { syncWorkerClass } from './sync.ts';
import type { WorkerClass } from './worker-class.ts';

export type { WorkerClass } from './worker-class.ts';

/** Whether the worker runs its units in worker_threads (gthread, or sync with --threads > 1). */
export function usesThreads(settings: Settings): boolean {
  return settings.workerClass === 'gthread' || settings.threads > 1;
}

/** The policy of one serving unit: a process's own, or each thread's. */
export function workerClassFor(settings: Settings): WorkerClass {
  switch (settings.workerClass) {
    case 'async':
    case 'gthread':
      return asyncWorkerClass(settings);
    case 'sync':
      return syncWorkerClass();
  }
}

/**
 * How many connections the round-robin master hands one worker at once: a keep-alive class takes more
 * than it serves and reclaims idle ones; sync only what it serves, so the rest wait in the master,
 * where a worker's death cannot take them.
 */
export function handoffCapacity(settings: Settings): number {
  const workerClass = workerClassFor(settings);
  return workerClass.keepAlive ? Infinity : workerClass.connectionLimit;
}
