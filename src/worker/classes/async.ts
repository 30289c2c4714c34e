import type { Settings } from '../../config/settings.ts';
import type { WorkerClass } from './worker-class.ts';

/**
 * The event loop as Gunicorn's pseudo-threads: up to --worker-connections connections at once. gthread
 * threads serve the same way, each thread an event loop of its own.
 */
export function asyncWorkerClass(settings: Settings): WorkerClass {
  return { name: settings.workerClass, connectionLimit: settings.workerConnections, keepAlive: settings.keepAlive > 0 };
}
