/**
 * What tune says while it runs, on stderr (stdout carries the result): on a terminal, one line redrawn
 * as a bar with the trial being run and the time left; elsewhere, plain lines.
 */
export interface Progress {
  phase(what: string): void;
  /** The trials about to run and the seconds they should take. */
  plan(trials: number, seconds: number): void;
  trial(index: number, config: string, secondsLeft: number): void;
  done(config: string, outcome: string): void;
  end(): void;
}

const BAR_WIDTH = 24;

export function progressOn(stream: NodeJS.WriteStream): Progress {
  return stream.isTTY ? new Bar(stream) : new Lines(stream);
}

class Lines implements Progress {
  private total = 0;
  private readonly stream: NodeJS.WritableStream;
  constructor(stream: NodeJS.WritableStream) {
    this.stream = stream;
  }
  phase(what: string): void {
    this.stream.write(`tune: ${what}\n`);
  }
  plan(trials: number, seconds: number): void {
    this.total = trials;
    this.stream.write(`tune: ${trials} trials, about ${Math.round(seconds)} s\n`);
  }
  trial(index: number, config: string, secondsLeft: number): void {
    this.stream.write(`tune: trial ${index}/${this.total}: ${config} (about ${Math.round(secondsLeft)} s left)\n`);
  }
  done(config: string, outcome: string): void {
    this.stream.write(`tune:   ${config}: ${outcome}\n`);
  }
  end(): void {}
}

class Bar implements Progress {
  private total = 0;
  private readonly stream: NodeJS.WriteStream;
  constructor(stream: NodeJS.WriteStream) {
    this.stream = stream;
  }
  phase(what: string): void {
    this.redraw(what);
  }
  plan(trials: number): void {
    this.total = trials;
  }
  trial(index: number, config: string, secondsLeft: number): void {
    const filled = this.total > 0 ? Math.round((BAR_WIDTH * (index - 1)) / this.total) : 0;
    this.redraw(
      `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] trial ${index}/${this.total}: ${config}, about ${Math.round(secondsLeft)} s left`,
    );
  }
  done(config: string, outcome: string): void {
    this.redraw(`${config}: ${outcome}`);
    this.stream.write('\n');
  }
  end(): void {
    this.redraw('');
  }
  private redraw(text: string): void {
    this.stream.write(`\r\x1b[2K${text.slice(0, Math.max(20, (this.stream.columns || 80) - 1))}`);
  }
}
