/**
 * The faults the chaos harness inflicts, one entry each: what forkgate needs for it (workers, flags, a
 * descriptor limit), whether the standard load runs beside it, and the fault itself. A fault records
 * the units it took down and when (for the verdict), sets `lastAction` (time to a full pool counts from
 * it), and returns once its effect has come about, every wait bounded.
 */
import { HttpConnection } from './http-client.ts';
import { generateCases, runCase } from './fuzz.ts';
import { send, type Load, type RequestRecord } from './load.ts';
import { isRunning, pause, signal, type ChaosServer, type PoolStatus } from './server.ts';
import type { PoolWatch } from './watch.ts';

export const MODES = ['round-robin', 'reuseport', 'proxy', 'threads', 'sync'] as const;
export type Mode = (typeof MODES)[number];

export const MODE_FLAGS: Record<Mode, string[]> = {
  'round-robin': ['--balance', 'round-robin'],
  reuseport: ['--balance', 'reuseport'],
  proxy: ['--balance', 'proxy'],
  threads: ['--threads', '2'],
  sync: ['-k', 'sync'],
};

export const THREADS: Record<Mode, number> = { 'round-robin': 1, reuseport: 1, proxy: 1, threads: 2, sync: 1 };

/** How long a request may wait for its answer before it counts as failed (a hung worker is killed in ~2-4 s). */
export const REQUEST_TIMEOUT_MS = 8000;
/** The same where no unit goes down: nothing should keep a request waiting this long. */
const UNHURT_TIMEOUT_MS = 3000;

export interface FaultContext {
  readonly mode: Mode;
  readonly server: ChaosServer;
  readonly watch: PoolWatch;
  readonly load: Load | null;
  readonly seed: number;
  readonly quick: boolean;
  /** Requests the fault sent that are judged like the load's (poison ones marked so). */
  readonly records: RequestRecord[];
  /** Traffic the rule does not judge request by request (EMFILE clients, fuzz cases): counted here. */
  readonly tally: { sent: number; failed: number };
  /** What this fault found wrong beyond failed requests: each fails the run. */
  readonly problems: string[];
  readonly notes: string[];
  /** Everything worth a closer look, for the run's details file (--logs). */
  readonly details: string[];
  /** When the fault's last action happened. */
  lastAction: number;
}

export interface Fault {
  readonly name: string;
  readonly summary: string;
  /** Worker processes (default 2). */
  readonly workers?: number;
  readonly flags?: readonly string[];
  /** --max-memory, in MiB. */
  readonly maxMemoryMiB?: number;
  /** Runs forkgate under this descriptor limit (prlimit). */
  readonly descriptorLimit?: number;
  /** The standard keep-alive load runs while the fault happens. */
  readonly load: boolean;
  /** The fault takes units down (kills, crashes, hangs); any other fault must not make one exit unexpectedly. */
  readonly takesDownUnits?: boolean;
  /** The fault may take every worker down at once: the pool may stand empty until they are replaced. */
  readonly mayEmptyPool?: boolean;
  /** How long the load's requests may wait for an answer (default REQUEST_TIMEOUT_MS). */
  readonly requestTimeoutMs?: number;
  run(context: FaultContext): Promise<void>;
}

let nextPoison = 1;

/**
 * Sends a request to a route that takes its unit down, on a connection of its own, and has the watch
 * count every unit that receives it as faulted. Resolves with the first such unit once the fixture has
 * logged it (or null after 3 s: the request may still be waiting for a unit), and `done` once it ended.
 */
async function poison(context: FaultContext, path: string, mustGo = false): Promise<{ unit: string | null; done: Promise<void> }> {
  const id = `P${nextPoison++}`;
  const connection = new HttpConnection(context.server.port);
  const sentAt = Date.now();
  context.lastAction = sentAt;
  context.watch.poison(id, sentAt, mustGo);
  const done = send(connection, id, path, REQUEST_TIMEOUT_MS).then((record) => {
    connection.close();
    context.records.push({ ...record, poison: true });
  });
  const deadline = Date.now() + 3000;
  let unit: string | undefined;
  for (unit = context.watch.poisoned(id)[0]; !unit && Date.now() < deadline; unit = context.watch.poisoned(id)[0]) await pause(10);
  if (!unit) context.notes.push(`${path} (${id}) reached no unit within 3 s`);
  return { unit: unit ?? null, done };
}

/** Ready workers now, running (not stopped or dead), per /status. */
async function readyWorkers(context: FaultContext, except: ReadonlySet<number> = new Set()): Promise<number[]> {
  const status: PoolStatus | null = await context.server.status();
  return (status?.workers ?? [])
    .filter((worker) => worker.state === 'ready' && isRunning(worker.pid) && !except.has(worker.pid))
    .map((worker) => worker.pid);
}

/** A ready worker, preferring one the load is talking to right now; waits (bounded) for one. */
async function pickWorker(context: FaultContext, except: ReadonlySet<number> = new Set()): Promise<number | null> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && context.server.anyMasterAlive()) {
    const ready = await readyWorkers(context, except);
    const recent = context.load?.records.slice(-20).map((record) => Number(record.unit?.split('/')[0])) ?? [];
    const busy = ready.find((pid) => recent.includes(pid));
    if (busy ?? ready[0]) return busy ?? ready[0]!;
    await pause(50);
  }
  return null;
}

function hitWorker(context: FaultContext, pid: number, name: 'SIGKILL' | 'SIGSTOP'): void {
  const at = Date.now();
  // A stopped worker still shows as ready: the pool is full only once it is gone.
  context.watch.fault(`${pid}/${pid}`, at, name === 'SIGSTOP');
  signal(pid, name);
  context.lastAction = at;
}

/** Runs `action` every `everyMs`, `times` times, on a fixed schedule (an action's own waits do not shift it). */
async function every(times: number, everyMs: number, action: (index: number) => Promise<void>): Promise<void> {
  const start = Date.now();
  for (let index = 0; index < times; index++) {
    const wait = start + index * everyMs - Date.now();
    if (wait > 0) await pause(wait);
    await action(index);
  }
}

/** A route that crashes its unit, hit four times 1.2 s apart while the load runs on healthy routes. */
function crashRoute(name: string, path: string, summary: string): Fault {
  return {
    name,
    summary,
    load: true,
    takesDownUnits: true,
    async run(context) {
      const hits: Promise<void>[] = [];
      const units: (string | null)[] = [];
      await every(4, 1200, async () => {
        const { unit, done } = await poison(context, path);
        units.push(unit);
        hits.push(done);
      });
      await Promise.all(hits);
      const last = units.at(-1);
      if (last) await context.watch.untilGone(last, 5000);
      reportPoison(context, path);
    },
  };
}

/** Each poison request must take down at most the unit it reached: reaching two means it was sent on. */
function reportPoison(context: FaultContext, path: string): void {
  const poisons = context.records.filter((record) => record.poison);
  for (const record of poisons) {
    const reached = context.watch.poisoned(record.id);
    if (reached.length > 1)
      context.problems.push(
        `${path} (${record.id}) reached ${reached.length} units (${reached.join(', ')}): sent on after it took down the first`,
      );
  }
  const gone = context.watch.faulted.filter(({ unit }) => context.watch.goneAt.has(unit)).length;
  context.notes.push(`${poisons.length} hits, ${gone} units went`);
}

const killOne: Fault = {
  name: 'kill-one',
  summary: 'SIGKILL one worker under load',
  load: true,
  takesDownUnits: true,
  async run(context) {
    const pid = await pickWorker(context);
    if (pid === null) return void context.problems.push('no ready worker to kill');
    hitWorker(context, pid, 'SIGKILL');
  },
};

const killAll: Fault = {
  name: 'kill-all',
  summary: 'SIGKILL every worker at once under load',
  load: true,
  takesDownUnits: true,
  mayEmptyPool: true,
  async run(context) {
    const pids = await readyWorkers(context);
    if (pids.length === 0) return void context.problems.push('no ready worker to kill');
    for (const pid of pids) hitWorker(context, pid, 'SIGKILL');
  },
};

const killRepeat: Fault = {
  name: 'kill-repeat',
  summary: 'SIGKILL one worker every 500 ms, 5 times, under load',
  load: true,
  takesDownUnits: true,
  mayEmptyPool: true,
  async run(context) {
    const killed = new Set<number>();
    await every(5, 500, async () => {
      const pid = await pickWorker(context, killed);
      if (pid === null) return void context.problems.push('no ready worker to kill');
      killed.add(pid);
      hitWorker(context, pid, 'SIGKILL');
    });
  },
};

const stop: Fault = {
  name: 'stop',
  summary: 'SIGSTOP one worker (--timeout 2): the master must kill and replace it',
  flags: ['--timeout', '2'],
  load: true,
  takesDownUnits: true,
  async run(context) {
    const pid = await pickWorker(context);
    if (pid === null) return void context.problems.push('no ready worker to stop');
    hitWorker(context, pid, 'SIGSTOP');
    if (!(await context.watch.untilGone(`${pid}/${pid}`, 12_000)))
      context.problems.push(`the stopped worker ${pid} was not killed within 12 s`);
  },
};

const hang: Fault = {
  name: 'hang',
  summary: 'a request that spins forever (for(;;)) past --timeout 2',
  flags: ['--timeout', '2'],
  load: true,
  takesDownUnits: true,
  async run(context) {
    const { unit, done } = await poison(context, '/hang', true);
    if (unit) {
      if (!(await context.watch.untilGone(unit, 12_000))) context.problems.push(`the hung unit ${unit} was not killed within 12 s`);
    }
    await done;
  },
};

const LEAK_MIB = 64;
const leak: Fault = {
  name: 'leak',
  summary: `a worker that grows past --max-memory 160 (${LEAK_MIB} MiB kept per request)`,
  maxMemoryMiB: 160,
  load: true,
  requestTimeoutMs: UNHURT_TIMEOUT_MS,
  async run(context) {
    // One connection while it stays open (-k sync closes it after each answer), so the hits meet in one worker.
    let connection = new HttpConnection(context.server.port);
    await every(3, 300, async (index) => {
      if (!connection.open) connection = new HttpConnection(context.server.port);
      context.lastAction = Date.now();
      context.records.push(await send(connection, `M${index + 1}`, `/leak?mb=${LEAK_MIB}`, UNHURT_TIMEOUT_MS));
    });
    connection.close();
    // The master reads each worker's memory from its heartbeat (every second): wait until one retires.
    const deadline = Date.now() + 5000;
    for (;;) {
      const status = await context.server.status();
      if (status?.workers.some((worker) => worker.retiring || worker.state === 'draining')) break;
      if (Date.now() > deadline) return void context.problems.push('no worker retired within 5 s of passing --max-memory');
      await pause(50);
    }
  },
};

const EMFILE_LIMIT = 256;
const EMFILE_CLIENTS = 400;
const emfile: Fault = {
  name: 'emfile',
  summary: `${EMFILE_CLIENTS} keep-alive clients against forkgate under a limit of ${EMFILE_LIMIT} descriptors (1 worker)`,
  workers: 1,
  descriptorLimit: EMFILE_LIMIT,
  load: false,
  async run(context) {
    context.lastAction = Date.now();
    const clients = Array.from({ length: EMFILE_CLIENTS }, (_, i) => {
      const connection = new HttpConnection(context.server.port);
      const outcome = connection.request(`GET /pid HTTP/1.1\r\nHost: chaos\r\nx-chaos-id: E${i}\r\n\r\n`, 'GET', 10_000);
      const client = { connection, status: 0, ended: '', at: 0 };
      void outcome.then((result) => {
        client.at = Date.now();
        if (result.response) client.status = result.response.status;
        else client.ended = result.failure === 'timeout' ? '' : `${result.failure}${result.detail ? ` ${result.detail}` : ''}`;
      });
      return client;
    });
    context.tally.sent += clients.length;
    // The first round: who is served, refused, cut off, or still waiting after 5 s.
    const firstRound = Date.now() + 5000;
    while (Date.now() < firstRound && clients.some((client) => client.at === 0)) await pause(50);
    const first = classify(clients);
    // The served ones leave: those that waited should be served now (bounded).
    for (const client of clients) if (client.status !== 0) client.connection.close();
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && clients.some((client) => client.status === 0 && client.ended === '' && client.at === 0))
      await pause(50);
    const waitedThenServed = clients.filter((client) => client.status !== 0 && client.at > firstRound).length;
    const stillWaiting = clients.filter((client) => client.status === 0 && client.ended === '').length;
    for (const client of clients) client.connection.close();
    const noAnswer = first.cut + stillWaiting;
    context.tally.failed += noAnswer;
    context.notes.push(
      `served ${first.served}, 503 ${first.refused}, other status ${first.other}${first.other ? ` (${first.otherKinds})` : ''}, waited then served ${waitedThenServed}, ` +
        `no answer ${noAnswer} (cut off ${first.cut}${first.cutKinds ? `: ${first.cutKinds}` : ''}; never served ${stillWaiting})`,
    );
    if (first.cut > 0) context.problems.push(`${first.cut} clients were cut off with no answer (${first.cutKinds})`);
    if (stillWaiting > 0) context.problems.push(`${stillWaiting} clients were never served, even after the others left`);
    if (first.served === 0) context.problems.push('no client was served');
    if (first.other > 0) context.problems.push(`${first.other} clients were answered ${first.otherKinds}`);
  },
};

function classify(clients: { status: number; ended: string }[]) {
  const kinds = new Map<string, number>();
  for (const client of clients) if (client.status === 0 && client.ended) kinds.set(client.ended, (kinds.get(client.ended) ?? 0) + 1);
  return {
    served: clients.filter((client) => client.status === 200).length,
    refused: clients.filter((client) => client.status === 503).length,
    other: clients.filter((client) => client.status !== 0 && client.status !== 200 && client.status !== 503).length,
    otherKinds: [
      ...new Set(
        clients.filter((client) => client.status !== 0 && client.status !== 200 && client.status !== 503).map((client) => client.status),
      ),
    ].join(', '),
    cut: clients.filter((client) => client.status === 0 && client.ended !== '').length,
    cutKinds: [...kinds].map(([kind, count]) => `${count}× ${kind}`).join(', '),
  };
}

const IDLE_CONNECTIONS = 2000;
const HALF_OPEN = 100;
const NEW_CLIENTS = 3;
const idle: Fault = {
  name: 'idle',
  summary: `${IDLE_CONNECTIONS} idle keep-alive connections and ${HALF_OPEN} half-open ones, then new clients`,
  load: true,
  requestTimeoutMs: UNHURT_TIMEOUT_MS,
  async run(context) {
    const opened: HttpConnection[] = [];
    const records: Promise<RequestRecord>[] = [];
    // One request each, then idle; opened 100 at a time so the harness itself is no flood.
    for (let batch = 0; batch < IDLE_CONNECTIONS; batch += 100) {
      const round = Array.from({ length: Math.min(100, IDLE_CONNECTIONS - batch) }, (_, i) => {
        const connection = new HttpConnection(context.server.port);
        opened.push(connection);
        return send(connection, `I${batch + i}`, '/pid', UNHURT_TIMEOUT_MS);
      });
      records.push(...round);
      await Promise.all(round);
    }
    context.records.push(...(await Promise.all(records)));
    // Half-open: half connect and send nothing, half send a request's head without its end.
    const halfOpen = Array.from({ length: HALF_OPEN }, (_, i) => {
      const connection = new HttpConnection(context.server.port);
      if (i % 2 === 1) connection.socket.write('GET /pid HTTP/1.1\r\nHost: chaos\r\n');
      return connection;
    });
    const made = (await Promise.all(halfOpen.map((connection) => connection.connected()))).filter(Boolean).length;
    context.notes.push(`${made} half-open connections made`);
    context.lastAction = Date.now();
    // New clients, one after another: each must be served promptly.
    const servedInMs: number[] = [];
    const unserved: string[] = [];
    for (let i = 0; i < NEW_CLIENTS; i++) {
      const connection = new HttpConnection(context.server.port);
      const record = await send(connection, `N${i}`, '/pid', 2000);
      connection.close();
      context.records.push(record);
      if (record.status === 200) servedInMs.push(record.endedAt - record.sentAt);
      else unserved.push(record.status !== undefined ? `${record.status}` : `${record.failure}: ${record.detail}`);
    }
    for (const connection of [...opened, ...halfOpen]) connection.close();
    if (unserved.length > 0)
      context.problems.push(
        `${unserved.length} of ${NEW_CLIENTS} new clients beside the idle connections not served within 2 s (${[...new Set(unserved)].join(', ')})`,
      );
    if (servedInMs.length > 0) context.notes.push(`new clients served in ${Math.min(...servedInMs)}-${Math.max(...servedInMs)} ms`);
  },
};

const ABORTS = 20;
const abort: Fault = {
  name: 'abort',
  summary: `${ABORTS} clients that leave mid-request (half a body) and ${ABORTS} mid-response (64 KiB of 8 MiB read)`,
  load: true,
  requestTimeoutMs: UNHURT_TIMEOUT_MS,
  async run(context) {
    await every(ABORTS, 50, async (index) => {
      context.lastAction = Date.now();
      // Mid-request: a body announced as 100,000 bytes, half sent, then the connection closed.
      const upload = new HttpConnection(context.server.port);
      const head = `POST /echo HTTP/1.1\r\nHost: chaos\r\nx-chaos-id: A${index}\r\nContent-Length: 100000\r\n\r\n`;
      upload.socket.write(`${head}${'a'.repeat(50_000)}`, () => upload.close());
      // Mid-response: a large answer, read in part, then the connection closed.
      await readPartOfBigResponse(context);
    });
    context.tally.sent += 2 * ABORTS;
  },
};

function readPartOfBigResponse(context: FaultContext): Promise<void> {
  return new Promise((resolve) => {
    const connection = new HttpConnection(context.server.port);
    let received = 0;
    const finish = (problem?: string) => {
      clearTimeout(timer);
      connection.close();
      if (problem) context.problems.push(problem);
      resolve();
    };
    const timer = setTimeout(() => finish('GET /big sent nothing within 5 s'), 5000);
    connection.socket.on('data', (chunk: Buffer) => {
      if (received === 0 && !chunk.subarray(0, 12).toString('latin1').startsWith('HTTP/1.1 200')) {
        return finish(`GET /big answered ${JSON.stringify(chunk.subarray(0, 40).toString('latin1'))}`);
      }
      received += chunk.length;
      if (received >= 64 * 1024) finish();
    });
    connection.socket.write('GET /big?kb=8192 HTTP/1.1\r\nHost: chaos\r\n\r\n');
  });
}

const signals: Fault = {
  name: 'signals',
  summary: 'HUP TTIN TTOU HUP USR2 within 100 ms: a reload, a resize and a new master at once',
  load: true,
  requestTimeoutMs: UNHURT_TIMEOUT_MS,
  // The new master takes the admin socket while its workers boot and the old master's still serve:
  // /status shows one master's pool, so an empty one there says nothing. Requests tell.
  mayEmptyPool: true,
  async run(context) {
    const master = context.server.masterPid();
    context.watch.requireNewMaster = true;
    for (const name of ['SIGHUP', 'SIGTTIN', 'SIGTTOU', 'SIGHUP', 'SIGUSR2'] as const) {
      signal(master, name);
      context.lastAction = Date.now();
      await pause(20);
    }
  },
};

const fuzz: Fault = {
  name: 'fuzz',
  summary: 'generated malformed and smuggling requests, each followed by clean requests on new connections',
  load: true,
  requestTimeoutMs: UNHURT_TIMEOUT_MS,
  async run(context) {
    const cases = generateCases(context.seed, context.quick ? 10 : 50);
    const failing: string[] = [];
    const accepted = new Set<string>();
    for (const fuzzCase of cases) {
      context.lastAction = Date.now();
      const verdict = await runCase(context.server.port, fuzzCase, `${context.seed}-${fuzzCase.index}`);
      context.tally.sent += verdict.requests;
      if (verdict.acceptedMalformed) {
        accepted.add(fuzzCase.name);
        context.details.push(`answered 2xx: #${fuzzCase.index} ${fuzzCase.name}: ${showBytes(fuzzCase.bytes)}`);
      }
      if (verdict.problems.length > 0) {
        context.tally.failed++;
        failing.push(`#${fuzzCase.index} ${fuzzCase.name}: ${verdict.problems.join('; ')}`);
        context.details.push(
          `FAILED: #${fuzzCase.index} ${fuzzCase.name}: ${verdict.problems.join('; ')}\n  sent: ${showBytes(fuzzCase.bytes)}`,
        );
      }
    }
    context.notes.push(`seed ${context.seed}, ${cases.length} cases, ${failing.length} failing`);
    if (accepted.size > 0) context.notes.push(`answered 2xx though malformed: ${[...accepted].join(', ')}`);
    context.problems.push(...failing);
  },
};

/** A request's bytes as a JSON string, long runs of one character shortened. */
function showBytes(bytes: Buffer): string {
  return JSON.stringify(bytes.toString('latin1')).replace(/(.)\1{40,}/g, (run, char: string) => `${char}…(${run.length}×)`);
}

export const FAULTS: readonly Fault[] = [
  killOne,
  killAll,
  killRepeat,
  stop,
  crashRoute('throw', '/throw', 'an uncaught exception thrown from a timer in a request, 4 times 1.2 s apart'),
  crashRoute('reject', '/reject', 'an unhandled rejection in a request, 4 times 1.2 s apart'),
  crashRoute('exit', '/exit', 'process.exit(1) in a request, 4 times 1.2 s apart'),
  hang,
  leak,
  emfile,
  idle,
  abort,
  signals,
  fuzz,
];
