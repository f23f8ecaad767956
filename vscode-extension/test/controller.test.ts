/**
 * The controller against the stubbed `vscode` module and a fake language client: startup
 * checks, status handling, settings -> restart, enable/snooze, build and explain.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import * as vscode from 'vscode';
import { TandemController, type BuildRun, type ControllerDeps, type TandemClient } from '../src/controller';
import { ExplainView } from '../src/explainView';
import type { ImportCheckResult } from '../src/logic/interpreter';
import { TandemStatusBar } from '../src/statusBar';

interface StubState {
  settings: Map<string, unknown>;
  workspaceSettings: Map<string, unknown>;
  updates: { key: string; value: unknown; target: unknown }[];
  messages: { level: string; message: string; items: string[] }[];
  inputAnswers: (string | undefined)[];
  executed: { command: string; args: unknown[] }[];
  statusItems: { text: string; tooltip: unknown; command: unknown; backgroundColor?: { id: string } }[];
  progressReports: { title?: string; message?: string }[];
  activeTextEditor: unknown;
}
const stub = (vscode as unknown as { __test: { reset(): void; state: StubState; setSettings(v: Record<string, unknown>): void } }).__test;

class FakeClient implements TandemClient {
  started = 0;
  stopped = 0;
  handlers = new Map<string, (p: unknown) => void>();
  stateListeners: ((running: boolean) => void)[] = [];
  commandResult: () => Promise<unknown> = async () => '# Explanation';
  commands: { command: string; args: unknown[] }[] = [];
  constructor(
    public python: string,
    public middleware: unknown,
  ) {}
  async start() {
    this.started += 1;
  }
  async stop() {
    this.stopped += 1;
  }
  onNotification(method: string, handler: (p: unknown) => void) {
    this.handlers.set(method, handler);
    return new vscode.Disposable(() => this.handlers.delete(method));
  }
  async executeCommand(command: string, args: unknown[]) {
    this.commands.push({ command, args });
    return this.commandResult();
  }
  onStateChange(listener: (running: boolean) => void) {
    this.stateListeners.push(listener);
    return new vscode.Disposable(() => undefined);
  }
  status(p: Record<string, unknown>) {
    this.handlers.get('tandem/status')?.({ message: '', model: null, device: null, lastLatencyMs: null, ...p });
  }
}

function fakeLog() {
  const lines: string[] = [];
  const add = (l: string) => (m: string) => lines.push(`[${l}] ${m}`);
  return { lines, info: add('info'), warn: add('warn'), error: add('error'), show: () => undefined } as unknown as vscode.LogOutputChannel & {
    lines: string[];
  };
}

function setup(opts: { importOk?: boolean | ((py: string) => boolean); extPython?: string | (() => string); build?: BuildRun } = {}) {
  const clients: FakeClient[] = [];
  const checks: string[] = [];
  const builds: string[] = [];
  const log = fakeLog();
  const statusBar = new TandemStatusBar();
  const explainView = new ExplainView();
  const deps: ControllerDeps = {
    log,
    statusBar,
    explainView,
    createClient: (python, middleware) => {
      const c = new FakeClient(python, middleware);
      clients.push(c);
      return c;
    },
    checkImport: async (python): Promise<ImportCheckResult & { location?: string }> => {
      checks.push(python);
      const ok = typeof opts.importOk === 'function' ? opts.importOk(python) : (opts.importOk ?? true);
      return ok
        ? { ok: true, exitCode: 0, location: '/site/tandem/__init__.py' }
        : { ok: false, exitCode: 1, stderr: "ModuleNotFoundError: No module named 'tandem'" };
    },
    pythonFromExtension: async () => (typeof opts.extPython === 'function' ? opts.extPython() : opts.extPython),
    runBuild: async (python, _token, report) => {
      builds.push(python.command);
      report('[tandem-models] fetch ...');
      return opts.build ?? { ok: true, cancelled: false };
    },
    checkout: '/src/tandem',
  };
  const ctl = new TandemController(deps);
  const item = () => stub.state.statusItems[0];
  return { ctl, clients, checks, builds, log, item };
}

describe('TandemController', () => {
  let ctl: TandemController | undefined;
  beforeEach(() => stub.reset());
  afterEach(async () => {
    await ctl?.shutdown();
    ctl?.dispose();
    ctl = undefined;
  });

  it('starts `<tandem.python> -m tandem` after the import check and shows the status bar', async () => {
    stub.state.settings.set('tandem.python', '/opt/venv/bin/python');
    const t = setup({ extPython: '/ignored/python' });
    ctl = t.ctl;
    assert.equal(t.item().command, 'tandem.toggle');
    await ctl.start();
    assert.deepEqual(t.checks, ['/opt/venv/bin/python']);
    assert.equal(t.clients.length, 1);
    assert.equal(t.clients[0].python, '/opt/venv/bin/python');
    assert.equal(t.clients[0].started, 1);
    assert.match(t.item().text, /loading~spin/, 'spinner until the server reports');
  });

  it("uses the Python extension's interpreter, else python3", async () => {
    let t = setup({ extPython: '/venv/bin/python' });
    ctl = t.ctl;
    await ctl.start();
    assert.equal(t.clients[0].python, '/venv/bin/python');
    await ctl.shutdown();
    stub.reset();
    t = setup({});
    ctl = t.ctl;
    await ctl.start();
    assert.equal(t.clients[0].python, 'python3');
  });

  it("restarts when the Python extension's interpreter really changes", async () => {
    let ext = '/venv/a/bin/python';
    const t = setup({ extPython: () => ext });
    ctl = t.ctl;
    await ctl.start();
    assert.equal(t.clients[0].python, '/venv/a/bin/python');
    await ctl.onPythonEnvironmentChanged(); // same interpreter: nothing to do
    assert.equal(t.clients.length, 1);
    ext = '/venv/b/bin/python';
    await ctl.onPythonEnvironmentChanged();
    assert.equal(t.clients.length, 2);
    assert.equal(t.clients[1].python, '/venv/b/bin/python');
    stub.state.settings.set('tandem.python', '/pinned/python'); // an explicit setting wins
    ext = '/venv/c/bin/python';
    await ctl.onPythonEnvironmentChanged();
    assert.equal(t.clients.length, 2);
  });

  it('does not start and shows the fix when tandem is not importable', async () => {
    const t = setup({ importOk: false });
    ctl = t.ctl;
    await ctl.start();
    assert.equal(t.clients.length, 0);
    const errors = stub.state.messages.filter((m) => m.level === 'error');
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /python3 -m pip install -e \/src\/tandem/);
    assert.match(errors[0].message, /tandem\.python/);
    assert.deepEqual(errors[0].items, ['Open Settings', 'Show Log']);
    assert.equal(t.item().backgroundColor?.id, 'statusBarItem.errorBackground');
    // A second failed start with the same problem does not pop up again.
    await ctl.restart();
    assert.equal(stub.state.messages.filter((m) => m.level === 'error').length, 1);
  });

  it('renders tandem/status and shows an error message once', async () => {
    const t = setup();
    ctl = t.ctl;
    await ctl.start();
    const c = t.clients[0];
    c.status({ state: 'loading', message: 'Loading model' });
    assert.match(t.item().text, /\$\(loading~spin\) Tandem: loading/);
    c.status({ state: 'ready', message: 'Ready', model: 'qwen', device: 'cpu', lastLatencyMs: 212 });
    assert.equal(t.item().text, '$(sparkle) Tandem cpu 212 ms');
    const err = { state: 'error', message: 'No model at ~/.cache/tandem: run "Tandem: Build Default Model".' };
    c.status(err);
    c.status(err);
    c.status(err);
    const errors = stub.state.messages.filter((m) => m.level === 'error');
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /Build Default Model/);
    // The server's own pop-up for the same problem is not shown a second time...
    c.handlers.get('window/showMessage')?.({ type: 1, message: `Tandem: ${err.message}` });
    assert.equal(stub.state.messages.filter((m) => m.level === 'error').length, 1);
    // ...but its other messages are.
    c.handlers.get('window/showMessage')?.({ type: 2, message: 'Tandem: setting tandem.device = "tpu" is invalid' });
    c.handlers.get('window/showMessage')?.({ type: 1, message: 'Tandem: something else broke' });
    assert.deepEqual(
      stub.state.messages.slice(-2).map((m) => m.level),
      ['warning', 'error'],
    );
    c.status({ state: 'bogus' });
    assert.ok(t.log.lines.some((l) => l.includes('Ignoring malformed')));
  });

  it('restarts for python/modelPath/device changes only', async () => {
    const t = setup();
    ctl = t.ctl;
    await ctl.start();
    stub.setSettings({ 'tandem.debounceMs': 300, 'tandem.maxTokensSingleLine': 16, 'tandem.enable': true });
    await ctl.whenIdle();
    assert.equal(t.clients.length, 1);
    for (const [i, change] of [{ 'tandem.modelPath': '/models/other' }, { 'tandem.device': 'cpu' }, { 'tandem.python': '/py' }].entries()) {
      stub.setSettings(change);
      await ctl.whenIdle();
      assert.equal(t.clients.length, i + 2, JSON.stringify(change));
      assert.equal(t.clients[i].stopped, 1);
      assert.equal(t.clients[i + 1].started, 1);
    }
    assert.equal(t.clients.at(-1)?.python, '/py');
  });

  it('toggles tandem.enable where it is set and gates completions', async () => {
    const t = setup();
    ctl = t.ctl;
    await ctl.start();
    t.clients[0].status({ state: 'ready', device: 'cpu' });
    await ctl.toggle();
    assert.deepEqual(stub.state.updates.at(-1), { key: 'tandem.enable', value: false, target: vscode.ConfigurationTarget.Global });
    assert.equal(t.item().text, '$(circle-slash) Tandem');
    let asked = 0;
    const next = (async () => {
      asked += 1;
      return [];
    }) as never;
    const token = new vscode.CancellationTokenSource().token;
    assert.equal(await ctl.middleware.provideInlineCompletionItems({} as never, {} as never, { triggerKind: 0 } as never, token as never, next), undefined);
    assert.equal(asked, 0);
    // A workspace override is written at workspace level, or the change would do nothing.
    stub.state.workspaceSettings.set('tandem.enable', false);
    await ctl.toggle();
    assert.deepEqual(stub.state.updates.at(-1), { key: 'tandem.enable', value: true, target: vscode.ConfigurationTarget.Workspace });
    await ctl.middleware.provideInlineCompletionItems({} as never, {} as never, { triggerKind: 0 } as never, token as never, next);
    assert.equal(asked, 1);
  });

  it('snoozes for the minutes entered, and a click wakes it', async () => {
    const t = setup();
    ctl = t.ctl;
    await ctl.start();
    t.clients[0].status({ state: 'ready', device: 'cpu' });
    stub.state.inputAnswers.push('10');
    await ctl.snoozeCommand();
    assert.equal(ctl.isSnoozed, true);
    assert.equal(t.item().text, '$(clock) Tandem 10m');
    let asked = 0;
    const next = (async () => {
      asked += 1;
      return [];
    }) as never;
    const token = new vscode.CancellationTokenSource().token;
    assert.equal(await ctl.middleware.provideInlineCompletionItems({} as never, {} as never, { triggerKind: 0 } as never, token as never, next), undefined);
    assert.equal(asked, 0);
    await ctl.toggle(); // wakes up, does not disable
    assert.equal(ctl.isSnoozed, false);
    assert.equal(stub.state.updates.length, 0);
    // Cancelled input box: nothing changes.
    stub.state.inputAnswers.push(undefined);
    await ctl.snoozeCommand();
    assert.equal(ctl.isSnoozed, false);
    // A numeric argument (keybinding) skips the prompt.
    await ctl.snoozeCommand(1);
    assert.equal(ctl.isSnoozed, true);
  });

  it('builds the model with progress, then restarts the server', async () => {
    const t = setup();
    ctl = t.ctl;
    await ctl.start();
    await ctl.buildModel();
    assert.deepEqual(t.builds, ['python3']);
    assert.deepEqual(stub.state.progressReports, [{ title: 'Tandem: building the model', message: '[tandem-models] fetch ...' }]);
    assert.ok(t.log.lines.some((l) => l.includes('[build] [tandem-models] fetch ...')));
    assert.equal(t.clients.length, 2, 'restarted');
    assert.equal(t.clients[0].stopped, 1);
  });

  it('reports a failed build without restarting', async () => {
    const t = setup({ build: { ok: false, cancelled: false, message: 'exit code 1 (PipelineError: sha256 mismatch)' } });
    ctl = t.ctl;
    await ctl.start();
    await ctl.buildModel();
    assert.equal(t.clients.length, 1);
    const err = stub.state.messages.find((m) => m.level === 'error');
    assert.match(err?.message ?? '', /sha256 mismatch/);
  });

  describe('explainSelection', () => {
    const editor = () => {
      const sel = new vscode.Selection(new vscode.Position(2, 0), new vscode.Position(4, 5));
      return {
        selection: sel,
        document: {
          uri: vscode.Uri.file('/w/app.py'),
          lineAt: (line: number) => ({ range: new vscode.Range(new vscode.Position(line, 0), new vscode.Position(line, 10)) }),
        },
      };
    };

    it('sends tandem.explain with {uri, range} and previews the markdown', async () => {
      const t = setup();
      ctl = t.ctl;
      await ctl.start();
      stub.state.activeTextEditor = editor();
      await ctl.explainSelection();
      assert.deepEqual(t.clients[0].commands, [
        {
          command: 'tandem.explain',
          args: [{ uri: 'file:///w/app.py', range: { start: { line: 2, character: 0 }, end: { line: 4, character: 5 } } }],
        },
      ]);
      const preview = stub.state.executed.find((e) => e.command === 'markdown.showPreviewToSide');
      assert.ok(preview, 'opened the markdown preview');
      const uri = preview.args[0] as vscode.Uri;
      assert.equal(uri.scheme, 'tandem-explain');
    });

    it('says so gracefully when the server has no tandem.explain yet', async () => {
      const t = setup();
      ctl = t.ctl;
      await ctl.start();
      t.clients[0].commandResult = async () => {
        throw Object.assign(new Error("Command name 'tandem.explain' is not defined"), { code: -32602 });
      };
      stub.state.activeTextEditor = editor();
      await ctl.explainSelection();
      const info = stub.state.messages.filter((m) => m.level === 'info');
      assert.equal(info.length, 1);
      assert.match(info[0].message, /cannot explain code yet/);
      assert.equal(stub.state.messages.filter((m) => m.level === 'error').length, 0);
    });

    it('shows other failures as errors, and needs an editor and a running server', async () => {
      const t = setup();
      ctl = t.ctl;
      await ctl.explainSelection();
      assert.match(stub.state.messages.at(-1)?.message ?? '', /open a file/);
      stub.state.activeTextEditor = editor();
      await ctl.explainSelection();
      assert.match(stub.state.messages.at(-1)?.message ?? '', /not running/);
      await ctl.start();
      t.clients[0].commandResult = async () => {
        throw Object.assign(new Error('model crashed'), { code: -32603 });
      };
      await ctl.explainSelection();
      assert.equal(stub.state.messages.at(-1)?.level, 'error');
    });
  });

  describe('learning', () => {
    it('sends tandem.learn with the workspace folder and shows the decision', async () => {
      const t = setup();
      ctl = t.ctl;
      await ctl.start();
      const ws = vscode.workspace as unknown as { workspaceFolders: unknown };
      ws.workspaceFolders = [{ uri: vscode.Uri.file('/w/proj'), name: 'proj', index: 0 }];
      try {
        t.clients[0].commandResult = async () => ({ ok: true, promoted: true, decision: 'promoted: held-out exact match 10% -> 20% (+10.0 points)' });
        await ctl.learnWorkspace();
      } finally {
        ws.workspaceFolders = undefined;
      }
      assert.deepEqual(t.clients[0].commands, [{ command: 'tandem.learn', args: [{ workspace: '/w/proj' }] }]);
      assert.match(stub.state.messages.at(-1)?.message ?? '', /promoted: held-out exact match 10% -> 20%/);
    });

    it('needs a folder and a running server', async () => {
      const t = setup();
      ctl = t.ctl;
      await ctl.learnWorkspace();
      assert.match(stub.state.messages.at(-1)?.message ?? '', /not running/);
      await ctl.start();
      await ctl.learnWorkspace();
      assert.match(stub.state.messages.at(-1)?.message ?? '', /open a folder/);
      assert.deepEqual(t.clients[0].commands, []);
    });

    it('switches to a picked version and rolls back', async () => {
      const t = setup();
      ctl = t.ctl;
      await ctl.start();
      const list = { ok: true, versions: [
        { id: 'v2', label: 'tuned on proj at 2026-11-30 01:00 UTC, +5.0 points', active: false, servable: true },
        { id: 'v1', label: 'tuned on proj', active: false, servable: false },
      ] };
      t.clients[0].commandResult = async () => list;
      await ctl.pickModelVersion();
      assert.deepEqual(t.clients[0].commands.map((c) => [c.command, c.args]), [
        ['tandem.listModelVersions', []], ['tandem.switchModelVersion', ['v2']]]);
      t.clients[0].commandResult = async () => ({ ok: true, version: { id: 'base', label: 'base' } });
      await ctl.rollbackModel();
      assert.equal(t.clients[0].commands.at(-1)?.command, 'tandem.rollbackModelVersion');
      assert.match(stub.state.messages.at(-1)?.message ?? '', /now serving base/);
    });
  });

  it('marks an unexpected server stop as failed, and recovery as running', async () => {
    const t = setup();
    ctl = t.ctl;
    await ctl.start();
    t.clients[0].stateListeners.forEach((l) => l(false));
    assert.equal(ctl.state.phase, 'failed');
    assert.equal(t.item().backgroundColor?.id, 'statusBarItem.errorBackground');
    t.clients[0].stateListeners.forEach((l) => l(true));
    assert.equal(ctl.state.phase, 'running');
  });
});
