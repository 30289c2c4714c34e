import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { autoWorkerCount, effectiveCpuCount } from '../src/config/cpu.ts';

const roots: string[] = [];
after(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

/** A fake filesystem root: `files` maps paths relative to it (e.g. `proc/self/cgroup`) to contents. */
function fixture(files: Record<string, string>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'forkgate-cpu-'));
  roots.push(root);
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), text);
  }
  return root;
}

const POD = 'kubepods/pod1';

describe('effectiveCpuCount', () => {
  test('cpu.max "max" everywhere: affinity decides', () => {
    const root = fixture({
      'proc/self/cgroup': `0::/${POD}\n`,
      [`sys/fs/cgroup/${POD}/cpu.max`]: 'max 100000\n',
      'sys/fs/cgroup/kubepods/cpu.max': 'max 100000\n',
    });
    const budget = effectiveCpuCount({ root, affinity: 8 });
    assert.deepEqual(budget, { cpus: 8, affinity: 8, quota: null, reason: 'affinity 8, no cgroup cpu.max quota → 8 CPUs' });
  });

  test('a quota on the process cgroup', () => {
    const root = fixture({
      'proc/self/cgroup': `0::/${POD}\n`,
      [`sys/fs/cgroup/${POD}/cpu.max`]: '200000 100000\n',
    });
    const budget = effectiveCpuCount({ root, affinity: 8 });
    assert.equal(budget.cpus, 2);
    assert.equal(budget.quota, 2);
    assert.equal(budget.reason, `affinity 8, cgroup cpu.max 200000/100000 at /sys/fs/cgroup/${POD} → 2 CPUs`);
  });

  test('a tighter quota on a parent wins: limits are hierarchical', () => {
    const root = fixture({
      'proc/self/cgroup': `0::/${POD}/container\n`,
      [`sys/fs/cgroup/${POD}/container/cpu.max`]: '400000 100000\n',
      [`sys/fs/cgroup/${POD}/cpu.max`]: 'max 100000\n',
      'sys/fs/cgroup/kubepods/cpu.max': '300000 100000\n',
    });
    const budget = effectiveCpuCount({ root, affinity: 16 });
    assert.equal(budget.cpus, 3);
    assert.equal(budget.quota, 3);
    assert.match(budget.reason, /cgroup cpu\.max 300000\/100000 at \/sys\/fs\/cgroup\/kubepods → 3 CPUs$/);
  });

  test('a quota at the hierarchy root (a cgroup namespace shows the container as /)', () => {
    const root = fixture({ 'proc/self/cgroup': '0::/\n', 'sys/fs/cgroup/cpu.max': '50000 100000\n' });
    const budget = effectiveCpuCount({ root, affinity: 4 });
    assert.equal(budget.quota, 0.5);
    assert.equal(budget.cpus, 1);
    assert.equal(budget.reason, 'affinity 4, cgroup cpu.max 50000/100000 at /sys/fs/cgroup → 1 CPU');
  });

  test('a fractional quota rounds up', () => {
    const root = fixture({
      'proc/self/cgroup': `0::/${POD}\n`,
      [`sys/fs/cgroup/${POD}/cpu.max`]: '150000 100000\n',
    });
    const budget = effectiveCpuCount({ root, affinity: 8 });
    assert.equal(budget.quota, 1.5);
    assert.equal(budget.cpus, 2);
    assert.equal(budget.reason, `affinity 8, cgroup cpu.max 150000/100000 at /sys/fs/cgroup/${POD} → 2 CPUs`);
  });

  test('a quota larger than the affinity mask: affinity decides', () => {
    const root = fixture({
      'proc/self/cgroup': `0::/${POD}\n`,
      [`sys/fs/cgroup/${POD}/cpu.max`]: '800000 100000\n',
    });
    const budget = effectiveCpuCount({ root, affinity: 2 });
    assert.equal(budget.quota, 8);
    assert.equal(budget.cpus, 2);
  });

  test('no /proc/self/cgroup: no quota, no throw', () => {
    const budget = effectiveCpuCount({ root: fixture({}), affinity: 4 });
    assert.deepEqual(budget, { cpus: 4, affinity: 4, quota: null, reason: 'affinity 4, no cgroup cpu.max quota → 4 CPUs' });
  });

  test('cgroup v1 lines only: no quota', () => {
    const root = fixture({
      'proc/self/cgroup': '12:memory:/x\n3:cpu,cpuacct:/x\n1:name=systemd:/x\n',
      'sys/fs/cgroup/x/cpu.max': '100000 100000\n',
    });
    const budget = effectiveCpuCount({ root, affinity: 4 });
    assert.equal(budget.quota, null);
    assert.equal(budget.cpus, 4);
  });

  test('a missing or garbled cpu.max on the way up is skipped', () => {
    const root = fixture({
      'proc/self/cgroup': `0::/${POD}/gone\n`,
      [`sys/fs/cgroup/${POD}/cpu.max`]: 'nonsense\n',
      'sys/fs/cgroup/kubepods/cpu.max': '100000 100000\n',
    });
    const budget = effectiveCpuCount({ root, affinity: 4 });
    assert.equal(budget.quota, 1);
    assert.equal(budget.cpus, 1);
  });

  test('never below one CPU', () => {
    assert.equal(effectiveCpuCount({ root: fixture({}), affinity: 0 }).cpus, 1);
  });

  test('this machine: at least one CPU, no more than the affinity mask', () => {
    const budget = effectiveCpuCount();
    assert.ok(budget.cpus >= 1);
    assert.ok(budget.cpus <= budget.affinity);
    assert.equal(budget.affinity, os.availableParallelism());
    assert.match(budget.reason, /^affinity \d+, .+ → \d+ CPUs?$/);
  });
});

describe('autoWorkerCount', () => {
  test('is 2 × CPU + 1', () => {
    const budget = (cpus: number) => ({ cpus, affinity: cpus, quota: null, reason: '' });
    assert.equal(autoWorkerCount(budget(1)), 3);
    assert.equal(autoWorkerCount(budget(2)), 5);
    assert.equal(autoWorkerCount(budget(8)), 17);
  });
});
