import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSnoozeMinutes, Snooze, validateSnoozeMinutes } from '../src/logic/snooze';

describe('snooze input', () => {
  it('accepts positive minutes up to a day', () => {
    assert.equal(validateSnoozeMinutes('15'), undefined);
    assert.equal(validateSnoozeMinutes(' 0.5 '), undefined);
    assert.equal(parseSnoozeMinutes('30'), 30);
  });
  it('rejects empty, non-numbers, zero, negatives and more than a day', () => {
    for (const bad of ['', 'abc', '0', '-5', '1441', 'Infinity']) {
      assert.notEqual(validateSnoozeMinutes(bad), undefined, bad);
      assert.equal(parseSnoozeMinutes(bad), undefined, bad);
    }
  });
});

describe('Snooze', () => {
  it('counts down on the injected clock and ends by itself', () => {
    let now = 1_000_000;
    const s = new Snooze(() => now);
    assert.equal(s.isSnoozed(), false);
    s.start(5);
    assert.equal(s.isSnoozed(), true);
    assert.equal(s.remainingMs(), 5 * 60_000);
    now += 4 * 60_000;
    assert.equal(s.remainingMs(), 60_000);
    now += 60_000;
    assert.equal(s.isSnoozed(), false);
    assert.equal(s.remainingMs(), 0);
  });
  it('can be cancelled and restarted', () => {
    let now = 0;
    const s = new Snooze(() => now);
    s.start(10);
    s.cancel();
    assert.equal(s.isSnoozed(), false);
    s.start(1);
    now = 30_000;
    assert.equal(s.remainingMs(), 30_000);
  });
});
