// The proxy's dispatcher under a manual clock: which unit takes a request, when a unit counts as stuck,
// from which units waiting requests are taken back, and the queue. No processes, no sockets: backends
// whose pools are never opened.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type * as http from 'node:http';
import { test } from 'node:test';
import type { HopHandler, HopRequest } from '../src/hop/pool.ts';
import { Dispatcher, newBackend, type Backend, type QueueRefusal } from '../src/proxy/dispatcher.ts';
import { Exchange, proxyFailures } from '../src/proxy/exchange.ts';
import { STUCK_MIN_MS, StuckThreshold } from '../src/proxy/stuck-threshold.ts';
import type { Logger } from '../src/log/logger.ts';
import type { RecurringWarning } from '../src/log/recurring.ts';
import { ManualClock } from './helpers/manual-clock.ts';

/** A backend whose pool records, instead of doing, what the dispatcher asks it to take back. */
function backend(name: string, capacity = 1, ours = true): Backend & { takeBackAsked: number[] } {
  const created = Object.assign(newBackend(name, { socketPath: `/nonexistent/${name}.sock` }, capacity, ours), {
    takeBackAsked: [] as number[],
  });
  created.pool.takeBackWaiting = (now) => void created.takeBackAsked.push(now);
  return created;
}

interface Ask {
  backend: Backend | null;
  refused: QueueRefusal | null;
  cancel: () => void;
}

function ask(dispatcher: Dispatcher, options?: { avoid?: Backend; since?: number }): Ask {
  const outcome: Ask = { backend: null, refused: null, cancel: () => {} };
  outcome.cancel = dispatcher.acquire(
    (granted) => (outcome.backend = granted),
    (reason) => (outcome.refused = reason),
    options,
  );
  return outcome;
}

const names = (asks: Ask[]) => asks.map(({ backend: granted }) => granted?.name ?? null);

function setup(count: number, capacity = 1, { queueLimit = 10, queueTimeout = 1 } = {}) {
  const clock = new ManualClock();
  const dispatcher = new Dispatcher(queueLimit, queueTimeout, clock);
  const backends = Array.from({ length: count }, (_, i) => backend(String.fromCharCode(97 + i), capacity));
  for (const added of backends) dispatcher.add(added);
  return { clock, dispatcher, backends };
}

test('the least busy backend takes the request, wherever the rotation stands', () => {
  const {
    dispatcher,
    backends: [a, b],
  } = setup(2, 4);
  assert.deepEqual(names([ask(dispatcher), ask(dispatcher), ask(dispatcher)]), ['a', 'b', 'a']);
  dispatcher.release(b!, false);
  assert.deepEqual(names([ask(dispatcher), ask(dispatcher)]), ['b', 'b'], 'b had none in flight, then one to the two of a');
  assert.deepEqual([a!.inFlight, b!.inFlight], [2, 2]);
});

test('ties rotate: equally busy backends take turns', () => {
  const { dispatcher } = setup(3);
  const order: (string | null)[] = [];
  for (let i = 0; i < 6; i++) {
    const granted = ask(dispatcher);
    order.push(granted.backend!.name);
    dispatcher.release(granted.backend!, false);
  }
  assert.deepEqual(order, ['a', 'b', 'c', 'a', 'b', 'c']);
});

test('a backend at capacity takes no more: the request waits for a slot', () => {
  const {
    dispatcher,
    backends: [a],
  } = setup(1, 2);
  const asks = [ask(dispatcher), ask(dispatcher), ask(dispatcher)];
  assert.deepEqual(names(asks), ['a', 'a', null]);
  assert.equal(asks[2]!.refused, null, 'queued, not refused');
  assert.equal(dispatcher.load().queued, 1);
  dispatcher.release(a!, false);
  assert.equal(asks[2]!.backend, a, 'the freed slot goes to the waiting request');
  dispatcher.setCapacity(a!, 3);
  assert.equal(ask(dispatcher).backend, a, 'more capacity is room at once');
});

test('a backend just tried is passed over if there is another, and taken if not', () => {
  const {
    dispatcher,
    backends: [a, b],
  } = setup(2, 4);
  assert.deepEqual(names([ask(dispatcher, { avoid: a }), ask(dispatcher, { avoid: a })]), ['b', 'b']);
  dispatcher.remove(b!);
  assert.equal(ask(dispatcher, { avoid: a }).backend, a);
});

test(`stuck: requests in flight and no progress for more than ${STUCK_MIN_MS} ms ranks a backend after those that move`, () => {
  const {
    clock,
    dispatcher,
    backends: [a, b],
  } = setup(2, 8);
  assert.deepEqual(names([ask(dispatcher), ask(dispatcher)]), ['a', 'b']);
  clock.advance(STUCK_MIN_MS);
  dispatcher.progress(b!);
  assert.equal(ask(dispatcher).backend, a, `at ${STUCK_MIN_MS} ms a is not stuck yet: a tie, whose turn it is`);
  clock.advance(1);
  assert.deepEqual(
    names([ask(dispatcher), ask(dispatcher), ask(dispatcher)]),
    ['b', 'b', 'b'],
    'b moves: it takes every request, however many it has',
  );
  dispatcher.progress(a!);
  assert.equal(ask(dispatcher).backend, a, 'a confirmation or a response head is progress');
});

test('when every backend with room is stuck, the one that progressed last takes the request', () => {
  const {
    clock,
    dispatcher,
    backends: [a, b],
  } = setup(2, 4);
  ask(dispatcher);
  ask(dispatcher);
  clock.advance(1);
  dispatcher.progress(b!);
  clock.advance(STUCK_MIN_MS + 1);
  assert.deepEqual(
    names([ask(dispatcher), ask(dispatcher)]),
    ['b', 'b'],
    'both stuck: b progressed last, though it now has more in flight',
  );
  assert.deepEqual([a!.inFlight, b!.inFlight], [1, 3]);
});

test('a unit whose requests have all started (their handlers await) is busy, not stuck: long requests spread by fewest in flight', () => {
  const { clock, dispatcher } = setup(4, 8);
  // Eight long requests 50 ms apart, each confirmed started at once, as a handler awaiting a timer is.
  const granted: string[] = [];
  for (let i = 0; i < 8; i++) {
    const { backend: unit } = ask(dispatcher);
    dispatcher.started(unit!);
    granted.push(unit!.name);
    clock.advance(50);
  }
  assert.deepEqual([...granted].sort(), ['a', 'a', 'b', 'b', 'c', 'c', 'd', 'd'], granted.join(' '));
});

test('an open tunnel neither makes its unit stuck nor keeps the stuck check running', () => {
  const {
    clock,
    dispatcher,
    backends: [a, b],
  } = setup(2, 8);
  for (let i = 0; i < 3; i++) dispatcher.started(ask(dispatcher, { avoid: b }).backend!); // three tunnels on a, switched
  const waiting = ask(dispatcher, { avoid: a }).backend!; // b's request, not started
  clock.advance(1000);
  assert.equal(ask(dispatcher).backend, a, 'b is stuck; a, with its tunnels only, moves, though it has more in flight');
  dispatcher.release(waiting, false);
  dispatcher.started(a!);
  clock.advance(1000);
  assert.equal(clock.pendingTimers(), 0, 'nothing waits to start: no stuck check runs while the tunnels stay open');
});

/**
 * a and b (ours, room for 4) have both answered once; then a holds two requests and stops making
 * progress while b moves. Returns the moment a counts as stuck at the latest check.
 */
function stuckBesideMoving(options: { aOurs?: boolean; aAnswered?: boolean; bRoom?: boolean } = {}) {
  const { aOurs = true, aAnswered = true, bRoom = true } = options;
  const clock = new ManualClock();
  const dispatcher = new Dispatcher(10, 1, clock);
  const a = backend('a', 4, aOurs);
  const b = backend('b', bRoom ? 4 : 1);
  dispatcher.add(a);
  dispatcher.add(b);
  if (aAnswered) dispatcher.release(ask(dispatcher, { avoid: b }).backend!, false);
  dispatcher.release(ask(dispatcher, { avoid: a }).backend!, false);
  ask(dispatcher, { avoid: b });
  ask(dispatcher, { avoid: b });
  ask(dispatcher, { avoid: a });
  return { clock, dispatcher, a, b };
}

/** Advances by 1 ms steps for `ms`, b making progress at each. */
function advanceWhileBMoves(clock: ManualClock, dispatcher: Dispatcher, b: Backend, ms: number): void {
  for (let i = 0; i < ms; i++) {
    clock.advance(1);
    dispatcher.progress(b);
  }
}

test('take-back: a stuck unit is asked for its waiting requests, at every check while it stays stuck', () => {
  const { clock, dispatcher, a, b } = stuckBesideMoving();
  const start = clock.now();
  advanceWhileBMoves(clock, dispatcher, b, STUCK_MIN_MS);
  assert.deepEqual(a.takeBackAsked, [], `not stuck within ${STUCK_MIN_MS} ms`);
  advanceWhileBMoves(clock, dispatcher, b, STUCK_MIN_MS);
  assert.deepEqual(
    a.takeBackAsked.map((at) => at - start),
    [STUCK_MIN_MS + STUCK_MIN_MS / 2, 2 * STUCK_MIN_MS],
    `checked every ${STUCK_MIN_MS / 2} ms`,
  );
  assert.deepEqual(b.takeBackAsked, [], 'never from a unit that moves');
  dispatcher.progress(a);
  advanceWhileBMoves(clock, dispatcher, b, STUCK_MIN_MS);
  assert.equal(a.takeBackAsked.length, 2, 'progress ends it');
});

test('take-back: never from an --upstream server, nor from a unit that has answered nothing yet (slow, not stuck)', () => {
  for (const options of [{ aOurs: false }, { aAnswered: false }]) {
    const { clock, dispatcher, a, b } = stuckBesideMoving(options);
    advanceWhileBMoves(clock, dispatcher, b, 4 * STUCK_MIN_MS);
    assert.ok(a.inFlight > 0 && clock.now() - a.lastProgressAt > STUCK_MIN_MS, 'a is stuck');
    assert.deepEqual(a.takeBackAsked, [], JSON.stringify(options));
  }
});

test('take-back: not while no unit that moves has room for what would be taken back', () => {
  const { clock, dispatcher, a, b } = stuckBesideMoving({ bRoom: false });
  advanceWhileBMoves(clock, dispatcher, b, 4 * STUCK_MIN_MS);
  assert.deepEqual(a.takeBackAsked, []);
  dispatcher.release(b, false);
  advanceWhileBMoves(clock, dispatcher, b, STUCK_MIN_MS);
  assert.ok(a.takeBackAsked.length > 0, 'b has room again');
});

test('stuck threshold: quick gaps leave it at the floor; rare long ones (a burn now and then) do not move it', () => {
  const threshold = new StuckThreshold();
  for (let i = 0; i < 2000; i++) threshold.record(0.05 + (i % 10) / 100);
  assert.equal(threshold.ms, STUCK_MIN_MS);
  for (let i = 0; i < 4000; i++) threshold.record(i % 500 === 0 ? 20 : 0.1);
  assert.equal(threshold.ms, STUCK_MIN_MS, 'one gap in 500 is 20 ms: still caught at the floor');
});

test('stuck threshold: a crowded host, whose units go quiet for ms at a time, raises it; a quiet one brings it back', () => {
  const threshold = new StuckThreshold();
  // 3 gaps in 100 are a unit descheduled for 8 ms, the rest quick requests.
  for (let i = 0; i < 4000; i++) threshold.record(i % 100 < 3 ? 8 : 0.1);
  assert.ok(threshold.ms >= 16 && threshold.ms <= 2 * 8 * 1.2, `twice the longest ordinary gap: ${threshold.ms}`);
  for (let i = 0; i < 4000; i++) threshold.record(0.1);
  assert.equal(threshold.ms, STUCK_MIN_MS, 'older gaps fade');
  for (let i = 0; i < 4000; i++) threshold.record(i % 10 === 0 ? 500 : 0.1);
  assert.equal(threshold.ms, 100, 'capped: past 100 ms a unit is stuck however slow the host');
});

test('stuck threshold: the dispatcher judges by it, from the gaps between the progress it sees', () => {
  const { clock, dispatcher, a, b } = stuckBesideMoving();
  // b answers every 0.25 ms, and every 20th time only after 8 ms: the host is crowded.
  for (let i = 0; i < 2000; i++) {
    clock.advance(i % 20 === 0 ? 8 : 0.25);
    dispatcher.progress(b);
    dispatcher.progress(a);
  }
  assert.ok(dispatcher.stuck.ms >= 16, `raised: ${dispatcher.stuck.ms}`);
  const quietSince = clock.now();
  advanceWhileBMoves(clock, dispatcher, b, 12);
  assert.deepEqual(a.takeBackAsked, [], 'quiet for 12 ms on this host: not stuck');
  advanceWhileBMoves(clock, dispatcher, b, dispatcher.stuck.ms);
  assert.ok(a.takeBackAsked.length > 0 && a.takeBackAsked[0]! - quietSince > 12, 'stuck past the raised threshold');
});

test('take-back: no more checks once the dispatcher is closed', () => {
  const { clock, dispatcher, a, b } = stuckBesideMoving();
  dispatcher.close();
  advanceWhileBMoves(clock, dispatcher, b, 4 * STUCK_MIN_MS);
  assert.deepEqual(a.takeBackAsked, []);
});

test('the queue is first come, first served', () => {
  const {
    dispatcher,
    backends: [a],
  } = setup(1);
  const busy = ask(dispatcher);
  const waiting = [ask(dispatcher), ask(dispatcher), ask(dispatcher)];
  waiting[1]!.cancel();
  dispatcher.release(busy.backend!, false);
  assert.deepEqual(names(waiting), ['a', null, null]);
  dispatcher.release(a!, false);
  assert.deepEqual(names(waiting), ['a', null, 'a'], 'the one that left is skipped');
  assert.equal(waiting[1]!.refused, null);
});

test('--queue-limit: a request beyond it is refused at once', () => {
  const { dispatcher } = setup(1, 1, { queueLimit: 2 });
  const asks = [ask(dispatcher), ask(dispatcher), ask(dispatcher), ask(dispatcher)];
  assert.deepEqual(
    asks.map(({ refused }) => refused),
    [null, null, null, 'queue full'],
  );
});

test('--queue-timeout runs from when the request first asked, retries included', () => {
  const { clock, dispatcher } = setup(1, 1, { queueTimeout: 1 });
  ask(dispatcher);
  const fresh = ask(dispatcher);
  const retried = ask(dispatcher, { since: clock.now() - 600 });
  clock.advance(399);
  assert.deepEqual([fresh.refused, retried.refused], [null, null]);
  clock.advance(1);
  assert.deepEqual([fresh.refused, retried.refused], [null, 'queue timeout']);
  clock.advance(600);
  assert.equal(fresh.refused, 'queue timeout');
  assert.equal(dispatcher.load().queued, 0);
});

test('closing refuses what waits and whatever asks after', () => {
  const { dispatcher } = setup(1);
  ask(dispatcher);
  const waiting = ask(dispatcher);
  dispatcher.close();
  assert.equal(waiting.refused, 'stopping');
  assert.equal(ask(dispatcher).refused, 'stopping');
});

/** A client request as Exchange reads it: no body, from a TCP client. */
function clientRequest(method: string, url: string): http.IncomingMessage {
  const socket = Object.assign(new EventEmitter(), { remoteAddress: '127.0.0.1', remotePort: 40000, remoteFamily: 'IPv4' });
  return Object.assign(new EventEmitter(), {
    method,
    url,
    headers: { host: 'x', 'x-request-id': url },
    rawHeaders: ['Host', 'x', 'X-Request-Id', url],
    socket,
  }) as unknown as http.IncomingMessage;
}

test('take-back through an exchange: only requests a client may repeat, each once, to another unit', () => {
  const clock = new ManualClock();
  const dispatcher = new Dispatcher(10, 1, clock);
  const a = backend('a', 4);
  const b = backend('b', 4);
  /** What each unit was sent, and the handlers its pool holds. */
  const sent = new Map<Backend, { line: string; handler: HopHandler; withdrawn: boolean }[]>([
    [a, []],
    [b, []],
  ]);
  for (const unit of [a, b]) {
    unit.pool.request = (head: string, _body: Buffer | null, _expectBody: boolean, handler: HopHandler): HopRequest => {
      const record = { line: head.split('\r\n')[0]!, handler, withdrawn: false };
      sent.get(unit)!.push(record);
      const ignore = () => {};
      return {
        write: () => true,
        whenDrained: ignore,
        end: ignore,
        pause: ignore,
        resume: ignore,
        abort: ignore,
        withdraw: () => (record.withdrawn = true),
      };
    };
    // Here every unanswered request is offered back; which ones the pool offers is its own test.
    unit.pool.takeBackWaiting = () => {
      for (const record of [...sent.get(unit)!]) record.handler.takeBack?.(clock.now());
    };
  }
  dispatcher.add(a);
  dispatcher.add(b);
  const logger = { debug() {}, warning() {} } as unknown as Logger;
  const context = {
    dispatcher,
    bufferSize: 0,
    logger,
    onBackendDown() {},
    overBudget: {} as RecurringWarning,
    failures: proxyFailures(logger),
    requestIds: true,
    accessLog: null,
    logsEveryRequest: false,
  };
  const exchange = (method: string, url: string) => {
    const res = Object.assign(new EventEmitter(), { writableFinished: false, end() {} }) as unknown as http.ServerResponse;
    new Exchange(clientRequest(method, url), res, context).start();
  };
  // a answers once, then takes a GET, a POST and a DELETE while b has answered and moves.
  exchange('GET', '/first');
  sent.get(a)![0]!.handler.onEnd();
  exchange('GET', '/b');
  sent.get(b)![0]!.handler.onEnd();
  dispatcher.remove(b);
  for (const [method, url] of [
    ['GET', '/get'],
    ['POST', '/post'],
    ['DELETE', '/delete'],
  ] as const)
    exchange(method, url);
  dispatcher.add(b);
  for (let i = 0; i < 3 * STUCK_MIN_MS; i++) {
    clock.advance(1);
    dispatcher.progress(b);
  }
  const lines = (unit: Backend) =>
    sent.get(unit)!.map(({ line, withdrawn }) => `${line.replace(' HTTP/1.1', '')}${withdrawn ? ' (withdrawn)' : ''}`);
  assert.deepEqual(lines(a), ['GET /first', 'GET /get (withdrawn)', 'POST /post', 'DELETE /delete (withdrawn)']);
  assert.deepEqual(lines(b), ['GET /b', 'GET /get', 'DELETE /delete'], 'sent on to b');
  assert.deepEqual([a.inFlight, a.takenBack, b.inFlight], [1, 2, 2]);
  // Now b is stuck beside a unit that moves: what was taken back once stays.
  for (let i = 0; i < 3 * STUCK_MIN_MS; i++) {
    clock.advance(1);
    dispatcher.progress(a);
  }
  assert.deepEqual(lines(b), ['GET /b', 'GET /get', 'DELETE /delete']);
  assert.equal(b.takenBack, 0);
});
