/**
 * activate() with the stubbed `vscode` module and the real bundle-time imports
 * (vscode-languageclient included): it registers the commands, and with an interpreter that
 * lacks tandem it reports the fix instead of starting the server.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import * as vscode from 'vscode';
import { activate, deactivate } from '../src/extension';
import { CONTRIBUTED_COMMANDS } from '../stubs/fixtures';

interface StubState {
  settings: Map<string, unknown>;
  commands: Map<string, unknown>;
  messages: { level: string; message: string; items: string[] }[];
  statusItems: { text: string; command: unknown }[];
}
const stub = (vscode as unknown as { __test: { reset(): void; state: StubState } }).__test;

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) {
      throw new Error('timed out waiting');
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('activate', () => {
  const subscriptions: { dispose(): unknown }[] = [];
  let dir = '';
  beforeEach(() => {
    stub.reset();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-ext-'));
  });
  afterEach(async () => {
    await deactivate();
    subscriptions.splice(0).forEach((d) => d.dispose());
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('registers every contributed command (and not tandem.completionAccepted)', async () => {
    stub.state.settings.set('tandem.python', path.join(dir, 'no-such-python'));
    await activate({ subscriptions, extensionPath: path.join(dir, 'vscode-extension') } as unknown as vscode.ExtensionContext);
    assert.deepEqual([...stub.state.commands.keys()].sort(), [...CONTRIBUTED_COMMANDS].sort());
    assert.equal(stub.state.statusItems[0].command, 'tandem.toggle');
  });

  it('reports a missing interpreter with the fix', async () => {
    const py = path.join(dir, 'no-such-python');
    stub.state.settings.set('tandem.python', py);
    await activate({ subscriptions, extensionPath: path.join(dir, 'vscode-extension') } as unknown as vscode.ExtensionContext);
    await until(() => stub.state.messages.some((m) => m.level === 'error'));
    const err = stub.state.messages.find((m) => m.level === 'error')!;
    assert.match(err.message, /cannot run Python/);
    assert.match(err.message, /tandem\.python/);
    assert.match(stub.state.statusItems[0].text, /\$\(error\)/);
  });

  it('names the checkout in the pip hint when tandem is not importable', { skip: process.platform === 'win32' }, async () => {
    const py = path.join(dir, 'python');
    fs.writeFileSync(py, '#!/bin/sh\necho "ModuleNotFoundError: No module named \'tandem\'" >&2\nexit 1\n', { mode: 0o755 });
    fs.writeFileSync(path.join(dir, 'pyproject.toml'), '[project]\nname = "tandem"\n');
    stub.state.settings.set('tandem.python', py);
    await activate({ subscriptions, extensionPath: path.join(dir, 'vscode-extension') } as unknown as vscode.ExtensionContext);
    await until(() => stub.state.messages.some((m) => m.level === 'error'));
    const err = stub.state.messages.find((m) => m.level === 'error')!;
    assert.ok(err.message.includes(`${py} -m pip install -e ${dir}`), err.message);
    assert.deepEqual(err.items, ['Open Settings', 'Show Log']);
  });
});
