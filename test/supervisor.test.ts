// The supervision rules shared by worker processes and threads, driven with numbers: no process, no clock.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { reconcile, type Plan, type Policy } from '../src/supervisor/reconcile.ts';
import { BootBackOff, Unit } from '../src/supervisor/unit.ts';

const POLICY: Policy = { timeoutMs: 30_000, startGraceMs: 10_000, maxMemoryBytes: 0 };

let nextId = 1;

/** A unit started at `at`, heard from then; ready at once unless told it is still booting. */
function unit(state: 'booting' | 'ready' = 'ready', at = 0): Unit {
  const made = new Unit(nextId++, at);
  made.heartbeat(at);
  if (state === 'ready') made.ready(at);
  return made;
}

function plan(
  units: Unit[],
  target: number,
  options: { now?: number; policy?: Partial<Policy>; backOff?: BootBackOff; stopping?: boolean } = {},
): Plan<Unit> {
  return reconcile({
    units,
    target,
    now: options.now ?? 0,
    policy: { ...POLICY, ...options.policy },
    backOff: options.backOff ?? new BootBackOff(),
    stopping: options.stopping ?? false,
  });
}

const ids = (units: Unit[]) => units.map((each) => each.id);

describe('reconcile', () => {
  test('an empty pool is filled to the target at once; units still booting count', () => {
    assert.equal(plan([], 3).spawn, 3);
    assert.equal(plan([unit('booting')], 3).spawn, 2);
    const full = plan([unit(), unit(), unit()], 3);
    assert.deepEqual({ spawn: full.spawn, drain: full.drain, ready: full.ready }, { spawn: 0, drain: [], ready: 3 });
  });

  test('a reload drains each retiring unit only as a fresh one is ready, the newest kept longest', () => {
    const [a, b] = [unit(), unit()];
    for (const each of [a, b]) each.retire('reload');
    const start = plan([a, b], 2);
    assert.deepEqual({ spawn: start.spawn, drain: start.drain }, { spawn: 2, drain: [] }, 'replacements first, nothing drained');

    const [c, d] = [unit('booting'), unit('booting')];
    assert.deepEqual(plan([a, b, c, d], 2).drain, [], 'replacements still booting: the old ones serve on');
    c.ready(1);
    assert.deepEqual(ids(plan([a, b, c, d], 2).drain), [a.id], 'one fresh unit ready: the oldest goes');
    d.ready(2);
    assert.deepEqual(ids(plan([a, b, c, d], 2).drain), [a.id, b.id]);
  });

  test('a unit retired before it ever served goes at once', () => {
    const serving = unit();
    const booting = unit('booting');
    for (const each of [serving, booting]) each.retire('reload');
    assert.deepEqual(ids(plan([serving, booting], 2).drain), [booting.id]);
  });

  test('a spent unit drains once any fresh unit serves; alone, it serves until its replacement does', () => {
    const [spent, other] = [unit(), unit()];
    spent.retire('spent');
    const shared = plan([spent, other], 2);
    assert.deepEqual({ spawn: shared.spawn, drain: ids(shared.drain) }, { spawn: 1, drain: [spent.id] });

    const alone = unit();
    alone.retire('spent');
    const replacement = unit('booting');
    assert.deepEqual(plan([alone, replacement], 1).drain, []);
    replacement.ready(1);
    assert.deepEqual(ids(plan([alone, replacement], 1).drain), [alone.id]);
  });

  test('a unit silent past the timeout is killed, once; one never heard from gets the start grace', () => {
    const heard = unit('ready', 0);
    const silent = new Unit(nextId++, 0); // booting, nothing heard: Node itself may still be starting
    assert.deepEqual(plan([heard, silent], 2, { now: 30_000 }).hung, [], 'exactly the timeout is not past it');
    assert.deepEqual(
      ids(plan([heard, silent], 2, { now: 30_001 }).hung),
      [heard.id, silent.id],
      'a grace shorter than the timeout changes nothing',
    );

    const graced = plan([heard, silent], 2, { now: 8000, policy: { timeoutMs: 5000 } });
    assert.deepEqual(ids(graced.hung), [heard.id], 'the start grace is the longer here');
    assert.deepEqual(ids(plan([silent], 1, { now: 10_001, policy: { timeoutMs: 5000 } }).hung), [silent.id]);

    heard.condemn('hung');
    const after = plan([heard], 1, { now: 60_000, policy: { timeoutMs: 5000 } });
    assert.deepEqual(
      { hung: after.hung, spawn: after.spawn },
      { hung: [], spawn: 0 },
      'judged once; it keeps its place until it has exited',
    );
    assert.deepEqual(plan([heard], 1, { now: 60_000, policy: { timeoutMs: 0 } }).hung, [], 'no --timeout, no kill');
  });

  test('a draining unit past its deadline is killed; a heartbeat timeout no longer applies to it', () => {
    const draining = unit();
    draining.drain(1000);
    assert.deepEqual(plan([draining], 0, { now: 1000, policy: { timeoutMs: 100 } }).overstayed, []);
    const late = plan([draining], 0, { now: 1001, policy: { timeoutMs: 100 } });
    assert.deepEqual({ overstayed: ids(late.overstayed), hung: late.hung }, { overstayed: [draining.id], hung: [] });
    draining.drain(500);
    assert.equal(draining.drainDeadline, 500, 'a quick stop brings the deadline closer');
    draining.drain(5000);
    assert.equal(draining.drainDeadline, 500, 'never further');
  });

  test('a ready unit over the memory limit is retired: replaced first, drained once the replacement serves', () => {
    const [big, small] = [unit(), unit()];
    big.rss = 300 * 2 ** 20;
    small.rss = 100 * 2 ** 20;
    const policy = { maxMemoryBytes: 200 * 2 ** 20 };
    const first = plan([big, small], 2, { policy });
    assert.deepEqual(
      { overMemory: ids(first.overMemory), spawn: first.spawn, drain: first.drain },
      { overMemory: [big.id], spawn: 1, drain: [] },
    );
    big.retire('over-memory');
    const replacement = unit();
    assert.deepEqual(ids(plan([big, small, replacement], 2, { policy }).drain), [big.id]);
    assert.deepEqual(plan([big, small, replacement], 2, { policy }).overMemory, [], 'retiring already: not judged again');
    assert.deepEqual(plan([big], 1, { policy: { maxMemoryBytes: 0 } }).overMemory, [], 'no limit set');
  });

  test('resize: up spawns; down drains units still booting first, newest first, then the oldest ready', () => {
    const [old, young, bootingOld, bootingNew] = [unit(), unit(), unit('booting'), unit('booting')];
    assert.equal(plan([old, young], 5).spawn, 3);
    assert.deepEqual(ids(plan([old, young, bootingOld, bootingNew], 3).drain), [bootingNew.id]);
    assert.deepEqual(ids(plan([old, young, bootingOld, bootingNew], 1).drain), [bootingNew.id, bootingOld.id, old.id]);
    const down = plan([old, young, bootingOld, bootingNew], 1);
    assert.equal(down.ready, 1);
  });

  test('stopping: nothing spawned or drained (the stop drains), deadlines still kill', () => {
    const draining = unit();
    draining.drain(100);
    const retiring = unit();
    retiring.retire('reload');
    const stopping = plan([draining, retiring], 4, { now: 200, stopping: true });
    assert.deepEqual(
      { spawn: stopping.spawn, drain: stopping.drain, overstayed: ids(stopping.overstayed) },
      { spawn: 0, drain: [], overstayed: [draining.id] },
    );
  });
});

describe('boot back-off', () => {
  test('boot failures hold starts: 500 ms, doubling to 30 s, one start at a time while the crash loop lasts', () => {
    const backOff = new BootBackOff();
    assert.equal(plan([], 2, { backOff }).spawn, 2);
    assert.equal(backOff.failed(0), 500);
    const held = plan([], 2, { now: 499, backOff });
    assert.deepEqual({ spawn: held.spawn, startAt: held.startAt }, { spawn: 0, startAt: 500 });
    const oneAtATime = plan([], 2, { now: 500, backOff });
    assert.deepEqual({ spawn: oneAtATime.spawn, startAt: oneAtATime.startAt }, { spawn: 1, startAt: null });
    const delays = [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000].map((_, i) => backOff.failed(1000 * (i + 1)));
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
    assert.equal(backOff.failures, 8);
  });

  test('a unit that boots ends the crash loop; so does a quiet minute', () => {
    const backOff = new BootBackOff();
    backOff.failed(0);
    backOff.failed(1000);
    backOff.reset();
    assert.equal(plan([], 3, { now: 1001, backOff }).spawn, 3);
    assert.equal(backOff.failed(2000), 500);
    assert.equal(backOff.failed(62_001), 500, 'a minute after the last failure it starts over');
    assert.equal(backOff.failures, 1);
  });

  test('only boot failures back off: a unit that served and died is replaced at once', () => {
    const backOff = new BootBackOff();
    /** What the arbiter and the thread pool do with an exit: a boot failure holds the next start. */
    const exit = (gone: Unit, code: number, now: number) => {
      const { cause } = gone.exited({ code }, 0);
      if (cause === 'boot-failure') backOff.failed(now);
      return cause;
    };
    const [served, survivor] = [unit(), unit()];
    served.served();
    assert.equal(exit(served, 1, 10), 'crashed');
    assert.equal(plan([survivor], 2, { now: 10, backOff }).spawn, 1, 'replaced at once');

    const replacement = unit('booting', 10);
    assert.equal(exit(replacement, 3, 20), 'boot-failure');
    assert.equal(plan([survivor], 2, { now: 20, backOff }).startAt, 520, 'its replacement failed to boot: the next start waits');
  });

  test('a unit that failed on its own soon after it was ready, before any client came, is a boot failure: a crash loop backs off', () => {
    const backOff = new BootBackOff();
    const delays = [0, 1, 2].map((i) => {
      const crashesAfterReady = unit('ready', 1000 * i);
      assert.equal(crashesAfterReady.exited({ code: 1 }, 1000 * i + 200).cause, 'boot-failure');
      return backOff.failed(1000 * i + 200);
    });
    assert.deepEqual(delays, [500, 1000, 2000]);
    const killed = unit();
    assert.equal(killed.exited({ code: null, signal: 'SIGKILL' }, 0).cause, 'killed', "someone else's kill is no crash loop");
    const stopped = unit();
    assert.equal(stopped.exited({ code: 0 }, 200).cause, 'crashed', 'one that stopped cleanly (TERM from outside) did not fail');
    const idleLong = unit('ready', 0);
    assert.equal(idleLong.exited({ code: 1 }, 60_000).cause, 'crashed', 'one that served a minute, idle, then failed is no crash loop');
    const visited = unit();
    visited.served();
    assert.equal(visited.exited({ code: 1 }, 200).cause, 'crashed', 'a client came: it may have been what killed it');
  });
});

describe('exits', () => {
  test('each exit gets one cause, and counts as a restart unless the unit was draining', () => {
    const drained = unit();
    drained.drain(1000);
    assert.deepEqual(drained.exited({ code: 0 }, 0), { cause: 'drained', restart: false });
    assert.equal(drained.state, 'exited');

    const failedDraining = unit();
    failedDraining.drain(1000);
    assert.deepEqual(failedDraining.exited({ code: 1 }, 0), { cause: 'crashed', restart: false });

    const quit = unit();
    quit.drain(1000);
    quit.signalSent = 'SIGQUIT';
    assert.deepEqual(quit.exited({ code: null, signal: 'SIGQUIT' }, 0), { cause: 'drained', restart: false }, 'its own signal');

    const oom = unit();
    assert.deepEqual(oom.exited({ code: null, signal: 'SIGKILL' }, 0), { cause: 'killed', restart: true }, "someone else's signal");

    const hung = unit();
    hung.condemn('hung');
    hung.signalSent = 'SIGKILL';
    assert.deepEqual(hung.exited({ code: null, signal: 'SIGKILL' }, 0), { cause: 'hung', restart: true });

    const overstayed = unit();
    overstayed.drain(1000);
    overstayed.condemn('overstayed');
    overstayed.signalSent = 'SIGKILL';
    assert.deepEqual(overstayed.exited({ code: null, signal: 'SIGKILL' }, 0), { cause: 'overstayed', restart: false });

    const retiredWhileBooting = unit('booting');
    retiredWhileBooting.retire('reload');
    assert.equal(retiredWhileBooting.exited({ code: 1 }, 0).cause, 'crashed', 'retired before it was ready: not a boot failure');
  });

  test('a unit retired while booting serves on once ready; a draining one is never ready again', () => {
    const booting = unit('booting');
    booting.retire('reload');
    assert.equal(booting.serves, false);
    assert.equal(booting.ready(5), true);
    assert.deepEqual(
      { state: booting.state, serves: booting.serves, readyAt: booting.readyAt },
      { state: 'retiring', serves: true, readyAt: 5 },
    );

    const drained = unit('booting');
    drained.drain(1000);
    assert.equal(drained.ready(5), false);
    assert.equal(drained.serves, false);

    const ready = unit();
    assert.equal(ready.retire('spent'), true);
    assert.equal(ready.retire('reload'), false, 'the first reason stays');
    assert.equal(ready.retiredFor, 'spent');
  });
});
