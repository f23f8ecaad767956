/**
 * Checks, against the installed vscode-languageclient itself, the path an accepted inline
 * completion takes: the server's `command` survives conversion onto the VS Code item, and a
 * command the server lists in `executeCommandProvider` becomes a client-side VS Code command
 * that forwards to the server as `workspace/executeCommand` with the same arguments.
 */
import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import * as vscode from 'vscode';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { ExecuteCommandFeature } = require('vscode-languageclient/$test/common/executeCommand');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { createConverter } = require('vscode-languageclient/$test/common/protocolConverter');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { ExecuteCommandRequest } = require('vscode-languageclient/node');

const stub = (vscode as unknown as { __test: { reset(): void; state: { commands: Map<string, unknown> } } }).__test;

describe('vscode-languageclient: inline completion accept command', () => {
  beforeEach(() => stub.reset());

  it('keeps the server command and its arguments on the converted item', async () => {
    const p2c = createConverter(undefined, false, false, false);
    const list = await p2c.asInlineCompletionResult({
      items: [
        {
          insertText: 'return a + b',
          range: { start: { line: 1, character: 4 }, end: { line: 1, character: 4 } },
          command: { title: 'Accepted', command: 'tandem.completionAccepted', arguments: [{ id: 'c-42' }] },
        },
      ],
    });
    const item = list.items[0];
    assert.ok(item instanceof vscode.InlineCompletionItem);
    assert.equal(item.insertText, 'return a + b');
    assert.deepEqual(item.command, { title: 'Accepted', command: 'tandem.completionAccepted', arguments: [{ id: 'c-42' }] });
  });

  it('registers server commands client-side and forwards them as workspace/executeCommand', async () => {
    const sent: { type: unknown; params: unknown }[] = [];
    const fakeClient = {
      middleware: {},
      sendRequest: async (type: unknown, params: unknown) => {
        sent.push({ type, params });
        return null;
      },
      handleFailedRequest: (_t: unknown, _c: unknown, error: unknown) => {
        throw error;
      },
    };
    const feature = new ExecuteCommandFeature(fakeClient);
    feature.initialize({ executeCommandProvider: { commands: ['tandem.completionAccepted', 'tandem.explain'] } });
    assert.ok(stub.state.commands.has('tandem.completionAccepted'), 'registered by the language client');
    assert.ok(stub.state.commands.has('tandem.explain'));

    // What VS Code does when the user accepts the item: run its command with its arguments.
    await vscode.commands.executeCommand('tandem.completionAccepted', { id: 'c-42' });
    assert.equal(sent.length, 1);
    assert.equal(sent[0].type, ExecuteCommandRequest.type);
    assert.deepEqual(sent[0].params, { command: 'tandem.completionAccepted', arguments: [{ id: 'c-42' }] });

    feature.clear(); // on client stop: the commands go away so a restarted client can register them again
    assert.equal(stub.state.commands.has('tandem.completionAccepted'), false);
  });
});
