/** `forkgate reload`, `scale` and `stop`: the admin endpoint's actions, one line saying what was done. */
import { formatBindAddress } from '../config/bind.ts';
import { UsageError } from '../errors.ts';
import { adminTarget, post } from './admin-client.ts';
import { ADMIN_OPTION, parseOptions, TOKEN_OPTION, type Command } from './command.ts';

const ACTION_OPTIONS = { admin: { type: 'string' }, 'admin-token-file': { type: 'string' } } as const;

export const reload: Command = {
  usage: 'forkgate reload [--admin ADDRESS] [--admin-token-file FILE]',
  summary: 'Reload as HUP does: new workers load the config and the app afresh, and the old ones retire once they are ready.',
  options: [ADMIN_OPTION, TOKEN_OPTION],
  async run(argv, sources) {
    const { values } = parseOptions('reload', argv, ACTION_OPTIONS);
    const target = await adminTarget(values, sources, true);
    await post(target, '/reload');
    return `Reload accepted by ${formatBindAddress(target.address)}: new workers start, and the old ones retire once they are ready\n`;
  },
};

export const stop: Command = {
  usage: 'forkgate stop [--admin ADDRESS] [--admin-token-file FILE]',
  summary:
    'Stop as TERM does: after --shutdown-delay, in-flight requests finish within --graceful-timeout, then the master exits 0 (and a supervisor such as systemd or Kubernetes may start it again).',
  options: [ADMIN_OPTION, TOKEN_OPTION],
  async run(argv, sources) {
    const { values } = parseOptions('stop', argv, ACTION_OPTIONS);
    const target = await adminTarget(values, sources, true);
    await post(target, '/stop');
    return `Stop accepted by ${formatBindAddress(target.address)}: in-flight requests finish, then the master exits\n`;
  },
};

export const scale: Command = {
  usage: 'forkgate scale N|+N|-N [--admin ADDRESS] [--admin-token-file FILE]',
  summary: 'Set the pool size to N workers, or N more (+N) or fewer (-N), from 1 to the larger of --workers and 4 per CPU.',
  options: [ADMIN_OPTION, TOKEN_OPTION],
  async run(argv, sources) {
    // parseArgs would read -2 as an option: the size is taken out first (not a value of --admin).
    const at = argv.findIndex((arg, i) => /^[+-]?\d+$/.test(arg) && !['--admin', '--admin-token-file'].includes(argv[i - 1] ?? ''));
    const size = at < 0 ? undefined : argv[at]!;
    const { values, positionals } = parseOptions(
      'scale',
      argv.filter((_, i) => i !== at),
      ACTION_OPTIONS,
      true,
    );
    if (size === undefined || positionals.length > 0) {
      const got = [size, ...positionals].filter((arg) => arg !== undefined).map((arg) => `'${arg}'`);
      throw new UsageError(`expected one size: N (workers), +N or -N (more or fewer); got ${got.join(', ') || 'none'}`);
    }
    const target = await adminTarget(values, sources, true);
    const { answer } = await post(target, `/workers/${size}`);
    const { target: workers, previous } = answer as { target: number; previous: number };
    const change =
      workers === previous ? `stays at ${workers}` : `${workers > previous ? 'raised' : 'lowered'} from ${previous} to ${workers}`;
    return `Pool size ${change} (${formatBindAddress(target.address)})\n`;
  },
};
