import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { explanationText, isCommandNotFound } from '../src/logic/explain';

describe('isCommandNotFound', () => {
  it("recognises pygls 2's answer for an unknown command", () => {
    assert.equal(isCommandNotFound({ code: -32602, message: "Command name 'tandem.explain' is not defined" }), true);
  });
  it('recognises MethodNotFound and other wordings', () => {
    assert.equal(isCommandNotFound({ code: -32601, message: 'Method not found' }), true);
    assert.equal(isCommandNotFound({ code: -32603, message: 'Unknown command tandem.explain' }), true);
  });
  it('does not hide real failures', () => {
    assert.equal(isCommandNotFound({ code: -32603, message: 'CUDA out of memory' }), false);
    assert.equal(isCommandNotFound({ code: -32602, message: 'range is required' }), false);
    assert.equal(isCommandNotFound(undefined), false);
  });
});

describe('explanationText', () => {
  it('accepts a markdown string and common wrappers', () => {
    assert.equal(explanationText('# Hi'), '# Hi');
    assert.equal(explanationText({ markdown: 'a' }), 'a');
    assert.equal(explanationText({ kind: 'markdown', value: 'b' }), 'b');
  });
  it('returns undefined for empty or odd results', () => {
    for (const r of [null, undefined, '', '   ', 42, {}, { value: 3 }]) {
      assert.equal(explanationText(r), undefined);
    }
  });
});
