/**
 * --user / --group: the master keeps root to bind and spawn; workers are started with the target ids
 * (child_process sets gid, drops supplementary groups, then sets uid) before they load the app. Who
 * owns the unix sockets the master binds for clients follows from them (--socket-group).
 */
import { chownSync, closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { isSea } from 'node:sea';
import type { Settings } from '../config/settings.ts';
import { SettingError } from '../errors.ts';

export interface WorkerIdentity {
  readonly uid: number;
  readonly gid: number;
}

/** The workers' user (null: the master's own), with the log files they write created and handed to it. */
export function prepareWorkerIdentity(
  settings: Pick<Settings, 'user' | 'group' | 'accessLogfile' | 'errorLogfile'>,
): WorkerIdentity | null {
  const identity = resolveIdentity(settings.user, settings.group);
  if (!identity) return identity;
  for (const file of workerLogFiles(settings)) {
    try {
      handOverLogFile(file, identity);
    } catch (error) {
      const setting = file === settings.accessLogfile ? '--access-logfile' : '--error-logfile';
      throw new SettingError(`${setting} ${file}: cannot create it for the workers: ${(error as Error).message}`);
    }
  }
  // Each worker runs the executable and, from npm, forkgate's script: both must be within the user's reach.
  const who = settings.user !== null ? `--user ${settings.user}` : `--group ${settings.group}`;
  const cannotRun = closedTo(identity, process.execPath, EXECUTE);
  if (cannotRun) throw new SettingError(`${who}: the workers cannot run ${process.execPath}: ${cannotRun}`);
  const script = isSea() ? null : process.argv[1]!; // the single binary is its own script
  const cannotRead = script ? closedTo(identity, script, READ) : null;
  if (cannotRead) throw new SettingError(`${who}: the workers cannot read ${script}, which they run: ${cannotRead}`);
  return identity;
}

const EXECUTE = 0o1;
const READ = 0o4;

/**
 * Why a process with only the identity's uid and gid (workers get no supplementary groups) cannot read
 * or execute `file` (`access`): the first directory above it it may not enter, or the file itself; null
 * if it can. Checked from the permission bits, owner's, else group's, else others', as the kernel does.
 */
function closedTo(identity: WorkerIdentity, file: string, access: typeof EXECUTE | typeof READ): string | null {
  if (identity.uid === 0) return null;
  const allows = (path: string, bit: number) => {
    const stat = statSync(path);
    const shift = stat.uid === identity.uid ? 6 : stat.gid === identity.gid ? 3 : 0;
    return ((stat.mode >> shift) & bit) !== 0;
  };
  const directories: string[] = []; // from the root down
  for (let directory = dirname(file); directories[0] !== directory; directory = dirname(directory)) directories.unshift(directory);
  const directory = directories.find((path) => !allows(path, EXECUTE)); // search permission
  if (directory) return `they may not enter the directory ${directory}`;
  if (allows(file, access)) return null;
  return access === READ ? 'they may not read it' : 'they may not execute it';
}

/** Node has no getpwnam(): names are looked up in the passwd and group files, numbers taken as they are. */
function resolveIdentity(
  user: string | null,
  group: string | null,
  files = { passwd: '/etc/passwd', group: '/etc/group' },
): WorkerIdentity | null {
  if (user === null && group === null) return null;
  if (process.getuid?.() !== 0) throw new SettingError(`--user/--group: the master must run as root to start workers as another user`);
  const account = user === null ? null : lookUp(files.passwd, user, '--user');
  const uid = account ? Number(account[2]) : process.getuid();
  const gid = group !== null ? Number(lookUp(files.group, group, '--group')[2]) : account ? Number(account[3]) : process.getgid!();
  return { uid, gid };
}

/** Who may connect to a unix socket the master binds: its permission bits, and its owner if not the master's. */
export interface SocketAccess {
  readonly mode: number;
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/**
 * The clients' unix sockets: --socket-mode, owned as Gunicorn has them by the workers' user and group,
 * the group replaced by --socket-group. A master that is not root can only give its own groups.
 */
export function resolveSocketAccess(
  mode: number,
  group: string | null,
  identity: WorkerIdentity | null,
  groupFile = '/etc/group',
): SocketAccess {
  if (group === null) return identity ? { mode, owner: identity } : { mode };
  const gid = Number(lookUp(groupFile, group, '--socket-group')[2]);
  if (process.getuid?.() !== 0 && gid !== process.getegid?.() && !process.getgroups?.().includes(gid)) {
    throw new SettingError(`--socket-group: the master is neither root nor in group '${group}', so it cannot give its sockets to it`);
  }
  return { mode, owner: { uid: identity?.uid ?? -1, gid } };
}

/** The passwd or group line for a name or number: [name, password, id, (primary gid), ...]. */
function lookUp(file: string, nameOrId: string, flag: string): string[] {
  const numeric = /^\d+$/.test(nameOrId);
  const lines = safeRead(file)
    .split('\n')
    .map((line) => line.split(':'));
  const entry = lines.find((fields) => (numeric ? fields[2] === nameOrId : fields[0] === nameOrId));
  if (entry) return entry;
  if (numeric) return [nameOrId, 'x', nameOrId, nameOrId];
  throw new SettingError(`${flag}: no '${nameOrId}' in ${file}; give a numeric id instead`);
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Log files are opened by the workers, whose user may not create files where root can: the master
 * creates them (at start, before each worker, and after logrotate moved them) and hands them over.
 */
export function handOverLogFile(path: string, identity: WorkerIdentity | null): void {
  closeSync(openSync(path, 'a'));
  if (identity) chownSync(path, identity.uid, identity.gid);
}

/** The log files the workers write: the access log and the error log, when they are files. */
export function workerLogFiles(settings: Pick<Settings, 'accessLogfile' | 'errorLogfile'>): string[] {
  const files = [settings.accessLogfile, settings.errorLogfile].filter((file): file is string => file !== null && file !== '-');
  return [...new Set(files)];
}
