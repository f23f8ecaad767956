/** The optional ms-python.python API: the active interpreter, without depending on it. */
import * as vscode from 'vscode';
import { interpreterFromPythonApi } from './logic/interpreter';

const PYTHON_EXTENSION = 'ms-python.python';
const ACTIVATE_TIMEOUT_MS = 15_000;

export async function pythonFromExtension(log: vscode.LogOutputChannel): Promise<string | undefined> {
  const ext = vscode.extensions.getExtension(PYTHON_EXTENSION);
  if (!ext) {
    return undefined;
  }
  try {
    const api = ext.isActive ? ext.exports : await withTimeout(ext.activate(), ACTIVATE_TIMEOUT_MS);
    const resource = vscode.workspace.workspaceFolders?.[0]?.uri;
    return await interpreterFromPythonApi(api, resource);
  } catch (err) {
    log.warn(`Could not ask the Python extension for its interpreter: ${String(err)}`);
    return undefined;
  }
}

/** Calls `listener` when the Python extension's active interpreter changes (if it is installed). */
export function onPythonInterpreterChanged(listener: () => void): vscode.Disposable {
  const ext = vscode.extensions.getExtension(PYTHON_EXTENSION);
  let sub: vscode.Disposable | undefined;
  let disposed = false;
  if (ext) {
    void Promise.resolve(ext.isActive ? ext.exports : ext.activate()).then(
      (api: unknown) => {
        const event = (api as { environments?: { onDidChangeActiveEnvironmentPath?: vscode.Event<unknown> } })?.environments
          ?.onDidChangeActiveEnvironmentPath;
        if (typeof event === 'function' && !disposed) {
          sub = event(() => listener());
        }
      },
      () => undefined,
    );
  }
  return new vscode.Disposable(() => {
    disposed = true;
    sub?.dispose();
  });
}

function withTimeout<T>(p: Thenable<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
