import { ExitCode, ForkgateError } from '../errors.ts';

/** tune could not measure: no path answers, a pool that does not come up. A runtime failure (exit 1). */
export class TuneError extends ForkgateError {
  constructor(message: string) {
    super('FORKGATE_TUNE', message, ExitCode.runtimeFailure);
    this.name = 'TuneError';
  }
}
