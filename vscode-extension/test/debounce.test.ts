import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { completionGate, debounceFor, delay, type CancelToken } from '../src/logic/debounce';
import { inlineCompletionMiddleware } from '../src/middleware';

class Token implements CancelToken {
  isCancellationRequested = false;
  private listeners: (() => unknown)[] = [];
  onCancellationRequested(l: () => unknown) {
    this.listeners.push(l);
    return { dispose: () => (this.listeners = this.listeners.filter((x) => x !== l)) };
  }
  cancel(): void {
    this.isCancellationRequested = true;
    this.listeners.forEach((l) => l());
  }
  get listenerCount(): number {
    return this.listeners.length;
  }
}

describe('delay', () => {
  it('resolves true after the wait', async () => {
    const t = new Token();
    const start = Date.now();
    assert.equal(await delay(40, t), true);
    assert.ok(Date.now() - start >= 35);
    assert.equal(t.listenerCount, 0, 'cancel listener removed');
  });
  it('resolves false at once when cancelled during the wait', async () => {
    const t = new Token();
    const start = Date.now();
    const p = delay(5_000, t);
    setTimeout(() => t.cancel(), 10);
    assert.equal(await p, false);
    assert.ok(Date.now() - start < 1_000);
  });
  it('resolves false for an already-cancelled token and true for 0 ms', async () => {
    const t = new Token();
    t.cancel();
    assert.equal(await delay(100, t), false);
    assert.equal(await delay(0, new Token()), true);
  });
});

describe('debounceFor / completionGate', () => {
  it('uses the setting for automatic triggers, 0 for a manual trigger, clamps junk', () => {
    assert.equal(debounceFor(150, 1), 150);
    assert.equal(debounceFor(150, 0), 0);
    assert.equal(debounceFor(-3, 1), 0);
    assert.equal(debounceFor(99_999, 1), 5000);
    assert.equal(debounceFor('x', 1), 150);
  });
  it('gates on enable then snooze', () => {
    assert.equal(completionGate(true, false), 'allow');
    assert.equal(completionGate(false, false), 'disabled');
    assert.equal(completionGate(false, true), 'disabled');
    assert.equal(completionGate(true, true), 'snoozed');
  });
});

describe('inlineCompletionMiddleware', () => {
  const doc = {} as never;
  const pos = {} as never;
  const automatic = { triggerKind: 1 } as never;
  const manual = { triggerKind: 0 } as never;

  function setup(over: Partial<{ enabled: boolean; snoozed: boolean; debounceMs: number }> = {}) {
    const s = { enabled: true, snoozed: false, debounceMs: 30, ...over };
    const calls: unknown[][] = [];
    const next = ((...args: unknown[]) => {
      calls.push(args);
      return Promise.resolve(['item']);
    }) as never;
    const mw = inlineCompletionMiddleware({ enabled: () => s.enabled, snoozed: () => s.snoozed, debounceMs: () => s.debounceMs });
    return { s, calls, next, mw };
  }

  it('asks the server after the debounce', async () => {
    const { calls, next, mw } = setup();
    const t = new Token();
    const start = Date.now();
    const result = await mw(doc, pos, automatic, t as never, next);
    assert.deepEqual(result, ['item']);
    assert.equal(calls.length, 1);
    assert.equal(calls[0][3], t, 'the same cancellation token reaches the request');
    assert.ok(Date.now() - start >= 25);
  });
  it('does not ask when cancelled during the debounce (typing on)', async () => {
    const { calls, next, mw } = setup({ debounceMs: 1000 });
    const t = new Token();
    const p = mw(doc, pos, automatic, t as never, next);
    setTimeout(() => t.cancel(), 5);
    assert.equal(await p, undefined);
    assert.equal(calls.length, 0);
  });
  it('returns nothing while disabled or snoozed, without asking', async () => {
    for (const over of [{ enabled: false }, { snoozed: true }]) {
      const { calls, next, mw } = setup(over);
      assert.equal(await mw(doc, pos, automatic, new Token() as never, next), undefined);
      assert.equal(calls.length, 0);
    }
  });
  it('re-checks the gate after the wait', async () => {
    const { s, calls, next, mw } = setup({ debounceMs: 30 });
    const p = mw(doc, pos, automatic, new Token() as never, next);
    s.snoozed = true;
    assert.equal(await p, undefined);
    assert.equal(calls.length, 0);
  });
  it('does not delay a manual trigger', async () => {
    const { calls, next, mw } = setup({ debounceMs: 5000 });
    const start = Date.now();
    await mw(doc, pos, manual, new Token() as never, next);
    assert.equal(calls.length, 1);
    assert.ok(Date.now() - start < 1000);
  });
});
