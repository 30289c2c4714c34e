/** A serving thread (--threads): one UnitRunner, talking to its process's ThreadPool. */
import { parentPort } from 'node:worker_threads';
import { serializeError, type FromThreadMessage, type ThreadData, type ToThreadMessage } from '../ipc/messages.ts';
import { Logger } from '../log/logger.ts';
import { heartbeatInterval } from './main.ts';
import { UnitRunner } from './unit-runner.ts';

export async function runThread(data: ThreadData): Promise<void> {
  const port = parentPort!;
  const post = (message: FromThreadMessage) => port.postMessage(message);
  const { settings } = data.boot;
  const logger = new Logger(settings.errorLogfile, settings.logLevel);
  const runner = new UnitRunner(data.boot, logger, (reason) => post({ type: 'retire', reason }));

  port.on('message', (message: ToThreadMessage) => {
    if (message.type === 'reopen-logs') runner.reopenLogs();
    else
      runner.drain(() => {
        runner.flushLogs();
        process.exit(0); // in a worker thread this ends the thread only
      });
  });
  setInterval(() => post({ type: 'heartbeat', stats: runner.stats() }), heartbeatInterval(settings.timeout)).unref();
  try {
    post({ type: 'ready', shape: await runner.start() });
  } catch (error) {
    post({ type: 'boot-error', error: serializeError(error) });
    process.exit(3);
  }
}
