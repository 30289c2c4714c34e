/**
 * One configuration under trial: forkgate itself, started as a user starts it (this executable, the
 * app, the configuration's flags), ready once its master logs that the pool serves, stopped with TERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { isSea } from 'node:sea';
import { AppLoadError, ExitCode, SettingError, type ForkgateError } from '../errors.ts';
import { TuneError } from '../errors.ts';
import type { Config } from './model.ts';

/** Startup and shutdown are each bounded: a pool that takes longer is reported, not waited on. */
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

/** Live servers, stopped if tune itself is interrupted. */
const running = new Set<TrialServer>();

export class TrialServer {
  /** The port it bound (it is given port 0, and says which in its log): known once it is ready. */
  port = 0;
  private readonly child: ChildProcess;
  private log = '';
  private readonly exited: Promise<number | null>;

  private constructor(child: ChildProcess) {
    this.child = child;
    const keep = (chunk: Buffer) => (this.log = (this.log + chunk.toString()).slice(-50_000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    running.add(this);
    void this.exited.then(() => running.delete(this));
  }

  /** Starts `forkgate FLAGS -b 127.0.0.1:0 APP` and waits until its pool serves. */
  static async start(app: string, config: Config, env: NodeJS.ProcessEnv): Promise<TrialServer> {
    const args = [
      ...(isSea() ? [] : [process.argv[1]!]),
      // all four, even the defaults: the config file and the environment may set them otherwise
      '-w',
      String(config.workers),
      '--threads',
      String(config.threads),
      '-k',
      config.workerClass,
      '--balance',
      config.balance,
      // Port 0: a port picked here and bound there could be taken in between.
      '-b',
      '127.0.0.1:0',
      // the readiness line is read from the log, whatever the config file says about it
      '--error-logfile',
      '-',
      '--log-level',
      'info',
      app,
    ];
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const server = new TrialServer(child);
    await server.ready(app, config.workers);
    return server;
  }

  get pid(): number {
    return this.child.pid!;
  }

  private async ready(app: string, workers: number): Promise<void> {
    const line = new RegExp(`Ready: ${workers} workers? serving`);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let exitCode: number | null | undefined;
    void this.exited.then((code) => (exitCode = code));
    for (;;) {
      if (line.test(this.log)) {
        this.port = Number(/Listening at: http:\/\/127\.0\.0\.1:(\d+)/.exec(this.log)![1]);
        return;
      }
      if (exitCode !== undefined) throw this.bootFailure(app, exitCode);
      if (Date.now() > deadline) {
        await this.stop();
        throw new TuneError(`the pool was not ready within ${READY_TIMEOUT_MS / 1000} s:\n${this.log.trim()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** The app that cannot load says why in the master's error lines; a refused setting, in forkgate's one line. */
  private bootFailure(app: string, code: number | null): ForkgateError {
    const errors = this.log
      .split(/\n(?=\[[A-Z]+\] )/)
      .filter((entry) => entry.startsWith('[ERROR]') && !/Shutting down/.test(entry))
      .map((entry) => entry.replace(/^\[ERROR\] \S+ \S+ \S+ \[\d+\] (Worker failed to boot \(pid:\d+\):\s*)?/, ''));
    if (code === ExitCode.bootFailure) return new AppLoadError(`${app} does not load: ${errors.join('\n').trim() || this.log.trim()}`);
    // a setting it refused: the config file or the environment it shares with the servers you start
    if (code === ExitCode.usage) return new SettingError(this.log.trim().replace(/^forkgate: error: /, ''));
    return new TuneError(`forkgate exited ${code} before it served:\n${this.log.trim()}`);
  }

  /** TERM, as a supervisor stops it; KILL after STOP_TIMEOUT_MS. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }

  /** Stops every live server without waiting (tune itself is interrupted). */
  static terminateAll(): void {
    for (const server of running) server.child.kill('SIGTERM');
  }
}
