import * as fs from 'node:fs';
import * as path from 'node:path';
import { count } from './count.ts';

/** Told, in a sentence, when a sink starts dropping lines it cannot write and when it writes again. */
export type SinkTrouble = (message: string) => void;

/**
 * A log destination: '-' (stdout or stderr) or a file opened for append. Writes are synchronous, so no
 * line is lost when a process exits or crashes; `batched` sinks (the access log) write one event-loop
 * turn's lines at once. A reopen (USR1) that fails says why, and the lines go on to the old file. A write
 * that fails (a full disk, a reader that went away) drops its lines and never ends the process.
 */
export class LogSink {
  readonly target: string;
  private readonly standardFd: 1 | 2;
  private readonly batched: boolean;
  private readonly onTrouble: SinkTrouble;
  private fd: number;
  private pending: string[] = [];
  private flushScheduled = false;
  /** Why writes fail, while they do; and the lines dropped meanwhile. */
  private failure: string | null = null;
  private dropped = 0;

  constructor(target: string, standardFd: 1 | 2, options: { batched?: boolean; onTrouble?: SinkTrouble } = {}) {
    this.target = target;
    this.standardFd = standardFd;
    this.batched = options.batched ?? false;
    this.onTrouble = options.onTrouble ?? (() => {});
    this.fd = this.open();
  }

  write(line: string): void {
    if (!this.batched) {
      this.put(line);
      return;
    }
    this.pending.push(line);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const text = this.pending.join('');
    this.pending = [];
    this.put(text);
  }

  /**
   * USR1: opens the file afresh if it is among those logrotate moved. Returns why it could not (then
   * the lines go on to the old file), for its owner to log.
   */
  reopenAmong(files: readonly string[]): Error | null {
    if (this.target === '-' || !files.includes(this.target)) return null;
    this.flush();
    const previous = this.fd;
    try {
      this.fd = this.open();
    } catch (error) {
      return error as Error;
    }
    fs.closeSync(previous);
    return null;
  }

  close(): void {
    this.flush();
    if (this.target !== '-') fs.closeSync(this.fd);
  }

  private open(): number {
    return this.target === '-' ? this.standardFd : fs.openSync(this.target, 'a');
  }

  private put(text: string): void {
    try {
      writeFully(this.fd, text);
    } catch (error) {
      this.dropped += text.split('\n').length - 1;
      if (this.failure !== null) return;
      this.failure = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      this.tell(`cannot write (${this.failure}): its lines are dropped until it can`);
      return;
    }
    if (this.failure === null) return;
    const lost = `${count(this.dropped, 'line')} lost (${this.failure})`;
    this.failure = null;
    this.dropped = 0;
    this.tell(`writes again, ${lost}`);
  }

  private tell(what: string): void {
    const name = this.target === '-' ? (this.standardFd === 1 ? 'stdout' : 'stderr') : this.target;
    try {
      this.onTrouble(`${name}: ${what}`);
    } catch {}
  }
}

/**
 * A reader of stdout or stderr that went away (a log shipper that exited, `| head`) must not end the
 * process at its next console line or Node warning (an unhandled EPIPE 'error'): that output is lost,
 * not the requests.
 */
export function outliveOutputReaders(): void {
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => {});
}

/** stdout may be a non-blocking pipe shared with the parent: retry EAGAIN rather than drop the line. */
function writeFully(fd: number, text: string): void {
  let buffer = Buffer.from(text);
  while (buffer.length > 0) {
    try {
      const written = fs.writeSync(fd, buffer);
      buffer = buffer.subarray(written);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
    }
  }
}

/**
 * Why this process could not write the file a setting names (a log, the pid file), or null: checked
 * before anything listens, so that a path no one can write is told as the setting's fault.
 */
export function unwritableFile(setting: string, file: string | null): string | null {
  const problem = file && file !== '-' ? unwritable(file) : null;
  return problem && `${setting} ${file}: cannot write it: ${problem}`;
}

function unwritable(file: string): string | null {
  const directory = path.dirname(file);
  if (!fs.existsSync(directory)) return `no such directory ${directory}`;
  try {
    fs.accessSync(directory, fs.constants.W_OK | fs.constants.X_OK);
    if (!fs.existsSync(file)) return null;
    if (fs.statSync(file).isDirectory()) return 'it is a directory';
    fs.accessSync(file, fs.constants.W_OK);
    return null;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? (error as Error).message;
  }
}
