/**
 * The chaos harness: each fault in each balance mode against a real forkgate (dist/forkgate.cjs, started
 * as its own process on loopback with test/fixtures/apps/chaos.cjs), under a bounded keep-alive load,
 * then a table of what happened.
 *
 *   npm run chaos                              every fault in every mode (~10 min on 2 cores)
 *   npm run chaos -- --quick                   the bounded subset npm test runs (< 60 s)
 *   npm run chaos -- --mode proxy --fault exit  a subset (both repeatable)
 *   npm run chaos -- --seed 1234               the fuzzer's cases from this seed (printed on every run)
 *   npm run chaos -- --logs DIR                 keep each run's forkgate log as DIR/FAULT-MODE.log
 *
 * Modes: round-robin, reuseport, proxy, threads (--threads 2), sync (-k sync); 2 workers unless a fault
 * needs 1. Faults: see FAULTS in scripts/chaos/faults.ts (npm run chaos -- --help lists them).
 *
 * The run fails (exit 1) if a master ever dies, if the pool is not full again within 15 s of the fault,
 * if no worker is ready for 2 s or more while a fault takes down one unit at a time (kill-all and
 * kill-repeat excepted), if a worker exits unexpectedly under a fault that takes none down, if a fault's
 * own check fails (a poison request that reached two units, an EMFILE client cut off with
 * no answer, a fuzz case answered 5xx or followed by a client that did not get exactly its own answer,
 * a new client not served promptly beside idle connections), or if a request failed that the fault does
 * not excuse. The rule, conservative because the harness cannot see inside forkgate:
 *
 *   A failed request is allowed only if it was in the hands of a unit (worker process, or thread) that
 *   the fault took down: sent before that unit was seen gone, ended after the fault on it began, and
 *   either the fixture logged that unit receiving it, or (behind --balance proxy) forkgate's log says
 *   that unit closed the connection without answering (it had read the request: one it never read
 *   resets the connection), or (not behind the proxy, where a client's connection ends in the master)
 *   that unit took the request's connection: the fixture logged the connection arriving there, or that
 *   unit answered the previous request on it.
 *   A fault's own poison request (a route that crashes, exits or hangs its unit) may fail too.
 *   Like a browser, the load sends once more, on a new connection, a request on a reused keep-alive
 *   connection that failed before any byte of its answer came (the server may have closed the idle
 *   connection as it went out); those are counted as retried, and only the retry is judged.
 *
 * Anything else that fails is a failure of the run. docs/reliability.md has the promises behind this,
 * the rule, and the table of a real run.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAULTS, MODE_FLAGS, MODES, REQUEST_TIMEOUT_MS, THREADS, type Fault, type FaultContext, type Mode } from './chaos/faults.ts';
import { HttpConnection } from './chaos/http-client.ts';
import { Load, send, type RequestRecord } from './chaos/load.ts';
import { ChaosServer, CLI, killAll, ROOT } from './chaos/server.ts';
import { holdersOf, judge, summarize } from './chaos/verdict.ts';
import { PoolWatch } from './chaos/watch.ts';

/** The pool must be full again this long after the fault's last action. */
const FULL_POOL_BOUND_MS = 15_000;
/** Longest a fault that takes down one unit at a time may leave no worker ready. */
const EMPTY_POOL_LIMIT_MS = 2000;
/**
 * What forkgate documents rather than mends (docs/reliability.md, Known limits): each excuses only the
 * failures and problems it names, under its fault and modes, and its row says so.
 */
interface KnownLimit {
  readonly fault: string;
  readonly modes: readonly Mode[];
  readonly why: string;
  readonly excuses: (record: RequestRecord, watch: PoolWatch) => boolean;
  readonly problem?: RegExp;
}
/** Refused, or reset unanswered on a connection no unit had answered on: queued to a listener that died. */
function refusedByNoListener(record: RequestRecord): boolean {
  return (
    (record.failure === 'connect' && /ECONNREFUSED/.test(record.detail ?? '')) ||
    (record.failure === 'reset' && record.bytesReceived === 0 && !record.reused)
  );
}

/** Without a listening socket in the master, no worker alive means connections refused. */
const NO_LISTENER = 'the master holds no listening socket: while no worker lives, connections are refused, or reset if queued';

const KNOWN_LIMITS: readonly KnownLimit[] = [
  { fault: 'kill-all', modes: ['reuseport', 'threads'], why: NO_LISTENER, excuses: refusedByNoListener },
  {
    // Killed every 500 ms, a worker whose replacement boots slower than that can be the last one alive.
    fault: 'kill-repeat',
    modes: ['reuseport', 'threads'],
    why: `${NO_LISTENER} (a replacement slower than the kills left none)`,
    excuses: (record, watch) => refusedByNoListener(record) && watch.emptyNear(record.sentAt, 100),
  },
  {
    fault: 'idle',
    modes: ['sync'],
    why: 'a half-open client holds a sync worker until --headers-timeout; --balance proxy reads requests first',
    excuses: (record) => record.failure === 'timeout',
    problem: /new clients beside the idle connections not served/,
  },
];

/** --quick: what npm test runs, one known weak spot of each kind, bounded well under a minute. */
const QUICK: readonly [Mode, string][] = [
  ['round-robin', 'kill-repeat'],
  ['proxy', 'exit'],
  ['proxy', 'kill-all'],
  ['proxy', 'fuzz'],
  ['round-robin', 'idle'],
];

interface Options {
  modes: Mode[];
  faults: string[];
  quick: boolean;
  seed: number;
  logs: string | null;
}

interface Row {
  fault: string;
  mode: Mode;
  sent: number;
  failed: number;
  allowed: number;
  retried: number;
  masterAlive: boolean;
  timeToFullMs: number | null;
  /** The pool was short at some point after the fault began. */
  dipped: boolean;
  problems: string[];
  notes: string[];
  error?: string;
  pass: boolean;
  /** It passed with a known limit excusing something (KNOWN_LIMITS). */
  knownLimit: boolean;
  seconds: number;
}

function parseOptions(argv: string[]): Options {
  const options: Options = { modes: [], faults: [], quick: false, seed: Math.floor(Math.random() * 2 ** 31), logs: null };
  const usage = () => {
    console.error(
      `usage: node scripts/chaos.ts [--quick] [--mode ${MODES.join('|')}]... [--fault NAME]... [--seed N] [--logs DIR]\n\nfaults:\n` +
        FAULTS.map((fault) => `  ${fault.name.padEnd(12)} ${fault.summary}`).join('\n'),
    );
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--quick') {
      options.quick = true;
      continue;
    }
    if (argv[i] === '--mode' && MODES.includes(value as Mode)) options.modes.push(value as Mode);
    else if (argv[i] === '--fault' && FAULTS.some((fault) => fault.name === value)) options.faults.push(value!);
    else if (argv[i] === '--seed' && /^\d+$/.test(value ?? '')) options.seed = Number(value);
    else if (argv[i] === '--logs' && value) options.logs = value;
    else usage();
    i++; // the option's value
  }
  return options;
}

/** The (mode, fault) pairs to run, in order: by fault, then mode, so a fault's rows sit together. */
function plan(options: Options): [Mode, Fault][] {
  const pairs: [Mode, Fault][] = options.quick
    ? QUICK.map(([mode, name]) => [mode, FAULTS.find((fault) => fault.name === name)!])
    : FAULTS.flatMap((fault) => MODES.map((mode): [Mode, Fault] => [mode, fault]));
  return pairs.filter(
    ([mode, fault]) =>
      (options.modes.length === 0 || options.modes.includes(mode)) && (options.faults.length === 0 || options.faults.includes(fault.name)),
  );
}

/** Runs forkgate under a descriptor limit: prlimit where there is one, else the shell's ulimit. */
function limitLauncher(limit: number): string[] {
  if (spawnSync('prlimit', ['--version'], { stdio: 'ignore' }).error === undefined) return ['prlimit', `--nofile=${limit}:${limit}`];
  return ['bash', '-c', `ulimit -n ${limit} && exec "$@"`, 'bash'];
}

function resolvesWithin<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Why a master died, from its log: the error Node printed above "Node.js vNN" (an uncaught exception
 * ends a master that way; a worker's crash is logged by forkgate and has no such line).
 */
function crashLines(output: string): string {
  const lines = output.split('\n');
  const end = lines.findLastIndex((line) => /^Node\.js v\d+/.test(line));
  if (end < 0) return 'its log names no error';
  const first = lines.slice(0, end).findLastIndex((line) => /^\w*(Error|Exception)\b/.test(line));
  if (first < 0) return 'its log names no error';
  return lines
    .slice(first, Math.min(end, first + 3))
    .map((line) => line.trim().replaceAll(ROOT, ''))
    .join(' ')
    .slice(0, 240);
}

async function runOne(mode: Mode, fault: Fault, options: Options, env: NodeJS.ProcessEnv): Promise<Row> {
  const started = Date.now();
  const row: Row = {
    fault: fault.name,
    mode,
    sent: 0,
    failed: 0,
    allowed: 0,
    retried: 0,
    masterAlive: true,
    timeToFullMs: null,
    dipped: false,
    problems: [],
    notes: [],
    pass: false,
    knownLimit: false,
    seconds: 0,
  };
  const directory = mkdtempSync(join(tmpdir(), 'forkgate-chaos-'));
  const workers = fault.workers ?? 2;
  const flags = [
    ...MODE_FLAGS[mode],
    '-w',
    `${workers}`,
    '--graceful-timeout',
    '5',
    ...(fault.flags ?? []),
    ...(fault.maxMemoryMiB ? ['--max-memory', `${fault.maxMemoryMiB}`] : []),
  ];
  const server = new ChaosServer({
    directory,
    flags,
    env,
    launcher: fault.descriptorLimit ? limitLauncher(fault.descriptorLimit) : undefined,
  });
  const watch = new PoolWatch(server, {
    workers,
    threads: THREADS[mode],
    maxMemoryBytes: fault.maxMemoryMiB ? fault.maxMemoryMiB * 2 ** 20 : undefined,
  });
  let load: Load | null = null;
  try {
    await server.ready();
    watch.start();
    if ((await watch.fullAfter(Date.now(), 10_000)) === null) throw new Error('the pool was not full before the fault');
    if (fault.load) {
      load = new Load({
        port: server.port,
        connections: 4,
        maxRequests: 50_000,
        maxMs: 120_000,
        gapMs: 5,
        requestTimeoutMs: fault.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
      });
      const current = load;
      if (
        !(await resolvesWithin(
          current.until(() => current.ok >= 30),
          5000,
        ))
      )
        throw new Error(`the load got ${current.ok} answers in 5 s before the fault`);
    }
    const context: FaultContext = {
      mode,
      server,
      watch,
      load,
      seed: options.seed,
      quick: options.quick,
      records: [],
      tally: { sent: 0, failed: 0 },
      problems: [],
      notes: [],
      details: [],
      lastAction: Date.now(),
    };
    const faultStart = context.lastAction;
    await fault.run(context);

    const fullAt = await watch.fullAfter(Date.now(), Math.max(0, context.lastAction + FULL_POOL_BOUND_MS - Date.now()));
    row.timeToFullMs = fullAt === null ? null : fullAt - context.lastAction;
    row.dipped = watch.dippedSince(faultStart);
    // Taking down one unit at a time must not stop the pool: a replacement boots in well under a second here.
    const empty = watch.longestEmpty(faultStart);
    if (empty >= EMPTY_POOL_LIMIT_MS && !fault.mayEmptyPool)
      context.problems.push(`the pool stopped serving: no worker ready for ${(empty / 1000).toFixed(1)} s`);
    else if (empty >= 1000) context.notes.push(`no worker ready for ${(empty / 1000).toFixed(1)} s`);
    if (fullAt === null) context.problems.push(`the pool was not full again within ${FULL_POOL_BOUND_MS / 1000} s`);
    // The pool goes on serving: more answers to the load, and a new client served.
    if (load) {
      const current = load;
      const before = current.ok;
      await resolvesWithin(
        current.until(() => current.ok >= before + 20),
        3000,
      );
    }
    const fresh = new HttpConnection(server.port);
    context.records.push(await send(fresh, 'F1', '/pid', 3000));
    fresh.close();
    // Operators still reach the master that serves now.
    if (server.anyMasterAlive() && (await server.status(2000)) === null && (await server.status(2000)) === null) {
      context.problems.push(
        `the admin endpoint no longer answers${existsSync(server.adminSocket) ? '' : ': its unix socket file is gone'}`,
      );
    }

    const records = [...(load ? await load.stop() : []), ...context.records];
    watch.stop();
    const judgement = judge(records, watch.faulted, watch.goneAt, server.readHeld(), mode !== 'proxy');
    const limit = KNOWN_LIMITS.find((known) => known.fault === fault.name && known.modes.includes(mode));
    if (limit) {
      const excused = judgement.unallowed.filter((record) => limit.excuses(record, watch));
      const problems = context.problems.filter((problem) => limit.problem?.test(problem));
      if (excused.length + problems.length > 0) {
        judgement.unallowed = judgement.unallowed.filter((record) => !excused.includes(record));
        for (const problem of problems) context.problems.splice(context.problems.indexOf(problem), 1);
        row.knownLimit = true;
        context.notes.unshift(`known limit: ${limit.why} (${[summarize(excused), ...problems].filter(Boolean).join('; ')})`);
      }
    }
    row.masterAlive = watch.masterAlwaysAlive && server.anyMasterAlive();
    if (judgement.unallowed.length > 0) context.problems.unshift(`failed, not excused: ${summarize(judgement.unallowed)}`);
    const exits = server.unexpectedExits();
    if (exits.length > 0 && !fault.takesDownUnits) {
      const crash = server.output.split('\n').find((_, i, lines) => lines[i - 1]?.includes('Worker crashed')) ?? exits[0]!;
      context.problems.push(`${exits.length} unexpected worker exit${exits.length > 1 ? 's' : ''} (${crash.trim()})`);
    }
    if (!row.masterAlive) context.problems.unshift(`a master died: ${crashLines(server.output)}`);
    row.sent = records.length + context.tally.sent;
    row.failed = judgement.failed.length + context.tally.failed;
    row.allowed = judgement.allowed.length;
    row.retried = records.filter((record) => record.retried).length;
    row.problems = context.problems;
    row.notes = context.notes;
    row.pass = row.problems.length === 0;
    if (options.logs && context.details.length > 0)
      writeFileSync(join(options.logs, `${fault.name}-${mode}.details.txt`), `${context.details.join('\n')}\n`);
    if (options.logs && judgement.failed.length > 0) {
      // What the verdict was made of, to tell a forkgate failure from a gap in the rule.
      const receipts = server.readHeld();
      const failures = judgement.failed.map((record) => ({
        ...record,
        excused: judgement.allowed.includes(record),
        heldBy: holdersOf(record, receipts, mode !== 'proxy'),
      }));
      const detail = { faulted: watch.faulted, goneAt: Object.fromEntries(watch.goneAt), failures };
      writeFileSync(join(options.logs, `${fault.name}-${mode}.failures.json`), `${JSON.stringify(detail, null, 1)}\n`);
    }
  } catch (error) {
    row.error = (error as Error).message.split('\n')[0]!;
    row.masterAlive = server.anyMasterAlive();
    if (server.exit) row.error += `; ${crashLines(server.output)}`;
  } finally {
    await load?.stop();
    watch.stop();
    await server.stop();
    if (options.logs) writeFileSync(join(options.logs, `${fault.name}-${mode}.log`), server.output);
    rmSync(directory, { recursive: true, force: true });
  }
  row.seconds = (Date.now() - started) / 1000;
  return row;
}

function table(rows: Row[]): string {
  const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const lines = [
    '| fault | mode | sent | failed (allowed) | retried | master alive | full pool after | verdict | what went wrong; notes |',
    '|---|---|--:|--:|--:|---|--:|---|---|',
  ];
  for (const row of rows) {
    const full = row.error ? '' : row.timeToFullMs === null ? 'not in 15 s' : row.dipped ? `${row.timeToFullMs} ms` : 'never short';
    const verdict = row.error ? '**ERROR**' : !row.pass ? '**FAIL**' : row.knownLimit ? 'known limit' : 'pass';
    const details = row.error
      ? [row.error]
      : [...row.problems.slice(0, 4), ...(row.problems.length > 4 ? [`and ${row.problems.length - 4} more`] : []), ...row.notes];
    lines.push(
      `| ${[
        row.fault,
        row.mode,
        row.error ? '' : row.sent.toLocaleString('en-US'),
        row.error ? '' : `${row.failed} (${row.allowed})`,
        row.error ? '' : `${row.retried}`,
        row.masterAlive ? 'yes' : '**no**',
        full,
        verdict,
        cell(details.join('; ')),
      ].join(' | ')} |`,
    );
  }
  return lines.join('\n');
}

function commit(): string {
  const git = (...args: string[]) => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
  const dirty = git('status', '--porcelain', '--', 'src') !== '';
  return `${git('rev-parse', '--short', 'HEAD') || 'unknown'}${dirty ? ' (with uncommitted changes in src/)' : ''}`;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (!existsSync(CLI)) {
    console.error(`${CLI} is missing: build it first with \`npm run build\`.`);
    process.exit(2);
  }
  // No forkgate outlives the harness, however it ends.
  process.on('exit', killAll);
  for (const name of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(name, () => process.exit(130));
  // No FORKGATE_*/PORT/WEB_CONCURRENCY/NODE_OPTIONS from the caller changes what runs.
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!/^(FORKGATE_|WEB_CONCURRENCY$|PORT$|NODE_OPTIONS$|CHAOS_)/.test(name)) env[name] = value;
  }
  if (options.logs) mkdirSync(options.logs, { recursive: true });
  const pairs = plan(options);
  console.error(`chaos: ${pairs.length} runs, fuzz seed ${options.seed}`);
  const started = Date.now();
  const rows: Row[] = [];
  for (const [index, [mode, fault]] of pairs.entries()) {
    const row = await runOne(mode, fault, options, env);
    rows.push(row);
    const verdict = row.error ? `ERROR: ${row.error}` : row.pass ? 'pass' : `FAIL: ${row.problems.join('; ').slice(0, 300)}`;
    console.error(`[${index + 1}/${pairs.length}] ${fault.name} ${mode} (${row.seconds.toFixed(1)} s): ${verdict}`);
  }
  const failing = rows.filter((row) => !row.pass).length;
  console.log(
    [
      `# forkgate chaos run (${options.quick ? 'quick' : pairs.length === FAULTS.length * MODES.length ? 'full' : 'subset'})`,
      '',
      `${new Date().toISOString()} · Node ${process.version} · nproc ${availableParallelism()} · commit ${commit()} · fuzz seed ${options.seed} · ${Math.round((Date.now() - started) / 1000)} s`,
      '',
      table(rows),
      '',
      `verdict: ${failing === 0 ? 'pass' : `FAIL (${failing} of ${rows.length} runs)`}`,
    ].join('\n'),
  );
  process.exitCode = failing === 0 ? 0 : 1;
}

await main();
