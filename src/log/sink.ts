import * as fs from 'node:fs';

/**
 * A log destination: '-' (stdout or stderr) or a file opened for append. Writes are synchronous, so no
 * line is lost when a process exits or crashes; `batched` sinks (the access log) write one event-loop
 * turn's lines at once. A reopen (USR1) that fails throws, and the lines go on to the old file.
 */
export class LogSink {
  readonly target: string;
  private readonly standardFd: 1 | 2;
  private readonly batched: boolean;
  private fd: number;
  private pending: string[] = [];
  private flushScheduled = false;

  constructor(target: string, standardFd: 1 | 2, options: { batched?: boolean } = {}) {
    this.target = target;
    this.standardFd = standardFd;
    this.batched = options.batched ?? false;
    this.fd = this.open();
  }

  write(line: string): void {
    if (!this.batched) {
      writeFully(this.fd, line);
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
    writeFully(this.fd, text);
  }

  reopen(): void {
    this.flush();
    if (this.target === '-') return;
    const previous = this.fd;
    this.fd = this.open();
    fs.closeSync(previous);
  }

  close(): void {
    this.flush();
    if (this.target !== '-') fs.closeSync(this.fd);
  }

  private open(): number {
    return this.target === '-' ? this.standardFd : fs.openSync(this.target, 'a');
  }
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
