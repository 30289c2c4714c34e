/**
 * Starts real forkgate processes for the integration tests and waits on real readiness (the master's
 * log lines), never on sleeps. FORKGATE_TEST_BIN=path runs the single binary instead of the npm build.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';
import * as net from 'node:net';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const FIXTURES = `${ROOT}test/fixtures/apps/`;
const CLI = `${ROOT}dist/forkgate.cjs`;

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Resolve once this many workers are serving (the "Ready: N workers" line); false: return at once. */
  waitReady?: boolean;
  /** A command that execs forkgate with the rest of its arguments (systemd-socket-activate and its flags). */
  launcher?: string[];
  /** forkgate itself, when not this checkout's build (or FORKGATE_TEST_BIN): see install.ts. */
  command?: string[];
}

export class Forkgate {
  readonly process: ChildProcess;
  /** Everything the master and its workers wrote to stdout and stderr, in order. */
  output = '';
  url = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private watchers: { pattern: RegExp; resolve: (match: RegExpMatchArray) => void }[] = [];

  constructor(args: string[], options: StartOptions = {}) {
    const bin = process.env.FORKGATE_TEST_BIN;
    const forkgate = options.command ?? (bin ? [bin] : [process.execPath, CLI]);
    const [command, ...commandArgs] = [...(options.launcher ?? []), ...forkgate, ...args];
    this.process = spawn(command!, commandArgs, {
      cwd: options.cwd ?? FIXTURES, // not the repo root, where a stray forkgate.config.* would be picked up
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const onData = (chunk: Buffer) => {
      this.output += chunk.toString();
      this.watchers = this.watchers.filter((watcher) => {
        const match = this.output.match(watcher.pattern);
        if (match) watcher.resolve(match);
        return !match;
      });
    };
    this.process.stdout!.on('data', onData);
    this.process.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => this.process.once('exit', (code, signal) => resolve({ code, signal })));
    live.add(this);
    void this.exited.then(() => live.delete(this));
  }

  get pid(): number {
    return this.process.pid!;
  }

  /** Resolves when the output matches (already or later); rejects on exit or after timeoutMs. */
  waitFor(pattern: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const match = this.output.match(pattern);
    if (match) return Promise.resolve(match);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${pattern}; output:\n${this.output}`)), timeoutMs);
      const done = (value: RegExpMatchArray) => {
        clearTimeout(timer);
        resolve(value);
      };
      this.watchers.push({ pattern, resolve: done });
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        const late = this.output.match(pattern);
        if (late) resolve(late);
        else reject(new Error(`forkgate exited (${code ?? signal}) before ${pattern}; output:\n${this.output}`));
      });
    });
  }

  async ready(): Promise<this> {
    const [, url] = (await this.waitFor(/Listening at: (\S+)/)) as [string, string];
    this.url = url;
    await this.waitFor(/Ready: \d+ workers? serving/);
    return this;
  }

  signal(signal: NodeJS.Signals): void {
    this.process.kill(signal);
  }

  /** Pids of the master's live child processes, from /proc. */
  workerPids(): number[] {
    return childPids(this.pid);
  }

  /** Counts occurrences of a pattern in the output so far. */
  count(pattern: RegExp): number {
    return (this.output.match(new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`)) ?? []).length;
  }

  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.process.exitCode === null && this.process.signalCode === null) this.signal('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 20_000);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }
}

/** Starts forkgate and waits until its pool is ready. */
export async function start(args: string[], options: StartOptions = {}): Promise<Forkgate> {
  const forkgate = new Forkgate(args, options);
  return options.waitReady === false ? forkgate : forkgate.ready();
}

const live = new Set<Forkgate>();
/** Safety net for a failed assertion mid-test: no forkgate outlives the test file. */
process.on('exit', () => {
  for (const forkgate of live) forkgate.process.kill('SIGKILL');
});

export function childPids(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Field 4 (ppid) follows the command name in parentheses, which may contain spaces.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === parent && fields[0] !== 'Z') pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids.sort((a, b) => a - b);
}

/** The listen backlog of the socket listening on this TCP port, as the kernel has it (ss's Send-Q). */
export function listenBacklog(port: number): number {
  const line = execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' }).trim();
  const [, , sendQueue] = line.split(/\s+/);
  if (line.includes('\n') || sendQueue === undefined) throw new Error(`expected one listening socket on port ${port}, ss says:\n${line}`);
  return Number(sendQueue);
}

export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The request went out on a connection an earlier request had used (a keep-alive agent). */
  reused: boolean;
}

export interface RequestOptions {
  method?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string;
  socketPath?: string;
  agent?: http.Agent;
}

/** One request on a fresh connection (no keep-alive pool), so round-robin spreading is observable. */
export function request(url: string, options: RequestOptions = {}): Promise<Reply> {
  return startRequest(url, options).reply;
}

/** A request whose response headers are awaited separately: `headers` resolves while the body is still to come. */
export function startRequest(url: string, options: RequestOptions = {}): { headers: Promise<void>; reply: Promise<Reply> } {
  let headersArrived!: () => void;
  const headers = new Promise<void>((resolve) => (headersArrived = resolve));
  const reply = new Promise<Reply>((resolve, reject) => {
    const req = http.request(
      url,
      { method: options.method ?? 'GET', headers: options.headers, agent: options.agent ?? false, socketPath: options.socketPath },
      (res) => {
        headersArrived();
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, reused: req.reusedSocket }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error(`request to ${url} timed out`)));
    req.end(options.body);
  });
  return { headers, reply };
}

/** Polls a condition that depends on other processes (a pid replaced, a count reached), bounded in time. */
export async function eventually<T>(probe: () => T | Promise<T>, what: string, timeoutMs = 10_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Rejects if the promise has not settled within ms. */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer!: NodeJS.Timeout;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/** A connection that sends nothing (a preconnected or pooled socket), once connected; `closed`: once the server closes it. */
export async function silentConnection(url: string): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, closed };
}
