/**
 * The extension's behaviour: server lifecycle, status, settings, commands. Talks to VS Code
 * through `vscode` and to the server through a `TandemClient`, which tests replace.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { enableTarget, SerialQueue } from './logic/config';
import { explanationText, isCommandNotFound, EXPLAIN_COMMAND } from './logic/explain';
import { importErrorMessage, needsRestart, resolvePython, type ImportCheckResult, type ResolvedPython } from './logic/interpreter';
import { parseSnoozeMinutes, Snooze, validateSnoozeMinutes } from './logic/snooze';
import { ErrorOnce, MessageType, parseServerMessage, parseStatus, type ClientPhase, type TandemStatus } from './logic/status';
import { inlineCompletionMiddleware, type GateState, type ProvideInlineCompletionItems } from './middleware';
import type { ExplainView } from './explainView';
import type { TandemStatusBar } from './statusBar';

export const STATUS_NOTIFICATION = 'tandem/status';
export const SHOW_MESSAGE = 'window/showMessage';
const START_TIMEOUT_MS = 60_000;

/** The part of a `LanguageClient` the controller uses. */
export interface TandemClient {
  start(): Promise<void>;
  stop(timeoutMs?: number): Promise<void>;
  onNotification(method: string, handler: (params: unknown) => void): vscode.Disposable;
  executeCommand(command: string, args: unknown[]): Promise<unknown>;
  /**
   * `true` when the client reaches Running (also after its own restart following a crash),
   * `false` when the server stops without the controller asking.
   */
  onStateChange(listener: (running: boolean) => void): vscode.Disposable;
}

export interface BuildRun {
  ok: boolean;
  cancelled: boolean;
  message?: string;
}

export interface ControllerDeps {
  log: vscode.LogOutputChannel;
  statusBar: TandemStatusBar;
  explainView: ExplainView;
  createClient(python: string, middleware: { provideInlineCompletionItems: ProvideInlineCompletionItems }): TandemClient;
  checkImport(python: string): Promise<ImportCheckResult & { location?: string }>;
  /** The Python extension's active interpreter, if that extension is installed. */
  pythonFromExtension(): Promise<string | undefined>;
  runBuild(python: ResolvedPython, token: vscode.CancellationToken, report: (line: string) => void): Promise<BuildRun>;
  /** A tandem checkout to name in the "pip install -e" hint, when one is known. */
  checkout?: string;
  now?: () => number;
}

export class TandemController implements vscode.Disposable {
  private client: TandemClient | undefined;
  private clientSubs: vscode.Disposable[] = [];
  private phase: ClientPhase = 'stopped';
  private server: TandemStatus | null = null;
  private clientError: string | undefined;
  private python: ResolvedPython | undefined;
  private readonly queue = new SerialQueue();
  private readonly errors = new ErrorOnce();
  private readonly snooze: Snooze;
  private snoozeTimer: ReturnType<typeof setInterval> | undefined;
  private readonly subs: vscode.Disposable[] = [];
  private disposed = false;
  readonly middleware: { provideInlineCompletionItems: ProvideInlineCompletionItems };

  constructor(private readonly deps: ControllerDeps) {
    this.snooze = new Snooze(deps.now ?? Date.now);
    const gate: GateState = {
      enabled: () => this.enabled(),
      snoozed: () => this.snooze.isSnoozed(),
      debounceMs: () => config().get<number>('debounceMs', 150),
    };
    this.middleware = { provideInlineCompletionItems: inlineCompletionMiddleware(gate) };
    this.subs.push(vscode.workspace.onDidChangeConfiguration((e) => this.onConfigurationChanged(e)));
  }

  // ---- lifecycle ------------------------------------------------------------------------

  start(): Promise<void> {
    return this.queue.run(() => this.doStart());
  }

  stop(): Promise<void> {
    return this.queue.run(() => this.doStop());
  }

  restart(): Promise<void> {
    return this.queue.run(async () => {
      await this.doStop();
      await this.doStart();
    });
  }

  /** Resolves once every queued start/stop/restart has finished. */
  whenIdle(): Promise<void> {
    return this.queue.run(async () => undefined);
  }

  /** The state the status bar shows; exposed for tests. */
  get state(): { phase: ClientPhase; server: TandemStatus | null; clientError?: string; python?: ResolvedPython } {
    return { phase: this.phase, server: this.server, clientError: this.clientError, python: this.python };
  }

  get isSnoozed(): boolean {
    return this.snooze.isSnoozed();
  }

  private async doStart(): Promise<void> {
    if (this.disposed) {
      return;
    }
    this.phase = 'starting';
    this.server = null;
    this.clientError = undefined;
    this.render();

    const setting = config().get<string>('python', '');
    const fromExt = setting.trim() ? undefined : await this.deps.pythonFromExtension().catch(() => undefined);
    const python = resolvePython({ setting, fromPythonExtension: fromExt, workspaceFolder: workspaceFolder() });
    this.python = python;
    this.deps.log.info(`Python: ${python.command} (${python.source})`);

    const check = await this.deps.checkImport(python.command);
    if (!check.ok) {
      const message = importErrorMessage(python, check, this.deps.checkout);
      this.deps.log.error(message);
      if (check.stderr) {
        this.deps.log.error(check.stderr.trim());
      }
      this.clientError = message;
      this.phase = 'failed';
      this.render();
      this.showErrorOnce(message, true);
      return;
    }
    this.deps.log.info(`tandem found at ${check.location ?? '(unknown location)'}`);

    const client = this.deps.createClient(python.command, this.middleware);
    this.client = client;
    this.clientSubs = [
      client.onNotification(STATUS_NOTIFICATION, (params) => this.onStatus(params)),
      // Replaces the language client's own window/showMessage handler (handlers registered
      // before start() are installed after the built-in ones), to de-duplicate errors.
      client.onNotification(SHOW_MESSAGE, (params) => this.onServerMessage(params)),
      client.onStateChange((running) => {
        if (this.client === client) {
          this.phase = running ? 'running' : 'failed';
          this.render();
        }
      }),
    ];
    try {
      await withTimeout(client.start(), START_TIMEOUT_MS, 'no answer to "initialize" within 60 s');
      this.phase = 'running';
    } catch (err) {
      const message = `Tandem: the language server did not start: ${errorMessage(err)}`;
      this.deps.log.error(message);
      this.phase = 'failed';
      this.showErrorOnce(message, false);
    }
    this.render();
  }

  private async doStop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.clientSubs.forEach((d) => d.dispose());
    this.clientSubs = [];
    if (client) {
      try {
        await client.stop(5000);
      } catch (err) {
        this.deps.log.warn(`Stopping the server: ${errorMessage(err)}`);
      }
    }
    this.phase = 'stopped';
    this.server = null;
    this.render();
  }

  // ---- server status --------------------------------------------------------------------

  private onStatus(params: unknown): void {
    const status = parseStatus(params);
    if (!status) {
      this.deps.log.warn(`Ignoring malformed ${STATUS_NOTIFICATION}: ${JSON.stringify(params)}`);
      return;
    }
    this.server = status;
    const message = this.errors.next(status);
    if (message !== undefined) {
      this.deps.log.error(message);
      void vscode.window.showErrorMessage(message, 'Show Log').then((pick) => {
        if (pick === 'Show Log') {
          this.deps.log.show(true);
        }
      });
    }
    this.render();
  }

  private onServerMessage(params: unknown): void {
    const msg = parseServerMessage(params);
    if (!msg) {
      return;
    }
    if (msg.type === MessageType.Error) {
      const shown = this.errors.next({ state: 'error', message: msg.message, model: null, device: null, lastLatencyMs: null });
      if (shown !== undefined) {
        void vscode.window.showErrorMessage(shown, 'Show Log').then((pick) => {
          if (pick === 'Show Log') {
            this.deps.log.show(true);
          }
        });
      }
    } else if (msg.type === MessageType.Warning) {
      void vscode.window.showWarningMessage(msg.message);
    } else {
      void vscode.window.showInformationMessage(msg.message);
    }
  }

  private showErrorOnce(message: string, offerSettings: boolean): void {
    if (this.errors.next({ state: 'error', message, model: null, device: null, lastLatencyMs: null }) === undefined) {
      return;
    }
    const actions = offerSettings ? ['Open Settings', 'Show Log'] : ['Show Log'];
    void vscode.window.showErrorMessage(message, ...actions).then((pick) => {
      if (pick === 'Open Settings') {
        void vscode.commands.executeCommand('workbench.action.openSettings', 'tandem.python');
      } else if (pick === 'Show Log') {
        this.deps.log.show(true);
      }
    });
  }

  render(): void {
    if (this.disposed) {
      return;
    }
    this.deps.statusBar.render({
      phase: this.phase,
      server: this.server,
      enabled: this.enabled(),
      snoozeRemainingMs: this.snooze.remainingMs(),
      clientError: this.clientError,
    });
  }

  // ---- settings -------------------------------------------------------------------------

  private enabled(): boolean {
    return config().get<boolean>('enable', true) !== false;
  }

  onConfigurationChanged(e: vscode.ConfigurationChangeEvent): void {
    if (!e.affectsConfiguration('tandem')) {
      return;
    }
    if (needsRestart((s) => e.affectsConfiguration(s))) {
      this.deps.log.info('Settings changed (python, modelPath or device): restarting the server.');
      this.errors.reset();
      void this.restart();
      return;
    }
    this.render();
  }

  /**
   * The Python extension switched interpreters. Restart only when `tandem.python` is unset
   * and the interpreter we would use now differs from the running one.
   */
  async onPythonEnvironmentChanged(): Promise<void> {
    if (config().get<string>('python', '').trim()) {
      return;
    }
    const fromExt = await this.deps.pythonFromExtension().catch(() => undefined);
    const next = resolvePython({ fromPythonExtension: fromExt, workspaceFolder: workspaceFolder() });
    if (next.command === this.python?.command) {
      return;
    }
    this.deps.log.info(`The Python extension's interpreter is now ${next.command}: restarting the server.`);
    this.errors.reset();
    await this.restart();
  }

  async setEnabled(value: boolean): Promise<void> {
    if (value) {
      this.snooze.cancel();
      this.stopSnoozeTimer();
    }
    const cfg = config();
    await cfg.update('enable', value, enableTarget(cfg.inspect<boolean>('enable')) as vscode.ConfigurationTarget);
    this.render();
  }

  async toggle(): Promise<void> {
    if (this.enabled() && this.snooze.isSnoozed()) {
      // Clicking a snoozed item wakes it up rather than turning Tandem off.
      this.snooze.cancel();
      this.stopSnoozeTimer();
      this.render();
      return;
    }
    await this.setEnabled(!this.enabled());
  }

  // ---- snooze ---------------------------------------------------------------------------

  async snoozeCommand(minutesArg?: unknown): Promise<void> {
    let minutes = typeof minutesArg === 'number' ? minutesArg : typeof minutesArg === 'string' ? parseSnoozeMinutes(minutesArg) : undefined;
    if (minutes === undefined || validateSnoozeMinutes(String(minutes)) !== undefined) {
      const input = await vscode.window.showInputBox({
        title: 'Snooze Tandem completions',
        prompt: 'For how many minutes?',
        value: '15',
        validateInput: validateSnoozeMinutes,
      });
      if (input === undefined) {
        return;
      }
      minutes = parseSnoozeMinutes(input);
      if (minutes === undefined) {
        return;
      }
    }
    this.snooze.start(minutes);
    this.deps.log.info(`Snoozed for ${minutes} minute(s).`);
    this.stopSnoozeTimer();
    // Refresh the countdown; stop once the snooze has run out.
    this.snoozeTimer = setInterval(() => {
      this.render();
      if (!this.snooze.isSnoozed()) {
        this.stopSnoozeTimer();
      }
    }, 15_000);
    this.render();
  }

  private stopSnoozeTimer(): void {
    if (this.snoozeTimer) {
      clearInterval(this.snoozeTimer);
      this.snoozeTimer = undefined;
    }
  }

  // ---- build model ----------------------------------------------------------------------

  async buildModel(): Promise<void> {
    const setting = config().get<string>('python', '');
    const fromExt = setting.trim() ? undefined : await this.deps.pythonFromExtension().catch(() => undefined);
    const python = resolvePython({ setting, fromPythonExtension: fromExt, workspaceFolder: workspaceFolder() });
    this.deps.log.info(`Building the model: ${python.command} -m tandem_models.build`);
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'Tandem: building the model', cancellable: true },
      (progress, token) =>
        this.deps.runBuild(python, token, (line) => {
          this.deps.log.info(`[build] ${line}`);
          progress.report({ message: line.length > 120 ? `${line.slice(0, 117)}...` : line });
        }),
    );
    if (result.cancelled) {
      void vscode.window.showWarningMessage('Tandem: model build cancelled.');
      return;
    }
    if (!result.ok) {
      const message = `Tandem: building the model failed${result.message ? `: ${result.message}` : ''}. See the log for details.`;
      this.deps.log.error(message);
      void vscode.window.showErrorMessage(message, 'Show Log').then((pick) => {
        if (pick === 'Show Log') {
          this.deps.log.show(true);
        }
      });
      return;
    }
    void vscode.window.showInformationMessage('Tandem: model built. Restarting the server.');
    this.errors.reset();
    await this.restart();
  }

  /** The language client when the server is running; otherwise says so and gives undefined. */
  private runningClient(): TandemClient | undefined {
    if (this.client && this.phase === 'running') {
      return this.client;
    }
    void vscode.window.showWarningMessage('Tandem: the server is not running. Run "Tandem: Restart Server" or see the log.');
    return undefined;
  }

  // ---- learning (server: tandem/features/learn.py) ----------------------------------------

  /** "Tandem: Learn from this workspace": the server fine-tunes in its own process and reports
   * `$/progress` (shown, cancellable, by the language client); this shows the outcome. */
  async learnWorkspace(): Promise<void> {
    const client = this.runningClient();
    if (!client) {
      return;
    }
    const folder = vscode.window.activeTextEditor
      ? vscode.workspace.getWorkspaceFolder?.(vscode.window.activeTextEditor.document.uri)
      : undefined;
    const root = folder ?? vscode.workspace.workspaceFolders?.[0];
    if (!root) {
      void vscode.window.showInformationMessage('Tandem: open a folder to learn from.');
      return;
    }
    let result: { ok?: boolean; decision?: string; error?: string; cancelled?: boolean } | undefined;
    try {
      result = (await client.executeCommand('tandem.learn', [{ workspace: root.uri.fsPath }])) as typeof result;
    } catch (err) {
      void vscode.window.showErrorMessage(`Tandem: learning failed: ${errorMessage(err)}`);
      return;
    }
    if (result?.ok && result.decision) {
      void vscode.window.showInformationMessage(`Tandem: ${result.decision}`);
    } else if (!result?.cancelled && result?.error) {
      this.deps.log.warn(`tandem.learn: ${result.error}`); // the server has shown it already
    }
  }

  /** "Tandem: Roll Back Model Version": back to the version served before (the base at the start). */
  async rollbackModel(): Promise<void> {
    const client = this.runningClient();
    if (!client) {
      return;
    }
    const r = (await client.executeCommand('tandem.rollbackModelVersion', [])) as
      | { ok?: boolean; version?: { id: string; label: string }; error?: string }
      | undefined;
    if (r?.ok && r.version) {
      void vscode.window.showInformationMessage(`Tandem: now serving ${r.version.id} (${r.version.label}).`);
    }
  }

  /** "Tandem: Switch Model Version...": pick among the versions `tandem learn` made. */
  async pickModelVersion(): Promise<void> {
    const client = this.runningClient();
    if (!client) {
      return;
    }
    const r = (await client.executeCommand('tandem.listModelVersions', [])) as
      | { ok?: boolean; versions?: { id: string; label: string; active: boolean; servable: boolean }[]; error?: string }
      | undefined;
    if (!r?.ok || !r.versions) {
      void vscode.window.showWarningMessage(`Tandem: ${r?.error ?? 'no model versions'}`);
      return;
    }
    const items = r.versions
      .filter((v) => v.servable)
      .map((v) => ({ label: `${v.active ? '$(check) ' : ''}${v.id}`, description: v.label, id: v.id }));
    const pick = await vscode.window.showQuickPick(items, { placeHolder: 'Model version to serve' });
    if (pick) {
      await client.executeCommand('tandem.switchModelVersion', [pick.id]);
    }
  }

  // ---- explain --------------------------------------------------------------------------

  async explainSelection(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      void vscode.window.showInformationMessage('Tandem: open a file and select the code to explain.');
      return;
    }
    const client = this.runningClient();
    if (!client) {
      return;
    }
    const sel = editor.selection;
    const range = sel.isEmpty ? editor.document.lineAt(sel.active.line).range : sel;
    const args = [
      {
        uri: editor.document.uri.toString(),
        range: {
          start: { line: range.start.line, character: range.start.character },
          end: { line: range.end.line, character: range.end.character },
        },
      },
    ];
    let result: unknown;
    try {
      result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: 'Tandem: explaining...' },
        () => client.executeCommand(EXPLAIN_COMMAND, args),
      );
    } catch (err) {
      if (isCommandNotFound(err)) {
        this.deps.log.info(`${EXPLAIN_COMMAND}: not supported by this server (${errorMessage(err)})`);
        void vscode.window.showInformationMessage('Tandem: this server version cannot explain code yet. Update tandem to use "Explain Selection".');
        return;
      }
      const message = `Tandem: explain failed: ${errorMessage(err)}`;
      this.deps.log.error(message);
      void vscode.window.showErrorMessage(message);
      return;
    }
    const text = explanationText(result);
    if (text === undefined) {
      void vscode.window.showInformationMessage('Tandem: no explanation for this selection.');
      return;
    }
    const name = path.basename(editor.document.uri.path);
    await this.deps.explainView.show(text, `${name}-L${range.start.line + 1}`);
  }

  /** Stops the server and makes further starts no-ops (extension deactivation). */
  async shutdown(): Promise<void> {
    this.stopSnoozeTimer();
    await this.stop();
    this.disposed = true;
  }

  dispose(): void {
    this.stopSnoozeTimer();
    this.subs.forEach((d) => d.dispose());
    if (!this.disposed) {
      void this.shutdown();
    }
  }
}

function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration('tandem');
}

function workspaceFolder(): string | undefined {
  return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
}

function errorMessage(err: unknown): string {
  if (err && typeof err === 'object' && 'message' in err && typeof (err as { message: unknown }).message === 'string') {
    return (err as { message: string }).message;
  }
  return String(err);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
