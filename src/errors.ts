/**
 * forkgate's errors: a class per kind, each with a stable code (FKG_ERR_*) to match on. Those that can
 * end a process carry its exit code, taken from the one table below; the CLI exits with it, and the
 * README's exit-code table is generated from here (npm run docs).
 */

/** How a forkgate process ends. */
export const ExitCode = {
  ok: 0,
  runtimeFailure: 1,
  usage: 2,
  bootFailure: 3,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** What each exit code tells whoever started forkgate, as the README says it. */
export const EXIT_MEANINGS: Readonly<Record<ExitCode, string>> = {
  [ExitCode.ok]: 'clean stop',
  [ExitCode.runtimeFailure]:
    'runtime failure, such as an address that cannot be bound (in use, not permitted), in every balance mode, where the settings are valid but the machine refuses them now (`Cannot listen: …` names it), or a command that reaches no admin endpoint or whose action fails there',
  [ExitCode.usage]:
    'bad usage or config (a setting, or a file one names, such as `--certfile`), said in one line before anything listens; a command the admin endpoint refuses as given',
  [ExitCode.bootFailure]: 'the app could not boot: its own error, or what forkgate could not find or read (one line)',
};

/** Every code a ForkgateError carries, with the exit code it ends a process with. */
export const ERROR_EXIT_CODES = {
  FKG_ERR_SETTING: ExitCode.usage,
  FKG_ERR_USAGE: ExitCode.usage,
  FKG_ERR_ADMIN_REFUSED: ExitCode.usage,
  FKG_ERR_LISTEN: ExitCode.runtimeFailure,
  FKG_ERR_ADMIN_UNREACHABLE: ExitCode.runtimeFailure,
  FKG_ERR_ADMIN_FAILED: ExitCode.runtimeFailure,
  FKG_ERR_TUNE: ExitCode.runtimeFailure,
  FKG_ERR_APP_LOAD: ExitCode.bootFailure,
} as const satisfies Record<`FKG_ERR_${string}`, ExitCode>;
export type ErrorCode = keyof typeof ERROR_EXIT_CODES;

/** forkgate's own diagnosis of why it cannot go on: the message says it all, so no stack is shown. */
export class ForkgateError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: ExitCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ForkgateError';
    this.code = code;
    this.exitCode = ERROR_EXIT_CODES[code];
  }
}

/** A bad flag, environment variable or config-file value: names the setting and what it accepts. */
export class SettingError extends ForkgateError {
  constructor(message: string) {
    super('FKG_ERR_SETTING', message);
    this.name = 'SettingError';
  }
}

/** A command line forkgate cannot act on that is no setting: no app, an unknown command, a bad argument to one. */
export class UsageError extends ForkgateError {
  constructor(message: string) {
    super('FKG_ERR_USAGE', message);
    this.name = 'UsageError';
  }
}

/** The app could not be turned into something forkgate can serve (missing file, export, shape). */
export class AppLoadError extends ForkgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('FKG_ERR_APP_LOAD', message, options);
    this.name = 'AppLoadError';
  }
}

/** An address could not be bound (in use, not permitted, not on this machine): the machine refuses valid settings now. */
export class ListenError extends ForkgateError {
  constructor(cause: Error) {
    super('FKG_ERR_LISTEN', `Cannot listen: ${cause.message}`, { cause });
    this.name = 'ListenError';
  }
}

/** A command found no admin endpoint answering where it looked (nothing listens, no answer in time). */
export class AdminUnreachableError extends ForkgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('FKG_ERR_ADMIN_UNREACHABLE', message, options);
    this.name = 'AdminUnreachableError';
  }
}

/** The admin endpoint refused a command as given (4xx: a size beyond the bounds, a missing or wrong token). */
export class AdminRefusedError extends ForkgateError {
  readonly status: number;
  constructor(status: number, message: string) {
    super('FKG_ERR_ADMIN_REFUSED', message);
    this.name = 'AdminRefusedError';
    this.status = status;
  }
}

/** The admin endpoint failed to do a command (5xx: the master cannot read its own token file). */
export class AdminFailedError extends ForkgateError {
  readonly status: number;
  constructor(status: number, message: string) {
    super('FKG_ERR_ADMIN_FAILED', message);
    this.name = 'AdminFailedError';
    this.status = status;
  }
}

/** forkgate tune could not measure: no path answers, a pool that does not come up, no /proc. */
export class TuneError extends ForkgateError {
  constructor(message: string) {
    super('FKG_ERR_TUNE', message);
    this.name = 'TuneError';
  }
}

/** The codes of the hop's failures, which end a request (502, or a cut response), never a process. */
export const HOP_ERROR_CODES = ['FKG_ERR_HOP_PARSE', 'FKG_ERR_HOP_CLOSED'] as const;
export type HopErrorCode = (typeof HOP_ERROR_CODES)[number];

/** The hop to a backend failed in a way of forkgate's own finding (the socket's own errors keep their errno). */
export class HopError extends Error {
  readonly code: HopErrorCode;
  constructor(code: HopErrorCode, message: string) {
    super(message);
    this.name = 'HopError';
    this.code = code;
  }
}

/** The backend's response is not HTTP/1.1 as RFC 9112 lets a server send it. */
export class HopParseError extends HopError {
  constructor(message: string) {
    super('FKG_ERR_HOP_PARSE', message);
    this.name = 'HopParseError';
  }
}

/** The backend closed the connection before its response was complete. */
export class HopClosedError extends HopError {
  constructor() {
    super('FKG_ERR_HOP_CLOSED', 'the backend closed the connection before the response was complete');
    this.name = 'HopClosedError';
  }
}
