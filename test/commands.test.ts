// The commands that ask a running master through its admin endpoint: status, scale, reload, stop.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runCli, type Run, type RunOptions } from './helpers/cli.ts';
import { eventually, FIXTURES, request, start, startRequest } from './helpers/forkgate.ts';
import { freePort } from './helpers/free-port.ts';

const OPS = `${FIXTURES}ops.cjs`;
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-commands-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs a forkgate command to its end, in the scratch directory unless told otherwise (a command never serves). */
function forkgate(args: string[], options: RunOptions = {}): Promise<Run> {
  return runCli(args, { cwd: scratch, ...options });
}

/** A command that did what it was asked: exit 0, and one line on stdout matching `said`. */
async function done(args: string[], said: RegExp, options?: { env?: Record<string, string>; cwd?: string }): Promise<void> {
  const run = await forkgate(args, options);
  assert.equal(run.code, 0, `forkgate ${args.join(' ')}: ${run.stderr}`);
  assert.equal(run.stderr, '');
  assert.match(run.stdout, /^[^\n]+\n$/, 'one line');
  assert.match(run.stdout, said);
}

/** A command that could not: exit `code`, one line on stderr matching `said`, nothing on stdout. */
async function failed(args: string[], code: number, said: RegExp, options?: { env?: Record<string, string>; cwd?: string }): Promise<void> {
  const run = await forkgate(args, options);
  assert.equal(run.code, code, `forkgate ${args.join(' ')}: ${run.stdout}${run.stderr}`);
  assert.equal(run.stdout, '');
  assert.match(run.stderr, /^forkgate: [^\n]+\n$/, `one line: ${run.stderr}`);
  assert.match(run.stderr, said);
  assert.doesNotMatch(run.stderr, /internal error|^\s+at /m);
}

async function target(socketPath: string): Promise<number> {
  return (JSON.parse((await request('http://localhost/status', { socketPath })).body) as { target: number }).target;
}

test('scale, reload and stop act on a master over its unix socket, each saying what it did in one line', async () => {
  const socketPath = join(scratch, 'act.sock');
  const admin = ['--admin', `unix:${socketPath}`];
  const master = await start(['-w', '2', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS]);
  try {
    await done(['scale', '3', ...admin], /^Pool size raised from 2 to 3 \(unix:\S+act\.sock\)\n$/);
    await eventually(() => master.workerPids().length === 3, '3 workers');
    await done(['scale', '-2', ...admin], /^Pool size lowered from 3 to 1 /);
    await eventually(() => master.workerPids().length === 1, '1 worker');
    await done(['scale', ...admin, '+1'], /^Pool size raised from 1 to 2 /);
    assert.equal(await target(socketPath), 2);

    const before = master.workerPids();
    await done(
      ['reload', ...admin],
      /^Reload accepted by unix:\S+act\.sock: new workers start, and the old ones retire once they are ready\n$/,
    );
    await eventually(() => {
      const now = master.workerPids();
      return now.length === 2 && now.every((pid) => !before.includes(pid));
    }, 'the pool to be replaced');

    const slow = startRequest(`${master.url}/slow?ms=1000`);
    await slow.headers;
    await done(['stop', ...admin], /^Stop accepted by unix:\S+act\.sock: in-flight requests finish, then the master exits\n$/);
    assert.equal((await slow.reply).status, 200, 'the in-flight request is answered');
    assert.deepEqual(await master.exited, { code: 0, signal: null });
    assert.match(master.output, /Handling admin request: POST \/stop\n/);
  } finally {
    await master.stop();
  }
});

test('status prints the pool as a table, and with --json the /status document as the endpoint sends it', async () => {
  const socketPath = join(scratch, 'status.sock');
  const master = await start(['-w', '2', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS]);
  try {
    const table = await forkgate(['status', '--admin', `unix:${socketPath}`]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`^master ${master.pid} .*\\ngeneration 1, 2/2 workers, .*, unplanned restarts 0`));
    assert.match(table.stdout, /^PID\s+GEN\s+STATE\s+REQUESTS/m);

    const json = await forkgate(['status', '--json', '--admin', `unix:${socketPath}`]);
    assert.equal(json.code, 0, json.stderr);
    const printed = JSON.parse(json.stdout) as { master: { pid: number }; workers: unknown[] };
    assert.equal(json.stdout, `${JSON.stringify(printed)}\n`, 'as the endpoint writes it');
    // Heartbeats change the counts from one moment to the next: the document's shape is compared.
    const direct = JSON.parse((await request('http://localhost/status', { socketPath })).body) as Record<string, unknown>;
    assert.deepEqual(Object.keys(printed), Object.keys(direct));
    assert.equal(printed.master.pid, master.pid);
    assert.equal(printed.workers.length, 2);
  } finally {
    await master.stop();
  }
});

test('status and top speak of one worker in the singular', async () => {
  const socketPath = join(scratch, 'one.sock');
  const master = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS]);
  try {
    const table = await forkgate(['status', '--admin', `unix:${socketPath}`]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^generation 1, 1\/1 worker, /m);
    const top = await forkgate(['top', '--frames', '2', '--admin', `unix:${socketPath}`]);
    assert.equal(top.code, 0, top.stderr);
    assert.match(top.stdout, /^1 worker \(1 wanted\)$/m);
  } finally {
    await master.stop();
  }
});

test('over TCP, actions carry the token of --admin-token-file; without one, or with the wrong one, exit 2 saying so; exit 1 if the master cannot read its own', async () => {
  const tokenFile = join(scratch, 'tcp.token');
  const wrongFile = join(scratch, 'wrong.token');
  writeFileSync(tokenFile, 'the-token\n');
  writeFileSync(wrongFile, 'not-the-token\n');
  const master = await start(['-w', '1', '-b', '127.0.0.1:0', '--admin-bind', '127.0.0.1:0', '--admin-token-file', tokenFile, OPS]);
  try {
    const [, address] = (await master.waitFor(/Admin endpoint at: (\S+)/)) as [string, string];
    await failed(
      ['scale', '2', '--admin', address],
      2,
      /^forkgate: error: scale: actions over TCP need the admin token: pass --admin-token-file FILE/,
    );
    await failed(
      ['scale', '2', '--admin', address, '--admin-token-file', wrongFile],
      2,
      /^forkgate: error: scale: the bearer token is not the one in --admin-token-file\n$/,
    );
    await failed(
      ['reload', '--admin', address, '--admin-token-file', join(scratch, 'missing.token')],
      2,
      /^forkgate: error: reload: --admin-token-file \S+missing\.token: cannot read it: no such file or directory \(ENOENT\)\n$/,
    );
    assert.equal(master.count(/Handling admin request/), 0, 'nothing was done');
    await done(
      ['scale', '2', '--admin', address, '--admin-token-file', tokenFile],
      new RegExp(`^Pool size raised from 1 to 2 \\(${address}\\)\\n$`),
    );
    await eventually(() => master.workerPids().length === 2, '2 workers');
    const copy = join(scratch, 'copy.token');
    writeFileSync(copy, 'the-token\n');
    rmSync(tokenFile);
    await failed(
      ['scale', '1', '--admin', address, '--admin-token-file', copy],
      1,
      /^forkgate: error: scale: --admin-token-file \S+tcp\.token: cannot read it: no such file or directory \(ENOENT\)\n$/,
    );
    assert.equal(master.workerPids().length, 2, 'the pool stays');
  } finally {
    await master.stop();
  }
});

test('without --admin, the commands find the endpoint and the token file as the master does: its config file, FORKGATE_ADMIN_BIND', async () => {
  const socketPath = join(scratch, 'found.sock');
  const tokenFile = join(scratch, 'found.token');
  writeFileSync(tokenFile, 'found-token\n');
  const dir = mkdtempSync(join(scratch, 'app-'));
  writeFileSync(join(dir, 'forkgate.config.json'), JSON.stringify({ adminBind: `unix:${socketPath}`, adminTokenFile: tokenFile }));
  const master = await start(['-w', '1', '-b', '127.0.0.1:0', OPS], { cwd: dir });
  try {
    await done(['scale', '2'], /^Pool size raised from 1 to 2 \(unix:\S+found\.sock\)\n$/, { cwd: dir });
    await done(['scale', '1'], /^Pool size lowered from 2 to 1 /, {
      env: { FORKGATE_ADMIN_BIND: `unix:${socketPath}`, FORKGATE_ADMIN_TOKEN_FILE: tokenFile },
    });
    await failed(
      ['scale', '2'],
      2,
      /^forkgate: error: scale: no admin endpoint; pass --admin HOST:PORT or unix:PATH, or set admin-bind\n$/,
    );
  } finally {
    await master.stop();
  }
});

test('an endpoint nobody serves: one line naming it, exit 1', async () => {
  const port = await freePort();
  await failed(
    ['status', '--admin', `unix:${join(scratch, 'nobody.sock')}`],
    1,
    /^forkgate: error: status: cannot reach the admin endpoint at unix:\S+nobody\.sock \(ENOENT\)/,
  );
  await failed(['stop', '--admin', `unix:${join(scratch, 'nobody.sock')}`], 1, /^forkgate: error: stop: cannot reach the admin endpoint/);
  const token = join(scratch, 'any.token');
  writeFileSync(token, 'any\n');
  await failed(
    ['reload', '--admin', `127.0.0.1:${port}`, '--admin-token-file', token],
    1,
    new RegExp(`^forkgate: error: reload: cannot reach the admin endpoint at 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`),
  );
});

test('what answers is not an admin endpoint: one line saying so, exit 1', async () => {
  const socketPath = join(scratch, 'not-admin.sock');
  const server = net.createServer((socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello'));
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  try {
    await failed(
      ['status', '--admin', `unix:${socketPath}`],
      1,
      /^forkgate: error: status: what answers at unix:\S+ is not forkgate's admin endpoint: HTTP 200, no JSON\n$/,
    );
  } finally {
    server.close();
  }
});

test('a size the pool may not take is refused in one line with the reason, exit 2, and the pool stays', async () => {
  const socketPath = join(scratch, 'bounds.sock');
  const admin = ['--admin', `unix:${socketPath}`];
  // One CPU for the master, as its affinity: the maximum is then 4 workers.
  const master = await start(['-w', '2', '-b', '127.0.0.1:0', '--admin-bind', `unix:${socketPath}`, OPS], {
    launcher: ['taskset', '-c', '0'],
  });
  try {
    await failed(['scale', '5', ...admin], 2, /^forkgate: error: scale: pool size stays at 2: 5 is above the maximum, 4 \(4 × 1 CPU\)\n$/);
    await failed(['scale', '-2', ...admin], 2, /^forkgate: error: scale: pool size stays at 2: 0 is below the minimum, 1\n$/);
    assert.equal(await target(socketPath), 2);
  } finally {
    await master.stop();
  }
});

test('a command used wrongly exits 2 with one line, asking nothing of the endpoint', async () => {
  const cases: [string[], RegExp][] = [
    [['scale'], /^forkgate: error: scale: expected one size: N \(workers\), \+N or -N \(more or fewer\); got none\n$/],
    [['scale', 'many'], /got 'many'/],
    [['scale', '2', '3'], /got '2', '3'/],
    [['scale', '2', '--workers', '3'], /^forkgate: error: scale: unknown option '--workers'; see forkgate scale --help\n$/],
    [['stop', 'now'], /^forkgate: error: stop: takes options only; got 'now' \(see forkgate stop --help\)\n$/],
    [['status', '--admin'], /^forkgate: error: status: --admin: missing its value \(--admin VALUE\); see forkgate status --help\n$/],
    // A negative number is the value, for the command to judge.
    [['top', '--frames', '-3'], /^forkgate: error: top: --frames: expected a whole number ≥ 1; got '-3'\n$/],
    [['status', '--admin', 'unix:'], /^forkgate: error: status: --admin: expected HOST:PORT or unix:PATH; 'unix:' has no socket path/],
    [['reload'], /^forkgate: error: reload: no admin endpoint/],
  ];
  for (const [args, said] of cases) await failed(args, 2, said);
});

test('each command explains itself with --help', async () => {
  for (const command of ['status', 'reload', 'scale', 'stop']) {
    const run = await forkgate([command, '--help']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^Usage: forkgate ${command} `));
    assert.match(run.stdout, /--admin ADDRESS/);
  }
  assert.match((await forkgate(['status', '-h'])).stdout, /--json/);
  assert.match((await forkgate(['scale', '--help'])).stdout, /4 per CPU/);
});
