import type { Settings } from '../../config/settings.ts';

/**
 * What a worker class decides in Node: how many connections one serving unit takes at once and whether
 * a connection carries more than one request. The accept and serve machinery is shared (serving-unit.ts).
 */
export interface WorkerClass {
  readonly name: Settings['workerClass'];
  readonly connectionLimit: number;
  readonly keepAlive: boolean;
}
