import * as fs from 'node:fs';
import { ForkgateError } from '../errors.ts';
import { LogSink } from './sink.ts';

export const LOG_LEVELS = ['debug', 'info', 'warning', 'error', 'critical'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
const WARNING = LOG_LEVELS.indexOf('warning');

const LABELS: Record<LogLevel, string> = {
  debug: 'DEBUG',
  info: 'INFO',
  warning: 'WARNING',
  error: 'ERROR',
  critical: 'CRITICAL',
};

/** Told of each message logged at warning or above, in this process or thread (statsd counts them). */
let onLogged: ((level: LogLevel, withError: boolean) => void) | null = null;

export function observeLogs(observer: (level: LogLevel, withError: boolean) => void): void {
  onLogged = observer;
}

/**
 * The error log: `[LEVEL] 2026-11-27 06:41:58 +0000 [pid] message`, level first so it can be grepped.
 * A message with an error appends the error's stack on the following lines.
 */
export class Logger {
  private sink: LogSink;
  private threshold: number;
  /** The first error this logger wrote: what a start that fails is told by on stderr too. */
  firstError: string | null = null;

  constructor(target: string, level: LogLevel) {
    this.sink = errorLogSink(target);
    this.threshold = LOG_LEVELS.indexOf(level);
  }

  /** HUP re-reads the settings: the same logger follows a new level or file (or throws, unchanged). */
  configure(target: string, level: LogLevel): void {
    if (target !== this.sink.target) {
      const sink = errorLogSink(target);
      this.sink.close();
      this.sink = sink;
    }
    this.threshold = LOG_LEVELS.indexOf(level);
  }

  debug(message: string): void {
    this.log('debug', message);
  }
  info(message: string): void {
    this.log('info', message);
  }
  warning(message: string): void {
    this.log('warning', message);
  }
  error(message: string, error?: unknown): void {
    this.log('error', message, error);
  }
  critical(message: string, error?: unknown): void {
    this.log('critical', message, error);
  }

  /** USR1: the error log file opens afresh if it is among `files`; if that fails, it logs on to the old one. */
  reopen(files: readonly string[]): void {
    const failure = this.sink.reopenAmong(files);
    if (failure) this.error(`Error log not reopened, writing on to the old file: ${failure.message}`);
  }

  close(): void {
    this.sink.close();
  }

  private log(level: LogLevel, message: string, error?: unknown): void {
    if (onLogged && LOG_LEVELS.indexOf(level) >= WARNING) onLogged(level, error !== undefined);
    if (LOG_LEVELS.indexOf(level) < this.threshold) return;
    if (LOG_LEVELS.indexOf(level) > WARNING) this.firstError ??= message;
    const detail = error === undefined ? '' : `\n${describeError(error)}`;
    this.sink.write(`[${LABELS[level]}] ${timestamp()} [${process.pid}] ${message}${detail}\n`);
  }
}

/** An error log file that cannot be written to says so on stderr, if anywhere: never through itself. */
function errorLogSink(target: string): LogSink {
  // Each process says it for itself: the pid tells the master's line from its workers'.
  const onTrouble = target === '-' ? undefined : (message: string) => fs.writeSync(2, `forkgate [${process.pid}]: error log ${message}\n`);
  return new LogSink(target, 2, { onTrouble });
}

export function describeError(error: unknown): string {
  // forkgate's own diagnosis says what is wrong; its stack would only show forkgate's code.
  if (error instanceof ForkgateError) return error.message;
  if (error instanceof Error) return error.stack ?? `${error.name}: ${error.message}`;
  return String(error);
}

function timestamp(date = new Date()): string {
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const pad = (n: number) => String(Math.abs(n)).padStart(2, '0');
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())} ` +
    `${sign}${pad(Math.trunc(offset / 60))}${pad(offset % 60)}`
  );
}
