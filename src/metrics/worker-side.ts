/**
 * The worker's side of /metrics: a scrape makes the master send collect-metrics, and each worker
 * answers with what its units counted since they started, and the app's own prom-client metrics. With
 * --threads the process asks its threads the same way and adds up their answers, keeping the last
 * answer of a thread that exited, so nothing a unit counted is lost while its process lives.
 */
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import type { Worker as Thread } from 'node:worker_threads';
import type { Settings } from '../config/settings.ts';
import { sendToMaster, type FromThreadMessage, type ToThreadMessage } from '../ipc/messages.ts';
import { parseAppSpec } from '../worker/app-loader.ts';
import { usesThreads } from '../worker/classes/index.ts';
import { sumMetrics } from './aggregate.ts';
import { activeRecorder, metricsWanted } from './recorder.ts';
import { addCounts, countersOnly, NO_COUNTS, type MetricsJson, type RequestCounts, type UnitReport, type WorkerReport } from './report.ts';

/** How long a process waits for its threads' answers; a thread that is late counts with its last one. */
const THREAD_ANSWER_MS = 500;
/** How long an exiting unit may take over its last report. */
const LAST_REPORT_MS = 1000;

/** What this unit counted, and the app's metrics if it uses prom-client. */
export async function unitReport(settings: Settings): Promise<UnitReport> {
  return { counts: activeRecorder()?.counts() ?? NO_COUNTS, app: await appMetrics(settings) };
}

interface AppPromClient {
  register: { getMetricsAsJSON(): Promise<MetricsJson> };
}

/** require() as the app's file has it, and where the app's prom-client would load from (null: it has none). */
let appRequire: NodeJS.Require | undefined;
let appPromClientPath: string | null | undefined;

/**
 * The app's own prom-client (resolved from the app's directory), only once the app has loaded it: an app
 * without it costs a failed resolution at the first scrape, and nothing after.
 */
async function appMetrics(settings: Settings): Promise<MetricsJson | null> {
  appRequire ??= createRequire(resolve(process.cwd(), parseAppSpec(settings.app!).path));
  const require = appRequire;
  if (appPromClientPath === undefined) {
    try {
      appPromClientPath = require.resolve('prom-client');
    } catch {
      appPromClientPath = null;
    }
  }
  const client = appPromClientPath ? (require.cache[appPromClientPath]?.exports as AppPromClient | undefined) : undefined;
  if (!client?.register) return null;
  try {
    return await client.register.getMetricsAsJSON();
  } catch {
    return null; // a collect() callback of the app's that threw: its metrics sit this scrape out
  }
}

interface ThreadRecord {
  readonly thread: Thread;
  last: UnitReport | null;
  waiting: (() => void) | null;
}

/** A worker process's threads (--threads), by thread id, and what those that exited had counted. */
const threads = new Map<number, ThreadRecord>();
let exitedCounts: RequestCounts = NO_COUNTS;
let exitedApp: MetricsJson[] = [];
let threadSeq = 0;
let lastUtilization: EventLoopUtilization | undefined;

export function threadStarted(id: number, thread: Thread): void {
  threads.set(id, { thread, last: null, waiting: null });
}

export function threadReported(id: number, report: UnitReport): void {
  const record = threads.get(id);
  if (!record) return;
  record.last = report;
  record.waiting?.();
}

/** A thread's last report stays in this process's totals. */
export function threadExited(id: number): void {
  const record = threads.get(id);
  threads.delete(id);
  record?.waiting?.();
  if (!record?.last) return;
  exitedCounts = addCounts(exitedCounts, record.last.counts);
  if (record.last.app) exitedApp.push(countersOnly(record.last.app));
}

/** A serving thread answers its process. */
export async function answerProcess(seq: number | null, settings: Settings, post: (message: FromThreadMessage) => void): Promise<void> {
  post({ type: 'metrics', seq, report: await unitReport(settings) });
}

/** Answers the master's collect-metrics; if the report cannot be made, the master counts with the last one. */
export async function answerMaster(seq: number | null, settings: Settings, onSent?: () => void): Promise<void> {
  let report: WorkerReport;
  try {
    report = usesThreads(settings) ? await threadsReport() : await ownReport(settings);
  } catch {
    return onSent?.();
  }
  sendToMaster({ type: 'metrics', seq, report }, onSent);
}

/**
 * As the unit (process or thread) exits: its last report, so what it counted since the last scrape
 * stays in the totals; `exit` runs once it is sent, or after LAST_REPORT_MS at the latest.
 */
export function sendLastReport(settings: Settings, post: ((message: FromThreadMessage) => void) | null, exit: () => void): void {
  if (!metricsWanted(settings)) return exit();
  setTimeout(exit, LAST_REPORT_MS).unref();
  if (post) void answerProcess(null, settings, post).then(exit, exit);
  else void answerMaster(null, settings, exit).catch(exit);
}

async function ownReport(settings: Settings): Promise<WorkerReport> {
  const unit = await unitReport(settings);
  return { counts: unit.counts, app: unit.app ? [unit.app] : [], ...processFigures() };
}

async function threadsReport(): Promise<WorkerReport> {
  const seq = ++threadSeq;
  await Promise.all(
    [...threads.values()].map(
      (record) =>
        new Promise<void>((done) => {
          const timer = setTimeout(done, THREAD_ANSWER_MS);
          record.waiting = () => {
            clearTimeout(timer);
            record.waiting = null;
            done();
          };
          record.thread.postMessage({ type: 'collect-metrics', seq } satisfies ToThreadMessage);
        }),
    ),
  );
  if (exitedApp.length > 1)
    exitedApp = await sumMetrics(exitedApp).then(
      (sum) => [sum],
      () => exitedApp,
    );
  let counts = exitedCounts;
  const app: MetricsJson[] = [...exitedApp];
  for (const { last } of threads.values()) {
    if (!last) continue;
    counts = addCounts(counts, last.counts);
    if (last.app) app.push(last.app);
  }
  return { counts, app, ...processFigures() };
}

function processFigures(): Pick<WorkerReport, 'cpuSeconds' | 'eventLoopUtilization'> {
  const { user, system } = process.cpuUsage();
  const now = performance.eventLoopUtilization();
  const utilization = lastUtilization ? performance.eventLoopUtilization(now, lastUtilization).utilization : now.utilization;
  lastUtilization = now;
  return { cpuSeconds: (user + system) / 1e6, eventLoopUtilization: utilization };
}
