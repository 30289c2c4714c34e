import { formatUpstream, type Settings } from './config/settings.ts';

/**
 * The title ps and top show, Gunicorn's shape: "NAME: master [APP]", "NAME: worker [APP]". Node can only
 * write a title over its own command line, so a title longer than that is cut: workers are started
 * with the title as their argv[0], which makes room for it (the master's room is the command it was run with).
 */
export function processTitle(settings: Pick<Settings, 'name' | 'app' | 'upstream'>, role: 'master' | 'worker'): string {
  const { name, app, upstream } = settings;
  return `${name ?? 'forkgate'}: ${role} [${app ?? upstream.map(formatUpstream).join(' ')}]`;
}
