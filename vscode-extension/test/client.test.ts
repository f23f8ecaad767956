import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RevealOutputChannelOn, TransportKind } from 'vscode-languageclient/node';
import { clientOptions, serverOptions } from '../src/client';

describe('language client options', () => {
  it('runs `<python> -m tandem` over stdio', () => {
    const s = serverOptions('/venv/bin/python', '/w') as { command: string; args: string[]; transport: unknown; options: { cwd?: string; env: NodeJS.ProcessEnv } };
    assert.equal(s.command, '/venv/bin/python');
    assert.deepEqual(s.args, ['-m', 'tandem']);
    assert.equal(s.transport, TransportKind.stdio);
    assert.equal(s.options.cwd, '/w');
    assert.equal(s.options.env.PYTHONUNBUFFERED, '1');
  });

  it('syncs section "tandem", logs to the LogOutputChannel and keeps the middleware', () => {
    const lines: string[] = [];
    const log = { error: (m: string) => lines.push(m) } as never;
    const middleware = { provideInlineCompletionItems: () => undefined };
    const o = clientOptions(log, middleware);
    assert.deepEqual(o.synchronize, { configurationSection: 'tandem' });
    assert.equal(o.outputChannel, log);
    assert.equal(o.traceOutputChannel, log);
    assert.equal(o.revealOutputChannelOn, RevealOutputChannelOn.Never);
    assert.equal(o.middleware, middleware);
    assert.deepEqual(o.documentSelector, [{ scheme: 'file' }, { scheme: 'untitled' }]);
    assert.equal(o.initializationFailedHandler?.(new Error('boom')), false, 'no retry, no extra pop-up');
    assert.match(lines[0], /boom/);
  });
});
