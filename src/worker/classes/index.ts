import type { Settings } from '../../config/settings.ts';
import { asyncWorkerClass } from './async.ts';
import { syncWorkerClass } from './sync.ts';
import type { WorkerClass } from './worker-class.ts';

export type { WorkerClass } from './worker-class.ts';

export function workerClassFor(settings: Settings): WorkerClass {
  switch (settings.workerClass) {
    case 'async':
      return asyncWorkerClass(settings);
    case 'sync':
      return syncWorkerClass();
  }
}
