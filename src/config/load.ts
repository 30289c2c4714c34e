/**
 * Resolves the settings from their sources, lowest priority first:
 * default < config file < environment (FORKGATE_*, WEB_CONCURRENCY, PORT) < FORKGATE_CMD_ARGS < CLI.
 * Every value goes through the table's validator, and an error names where the bad value came from.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { SettingError } from '../errors.ts';
import { formatBindAddress, reusePortSupported, type BindAddress } from './bind.ts';
import { autoWorkerCount, effectiveCpuCount } from './cpu.ts';
import { nearest } from './did-you-mean.ts';
import { attachOptionValues } from './option-values.ts';
import { Invalid, SETTINGS, type Setting, type SettingValues, type Settings } from './settings.ts';

export const CONFIG_FILE_NAMES = ['forkgate.config.ts', 'forkgate.config.mjs', 'forkgate.config.js', 'forkgate.config.json'];

export interface ResolvedSettings {
  readonly settings: Settings;
  /** The config file that was read, if any (HUP reads it again). */
  readonly configFile: string | null;
  /** How `--workers auto` was computed, for the debug log. */
  readonly workersReason: string | null;
  /** Said at start: a choice the settings made that would otherwise go unseen. */
  readonly warnings: readonly string[];
}

export interface SettingSources {
  readonly argv: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  /** fd:// binds for the sockets systemd passed (socket activation): the binds when no source gives any. */
  readonly activatedSockets?: readonly BindAddress[];
}

type Layer = Map<string, { raw: unknown; source: string }>;

export async function resolveSettings(sources: SettingSources): Promise<ResolvedSettings> {
  const cli = parseCommandLine(sources.argv, '');
  // --help and --version answer whatever the environment and the config file hold, a broken file too.
  const actionOnly = cli.layer.get('help')?.raw === true || cli.layer.get('version')?.raw === true;
  const cmdArgs = parseCommandLine(actionOnly ? [] : splitArgs(sources.env.FORKGATE_CMD_ARGS ?? ''), 'FORKGATE_CMD_ARGS ');
  if (cmdArgs.app !== undefined) {
    throw new SettingError(`FORKGATE_CMD_ARGS: takes options only, not the app ('${cmdArgs.app}')`);
  }
  const env = readEnvironment(sources.env);

  const configFlag = cli.layer.get('config') ?? cmdArgs.layer.get('config') ?? env.get('config');
  const configFile = configFlag ? path.resolve(sources.cwd, String(configFlag.raw)) : discoverConfigFile(sources.cwd);
  const file = configFile && !actionOnly ? await readConfigFile(configFile) : new Map();

  const values: Record<string, unknown> = {};
  const sourceOf = new Map<string, string>();
  for (const entry of SETTINGS as readonly Setting[]) {
    values[entry.key] = entry.default;
    for (const layer of actionOnly ? [cli.layer] : [file, env, cmdArgs.layer, cli.layer]) {
      const given = layer.get(entry.key);
      if (given === undefined) continue;
      values[entry.key] = validate(entry, given.raw, given.source);
      sourceOf.set(entry.key, given.source);
    }
  }
  if (cli.app !== undefined) values.app = cli.app;
  const warnings: string[] = [];
  const activated = sources.activatedSockets?.length ?? 0;
  if (activated > 0 && !sourceOf.has('bind')) values.bind = sources.activatedSockets;
  else if (activated > 0) {
    // systemd holds the connections made to its sockets meanwhile: they would wait unanswered.
    const passed =
      activated === 1 ? 'the socket systemd passed (LISTEN_FDS) goes' : `the ${activated} sockets systemd passed (LISTEN_FDS) go`;
    warnings.push(`--bind is set by ${sourceOf.get('bind')}: ${passed} unused`);
  }
  values.config = configFile;
  // Where forkgate starts, not --chdir: Node itself looks for an --env-file on its command line there.
  values.envFile = (values.envFile as string[]).map((file) => path.resolve(sources.cwd, file));

  const raw = values as SettingValues;
  applyUpstreams(raw, sourceOf.get('balance'));
  applyThreads(raw, sourceOf.get('balance'));
  requireCertfile(raw, sourceOf);
  refuseSharedAddresses(raw);
  let workersReason: string | null = null;
  let workers: number;
  if (raw.workers === 'auto') {
    const budget = effectiveCpuCount();
    workers = autoWorkerCount(budget);
    workersReason = `workers auto = 2 × ${budget.cpus} + 1 = ${workers} (${budget.reason})`;
  } else {
    workers = raw.workers;
  }
  return { settings: { ...raw, workers }, configFile, workersReason, warnings };
}

/**
 * --threads > 1 implies gthread, as in Gunicorn, and a balance mode that reaches threads: Node cannot
 * move an accepted socket into a worker thread, so each thread accepts for itself with SO_REUSEPORT on
 * TCP binds, or, behind a unix: or fd:// bind (which no two sockets share), takes requests from the proxy.
 * balanceSource: where --balance was set (then it is not changed); a reload passes the running mode.
 */
export function applyThreads(values: SettingValues, balanceSource: string | undefined): void {
  if (values.threads > 1 && values.workerClass === 'async') values.workerClass = 'gthread';
  if (values.threads === 1 && values.workerClass !== 'gthread') return;
  if (values.balance === 'proxy') return; // the proxy reaches each thread on a unix socket of its own
  const tcpOnly = values.bind.every((address) => address.kind === 'tcp');
  const why = 'Node cannot hand an accepted socket to a worker thread';
  if (balanceSource && values.balance === 'round-robin') {
    throw new SettingError(
      `${balanceSource}: round-robin cannot reach threads; ${why}: use --balance ${tcpOnly ? 'reuseport (TCP binds) or proxy' : 'proxy'}`,
    );
  }
  if (!tcpOnly) {
    if (balanceSource) {
      throw new SettingError(
        `${balanceSource}: reuseport cannot reach threads behind a unix: or fd:// bind (no two sockets share one); use --balance proxy`,
      );
    }
    values.balance = 'proxy';
    return;
  }
  if (!reusePortSupported()) {
    throw new SettingError(`--threads: SO_REUSEPORT is not available on ${process.platform}, and ${why}: use --balance proxy`);
  }
  values.balance = 'reuseport';
}

/**
 * Two of forkgate's own listeners on one address would fail at start as if another program held it
 * ("address already in use"): the settings that clash are named instead. Port 0 is never shared.
 */
function refuseSharedAddresses(values: SettingValues): void {
  const named: [string, BindAddress][] = [
    ...values.bind.map((address): [string, BindAddress] => ['--bind', address]),
    ...(values.adminBind ? [['--admin-bind', values.adminBind] as [string, BindAddress]] : []),
    ...(values.metricsBind ? [['--metrics-bind', values.metricsBind] as [string, BindAddress]] : []),
  ];
  const seen = new Map<string, string>();
  for (const [setting, address] of named) {
    if (address.kind === 'tcp' && address.port === 0) continue;
    const key = formatBindAddress(address);
    const first = seen.get(key);
    if (first) throw new SettingError(`${setting} ${key}: ${first === setting ? 'given twice' : `${first} listens there already`}`);
    seen.set(key, setting);
  }
}

/**
 * A TLS setting without --certfile would be ignored without a word: plain HTTP served where --cert-reqs
 * required was meant to refuse every client without a certificate.
 */
function requireCertfile(values: SettingValues, sourceOf: ReadonlyMap<string, string>): void {
  if (values.certfile !== null) return;
  for (const key of ['keyfile', 'caCerts', 'certReqs'] as const) {
    const source = sourceOf.get(key);
    if (source && (key !== 'certReqs' || values.certReqs !== 'none')) {
      throw new SettingError(`${source}: has no effect without --certfile (TLS is served only with a certificate)`);
    }
  }
}

/** --upstream fronts external servers: it replaces the app and only the proxy can do it. */
function applyUpstreams(values: SettingValues, balanceSource: string | undefined): void {
  if (values.upstream.length === 0) return;
  if (values.app) throw new SettingError(`--upstream: fronts servers instead of an app; got both --upstream and the app '${values.app}'`);
  if (values.balance !== 'proxy' && balanceSource) {
    throw new SettingError(
      `${balanceSource}: --upstream needs the proxy, which parses each request; use --balance proxy or leave --balance out`,
    );
  }
  values.balance = 'proxy';
}

function validate(entry: Setting, raw: unknown, source: string): unknown {
  const value = entry.validate(raw);
  if (value instanceof Invalid) {
    throw new SettingError(`${source}: expected ${value.expected}; got ${JSON.stringify(raw)}`);
  }
  return value;
}

function parseCommandLine(argv: readonly string[], sourcePrefix: string): { layer: Layer; app: string | undefined } {
  const options: ParseArgsOptionsConfig = {};
  for (const entry of SETTINGS as readonly Setting[]) {
    if (entry.key === 'app' || entry.kind === 'hook') continue;
    options[entry.name] = {
      type: entry.kind === 'boolean' ? 'boolean' : 'string',
      multiple: entry.kind === 'list',
      ...(entry.short ? { short: entry.short } : {}),
    };
  }
  const attached = attachOptionValues(argv, options, (name) => settingNamed(name)?.meta ?? 'VALUE');
  if ('problem' in attached) throw new SettingError(`${sourcePrefix}${attached.problem}; see forkgate --help`);
  let parsed: ReturnType<typeof parseArgs<{ options: typeof options; allowPositionals: true; allowNegative: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: attached.args, options, allowPositionals: true, allowNegative: true, strict: true });
  } catch (error) {
    throw new SettingError(`${sourcePrefix}${explainParseError(error as Error & { code?: string })}`);
  }
  if (parsed.positionals.length > 1) {
    throw new SettingError(`${sourcePrefix}expected one app (PATH[:EXPORT]); got ${parsed.positionals.map((p) => `'${p}'`).join(', ')}`);
  }
  const layer: Layer = new Map();
  for (const entry of SETTINGS as readonly Setting[]) {
    const value = (parsed.values as Record<string, unknown>)[entry.name];
    if (value !== undefined) layer.set(entry.key, { raw: value, source: `${sourcePrefix}--${entry.name}` });
  }
  return { layer, app: parsed.positionals[0] };
}

function explainParseError(error: Error & { code?: string }): string {
  const unknown = /'(-{1,2}[^']+)'/.exec(error.message)?.[1];
  if (error.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) {
    const name = unknown.replace(/^-+/, '').split('=')[0]!;
    const guess = closestSetting(name);
    return `unknown option '${unknown}'${guess ? ` (did you mean --${guess}?)` : ''}; see forkgate --help`;
  }
  if (error.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    return `${error.message.replace(/\.$/, '')}; see forkgate --help`;
  }
  return error.message;
}

function readEnvironment(env: NodeJS.ProcessEnv): Layer {
  refuseMisspelledVariables(env);
  const layer: Layer = new Map();
  for (const entry of SETTINGS as readonly Setting[]) {
    const source = entry.env.find((candidate) => env[candidate.name] !== undefined && env[candidate.name] !== '');
    if (!source) continue;
    const text = env[source.name]!;
    // WEB_CONCURRENCY and PORT do not say which setting they feed, so an error about them names it.
    const named = source.name.startsWith('FORKGATE_') ? '' : ` (--${entry.name})`;
    layer.set(entry.key, { raw: source.map ? source.map(text) : text, source: `${source.name}=${text}${named}` });
  }
  return layer;
}

const PREFIX = 'FORKGATE_';

/**
 * A FORKGATE_ variable one or two letters from a setting's is a typo that would otherwise be ignored
 * without a word; other FORKGATE_ names may be an app's own and are left alone.
 */
function refuseMisspelledVariables(env: NodeJS.ProcessEnv): void {
  const known = new Set([
    'FORKGATE_CMD_ARGS',
    ...(SETTINGS as readonly Setting[]).flatMap((entry) => entry.env.map((source) => source.name)),
  ]);
  const suffixes = [...known].filter((name) => name.startsWith(PREFIX)).map((name) => name.slice(PREFIX.length));
  for (const name of Object.keys(env)) {
    if (!name.startsWith(PREFIX) || known.has(name)) continue;
    const guess = nearest(name.slice(PREFIX.length), suffixes);
    if (guess) throw new SettingError(`${name}: not a forkgate setting (did you mean ${PREFIX}${guess}?); see forkgate --help`);
  }
}

function discoverConfigFile(cwd: string): string | null {
  for (const name of CONFIG_FILE_NAMES) {
    const candidate = path.join(cwd, name);
    if (fs.existsSync(candidate)) return candidate;
  }
  return null;
}

let configLoads = 0;

async function readConfigFile(file: string): Promise<Layer> {
  if (!fs.existsSync(file)) throw new SettingError(`--config: no such file ${file}`);
  let config: unknown;
  if (file.endsWith('.json')) {
    try {
      config = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (error) {
      throw new SettingError(`${file}: not valid JSON: ${(error as Error).message}`);
    }
  } else {
    let module: { default?: unknown };
    try {
      // HUP reads the file again: a new URL gets past the ES module cache, and CommonJS has its own.
      delete createRequire(file).cache[file];
      const url = `${pathToFileURL(file).href}${configLoads++ ? `?reload=${configLoads}` : ''}`;
      module = (await import(url)) as { default?: unknown };
    } catch (error) {
      throw new SettingError(`${file}: cannot load the config file: ${(error as Error)?.message ?? String(error)}`);
    }
    config = module.default ?? module;
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new SettingError(`${file}: expected an object of settings (export default defineConfig({...}))`);
  }
  const layer: Layer = new Map();
  for (const [key, raw] of Object.entries(config)) {
    const entry = (SETTINGS as readonly Setting[]).find((candidate) => candidate.key === key);
    if (entry && !entry.inFile) {
      throw new SettingError(`${file}: '${key}' cannot be set in a config file; it is the command-line option --${entry.name}`);
    }
    if (!entry) {
      const guess = closestSetting(key);
      throw new SettingError(`${file}: unknown setting '${key}'${guess ? ` (did you mean '${toKey(guess)}'?)` : ''}; see docs/settings.md`);
    }
    layer.set(key, { raw, source: `${file}: ${key}` });
  }
  return layer;
}

/** A typo's nearest setting name (by its flag or its config key), to suggest in the error. */
function closestSetting(name: string): string | undefined {
  const settingOf = new Map<string, string>();
  for (const entry of SETTINGS as readonly Setting[]) {
    for (const candidate of [entry.name, entry.key.toLowerCase()]) if (!settingOf.has(candidate)) settingOf.set(candidate, entry.name);
  }
  const found = nearest(name.toLowerCase().replaceAll('_', '-'), settingOf.keys());
  return found === undefined ? undefined : settingOf.get(found);
}

function settingNamed(name: string): Setting | undefined {
  return (SETTINGS as readonly Setting[]).find((entry) => entry.name === name);
}

function toKey(name: string): string {
  return settingNamed(name)?.key ?? name;
}

/** Splits FORKGATE_CMD_ARGS like a shell would for the simple cases: spaces, single and double quotes. */
export function splitArgs(text: string): string[] {
  const args: string[] = [];
  const pattern = /"([^"]*)"|'([^']*)'|(\S+)/g;
  for (const match of text.matchAll(pattern)) args.push(match[1] ?? match[2] ?? match[3]!);
  return args;
}
