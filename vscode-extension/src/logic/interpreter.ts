/**
 * Which Python runs the server: the `tandem.python` setting, else the Python extension's
 * active interpreter, else `python3`. Pure (no `vscode`), the inputs are gathered by the caller.
 */
import * as os from 'node:os';
import * as path from 'node:path';

export type PythonSource = 'setting' | 'python-extension' | 'default';

export interface ResolvedPython {
  command: string;
  source: PythonSource;
}

export const DEFAULT_PYTHON = 'python3';

/** Expand `~` and `${workspaceFolder}` / `${userHome}` / `${env:NAME}` in a configured path. */
export function expandPath(
  value: string,
  vars: { workspaceFolder?: string; home?: string; env?: NodeJS.ProcessEnv } = {},
): string {
  const home = vars.home ?? os.homedir();
  const env = vars.env ?? process.env;
  let out = value.trim();
  out = out.replace(/\$\{(workspaceFolder|userHome|env:([A-Za-z_][A-Za-z0-9_]*))\}/g, (whole, name: string, envName?: string) => {
    if (envName) {
      return env[envName] ?? '';
    }
    if (name === 'userHome') {
      return home;
    }
    return vars.workspaceFolder ?? whole;
  });
  if (out === '~') {
    return home;
  }
  if (out.startsWith('~/') || out.startsWith('~\\')) {
    return path.join(home, out.slice(2));
  }
  return out;
}

export function resolvePython(input: {
  setting?: string | null;
  fromPythonExtension?: string | null;
  workspaceFolder?: string;
}): ResolvedPython {
  const setting = (input.setting ?? '').trim();
  if (setting) {
    return { command: expandPath(setting, { workspaceFolder: input.workspaceFolder }), source: 'setting' };
  }
  const ext = (input.fromPythonExtension ?? '').trim();
  if (ext) {
    return { command: ext, source: 'python-extension' };
  }
  return { command: DEFAULT_PYTHON, source: 'default' };
}

/**
 * Pick the interpreter path out of whatever the ms-python.python API returned. Supports the
 * `environments` API (getActiveEnvironmentPath + resolveEnvironment) and the older
 * `settings.getExecutionDetails` API. Duck-typed, so no dependency on the Python extension.
 */
export interface PythonEnvironmentApi {
  environments?: {
    getActiveEnvironmentPath(resource?: unknown): { path: string } | undefined;
    resolveEnvironment?(env: unknown): Promise<{ executable?: { uri?: { fsPath: string } } } | undefined>;
  };
  settings?: {
    getExecutionDetails?(resource?: unknown): { execCommand?: string[] | undefined };
  };
}

export async function interpreterFromPythonApi(api: unknown, resource?: unknown): Promise<string | undefined> {
  if (typeof api !== 'object' || api === null) {
    return undefined;
  }
  const a = api as PythonEnvironmentApi;
  const envs = a.environments;
  if (envs && typeof envs.getActiveEnvironmentPath === 'function') {
    const active = envs.getActiveEnvironmentPath(resource);
    if (active) {
      if (typeof envs.resolveEnvironment === 'function') {
        const resolved = await envs.resolveEnvironment(active);
        const exe = resolved?.executable?.uri?.fsPath;
        if (exe) {
          return exe;
        }
      }
      if (active.path) {
        return active.path;
      }
    }
  }
  const exec = a.settings?.getExecutionDetails?.(resource)?.execCommand;
  if (Array.isArray(exec) && exec.length === 1 && exec[0]) {
    // execCommand can be e.g. ["conda", "run", ...]; only a lone interpreter path is usable.
    return exec[0];
  }
  return undefined;
}

/** The settings whose change means a different server process. */
// tandem.apiKeyEnv names the server process's environment variable that carries the key.
export const RESTART_SETTINGS = ['tandem.modelPath', 'tandem.device', 'tandem.python', 'tandem.apiKeyEnv'] as const;

/** `affects` is `ConfigurationChangeEvent.affectsConfiguration`. */
export function needsRestart(affects: (section: string) => boolean): boolean {
  return RESTART_SETTINGS.some((s) => affects(s));
}

/** The python command line that checks tandem is importable. */
export function importCheckArgs(): string[] {
  return ['-c', 'import tandem, sys; sys.stdout.write(tandem.__file__ or "")'];
}

export interface ImportCheckResult {
  ok: boolean;
  /** ENOENT etc.: the interpreter itself could not run. */
  spawnError?: string;
  exitCode?: number | null;
  stderr?: string;
  timedOut?: boolean;
}

/**
 * The message shown when the server cannot start. It names the interpreter, says where it
 * came from, and gives the fix: install the checkout into it, or point `tandem.python` elsewhere.
 */
export function importErrorMessage(py: ResolvedPython, result: ImportCheckResult, checkout?: string): string {
  const from =
    py.source === 'setting'
      ? 'from the tandem.python setting'
      : py.source === 'python-extension'
        ? "the Python extension's active interpreter"
        : 'the default; neither tandem.python nor the Python extension gave an interpreter';
  const pip = `${quoteArg(py.command)} -m pip install -e ${checkout ? quoteArg(checkout) : '<path to your tandem checkout>'}`;
  if (result.spawnError) {
    return `Tandem: cannot run Python "${py.command}" (${from}): ${result.spawnError}. Set "tandem.python" to a Python 3.10+ interpreter that has tandem installed.`;
  }
  if (result.timedOut) {
    return `Tandem: "${py.command} -c 'import tandem'" did not finish in time (${from}). Check the interpreter, or set "tandem.python".`;
  }
  const lastLine = (result.stderr ?? '').trim().split(/\r?\n/).pop() ?? '';
  const why = lastLine ? ` (${lastLine})` : '';
  return `Tandem is not installed in Python "${py.command}" (${from})${why}. Fix: run \`${pip}\`, or set "tandem.python" to an interpreter that has it (in a remote window, in the Remote settings: VS Code ignores this machine setting in user settings there).`;
}

function quoteArg(s: string): string {
  return /^[A-Za-z0-9_./:\\-]+$/.test(s) ? s : `"${s.replace(/"/g, '\\"')}"`;
}
