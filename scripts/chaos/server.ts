/**
 * A real forkgate for the chaos harness: the built dist/forkgate.cjs started as its own process on
 * loopback with the chaos fixture, an admin endpoint on a unix socket and a pid file, and what the
 * harness reads from outside: its log, /status, the pid file (a USR2 successor takes it over), the
 * fixture's receipts, and the processes and threads in /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import * as http from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAlive, processTree, statFields } from '../../src/proc.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = `${ROOT}dist/forkgate.cjs`;
export const FIXTURE = `${ROOT}test/fixtures/apps/chaos.cjs`;

/**
 * What the fixture logged: a request id, or "@PORT" for a TCP connection from that client port, → each
 * unit ("pid/tid") that received it, and when.
 */
export type Receipts = Map<string, { unit: string; at: number }[]>;

export interface WorkerStatus {
  pid: number;
  state: string;
  retiring: boolean;
  rssBytes: number;
}

export interface PoolStatus {
  master: { pid: number };
  target: number;
  generation: number;
  workers: WorkerStatus[];
}

export interface StartOptions {
  /** Where the admin socket, pid file and receipts go (a fresh directory per run). */
  directory: string;
  /** forkgate's flags besides -b, --admin-bind, -p and the app. */
  flags: string[];
  /** A command that execs forkgate with the rest of its arguments (prlimit and its limits). */
  launcher?: string[];
  env: NodeJS.ProcessEnv;
}

export class ChaosServer {
  readonly process: ChildProcess;
  readonly adminSocket: string;
  readonly pidFile: string;
  readonly receiptsFile: string;
  output = '';
  port = 0;
  /** The first master's exit, once it has exited. */
  exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | null = null;
  /** Every process of the tree seen so far, with its start time (a pid is only ever killed if still the same process). */
  private readonly seen = new Map<number, string>();
  private receiptsOffset = 0;
  private readonly receipts: Receipts = new Map();

  constructor(options: StartOptions) {
    this.adminSocket = join(options.directory, 'admin.sock');
    this.pidFile = join(options.directory, 'forkgate.pid');
    this.receiptsFile = join(options.directory, 'receipts');
    // --request-id: the proxy's 502 warnings then name the request (readHeld).
    const args = [
      CLI,
      ...options.flags,
      '--request-id',
      '-b',
      '127.0.0.1:0',
      '--admin-bind',
      `unix:${this.adminSocket}`,
      '-p',
      this.pidFile,
      FIXTURE,
    ];
    const [command, ...rest] = [...(options.launcher ?? []), process.execPath, ...args];
    this.process = spawn(command!, rest, {
      cwd: options.directory, // no forkgate.config.* is picked up there
      env: { ...options.env, CHAOS_RECEIPTS: this.receiptsFile },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (chunk: Buffer) => (this.output += chunk.toString());
    this.process.stdout!.on('data', keep);
    this.process.stderr!.on('data', keep);
    this.process.once('exit', (code, signal) => (this.exit = { code, signal, at: Date.now() }));
    running.add(this);
  }

  get pid(): number {
    return this.process.pid!;
  }

  /** Waits for the port and the first full pool, bounded; throws with the log if forkgate never gets there. */
  async ready(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && !this.exit) {
      const listening = /Listening at: http:\/\/127\.0\.0\.1:(\d+)/.exec(this.output);
      if (listening && /Ready: \d+ workers? serving/.test(this.output)) {
        this.port = Number(listening[1]);
        this.remember();
        return;
      }
      await pause(25);
    }
    throw new Error(
      `forkgate ${this.exit ? `exited (${this.exit.code ?? this.exit.signal})` : `not ready after ${timeoutMs} ms`}:\n${this.output.slice(-3000)}`,
    );
  }

  /** The master serving now: the pid file's (a USR2 successor writes it once it serves), else the first. */
  masterPid(): number {
    const fromFile = readPid(this.pidFile);
    return fromFile !== null && isAlive(fromFile) ? fromFile : this.pid;
  }

  /** Some master of this server is alive: the first, the pid file's or the old one's (.oldbin). */
  anyMasterAlive(): boolean {
    return [this.pid, readPid(this.pidFile), readPid(`${this.pidFile}.oldbin`)].some((pid) => pid !== null && isAlive(pid));
  }

  /** GET /status from whichever master holds the admin socket, or null (no answer within the bound). */
  status(timeoutMs = 1000): Promise<PoolStatus | null> {
    return new Promise((resolve) => {
      const req = http.get({ socketPath: this.adminSocket, path: '/status', agent: false, timeout: timeoutMs }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          try {
            resolve(res.statusCode === 200 ? (JSON.parse(body) as PoolStatus) : null);
          } catch {
            resolve(null);
          }
        });
        res.on('error', () => resolve(null));
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(null));
    });
  }

  /** Records every process now in the tree of each master, so none is left behind at the end. */
  remember(): void {
    const roots = [this.pid, readPid(this.pidFile), readPid(`${this.pidFile}.oldbin`)].filter((pid): pid is number => pid !== null);
    for (const pid of processTree(roots)) {
      const started = startTime(pid);
      if (started) this.seen.set(pid, started);
    }
  }

  /** The fixture's receipts so far (read on from where the last call stopped). */
  readReceipts(): Receipts {
    if (!existsSync(this.receiptsFile)) return this.receipts;
    const fd = openSync(this.receiptsFile, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size > this.receiptsOffset) {
        const buffer = Buffer.alloc(size - this.receiptsOffset);
        readSync(fd, buffer, 0, buffer.length, this.receiptsOffset);
        const text = buffer.toString('latin1');
        const complete = text.lastIndexOf('\n') + 1; // a line being written is read next time
        this.receiptsOffset += complete;
        for (const line of text.slice(0, complete).split('\n')) {
          const [pid, tid, id, , at] = line.split(' ');
          if (!id || id === '-') continue;
          this.receipts.set(id, [...(this.receipts.get(id) ?? []), { unit: `${pid}/${tid}`, at: Number(at) }]);
        }
      }
    } finally {
      closeSync(fd);
    }
    return this.receipts;
  }

  /**
   * Behind the proxy, the receipts and what forkgate's log says a unit read: a unit that closed its
   * connection cleanly without answering had taken the request from its socket (one it never read would
   * have reset the connection), though it died before its app logged it.
   */
  readHeld(): Receipts {
    const held: Receipts = new Map(this.readReceipts());
    for (const [, id, pid] of this.output.matchAll(
      /proxy: \S+ \S+ \(request (\S+)\) to \S*\/(\d+)-\d+\.sock failed: the backend closed the connection before the response was complete/g,
    )) {
      held.set(id!, [...(held.get(id!) ?? []), { unit: `${pid}/${pid}`, at: 0 }]);
    }
    return held;
  }

  /**
   * INT (a quick stop: the run is over, what it measured is in) to every live master, up to 10 s for the
   * tree to end, then KILL for whatever of it is left (a stopped worker included), bounded.
   */
  async stop(): Promise<void> {
    this.remember();
    for (const pid of [this.masterPid(), this.pid]) signal(pid, 'SIGINT');
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && this.leftovers().length > 0) {
      this.remember();
      await pause(50);
    }
    for (const pid of this.leftovers()) signal(pid, 'SIGKILL');
    const killDeadline = Date.now() + 5000;
    while (Date.now() < killDeadline && (this.leftovers().length > 0 || !this.exit)) await pause(20);
    running.delete(this);
  }

  /** Everything the tree ever had that is still the same live process. */
  private leftovers(): number[] {
    return [...this.seen].filter(([pid, started]) => isAlive(pid) && startTime(pid) === started).map(([pid]) => pid);
  }

  /** Workers (and threads) that ended in a way forkgate logged as unexpected: a crash, an exit, a kill it did not send. */
  unexpectedExits(): string[] {
    return this.output
      .split('\n')
      .filter((line) => /Worker \(pid:\d+\) (exited with code|was killed by)|Thread \d+ exited with code [^0]|Worker crashed/.test(line));
  }

  /** For an interrupted harness: KILL the whole tree at once. */
  kill(): void {
    this.remember();
    for (const pid of this.leftovers()) signal(pid, 'SIGKILL');
  }
}

const running = new Set<ChaosServer>();

/** Kills every server still running (the harness was interrupted). */
export function killAll(): void {
  for (const server of running) server.kill();
}

export function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function readPid(file: string): number | null {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Alive and running: not a zombie, not stopped (SIGSTOP). */
export function isRunning(pid: number): boolean {
  const state = statFields(pid)?.[0];
  return state !== undefined && !'ZXTt'.includes(state);
}

/** A unit ("pid/tid") whose thread still exists in a live process. */
export function unitAlive(unit: string): boolean {
  const [pid, tid] = unit.split('/').map(Number) as [number, number];
  if (!isAlive(pid)) return false;
  const state = statFields(pid, tid)?.[0];
  return state !== undefined && state !== 'Z' && state !== 'X';
}

function startTime(pid: number): string | undefined {
  return statFields(pid)?.[19]; // field 22 (starttime); fields[] starts at field 3
}

/** The serving threads of a worker process under --threads (Node names them WorkerThread). */
export function workerThreads(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`)
      .filter((tid) => {
        try {
          return readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === 'WorkerThread';
        } catch {
          return false;
        }
      })
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * The pool as /proc shows it, for when /status does not answer: the master's child processes titled as
 * workers, each taken as ready (/proc cannot tell booting from serving), the target taken as expected.
 */
export function poolFromProc(master: number, target: number): PoolStatus | null {
  if (!isAlive(master)) return null;
  const workers = processTree([master])
    .filter((pid) => pid !== master && commandLine(pid).startsWith('forkgate: worker'))
    .map((pid) => ({ pid, state: 'ready', retiring: false, rssBytes: residentBytes(pid) }));
  return { master: { pid: master }, target, generation: 0, workers };
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1');
  } catch {
    return '';
  }
}

function residentBytes(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}
