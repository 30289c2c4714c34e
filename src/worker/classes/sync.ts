import type { WorkerClass } from './worker-class.ts';

/**
 * Gunicorn's sync worker: one connection, hence one request, at a time, closed after its response, so
 * an app that blocks or keeps per-request global state is never entered twice at once.
 */
export function syncWorkerClass(): WorkerClass {
  return { name: 'sync', connectionLimit: 1, keepAlive: false };
}
