/**
 * Errors that end the process carry the exit code they end it with, so the CLI has one place that
 * maps failures to codes (DESIGN: 0 clean, 1 runtime failure, 2 bad usage or config, 3 boot failure).
 * An address that cannot be bound is a runtime failure: the settings are valid, the machine refuses
 * them now (the port is taken, or not permitted), whoever binds it, the master or a worker.
 */
export const ExitCode = {
  ok: 0,
  runtimeFailure: 1,
  usage: 2,
  bootFailure: 3,
} as const;

export class ForkgateError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(code: string, message: string, exitCode: number, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ForkgateError';
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** A bad flag, environment variable or config-file value: names the setting and what it accepts. */
export class SettingError extends ForkgateError {
  constructor(message: string) {
    super('FORKGATE_BAD_SETTING', message, ExitCode.usage);
    this.name = 'SettingError';
  }
}

/** The app could not be turned into something forkgate can serve (missing file, export, shape). */
export class AppLoadError extends ForkgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('FORKGATE_APP_LOAD', message, ExitCode.bootFailure, options);
    this.name = 'AppLoadError';
  }
}

/** An address could not be bound (in use, not permitted, not on this machine). */
export class ListenError extends ForkgateError {
  constructor(cause: Error) {
    super('FORKGATE_LISTEN', `Cannot listen: ${cause.message}`, ExitCode.runtimeFailure, { cause });
    this.name = 'ListenError';
  }
}

/** A command line forkgate cannot act on that is no setting: an unknown command, a bad argument to one. */
export class UsageError extends ForkgateError {
  constructor(message: string) {
    super('FORKGATE_USAGE', message, ExitCode.usage);
    this.name = 'UsageError';
  }
}

/** A command found no admin endpoint answering where it looked (nothing listens, no answer in time). */
export class AdminUnreachableError extends ForkgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('FORKGATE_ADMIN_UNREACHABLE', message, ExitCode.runtimeFailure, options);
    this.name = 'AdminUnreachableError';
  }
}

/**
 * The admin endpoint answered a command with a refusal: a request it cannot do as given (4xx: a size
 * beyond the bounds, a missing or wrong token) is bad usage; its own failure (5xx) a runtime one.
 */
export class AdminRefusedError extends ForkgateError {
  readonly status: number;
  constructor(status: number, message: string) {
    super('FORKGATE_ADMIN_REFUSED', message, status < 500 ? ExitCode.usage : ExitCode.runtimeFailure);
    this.name = 'AdminRefusedError';
    this.status = status;
  }
}
