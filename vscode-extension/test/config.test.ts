import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { enableTarget, SerialQueue } from '../src/logic/config';

describe('enableTarget', () => {
  it('writes where the value already is, else Global', () => {
    assert.equal(enableTarget(undefined), 1);
    assert.equal(enableTarget({ globalValue: false }), 1);
    assert.equal(enableTarget({ globalValue: true, workspaceValue: false }), 2);
    assert.equal(enableTarget({ workspaceValue: false, workspaceFolderValue: true }), 3);
  });
});

describe('SerialQueue', () => {
  it('runs jobs one at a time in order, and a failure does not block the next', async () => {
    const q = new SerialQueue();
    const log: string[] = [];
    const job = (name: string, ms: number, fail = false) => async () => {
      log.push(`${name}+`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${name}-`);
      if (fail) {
        throw new Error(name);
      }
      return name;
    };
    const a = q.run(job('a', 30));
    const b = q.run(job('b', 5, true));
    const c = q.run(job('c', 1));
    assert.equal(await a, 'a');
    await assert.rejects(b, /b/);
    assert.equal(await c, 'c');
    assert.deepEqual(log, ['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
  });
});
