import type { Settings } from '../../config/settings.ts';
import type { WorkerClass } from './worker-class.ts';

/** The event loop as Gunicorn's pseudo-threads: up to --worker-connections connections at once. */
export function asyncWorkerClass(settings: Settings): WorkerClass {
  return { name: 'async', connectionLimit: settings.workerConnections, keepAlive: settings.keepAlive > 0 };
}
