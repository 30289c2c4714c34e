// Warnings for conditions that recur (refusals at the open-file limit): at most one line per interval,
// and every occurrence told within one interval, under a manual clock.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecurringWarning } from '../src/log/recurring.ts';
import { ManualClock } from './helpers/manual-clock.ts';

function setUp() {
  const clock = new ManualClock();
  const lines: string[] = [];
  const warning = new RecurringWarning<string>(
    { warning: (line) => lines.push(line) },
    (times, latest) => `refused ${times}, latest ${latest}`,
    10_000,
    clock,
  );
  return { clock, lines, warning };
}

test('the first occurrence is logged at once', () => {
  const { lines, warning } = setUp();
  warning.note('a');
  assert.deepEqual(lines, ['refused 1, latest a']);
});

test('a burst after it is logged when the interval ends, though nothing follows it', () => {
  const { clock, lines, warning } = setUp();
  warning.note('first');
  for (let index = 1; index <= 8062; index++) warning.note(`burst ${index}`);
  clock.advance(9_999);
  assert.deepEqual(lines, ['refused 1, latest first']);
  clock.advance(1);
  assert.deepEqual(lines, ['refused 1, latest first', 'refused 8062, latest burst 8062']);
  clock.advance(60_000);
  assert.equal(lines.length, 2, 'nothing left to tell');
});

test('at most one line per interval, counting every occurrence', () => {
  const { clock, lines, warning } = setUp();
  for (let ms = 0; ms < 35_000; ms += 100) {
    warning.note(`at ${ms}`);
    clock.advance(100);
  }
  clock.advance(10_000);
  // At 0 ms, then the notes of 100..9900 ms at 10 s, and so on; the last 50 once the run has ended.
  assert.deepEqual(
    lines.map((line) => Number(/refused (\d+)/.exec(line)![1])),
    [1, 99, 100, 100, 50],
  );
});

test('after a quiet interval, the next occurrence is logged at once again', () => {
  const { clock, lines, warning } = setUp();
  warning.note('a');
  warning.note('b');
  clock.advance(10_000);
  clock.advance(15_000);
  warning.note('c');
  assert.deepEqual(lines, ['refused 1, latest a', 'refused 1, latest b', 'refused 1, latest c']);
});
