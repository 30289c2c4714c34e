/** A serving thread (--threads): one UnitRunner, talking to its process's ThreadPool. */
import { parentPort } from 'node:worker_threads';
import { loadWorkerHooks } from '../hooks.ts';
import {
  heartbeatInterval,
  NO_TRAFFIC,
  serializeError,
  type FromThreadMessage,
  type ThreadData,
  type ToThreadMessage,
} from '../ipc/messages.ts';
import { ExitCode } from '../errors.ts';
import { Logger } from '../log/logger.ts';
import { UnitRunner } from './unit-runner.ts';
import { printWarningsWithForkgateHint } from './warnings.ts';
import { answerProcess, sendLastReport } from '../metrics/worker-side.ts';

export async function runThread(data: ThreadData): Promise<void> {
  printWarningsWithForkgateHint();
  const port = parentPort!;
  const post = (message: FromThreadMessage) => port.postMessage(message);
  const { settings } = data.boot;
  const logger = new Logger(settings.errorLogfile, settings.logLevel);
  let runner: UnitRunner | null = null;

  port.on('message', (message: ToThreadMessage) => {
    if (message.type === 'reopen-logs') return runner?.reopenLogs(message.files);
    if (message.type === 'collect-metrics') return void answerProcess(message.seq, settings, post);
    const stop = () => {
      sendLastReport(settings, post, () => process.exit(0)); // in a worker thread this ends the thread only
    };
    if (runner) runner.drain(stop);
    else stop();
  });
  // However the thread ends (an app's own process.exit too), the lines of the requests it answered are written.
  process.on('exit', () => runner?.flushLogs());
  setInterval(() => post({ type: 'heartbeat', stats: runner?.stats() ?? NO_TRAFFIC }), heartbeatInterval(settings.timeout)).unref();
  try {
    // Each thread is an isolate of its own: it imports the config file for its request hooks too.
    const hooks = await loadWorkerHooks(settings.config);
    runner = new UnitRunner(data.boot, logger, hooks, {
      retire: (reason) => post({ type: 'retire', reason }),
      serving: () => post({ type: 'serving' }),
    });
    const shape = await runner.start();
    post({ type: 'ready', shape, endpoint: runner.endpoints()[0] ?? null });
  } catch (error) {
    post({ type: 'boot-error', error: serializeError(error) });
    process.exit(ExitCode.bootFailure);
  }
}
