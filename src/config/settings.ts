/**
 * The one settings table. The CLI parser, the config-file loader, environment variables,
 * `--print-config`, `--help` and docs/settings.md are all derived from it (Gunicorn's config.py is the
 * model): adding a setting touches this file only.
 */
import { isSea } from 'node:sea';
import { BIND_FORMS, formatBindAddress, parseBindAddress, type BindAddress } from './bind.ts';
import { DEFAULT_ACCESS_LOG_FORMAT } from '../log/access-log.ts';
import { LOG_LEVELS, type LogLevel } from '../log/logger.ts';
import { HOOK_NAMES, type HookName, type Hooks } from '../hooks.ts';
import { addressListProblem } from './addresses.ts';

/** How the CLI parses a flag: a value, an on/off switch, a value that may be repeated; hooks have none. */
export type FlagKind = 'string' | 'boolean' | 'list' | 'hook';

export interface EnvSource {
  readonly name: string;
  /** Turns the variable's text into the setting's raw value (PORT=80 → bind 0.0.0.0:80). */
  readonly map?: (text: string) => unknown;
}

export interface Setting<Key extends string = string, Value = unknown> {
  /** The long flag without dashes; also the name `--print-config` and the docs use. */
  readonly name: string;
  /** Config-file key and property of the resolved Settings object. */
  readonly key: Key;
  readonly short?: string;
  readonly kind: FlagKind;
  /** Environment variables, highest priority first. */
  readonly env: readonly EnvSource[];
  /** False for command-line actions such as --version that a config file cannot set. */
  readonly inFile: boolean;
  readonly section: string;
  readonly meta?: string;
  readonly default: Value;
  readonly doc: string;
  /** Turns a raw value (CLI/env text, or any config-file value) into the typed value, or returns an error sentence. */
  readonly validate: (raw: unknown) => Value | Invalid;
  readonly format?: (value: Value) => string;
  /**
   * A new value from a reload (HUP) waits for a restart: 'always' for what the master set up at start
   * (its sockets, directory, umask, pid file, file watcher, the workers' identity, the admin endpoint);
   * 'with-proxy' for what the master's front applies with --balance proxy (in the other modes the new
   * workers do). Else a reload applies it.
   */
  readonly fixedUntilRestart?: 'always' | 'with-proxy';
}

/** A validation failure: what was expected, phrased to follow "expected ...". */
export class Invalid {
  readonly expected: string;
  constructor(expected: string) {
    this.expected = expected;
  }
}

function setting<Key extends string, Value>(
  spec: Omit<Setting<Key, Value>, 'env' | 'inFile' | 'kind'> & {
    env?: readonly (string | EnvSource)[];
    inFile?: boolean;
    kind?: FlagKind;
  },
): Setting<Key, Value> {
  return {
    ...spec,
    kind: spec.kind ?? 'string',
    inFile: spec.inFile ?? true,
    env: (spec.env ?? [`FORKGATE_${spec.name.toUpperCase().replaceAll('-', '_')}`]).map((source) =>
      typeof source === 'string' ? { name: source } : source,
    ),
  };
}

// ---- validators: each returns a validate function; the Invalid text completes "expected ..." ----

function wholeNumber(min: number, what = `a whole number ≥ ${min}`) {
  return (raw: unknown): number | Invalid => {
    const value = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
    return typeof value === 'number' && Number.isInteger(value) && value >= min ? value : new Invalid(what);
  };
}

function oneOf<const Choices extends readonly string[]>(choices: Choices) {
  return (raw: unknown): Choices[number] | Invalid =>
    typeof raw === 'string' && choices.includes(raw) ? raw : new Invalid(`one of ${choices.join(', ')}`);
}

const TRUE_WORDS = ['true', '1', 'yes', 'on'];
const FALSE_WORDS = ['false', '0', 'no', 'off', ''];
function flag(raw: unknown): boolean | Invalid {
  if (typeof raw === 'boolean') return raw;
  if (typeof raw === 'string') {
    const word = raw.trim().toLowerCase();
    if (TRUE_WORDS.includes(word)) return true;
    if (FALSE_WORDS.includes(word)) return false;
  }
  return new Invalid('true or false');
}

function text(raw: unknown): string | Invalid {
  return typeof raw === 'string' ? raw : new Invalid('a string');
}

function optionalText(raw: unknown): string | null | Invalid {
  return raw === null ? null : typeof raw === 'string' && raw !== '' ? raw : new Invalid('a non-empty string');
}

/** Environment variables carry lists comma-separated; config files as arrays; the CLI by repetition. */
function listOf(raw: unknown): string[] | Invalid {
  if (typeof raw === 'string')
    return raw
      .split(',')
      .map((item) => item.trim())
      .filter(Boolean);
  if (Array.isArray(raw) && raw.every((item) => typeof item === 'string')) return raw;
  return new Invalid('a string or a list of strings');
}

/** Each item is one argument for Node in its --flag=value form (a separate value would be a second item). */
function nodeOptions(raw: unknown): string[] | Invalid {
  const items = listOf(raw);
  if (items instanceof Invalid || !items.every((item) => /^--?\w/.test(item))) {
    return new Invalid('Node options written --flag or --flag=value, such as --max-old-space-size=512');
  }
  // Inside the single binary's --node-options, Node ignores --env-file: its workers would never see the file.
  if (isSea() && items.some((item) => /^--env-file(-if-exists)?(=|$)/.test(item))) {
    return new Invalid(
      "Node options other than --env-file, which the single binary cannot pass to its workers: use forkgate's --env-file FILE",
    );
  }
  return items;
}

function bindList(raw: unknown): BindAddress[] | Invalid {
  const items = listOf(raw);
  if (items instanceof Invalid || items.length === 0) return new Invalid(`one or more of ${BIND_FORMS}`);
  const addresses: BindAddress[] = [];
  for (const item of items) {
    const parsed = parseBindAddress(item);
    if (typeof parsed === 'string') return new Invalid(`${BIND_FORMS}; ${parsed}`);
    addresses.push(parsed);
  }
  return addresses;
}

function singleBind(raw: unknown): BindAddress | null | Invalid {
  if (raw === null) return null;
  const parsed = typeof raw === 'string' ? parseBindAddress(raw) : 'not a string';
  // A port of its own: a bind's default port, 8000, is the app's.
  if (typeof parsed === 'string' || parsed.kind === 'fd' || (parsed.kind === 'tcp' && !/:\d+$/.test(raw as string))) {
    return new Invalid('HOST:PORT or unix:PATH');
  }
  return parsed;
}

export interface TcpAddress {
  readonly host: string;
  readonly port: number;
}

function statsdAddress(raw: unknown): TcpAddress | null | Invalid {
  if (raw === null) return null;
  const parsed = typeof raw === 'string' && /:\d+$/.test(raw) ? parseBindAddress(raw) : 'no port';
  if (typeof parsed === 'string' || parsed.kind !== 'tcp' || parsed.port === 0) return new Invalid('HOST:PORT');
  return { host: parsed.host, port: parsed.port };
}

/** DogStatsD tags, comma-separated as Gunicorn takes them: "env:prod,web". */
function dogstatsdTags(raw: unknown): string | Invalid {
  if (typeof raw !== 'string') return new Invalid('comma-separated tags');
  const tags = raw.split(',').map((tag) => tag.trim());
  if (raw.trim() === '') return '';
  return tags.every((tag) => /^[^\s|#,@]+$/.test(tag)) ? tags.join(',') : new Invalid('comma-separated tags without spaces, |, # or @');
}

/** An external server the proxy fronts (--upstream): an address as --bind has them, but a descriptor. */
export type Upstream = Exclude<BindAddress, { kind: 'fd' }>;

const UPSTREAM_FORMS = 'http://HOST[:PORT] or unix:PATH';

function upstreamList(raw: unknown): Upstream[] | Invalid {
  const items = listOf(raw);
  if (items instanceof Invalid) return new Invalid(`a list of ${UPSTREAM_FORMS}`);
  const upstreams: Upstream[] = [];
  for (const item of items) {
    if (item.startsWith('unix:') && item.length > 5) {
      upstreams.push({ kind: 'unix', path: item.slice(5) });
      continue;
    }
    let url: URL | null = null;
    try {
      url = new URL(item);
    } catch {
      // reported below
    }
    if (url?.protocol !== 'http:' || (url.pathname !== '/' && url.pathname !== '') || url.search) {
      return new Invalid(`${UPSTREAM_FORMS} (no path); '${item}' is not`);
    }
    // URL leaves the port empty when it is the scheme's default.
    upstreams.push({ kind: 'tcp', host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 80 });
  }
  return upstreams;
}

export function formatUpstream(upstream: Upstream): string {
  return upstream.kind === 'unix' ? formatBindAddress(upstream) : `http://${formatBindAddress(upstream)}`;
}

function healthPath(raw: unknown): string | null | Invalid {
  return raw === null
    ? null
    : typeof raw === 'string' && raw.startsWith('/')
      ? raw
      : new Invalid("a path starting with '/', such as /healthz");
}

function octalMask(raw: unknown): string | null | Invalid {
  if (raw === null) return null;
  const text = typeof raw === 'number' ? raw.toString(8) : String(raw);
  return /^(0o?)?[0-7]{1,4}$/.test(text) ? text.replace(/^0o/, '0') : new Invalid('an octal mask such as 022 or 027');
}

/** A unix socket's permission bits: octal text (0660) or, in a config file, a number (0o660). */
function socketMode(raw: unknown): number | Invalid {
  const text = typeof raw === 'number' ? raw.toString(8) : String(raw);
  return /^(0o?)?[0-7]{1,3}$/.test(text) ? parseInt(text.replace(/^0o/, ''), 8) : new Invalid('an octal mode such as 0660 or 0666');
}

function workerCount(raw: unknown): number | 'auto' | Invalid {
  if (raw === 'auto') return 'auto';
  const count = wholeNumber(1)(raw);
  return count instanceof Invalid ? new Invalid("a whole number ≥ 1 or 'auto' ((2 × CPU) + 1)") : count;
}

function environmentPairs(raw: unknown): Record<string, string> | Invalid {
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
    const entries = Object.entries(raw);
    if (entries.every(([, value]) => typeof value === 'string')) return Object.fromEntries(entries) as Record<string, string>;
  }
  const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? [raw] : null;
  const pairs: Record<string, string> = {};
  for (const item of items ?? [null]) {
    const eq = typeof item === 'string' ? item.indexOf('=') : -1;
    if (eq <= 0) return new Invalid('KEY=VALUE pairs (or an object in a config file)');
    pairs[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return pairs;
}

function addressList(raw: unknown): string[] | Invalid {
  const items = listOf(raw);
  if (items instanceof Invalid) return items;
  const addresses = items
    .flatMap((item) => item.split(','))
    .map((item) => item.trim())
    .filter(Boolean);
  const problem = addressListProblem(addresses);
  return problem ? new Invalid(problem) : addresses;
}

function hookFunction(raw: unknown): ((...args: never[]) => unknown) | null | Invalid {
  return raw === null || typeof raw === 'function' ? (raw as ((...args: never[]) => unknown) | null) : new Invalid('a function');
}

const HOOK_DOCS: Record<HookName, string> = {
  onStarting: 'Master: before it binds and spawns. (master)',
  onReload: 'Master: on HUP, once the settings are re-read. (master)',
  whenReady: 'Master: once the first full pool is serving. (master)',
  preFork: 'Master: just before a worker process starts. (master, worker)',
  postFork: 'Worker: first thing in the new process, before the app loads. (worker)',
  postWorkerInit: 'Worker: the app is loaded, about to serve. (worker)',
  workerInt: 'Worker: got INT or QUIT, about to exit at once. (worker)',
  workerAbort: 'Master: a worker silent past --timeout, with its blocked stack, before it is killed. (master, worker)',
  preExec: 'Master: on USR2, just before the new master starts. (master)',
  preRequest: 'Worker: before the app sees a request. (worker, req)',
  postRequest: 'Worker: after a response has ended. (worker, req, res)',
  childExit: 'Master: a worker process exited. (master, worker)',
  workerExit: 'Worker: about to exit after draining. (worker)',
  nworkersChanged: 'Master: the target pool size changed. (master, newValue, oldValue)',
  onExit: 'Master: just before it exits. (master)',
};

const hookSettings = HOOK_NAMES.map((name) =>
  setting({
    name: name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`),
    key: name,
    kind: 'hook',
    env: [],
    section: 'Server hooks (config file only)',
    default: null as Hooks[typeof name] | null,
    validate: hookFunction as (raw: unknown) => Hooks[typeof name] | null | Invalid,
    format: (hook) => (hook ? '<function>' : 'null'),
    doc: HOOK_DOCS[name],
  }),
);

export const WORKER_CLASSES = ['async', 'sync', 'gthread'] as const;
export const BALANCE_MODES = ['round-robin', 'reuseport', 'proxy'] as const;
export type BalanceMode = (typeof BALANCE_MODES)[number];
export const PROXY_PROTOCOL_MODES = ['off', 'v1', 'v2', 'auto'] as const;
export type ProxyProtocolMode = (typeof PROXY_PROTOCOL_MODES)[number];
export const CERT_REQUIREMENTS = ['none', 'optional', 'required'] as const;

export const SETTINGS = [
  // ---- command-line actions ----
  setting({
    name: 'help',
    key: 'help',
    short: 'h',
    kind: 'boolean',
    env: [],
    inFile: false,
    section: 'Actions',
    default: false,
    validate: flag,
    doc: 'Show this help and exit.',
  }),
  setting({
    name: 'version',
    key: 'version',
    short: 'v',
    kind: 'boolean',
    env: [],
    inFile: false,
    section: 'Actions',
    default: false,
    validate: flag,
    doc: "Print forkgate's and Node's versions and exit.",
  }),
  setting({
    name: 'check-config',
    key: 'checkConfig',
    kind: 'boolean',
    env: [],
    inFile: false,
    section: 'Actions',
    default: false,
    validate: flag,
    doc: 'Resolve the settings and boot one worker as the pool would (its user, Node options, environment), binding nothing; exit 0 if it boots, 1 if not.',
  }),
  setting({
    name: 'print-config',
    key: 'printConfig',
    kind: 'boolean',
    env: [],
    inFile: false,
    section: 'Actions',
    default: false,
    validate: flag,
    doc: 'Print every resolved setting as `name = value` and exit.',
  }),
  setting({
    name: 'config',
    key: 'config',
    short: 'c',
    meta: 'FILE',
    inFile: false,
    section: 'Config file',
    default: null as string | null,
    validate: optionalText,
    doc: 'Config file (.ts, .mjs, .js or .json). Without it, ./forkgate.config.{ts,mjs,js,json} is used if present.',
  }),
  // ---- the app ----
  setting({
    name: 'app',
    key: 'app',
    meta: 'PATH[:EXPORT]',
    env: [],
    section: 'App',
    default: null as string | null,
    validate: optionalText,
    doc: 'The app: path/to/app.{js,mjs,cjs,ts}[:export], or :factory() to call a factory. Given as the positional argument on the command line.',
  }),
  setting({
    name: 'chdir',
    key: 'chdir',
    fixedUntilRestart: 'always',
    meta: 'DIR',
    section: 'App',
    default: null as string | null,
    validate: optionalText,
    doc: 'Change to this directory before loading the app.',
  }),
  setting({
    name: 'env',
    key: 'env',
    short: 'e',
    kind: 'list',
    meta: 'KEY=VALUE',
    env: [],
    section: 'App',
    default: {} as Record<string, string>,
    validate: environmentPairs,
    format: (pairs) => JSON.stringify(pairs),
    doc: "Set an environment variable in the workers (repeatable); it wins over the master's environment and --env-file.",
  }),
  setting({
    name: 'env-file',
    key: 'envFile',
    kind: 'list',
    meta: 'FILE',
    section: 'App',
    default: [] as string[],
    validate: listOf,
    doc: "Set environment variables in the workers from this file (repeatable; a later file wins): KEY=VALUE lines, # comments, quoted values, as node --env-file reads them. Relative to the directory forkgate starts in (not --chdir), as Node and docker read --env-file. The master's own environment wins over the files, and -e over both. The master reads them at start (a file it cannot read stops it, exit 2; one named on the command line Node itself looks for first, and a missing one stops forkgate before it starts: `node: FILE: not found`, exit 9) and again on HUP, for the new workers (a file it cannot read aborts the reload). forkgate's own settings (FORKGATE_*, PORT, WEB_CONCURRENCY) are not read from them.",
  }),
  setting({
    name: 'node-option',
    key: 'nodeOption',
    kind: 'list',
    meta: 'OPTION',
    section: 'App',
    default: [] as string[],
    validate: nodeOptions,
    doc: "Start the worker processes with this Node option (repeatable; write --node-option=--max-old-space-size=512). The single binary ignores NODE_OPTIONS: this is how its workers get Node options. An option Node refuses stops forkgate at start (exit 2) after Node's own message.",
  }),
  setting({
    name: 'preload',
    key: 'preload',
    kind: 'boolean',
    section: 'App',
    default: false,
    validate: flag,
    doc: 'Load the app in the master before spawning workers, so a broken app fails once, before any worker starts. (Node has no copy-on-write fork: workers still load their own copy.)',
  }),
  setting({
    name: 'reload',
    key: 'reload',
    fixedUntilRestart: 'always',
    kind: 'boolean',
    section: 'App',
    default: false,
    validate: flag,
    doc: 'Development: reload the workers (new generation first) when a file the app loaded changes; a change that breaks the app leaves the old workers serving.',
  }),
  setting({
    name: 'reload-extra-file',
    key: 'reloadExtraFile',
    fixedUntilRestart: 'always',
    kind: 'list',
    meta: 'FILE',
    section: 'App',
    default: [] as string[],
    validate: listOf,
    doc: 'With --reload, also watch this file (repeatable), for files the app reads rather than imports.',
  }),
  // ---- server socket ----
  setting({
    name: 'bind',
    key: 'bind',
    fixedUntilRestart: 'always',
    short: 'b',
    kind: 'list',
    meta: 'ADDRESS',
    env: ['FORKGATE_BIND', { name: 'PORT', map: (port) => `0.0.0.0:${port}` }],
    section: 'Server socket',
    default: [{ kind: 'tcp', host: '127.0.0.1', port: 8000 }] as BindAddress[],
    validate: bindList,
    format: (addresses) => addresses.map(formatBindAddress).join(', '),
    doc: `Address to listen on (repeatable): ${BIND_FORMS}. PORT=N in the environment means 0.0.0.0:N.`,
  }),
  setting({
    name: 'backlog',
    key: 'backlog',
    fixedUntilRestart: 'always',
    meta: 'INT',
    section: 'Server socket',
    default: 2048,
    validate: wholeNumber(1),
    doc: 'Maximum number of pending connections in the listen queue, on every socket the master listens on: also one systemd passes (set its Backlog= to match) or a USR2 predecessor hands on.',
  }),
  setting({
    name: 'socket-mode',
    key: 'socketMode',
    fixedUntilRestart: 'always',
    meta: 'OCTAL',
    section: 'Server socket',
    default: 0o666,
    validate: socketMode,
    format: (mode) => `0${mode.toString(8).padStart(3, '0')}`,
    doc: "Permissions of the unix sockets bound for clients (-b unix:PATH), whatever --umask says. The default, 0666 (nginx makes its own sockets so), lets any local user connect, as to a loopback port, and so the front's workers (nginx's run as www-data on Debian); 0660 with --socket-group lets in that group alone. Sockets systemd passes are left as it made them.",
  }),
  setting({
    name: 'socket-group',
    key: 'socketGroup',
    fixedUntilRestart: 'always',
    meta: 'GROUP',
    section: 'Server socket',
    default: null as string | null,
    validate: optionalText,
    doc: "Group of the unix sockets bound for clients (name or gid): the front's with --socket-mode 0660 (www-data for nginx on Debian); a master that is not root can give only its own groups. Default: the workers' group (--group, or --user's primary group), else the master's. Their owner is the workers' user (--user), else the master's, as in Gunicorn.",
  }),
  setting({
    name: 'balance',
    key: 'balance',
    fixedUntilRestart: 'always',
    meta: 'MODE',
    section: 'Server socket',
    default: 'round-robin' as BalanceMode,
    validate: oneOf(BALANCE_MODES),
    doc: 'round-robin: the master accepts and hands each connection to the worker with the fewest open connections (reloads lose nothing). reuseport: every worker binds with SO_REUSEPORT and the kernel spreads connections (Linux, TCP binds; a little faster). proxy: the master parses HTTP and sends each request to the least busy unit (worker or thread) over a private unix socket: it buffers slow clients, queues with a limit (--queue-limit, --queue-timeout) and retries requests that never reached a unit, at the cost of the master parsing every request.',
  }),
  // ---- worker processes ----
  setting({
    name: 'workers',
    key: 'workers',
    short: 'w',
    meta: 'INT|auto',
    env: ['FORKGATE_WORKERS', 'WEB_CONCURRENCY'],
    section: 'Worker processes',
    default: 1 as number | 'auto',
    validate: workerCount,
    doc: 'Number of worker processes. auto = (2 × CPU) + 1, CPU being what the process may use (affinity and cgroup cpu.max).',
  }),
  setting({
    name: 'worker-class',
    key: 'workerClass',
    short: 'k',
    meta: 'CLASS',
    section: 'Worker processes',
    default: 'async' as (typeof WORKER_CLASSES)[number],
    validate: oneOf(WORKER_CLASSES),
    doc: 'async: the event loop serves up to --worker-connections connections at once. sync: one request at a time, Connection: close after each. gthread: --threads event loops per process, each serving like async (implied by --threads > 1).',
  }),
  setting({
    name: 'threads',
    key: 'threads',
    meta: 'INT',
    section: 'Worker processes',
    default: 1,
    validate: wholeNumber(1),
    doc: 'Serving threads (worker_threads) per worker process, each with its own event loop and copy of the app; they run in parallel. > 1 implies -k gthread (or sync threads with -k sync) and --balance reuseport (proxy behind a unix: or fd:// bind).',
  }),
  setting({
    name: 'worker-connections',
    key: 'workerConnections',
    meta: 'INT',
    section: 'Worker processes',
    default: 1000,
    validate: wholeNumber(1),
    doc: 'async and gthread: most connections one unit (process or thread) serves at once; more wait, accepted, and are never dropped. Idle keep-alive connections make room: one is closed, idle longest first, for each connection that would wait (not behind --balance proxy).',
  }),
  setting({
    name: 'max-requests',
    key: 'maxRequests',
    meta: 'INT',
    section: 'Worker processes',
    default: 0,
    validate: wholeNumber(0),
    doc: 'Retire a worker gracefully after this many requests (0: never). Its replacement starts first.',
  }),
  setting({
    name: 'max-requests-jitter',
    key: 'maxRequestsJitter',
    meta: 'INT',
    section: 'Worker processes',
    default: 0,
    validate: wholeNumber(0),
    doc: 'Add a random 0..N to --max-requests per worker so workers do not all retire at once.',
  }),
  setting({
    name: 'timeout',
    key: 'timeout',
    short: 't',
    meta: 'SECONDS',
    section: 'Worker processes',
    default: 30,
    validate: wholeNumber(0),
    doc: 'Kill and replace a worker whose event loop has been silent this long (0: never).',
  }),
  setting({
    name: 'graceful-timeout',
    key: 'gracefulTimeout',
    fixedUntilRestart: 'with-proxy',
    meta: 'SECONDS',
    section: 'Worker processes',
    default: 30,
    validate: wholeNumber(0),
    doc: 'How long a stopping worker may finish in-flight requests before it is killed.',
  }),
  setting({
    name: 'keep-alive',
    key: 'keepAlive',
    fixedUntilRestart: 'with-proxy',
    meta: 'SECONDS',
    section: 'Worker processes',
    default: 65,
    validate: wholeNumber(0),
    doc: 'Idle keep-alive timeout (0 disables keep-alive). Above the 60 s idle timeout of AWS load balancers, so they never reuse a connection forkgate just closed.',
  }),
  setting({
    name: 'max-memory',
    key: 'maxMemory',
    meta: 'MB',
    section: 'Worker processes',
    default: 0,
    validate: wholeNumber(0),
    doc: 'Retire a worker gracefully once its resident memory (RSS) passes this many MiB (0: never). Its replacement starts first.',
  }),
  setting({
    name: 'shutdown-delay',
    key: 'shutdownDelay',
    meta: 'SECONDS',
    section: 'Worker processes',
    default: 0,
    validate: wholeNumber(0),
    doc: 'On TERM, keep serving this long with /readyz answering 503 before closing the listeners, so load balancers and Kubernetes endpoints stop sending first.',
  }),
  // ---- process ----
  setting({
    name: 'name',
    key: 'name',
    meta: 'STRING',
    section: 'Process',
    default: null as string | null,
    validate: optionalText,
    doc: 'Process title prefix in ps and top (default: forkgate).',
  }),
  setting({
    name: 'user',
    key: 'user',
    fixedUntilRestart: 'always',
    short: 'u',
    meta: 'USER',
    section: 'Process',
    default: null as string | null,
    validate: optionalText,
    doc: 'Run workers as this user (name or uid). The master keeps its privileges to bind (port 80 too; not with --balance reuseport, where the workers bind for themselves), spawn, and create the log files the workers write. The user must be able to run the Node executable (or the binary) and read forkgate and the app.',
  }),
  setting({
    name: 'group',
    key: 'group',
    fixedUntilRestart: 'always',
    short: 'g',
    meta: 'GROUP',
    section: 'Process',
    default: null as string | null,
    validate: optionalText,
    doc: "Run workers as this group (name or gid); default: the user's primary group when --user is given.",
  }),
  setting({
    name: 'umask',
    key: 'umask',
    fixedUntilRestart: 'always',
    short: 'm',
    meta: 'OCTAL',
    section: 'Process',
    default: null as string | null,
    validate: octalMask,
    doc: 'File mode creation mask of the master and the workers, in octal (for example 027). Unix sockets have modes of their own: --socket-mode, and 0600 for the admin endpoint.',
  }),
  setting({
    name: 'admin-bind',
    key: 'adminBind',
    fixedUntilRestart: 'always',
    meta: 'ADDRESS',
    section: 'Process',
    default: null as BindAddress | null,
    validate: singleBind,
    format: (address) => (address ? formatBindAddress(address) : 'null'),
    doc: "Serve the admin endpoint here (HOST:PORT or unix:PATH; off by default, keep it on loopback or a unix socket, which is made mode 0600: only the master's user may connect): GET /healthz, /readyz, /status, /metrics; POST /workers/N (set the pool size; /workers/+N, /workers/-N change it), /reload, /stop (over TCP only with --admin-token-file); GET / is a live dashboard of the pool; forkgate status, scale, reload and stop ask it. Requests with a domain name as Host, or from another Origin, are refused.",
  }),
  setting({
    name: 'admin-token-file',
    key: 'adminTokenFile',
    fixedUntilRestart: 'always',
    meta: 'FILE',
    section: 'Process',
    default: null as string | null,
    validate: optionalText,
    doc: "File holding the admin endpoint's token: its POST actions then need Authorization: Bearer TOKEN, over TCP and unix sockets alike. Without it, actions over TCP are refused (a unix socket's mode, 0600, guards it). Read again on each action, so the token can be rotated without a restart.",
  }),
  setting({
    name: 'pid',
    key: 'pid',
    fixedUntilRestart: 'always',
    short: 'p',
    meta: 'FILE',
    section: 'Process',
    default: null as string | null,
    validate: optionalText,
    doc: "Write the master's pid to this file.",
  }),
  // ---- the HTTP edge ----
  setting({
    name: 'limit-request-line',
    key: 'limitRequestLine',
    fixedUntilRestart: 'with-proxy',
    meta: 'INT',
    section: 'Edge',
    default: 4094,
    validate: wholeNumber(0),
    doc: 'Largest request line (method, target and version) in bytes; a longer one is answered 414 and the connection closed (0: no limit).',
  }),
  setting({
    name: 'limit-request-fields',
    key: 'limitRequestFields',
    fixedUntilRestart: 'with-proxy',
    meta: 'INT',
    section: 'Edge',
    default: 100,
    validate: wholeNumber(0),
    doc: 'Most header fields in a request; more are answered 431 and the connection closed (0: no limit).',
  }),
  setting({
    name: 'limit-request-field-size',
    key: 'limitRequestFieldSize',
    fixedUntilRestart: 'with-proxy',
    meta: 'INT',
    section: 'Edge',
    default: 8190,
    validate: wholeNumber(0),
    doc: "Largest header field ('Name: value') in bytes; a larger one is answered 431 and the connection closed (0: no limit). Node's parser refuses a header block larger than these three limits allow with 431 before it is read in full.",
  }),
  setting({
    name: 'limit-request-body',
    key: 'limitRequestBody',
    fixedUntilRestart: 'with-proxy',
    meta: 'BYTES',
    section: 'Edge',
    default: 0,
    validate: wholeNumber(0),
    doc: 'Largest request body in bytes (0: no limit). A larger Content-Length is answered 413 before the app sees the request; a chunked body is counted as it arrives and the connection closed once it passes the limit (after a 413 if the response has not started). Either way the connection lingers, as in nginx: what the client still sends is read and dropped until it closes, 5 s without a byte, or 30 s in all, so it reads the answer rather than a reset.',
  }),
  setting({
    name: 'headers-timeout',
    key: 'headersTimeout',
    fixedUntilRestart: 'with-proxy',
    meta: 'SECONDS',
    section: 'Edge',
    default: 60,
    validate: wholeNumber(0),
    doc: "How long a client has to send a request's headers, Node's server.headersTimeout (0: no limit); then it is answered 408 and the connection closed (slowloris). The PROXY header and the TLS handshake each have this long too (with 0, a handshake keeps Node's 120 s).",
  }),
  setting({
    name: 'forwarded-allow-ips',
    key: 'forwardedAllowIps',
    fixedUntilRestart: 'with-proxy',
    kind: 'list',
    meta: 'ADDRESSES',
    env: ['FORKGATE_FORWARDED_ALLOW_IPS', 'FORWARDED_ALLOW_IPS'],
    section: 'Edge',
    default: ['127.0.0.1', '::1'] as string[],
    validate: addressList,
    format: (items) => items.join(','),
    doc: 'Peers whose X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and Forwarded headers are believed: IPs and CIDRs, comma-separated or repeated, * for all; unix socket peers always are. From any other peer forkgate removes X-Forwarded-Proto, X-Forwarded-Host and Forwarded and sets X-Forwarded-For to the peer, so the app always finds the client there.',
  }),
  setting({
    name: 'request-id',
    key: 'requestId',
    fixedUntilRestart: 'with-proxy',
    kind: 'boolean',
    section: 'Edge',
    default: false,
    validate: flag,
    doc: "Give every request an X-Request-Id: the one it came with (a proxy in front may set it), else a new UUID. The app finds it in the request's headers, the response carries it back, the access log can log it. Without it forkgate adds none and an X-Request-Id a request brings is the app's like any other header. An access log that logs the id (json, %({x-request-id}i)s, %({x-request-id}o)s) turns it on. With --balance proxy the master's front gives the id, the units echo it, and the proxy's own warnings (502, 503) name it.",
  }),
  setting({
    name: 'proxy-protocol',
    key: 'proxyProtocol',
    fixedUntilRestart: 'with-proxy',
    meta: 'MODE',
    section: 'Edge',
    default: 'off' as ProxyProtocolMode,
    validate: oneOf(PROXY_PROTOCOL_MODES),
    doc: "Read the PROXY protocol header (HAProxy's; AWS NLB, nginx stream) that a TCP proxy in --proxy-allow-from puts before the client's bytes, and serve the connection as the client it names (req.socket.remoteAddress, X-Forwarded-For, the access log). v1 (text) or v2 (binary): peers in --proxy-allow-from must send that version; auto: either, or none. A PROXY header from any other peer, or a missing or invalid one where required, closes the connection.",
  }),
  setting({
    name: 'proxy-allow-from',
    key: 'proxyAllowFrom',
    fixedUntilRestart: 'with-proxy',
    kind: 'list',
    meta: 'ADDRESSES',
    section: 'Edge',
    default: ['127.0.0.1', '::1'] as string[],
    validate: addressList,
    format: (items) => items.join(','),
    doc: 'Peers that may send a PROXY header (--proxy-protocol): IPs and CIDRs, comma-separated or repeated, * for all; unix socket peers always may.',
  }),
  setting({
    name: 'certfile',
    key: 'certfile',
    meta: 'FILE',
    section: 'Edge',
    default: null as string | null,
    validate: optionalText,
    doc: 'Serve HTTPS: each worker (with --balance proxy, the master) terminates TLS with this PEM certificate (chain) file. The master reads it (and --keyfile, --ca-certs) at start and again on HUP, so a renewed certificate needs no restart, and gives the workers the contents.',
  }),
  setting({
    name: 'keyfile',
    key: 'keyfile',
    meta: 'FILE',
    section: 'Edge',
    default: null as string | null,
    validate: optionalText,
    doc: "The certificate's PEM private key (default: in --certfile).",
  }),
  setting({
    name: 'ca-certs',
    key: 'caCerts',
    meta: 'FILE',
    section: 'Edge',
    default: null as string | null,
    validate: optionalText,
    doc: 'PEM CA certificates that client certificates are checked against (--cert-reqs).',
  }),
  setting({
    name: 'cert-reqs',
    key: 'certReqs',
    fixedUntilRestart: 'with-proxy',
    meta: 'MODE',
    section: 'Edge',
    default: 'none' as (typeof CERT_REQUIREMENTS)[number],
    validate: oneOf(CERT_REQUIREMENTS),
    doc: 'Client certificates (mutual TLS): none; optional (asked for; the app reads req.socket.authorized); required (a client without a valid one is refused during the handshake).',
  }),
  // ---- the front proxy (--balance proxy, --upstream) ----
  setting({
    name: 'buffer-size',
    key: 'bufferSize',
    fixedUntilRestart: 'with-proxy',
    meta: 'BYTES',
    section: 'Proxy',
    default: 1048576,
    validate: wholeNumber(0),
    doc: 'The proxy reads a request body up to this size in full before it takes a unit, so a slow upload never holds a worker (a larger body streams once this much has come); and it reads up to this much of a response ahead of a slow client, so the unit is free sooner. 0: stream everything.',
  }),
  setting({
    name: 'queue-limit',
    key: 'queueLimit',
    fixedUntilRestart: 'with-proxy',
    meta: 'INT',
    section: 'Proxy',
    default: 1024,
    validate: wholeNumber(0),
    doc: 'How many requests may wait in the proxy for a unit when every unit is at capacity (sync: one request; async and gthread: --worker-connections); beyond it a request is answered 503 with Retry-After.',
  }),
  setting({
    name: 'queue-timeout',
    key: 'queueTimeout',
    fixedUntilRestart: 'with-proxy',
    meta: 'SECONDS',
    section: 'Proxy',
    default: 30,
    validate: wholeNumber(1),
    doc: 'How long a request may wait in the proxy for a unit before it is answered 503 with Retry-After.',
  }),
  setting({
    name: 'upstream',
    key: 'upstream',
    fixedUntilRestart: 'always',
    kind: 'list',
    meta: 'URL',
    section: 'Proxy',
    default: [] as Upstream[],
    validate: upstreamList,
    format: (upstreams) => upstreams.map(formatUpstream).join(','),
    doc: 'Front these HTTP servers (repeatable: http://HOST[:PORT], port 80 by default, or unix:PATH), in any language, instead of an app: no workers are started, and the proxy (--balance proxy) dispatches, queues, buffers and applies the edge for them, each upstream taking up to --worker-connections requests at once; one that refuses a connection or fails --upstream-health is out of rotation until it is back. With none in rotation, requests wait for one to come back (a restart, a deploy) up to --queue-timeout, then get a 503: lower --queue-timeout to fail sooner.',
  }),
  setting({
    name: 'upstream-health',
    key: 'upstreamHealth',
    fixedUntilRestart: 'with-proxy',
    meta: 'PATH',
    section: 'Proxy',
    default: null as string | null,
    validate: healthPath,
    doc: 'With --upstream: GET this path on every upstream each second; one that answers other than 2xx or 3xx, or not at all within a second, is out of rotation until a check passes.',
  }),
  // ---- logging ----
  setting({
    name: 'access-logfile',
    key: 'accessLogfile',
    meta: 'FILE',
    section: 'Logging',
    default: null as string | null,
    validate: optionalText,
    doc: "Access log file ('-' for stdout). Off by default. A line per request, whoever answered it: the app, or forkgate refusing it (a 4xx from the edge; with --balance proxy the master's 502, 503, and 499 for a client gone while its request waited, written by the master, so %(p)s is its pid; in front of --upstream servers the master writes every line). Requests Node's parser refuses before they are whole (431, a malformed request line) are not logged, as in Gunicorn.",
  }),
  setting({
    name: 'access-logformat',
    key: 'accessLogformat',
    meta: 'FORMAT',
    section: 'Logging',
    default: DEFAULT_ACCESS_LOG_FORMAT,
    validate: text,
    doc: "Access log format with Gunicorn's atoms: %(h)s %(t)s %(r)s %(s)s %(b)s %(D)s %({header}i)s %({header}o)s ..., or json: one JSON object per request (remote_addr, time, method, path, query, protocol, status, bytes, referer, user_agent, duration_us, pid, request_id).",
  }),
  setting({
    name: 'error-logfile',
    key: 'errorLogfile',
    meta: 'FILE',
    section: 'Logging',
    default: '-',
    validate: text,
    doc: "Error log file ('-' for stderr).",
  }),
  setting({
    name: 'log-level',
    key: 'logLevel',
    meta: 'LEVEL',
    section: 'Logging',
    default: 'info' as LogLevel,
    validate: oneOf(LOG_LEVELS),
    doc: `Error log level: ${LOG_LEVELS.join(', ')}.`,
  }),
  // ---- metrics ----
  setting({
    name: 'metrics-bind',
    key: 'metricsBind',
    fixedUntilRestart: 'always',
    meta: 'ADDRESS',
    section: 'Metrics',
    default: null as BindAddress | null,
    validate: singleBind,
    format: (address) => (address ? formatBindAddress(address) : 'null'),
    doc: 'Serve GET /metrics (the Prometheus text format) here, and nothing else (HOST:PORT or unix:PATH), so Prometheus can scrape the pool over a network the admin endpoint must not be reachable on. The admin endpoint (--admin-bind) serves GET /metrics too.',
  }),
  setting({
    name: 'statsd-host',
    key: 'statsdHost',
    meta: 'HOST:PORT',
    section: 'Metrics',
    default: null as TcpAddress | null,
    validate: statsdAddress,
    format: (address) => (address ? `${address.host}:${address.port}` : 'null'),
    doc: "Send statsd metrics over UDP to this host with Gunicorn's names (gunicorn.requests, gunicorn.request.duration, gunicorn.request.status.NNN, gunicorn.workers, gunicorn.log.LEVEL), never waiting on it.",
  }),
  setting({
    name: 'statsd-prefix',
    key: 'statsdPrefix',
    meta: 'STRING',
    section: 'Metrics',
    default: '',
    validate: text,
    doc: "Prefix for the statsd metrics' names (a '.' is added if missing), as Gunicorn's --statsd-prefix.",
  }),
  setting({
    name: 'dogstatsd-tags',
    key: 'dogstatsdTags',
    meta: 'TAGS',
    section: 'Metrics',
    default: '',
    validate: dogstatsdTags,
    doc: "DogStatsD tags to add to every statsd metric, comma-separated (env:prod,web), as Gunicorn's --dogstatsd-tags: each line then ends in |#env:prod,web.",
  }),
  ...hookSettings,
] as const;

type AnySetting = (typeof SETTINGS)[number];
export type SettingKey = AnySetting['key'];
export type SettingValue<K extends SettingKey> = Extract<AnySetting, { key: K }>['default'];

/** The raw resolved settings, as the table's validators return them. */
export type SettingValues = { -readonly [S in AnySetting as S['key']]: S['default'] };

/** What the master and workers run with: `workers` is a count, never 'auto'. */
export type Settings = Omit<SettingValues, 'workers'> & { workers: number };

export function findSetting(key: string): AnySetting | undefined {
  return SETTINGS.find((entry) => entry.key === key);
}

export function formatSettingValue(entry: Setting, value: unknown): string {
  if (entry.format) return (entry.format as (value: unknown) => string)(value);
  return value === null ? 'null' : typeof value === 'string' ? value : JSON.stringify(value);
}

/** The settings a reload leaves as they were at start (see Setting.fixedUntilRestart). */
export function fixedUntilRestart(scope: 'always' | 'with-proxy'): { key: keyof Settings; name: string }[] {
  return SETTINGS.filter((entry) => entry.fixedUntilRestart === scope).map(({ key, name }) => ({ key: key as keyof Settings, name }));
}

/**
 * What a reload leaves for a restart, as a sentence ("--bind takes effect on restart, not on reload"):
 * the settings among `fixed` whose value differs between the two, or null if none does.
 */
export function restartNotice(fixed: readonly { key: keyof Settings; name: string }[], before: Settings, after: Settings): string | null {
  const names = fixed.filter(({ key }) => JSON.stringify(before[key]) !== JSON.stringify(after[key])).map(({ name }) => `--${name}`);
  if (names.length === 0) return null;
  const subject = names.length === 1 ? `${names[0]} takes` : `${names.slice(0, -1).join(', ')} and ${names.at(-1)} take`;
  return `${subject} effect on restart, not on reload`;
}
