/** Runs `<python> -m tandem_models.build` as a child process, cancellable. */
import * as os from 'node:os';
import * as vscode from 'vscode';
import type { BuildRun } from './controller';
import type { ResolvedPython } from './logic/interpreter';
import { buildModelArgs, runProcess } from './logic/process';

export async function runModelBuild(
  python: ResolvedPython,
  token: vscode.CancellationToken,
  report: (line: string) => void,
): Promise<BuildRun> {
  const abort = new AbortController();
  const sub = token.onCancellationRequested(() => abort.abort());
  try {
    const r = await runProcess(python.command, buildModelArgs(), {
      cwd: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? os.homedir(),
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
      onLine: (line) => {
        if (line.trim() !== '') {
          report(line);
        }
      },
      signal: abort.signal,
    });
    if (r.aborted) {
      return { ok: false, cancelled: true };
    }
    if (r.spawnError) {
      return { ok: false, cancelled: false, message: `cannot run "${python.command}": ${r.spawnError}` };
    }
    if (r.code !== 0) {
      const last = r.stderr.trim().split(/\r?\n/).pop();
      return { ok: false, cancelled: false, message: `exit code ${r.code ?? r.signal}${last ? ` (${last})` : ''}` };
    }
    return { ok: true, cancelled: false };
  } finally {
    sub.dispose();
  }
}
