/**
 * The real server, spoken to over stdio the way the extension starts it
 * (`<python> -m tandem`), checking what the extension relies on: the capabilities, the
 * `workspace/configuration` pull of section "tandem", `tandem/status` payloads, an inline
 * completion converted by vscode-languageclient's own converter, and how an unknown
 * `tandem.explain` fails. Skipped unless TANDEM_PYTHON names an interpreter with tandem.
 *
 *   TANDEM_PYTHON=../.venv/bin/python npm test
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  createProtocolConnection,
  StreamMessageReader,
  StreamMessageWriter,
  type ProtocolConnection,
} from 'vscode-languageserver-protocol/node';
import { isCommandNotFound } from '../src/logic/explain';
import { parseStatus, type TandemStatus } from '../src/logic/status';

const python = process.env.TANDEM_PYTHON;
const READY_TIMEOUT_MS = Number(process.env.TANDEM_READY_TIMEOUT_MS ?? 180_000);

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { createConverter } = require('vscode-languageclient/$test/common/protocolConverter');

describe('real server over stdio', { skip: !python && 'set TANDEM_PYTHON to run', timeout: READY_TIMEOUT_MS + 60_000 }, () => {
  let proc: ChildProcess;
  let conn: ProtocolConnection;
  let init: { capabilities: Record<string, unknown> };
  const statuses: TandemStatus[] = [];
  const rawStatuses: unknown[] = [];
  const configPulls: unknown[] = [];
  const stderr: string[] = [];
  const settings: Record<string, unknown> = {
    enable: true,
    modelPath: process.env.TANDEM_MODEL_PATH ?? '',
    device: 'cpu',
    maxTokensSingleLine: 16,
    maxTokensMultiLine: 48,
    contextTokens: 1536,
    prefixShare: 0.7,
    debounceMs: 150,
    python: python,
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-it-'));

  const waitFor = async (cond: () => boolean, ms: number, what: string) => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end || proc.exitCode !== null) {
        throw new Error(`timed out waiting for ${what}; stderr tail:\n${stderr.join('').slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  before(async () => {
    proc = spawn(python!, ['-m', 'tandem'], { cwd: dir, env: { ...process.env, PYTHONUNBUFFERED: '1' }, stdio: 'pipe' });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => stderr.push(d));
    conn = createProtocolConnection(new StreamMessageReader(proc.stdout!), new StreamMessageWriter(proc.stdin!));
    conn.onRequest('workspace/configuration', (params: { items: { section?: string }[] }) => {
      configPulls.push(params);
      return params.items.map((i) => (i.section === 'tandem' ? settings : null));
    });
    conn.onRequest('window/workDoneProgress/create', () => null);
    conn.onRequest('client/registerCapability', () => null);
    conn.onNotification('tandem/status', (p: unknown) => {
      rawStatuses.push(p);
      const s = parseStatus(p);
      if (s) {
        statuses.push(s);
      }
    });
    conn.listen();
    init = await conn.sendRequest('initialize', {
      processId: process.pid,
      rootUri: null,
      workspaceFolders: null,
      capabilities: {
        workspace: { configuration: true, didChangeConfiguration: { dynamicRegistration: true }, executeCommand: { dynamicRegistration: true } },
        textDocument: { synchronization: { dynamicRegistration: true }, inlineCompletion: { dynamicRegistration: true } },
        window: { workDoneProgress: true, showMessage: {} },
      },
    });
    await conn.sendNotification('initialized', {});
  });

  after(async () => {
    try {
      await conn.sendRequest('shutdown');
      await conn.sendNotification('exit');
    } catch {
      // already gone
    }
    await new Promise((r) => setTimeout(r, 300));
    if (proc.exitCode === null) {
      proc.kill();
    }
    conn.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('advertises inline completion and lists its commands', () => {
    assert.ok(init.capabilities.inlineCompletionProvider, 'inlineCompletionProvider');
    const commands = (init.capabilities.executeCommandProvider as { commands?: string[] } | undefined)?.commands ?? [];
    const ours = ['tandem.enable', 'tandem.disable', 'tandem.toggle', 'tandem.snooze', 'tandem.restartServer', 'tandem.buildModel', 'tandem.explainSelection', 'tandem.showLog'];
    for (const c of commands) {
      assert.ok(!ours.includes(c), `server command ${c} would clash with the extension's own command`);
    }
  });

  it('pulls section "tandem" and reports well-formed tandem/status until ready or error', async () => {
    await waitFor(() => configPulls.length > 0, 10_000, 'workspace/configuration');
    await waitFor(() => statuses.some((s) => s.state === 'ready' || s.state === 'error'), READY_TIMEOUT_MS, 'ready or error');
    assert.equal(rawStatuses.length, statuses.length, `malformed status: ${JSON.stringify(rawStatuses)}`);
    const last = statuses.at(-1)!;
    if (last.state === 'error') {
      assert.ok(last.message.length > 10, 'an error says what to do');
    } else {
      assert.equal(last.device, 'cpu');
      assert.ok(last.model);
    }
  });

  it('pulls again on didChangeConfiguration (settings: null, as synchronize.configurationSection sends)', async () => {
    const before = configPulls.length;
    await conn.sendNotification('workspace/didChangeConfiguration', { settings: null });
    await waitFor(() => configPulls.length > before, 10_000, 'a second workspace/configuration');
  });

  it('answers an inline completion that vscode-languageclient converts, with latency in the status', async (t) => {
    if (statuses.at(-1)?.state !== 'ready') {
      t.skip(`server not ready: ${statuses.at(-1)?.message}`);
      return;
    }
    const uri = 'file://' + path.join(dir, 'demo.py');
    const text = process.env.TANDEM_IT_TEXT ?? 'def add(a, b):\n    ';
    await conn.sendNotification('textDocument/didOpen', { textDocument: { uri, languageId: 'python', version: 1, text } });
    const result = await conn.sendRequest('textDocument/inlineCompletion', {
      textDocument: { uri },
      position: { line: 1, character: text.split('\n')[1].length },
      context: { triggerKind: 1 },
    });
    const list = await createConverter(undefined, false, false, false).asInlineCompletionResult(result);
    const items = Array.isArray(list) ? list : list.items;
    assert.ok(items.length >= 1, JSON.stringify(result));
    assert.equal(typeof items[0].insertText, 'string');
    const raw = (result as { items: { command?: { command: string; arguments?: unknown[] } }[] }).items[0];
    if (raw.command) {
      assert.equal(raw.command.command, 'tandem.completionAccepted');
      assert.equal(typeof (raw.command.arguments?.[0] as { id?: unknown })?.id, 'string');
      assert.deepEqual(items[0].command, raw.command);
    }
    await waitFor(() => typeof statuses.at(-1)?.lastLatencyMs === 'number', 5_000, 'lastLatencyMs');
    t.diagnostic(`completion ${JSON.stringify(items[0].insertText)}; status ${JSON.stringify(statuses.at(-1))}`);
  });

  it('answers tandem.explain, or fails in a way the extension reads as "not supported yet"', async () => {
    try {
      const r = await conn.sendRequest('workspace/executeCommand', {
        command: 'tandem.explain',
        arguments: [{ uri: 'file://' + path.join(dir, 'demo.py'), range: { start: { line: 0, character: 0 }, end: { line: 1, character: 0 } } }],
      });
      assert.ok(typeof r === 'string' || (typeof r === 'object' && r !== null), JSON.stringify(r));
    } catch (err) {
      const commands = (init.capabilities.executeCommandProvider as { commands?: string[] } | undefined)?.commands ?? [];
      if (!commands.includes('tandem.explain')) {
        assert.ok(isCommandNotFound(err), `unexpected error shape: ${JSON.stringify(err)}`);
      } else {
        throw err;
      }
    }
  });
});
