/** Entry point: wires VS Code to the controller. The logic lives in the other modules. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { runModelBuild } from './build';
import { createTandemClient } from './client';
import { TandemController } from './controller';
import { ExplainView } from './explainView';
import { checkTandemImportable } from './logic/process';
import { onPythonInterpreterChanged, pythonFromExtension } from './python';
import { ApiKeyHolder, serverEnv, setApiKey } from './secrets';
import { TandemStatusBar } from './statusBar';

let controller: TandemController | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel('Tandem', { log: true });
  const statusBar = new TandemStatusBar();
  const explainView = new ExplainView();
  // The endpoint's API key (secret storage), passed to the server process's environment.
  const apiKey = new ApiKeyHolder(context.secrets);
  const ctl = new TandemController({
    log,
    statusBar,
    explainView,
    createClient: (python, middleware) =>
      createTandemClient(python, log, middleware,
        serverEnv(vscode.workspace.getConfiguration('tandem').get<string>('apiKeyEnv'), apiKey.current)),
    checkImport: (python) => checkTandemImportable(python),
    pythonFromExtension: () => pythonFromExtension(log),
    runBuild: runModelBuild,
    checkout: findCheckout([
      path.dirname(context.extensionPath),
      ...(vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath),
    ]),
  });
  controller = ctl;

  const command = (id: string, fn: (...args: unknown[]) => unknown): void => {
    context.subscriptions.push(vscode.commands.registerCommand(id, fn));
  };
  command('tandem.enable', () => ctl.setEnabled(true));
  command('tandem.disable', () => ctl.setEnabled(false));
  command('tandem.toggle', () => ctl.toggle());
  command('tandem.snooze', (minutes) => ctl.snoozeCommand(minutes));
  command('tandem.restartServer', () => ctl.restart());
  command('tandem.buildModel', () => ctl.buildModel());
  command('tandem.explainSelection', () => ctl.explainSelection());
  command('tandem.learnWorkspace', () => ctl.learnWorkspace());
  command('tandem.pickModelVersion', () => ctl.pickModelVersion());
  command('tandem.rollbackModel', () => ctl.rollbackModel());
  command('tandem.showLog', () => log.show(true));
  command('tandem.setApiKey', () =>
    setApiKey({
      store: context.secrets,
      ask: (options) => vscode.window.showInputBox(options),
      info: (message) => vscode.window.showInformationMessage(message),
      changed: async () => {
        await apiKey.load();
        await ctl.restart(); // the key reaches the server through its environment
      },
    }));
  // Not registered here on purpose: `tandem.completionAccepted` (and any other command the
  // server lists in executeCommandProvider) is registered by vscode-languageclient's
  // ExecuteCommandFeature, which forwards it to the server as workspace/executeCommand.

  context.subscriptions.push(
    log,
    statusBar,
    explainView,
    ctl,
    onPythonInterpreterChanged(() => void ctl.onPythonEnvironmentChanged()),
  );

  // Activation returns at once; the status bar shows progress. The stored key first (a
  // keychain lookup), so the server starts with it.
  void apiKey.load().then(() => ctl.start());
}

export async function deactivate(): Promise<void> {
  await controller?.shutdown();
  controller = undefined;
}

/**
 * A tandem checkout to name in the "pip install -e" hint: the folder above the extension
 * (running from the repository) or an open workspace folder that is the checkout.
 */
function findCheckout(candidates: string[]): string | undefined {
  for (const dir of candidates) {
    try {
      const text = fs.readFileSync(path.join(dir, 'pyproject.toml'), 'utf8');
      if (/^name\s*=\s*"tandem"/m.test(text)) {
        return dir;
      }
    } catch {
      // not a checkout
    }
  }
  return undefined;
}
