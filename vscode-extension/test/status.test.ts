import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  computeStatus,
  ErrorOnce,
  errorKey,
  formatLatency,
  formatRemaining,
  MessageType,
  parseServerMessage,
  parseStatus,
  type TandemStatus,
} from '../src/logic/status';

const ready: TandemStatus = { state: 'ready', message: 'Ready', model: 'qwen2.5-coder-0.5b', device: 'cpu', lastLatencyMs: 123.4 };
const base = { phase: 'running' as const, enabled: true, snoozeRemainingMs: 0 };

describe('parseStatus', () => {
  it('accepts the documented shape', () => {
    assert.deepEqual(parseStatus({ ...ready }), ready);
  });
  it('rejects unknown states and non-objects', () => {
    assert.equal(parseStatus({ state: 'busy' }), null);
    assert.equal(parseStatus(null), null);
    assert.equal(parseStatus('ready'), null);
  });
  it('normalises bad optional fields to null', () => {
    assert.deepEqual(parseStatus({ state: 'loading', device: 'tpu', lastLatencyMs: -1, model: '' }), {
      state: 'loading',
      message: '',
      model: null,
      device: null,
      lastLatencyMs: null,
    });
  });
});

describe('computeStatus', () => {
  it('shows a spinner while the server starts and while the model loads', () => {
    const starting = computeStatus({ ...base, phase: 'starting', server: null });
    assert.match(starting.text, /\$\(loading~spin\)/);
    assert.equal(starting.kind, 'busy');
    const loading = computeStatus({ ...base, server: { ...ready, state: 'loading', message: 'Loading model 40%' } });
    assert.match(loading.text, /\$\(loading~spin\) Tandem: loading/);
    assert.match(loading.tooltip, /Loading model 40%/);
  });
  it('shows device and last latency when ready', () => {
    const v = computeStatus({ ...base, server: ready });
    assert.equal(v.text, '$(sparkle) Tandem cpu 123 ms');
    assert.equal(v.kind, 'ok');
    assert.match(v.tooltip, /Model: qwen2.5-coder-0.5b/);
    assert.match(v.tooltip, /Device: cpu/);
    assert.match(v.tooltip, /Click to turn/);
  });
  it('omits latency before the first completion', () => {
    assert.equal(computeStatus({ ...base, server: { ...ready, device: 'cuda', lastLatencyMs: null } }).text, '$(sparkle) Tandem cuda');
  });
  it('shows disabled (setting off) before anything else but errors', () => {
    assert.equal(computeStatus({ ...base, enabled: false, server: ready }).kind, 'off');
    assert.equal(computeStatus({ ...base, enabled: false, server: ready }).text, '$(circle-slash) Tandem');
    assert.equal(computeStatus({ ...base, server: { ...ready, state: 'disabled' } }).kind, 'off');
  });
  it('shows snoozed with the remaining time', () => {
    const v = computeStatus({ ...base, server: ready, snoozeRemainingMs: 4 * 60_000 + 1 });
    assert.equal(v.text, '$(clock) Tandem 5m');
    assert.equal(v.kind, 'warning');
  });
  it('shows server and client errors with their message', () => {
    const v = computeStatus({ ...base, server: { ...ready, state: 'error', message: 'Run Tandem: Build Default Model' } });
    assert.equal(v.kind, 'error');
    assert.match(v.tooltip, /Build Default Model/);
    const c = computeStatus({ ...base, phase: 'failed', server: null, clientError: 'not installed' });
    assert.equal(c.kind, 'error');
    assert.match(c.tooltip, /not installed/);
    assert.equal(computeStatus({ ...base, phase: 'failed', server: null }).kind, 'error');
  });
});

describe('formatting', () => {
  it('formats latency', () => {
    assert.equal(formatLatency(87.6), '88 ms');
    assert.equal(formatLatency(1520), '1.5 s');
  });
  it('formats remaining snooze time', () => {
    assert.equal(formatRemaining(30_000), '30s');
    assert.equal(formatRemaining(60_000), '1m');
    assert.equal(formatRemaining(61_000), '2m');
    assert.equal(formatRemaining(65 * 60_000), '1h 05m');
  });
});

describe('ErrorOnce', () => {
  it('shows each error message once until the server is ready again', () => {
    const once = new ErrorOnce();
    const err = { ...ready, state: 'error' as const, message: 'Model not built' };
    assert.equal(once.next(err), 'Model not built');
    assert.equal(once.next(err), undefined);
    assert.equal(once.next({ ...err, state: 'loading' }), undefined);
    assert.equal(once.next(err), undefined);
    assert.equal(once.next({ ...err, message: 'CUDA out of memory' }), 'CUDA out of memory');
    assert.equal(once.next(ready), undefined);
    assert.equal(once.next(err), 'Model not built');
  });
  it('treats the server pop-up "Tandem: <text>" as the same error', () => {
    const once = new ErrorOnce();
    assert.equal(once.next({ ...ready, state: 'error', message: 'No model found' }), 'No model found');
    assert.equal(once.next({ ...ready, state: 'error', message: 'Tandem: No model found' }), undefined);
    assert.equal(errorKey('Tandem:   x '), 'x');
  });
});

describe('parseServerMessage', () => {
  it('reads window/showMessage params', () => {
    assert.deepEqual(parseServerMessage({ type: MessageType.Error, message: 'boom' }), { type: 1, message: 'boom' });
    assert.equal(parseServerMessage({ type: 'error', message: 'boom' }), null);
    assert.equal(parseServerMessage(null), null);
  });
});
