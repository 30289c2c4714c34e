/**
 * forkgate's one entry point (the npm bin and the single binary) decides this process's role: the
 * master, a worker (FORKGATE_ROLE=worker), a serving thread (its workerData says so) or the single
 * binary's syntax check (FORKGATE_ROLE=syntax-check).
 */
import './node-version.ts'; // first: an older Node is told so before any other module loads
import { takeActivatedSockets } from './config/bind.ts';
import { formatUpstream, type Settings } from './config/settings.ts';
import { workerEnvironment } from './config/env-file.ts';
import { resolveSettings, type SettingSources } from './config/load.ts';
import { renderHelp, renderPrintConfig } from './config/help.ts';
import { readCertificates, type Certificates } from './edge/tls.ts';
import { ExitCode, ForkgateError, SettingError, UsageError } from './errors.ts';
import { Logger } from './log/logger.ts';
import { outliveOutputReaders, unwritableFile } from './log/sink.ts';
import { readAdminToken } from './master/admin.ts';
import { Arbiter } from './master/arbiter.ts';
import { registerModuleHooks } from './module-hooks.ts';
import { checkBoot } from './master/boot-check.ts';
import { prepareWorkerIdentity } from './master/privileges.ts';
import { VERSION } from './version.ts';
import { runWorker } from './worker/main.ts';
import { commandWordProblem, COMMAND_USAGE, isCommand, runCommand, type CommandName } from './commands/index.ts';
import { runThread } from './worker/thread.ts';
import { checkSyntax, SYNTAX_CHECK_ROLE } from './worker/syntax-report.ts';
import type { ThreadData } from './ipc/messages.ts';
import { isMainThread, workerData } from 'node:worker_threads';

registerModuleHooks();
if (!isMainThread && (workerData as ThreadData | undefined)?.role === 'forkgate-thread') {
  void runThread(workerData as ThreadData);
} else if (process.env.FORKGATE_ROLE === SYNTAX_CHECK_ROLE) {
  checkSyntax(process.env.FORKGATE_SYNTAX_CHECK!);
} else if (process.env.FORKGATE_ROLE === 'worker') {
  delete process.env.FORKGATE_ROLE; // the app's own child processes are not workers
  void runWorker();
} else {
  const argv = process.argv.slice(2);
  const command = argv[0] !== undefined && isCommand(argv[0]) ? argv[0] : null;
  main(argv, command).then(
    (code) => process.exit(code),
    (error: unknown) => process.exit(reportFailure(error, command)),
  );
}

async function main(argv: string[], command: CommandName | null): Promise<number> {
  // Taken out of process.env first, so neither the workers nor the app's own children see them.
  const activatedSockets = takeActivatedSockets(process.env, process.pid);
  const sources: SettingSources = { argv, env: { ...process.env }, cwd: process.cwd(), activatedSockets };
  if (command) return print(await runCommand(command, argv.slice(1), sources));
  const resolved = await resolveSettings(sources);
  const { settings } = resolved;
  if (settings.help) return print(renderHelp(COMMAND_USAGE));
  if (settings.version) return print(`forkgate ${VERSION} (Node ${process.version})\n`);
  if (settings.printConfig) return print(renderPrintConfig(settings));
  if (!settings.app && settings.upstream.length === 0) {
    throw new UsageError('no app given; usage: forkgate [options] APP, or forkgate [options] --upstream URL (see forkgate --help)');
  }
  if (settings.chdir) {
    try {
      process.chdir(settings.chdir);
    } catch (error) {
      throw new SettingError(`--chdir: cannot change to ${settings.chdir}: ${(error as NodeJS.ErrnoException).code}`);
    }
  }
  const notAnApp = settings.app ? commandWordProblem(settings.app, process.cwd()) : null;
  if (notAnApp) throw new UsageError(notAnApp);
  const certificates = readCertificates(settings); // after --chdir (relative paths are its), before anything listens
  // A token file that cannot serve fails the start, not the first action.
  if (settings.adminTokenFile) readAdminToken(settings.adminTokenFile);
  const workerEnv = workerEnvironment(settings.envFile, sources.env);
  let logger: Logger;
  try {
    logger = new Logger(settings.errorLogfile, settings.logLevel);
  } catch (error) {
    throw new SettingError(`--error-logfile: cannot open ${settings.errorLogfile}: ${(error as Error).message}`);
  }
  const unwritable = unwritableFile('--access-logfile', settings.accessLogfile) ?? unwritableFile('--pid', settings.pid);
  if (unwritable) throw new SettingError(unwritable);
  if (settings.checkConfig) return checkConfig(settings, certificates, workerEnv, logger);
  outliveOutputReaders();
  const arbiter = new Arbiter(resolved, sources, certificates, workerEnv, logger);
  const code = await arbiter.run();
  logger.close();
  // A start that failed is told where it was started too (a terminal, systemd's journal), not only in the file.
  if (code !== ExitCode.ok && !arbiter.served && settings.errorLogfile !== '-' && logger.firstError) {
    process.stderr.write(`forkgate: error: ${logger.firstError} (the error log: ${settings.errorLogfile})\n`);
  }
  return code;
}

async function checkConfig(settings: Settings, certificates: Certificates | null, env: NodeJS.ProcessEnv, logger: Logger): Promise<number> {
  if (!settings.app) return print(`Config OK: fronting ${settings.upstream.map(formatUpstream).join(', ')}\n`);
  const boot = await checkBoot(settings, certificates, env, prepareWorkerIdentity(settings));
  if ('shape' in boot) return print(`Config OK: ${settings.app} loads as a ${boot.shape} app\n`);
  logger.error(`Config check failed: ${settings.app} does not load:${boot.failure}`);
  return ExitCode.runtimeFailure;
}

function print(text: string): number {
  process.stdout.write(text);
  return ExitCode.ok;
}

/**
 * Says why forkgate stops and returns its exit code: its own diagnosis in one line (within a command,
 * naming it), anything else as the bug it is, with its stack.
 */
function reportFailure(error: unknown, command: string | null): ExitCode {
  if (error instanceof ForkgateError) {
    process.stderr.write(`forkgate: error: ${command ? `${command}: ` : ''}${error.message}\n`);
    return error.exitCode;
  }
  process.stderr.write(`forkgate: internal error: ${(error as Error)?.stack ?? String(error)}\n`);
  return ExitCode.runtimeFailure;
}
