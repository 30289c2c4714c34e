// Server hooks from a config file: master hooks in the master, worker hooks in each worker.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, request, start } from './helpers/forkgate.ts';

const scratch = mkdtempSync(join(tmpdir(), 'forkgate-hooks-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A config file whose every hook appends `name pid detail` to a journal file. */
function hookConfig(journal: string): string {
  const file = join(scratch, `hooks-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(
    file,
    `import { appendFileSync } from 'node:fs';
const note = (name, detail = '') => appendFileSync(${JSON.stringify(journal)}, \`\${name} \${process.pid} \${detail}\\n\`);
export default {
  onStarting: (master) => note('onStarting', master.workers),
  onReload: (master) => note('onReload', master.generation),
  whenReady: () => note('whenReady'),
  preFork: (master, worker) => note('preFork', worker.id),
  postFork: (worker) => note('postFork', worker.id),
  postWorkerInit: (worker) => note('postWorkerInit', worker.pid),
  workerInt: (worker) => note('workerInt', worker.pid),
  workerAbort: (master, worker) => note('workerAbort', worker.pid + ' ' + (worker.stack ?? '').includes('ops.cjs')),
  preRequest: (worker, req) => note('preRequest', req.url),
  postRequest: (worker, req, res) => note('postRequest', req.url + ' ' + res.statusCode),
  childExit: (master, worker) => note('childExit', worker.pid),
  workerExit: (worker) => note('workerExit', worker.pid),
  nworkersChanged: (master, now, before) => note('nworkersChanged', before + '->' + now),
  onExit: () => note('onExit'),
};
`,
  );
  return file;
}

const journalHas = (journal: string, pattern: RegExp) => {
  try {
    return pattern.test(readFileSync(journal, 'utf8'));
  } catch {
    return false;
  }
};

test('master and worker hooks run at their moments, in the right process', async () => {
  const journal = join(scratch, 'journal-1.txt');
  const forkgate = await start(['-c', hookConfig(journal), '-w', '1', '-b', '127.0.0.1:0', `${FIXTURES}ops.cjs`]);
  const [worker] = forkgate.workerPids();
  await request(`${forkgate.url}/pid`);
  await eventually(() => journalHas(journal, /^postRequest \d+ \/pid 200$/m), 'postRequest');
  forkgate.signal('SIGTTIN');
  await eventually(() => journalHas(journal, /^nworkersChanged \d+ 1->2$/m), 'nworkersChanged');
  forkgate.signal('SIGHUP');
  await eventually(() => journalHas(journal, /^onReload \d+ 2$/m), 'onReload');
  await eventually(() => journalHas(journal, new RegExp(`^childExit ${forkgate.pid} ${worker}$`, 'm')), 'childExit of the first worker');
  assert.equal((await forkgate.stop()).code, 0);

  const lines = readFileSync(journal, 'utf8');
  const master = forkgate.pid;
  for (const name of ['onStarting', 'whenReady', 'preFork', 'onReload', 'childExit', 'nworkersChanged', 'onExit']) {
    assert.match(lines, new RegExp(`^${name} ${master}\\b`, 'm'), `${name} runs in the master`);
  }
  for (const name of ['postFork', 'postWorkerInit', 'preRequest', 'postRequest', 'workerExit']) {
    assert.match(lines, new RegExp(`^${name} ${worker}\\b`, 'm'), `${name} runs in the worker`);
  }
  assert.match(lines, new RegExp(`^preRequest ${worker} /pid$`, 'm'));
});

test('workerAbort gets the hung worker and its stack; workerInt runs on INT', async () => {
  const journal = join(scratch, 'journal-2.txt');
  const forkgate = await start(['-c', hookConfig(journal), '-w', '1', '--timeout', '1', '-b', '127.0.0.1:0', `${FIXTURES}ops.cjs`]);
  const [hung] = forkgate.workerPids();
  void request(`${forkgate.url}/hang`).catch(() => {});
  await eventually(() => journalHas(journal, new RegExp(`^workerAbort ${forkgate.pid} ${hung} true$`, 'm')), 'workerAbort with the stack');
  const [replacement] = await eventually(() => {
    const pids = forkgate.workerPids();
    return pids.length === 1 && pids[0] !== hung ? pids : null;
  }, 'a replacement');
  await eventually(() => journalHas(journal, new RegExp(`^postWorkerInit ${replacement}`, 'm')), 'the replacement ready');
  process.kill(replacement!, 'SIGINT');
  await eventually(() => journalHas(journal, new RegExp(`^workerInt ${replacement}`, 'm')), 'workerInt');
  await forkgate.stop();
});
