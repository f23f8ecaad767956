/** Child processes: the import check and the model build. No `vscode` import. */
import { spawn } from 'node:child_process';
import { importCheckArgs, type ImportCheckResult } from './interpreter';

/** Splits a byte stream into lines; `flush()` returns the unterminated rest. */
export class LineBuffer {
  private rest = '';

  push(chunk: string): string[] {
    const text = this.rest + chunk;
    const parts = text.split(/\r\n|\n|\r/);
    this.rest = parts.pop() ?? '';
    return parts;
  }

  flush(): string[] {
    const out = this.rest === '' ? [] : [this.rest];
    this.rest = '';
    return out;
  }
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Every output line, stdout and stderr alike (progress goes to stderr in tandem_models). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Set when the process could not be started at all (ENOENT, EACCES...). */
  spawnError?: string;
  timedOut: boolean;
  aborted: boolean;
}

const KEEP = 64 * 1024; // keep the tail of each stream for messages

export function runProcess(command: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let aborted = false;
    let done = false;
    const finish = (r: Omit<RunResult, 'stdout' | 'stderr' | 'timedOut' | 'aborted'>): void => {
      if (done) {
        return;
      }
      done = true;
      if (timer) {
        clearTimeout(timer);
      }
      opts.signal?.removeEventListener('abort', onAbort);
      for (const line of outLines.flush()) {
        opts.onLine?.(line, 'stdout');
      }
      for (const line of errLines.flush()) {
        opts.onLine?.(line, 'stderr');
      }
      resolve({ ...r, stdout, stderr, timedOut, aborted });
    };
    const outLines = new LineBuffer();
    const errLines = new LineBuffer();
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(command, args, {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        stdio: ['ignore', 'pipe', 'pipe'],
        windowsHide: true,
        // Own process group on POSIX, so cancelling also stops what the command started.
        detached: process.platform !== 'win32',
      });
    } catch (err) {
      finish({ code: null, signal: null, spawnError: errorText(err) });
      return;
    }
    const kill = (): void => {
      if (process.platform !== 'win32' && child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGTERM');
          return;
        } catch {
          // the group is gone already; fall through
        }
      }
      child.kill();
    };
    const onAbort = (): void => {
      aborted = true;
      kill();
    };
    if (opts.signal) {
      if (opts.signal.aborted) {
        onAbort();
      } else {
        opts.signal.addEventListener('abort', onAbort, { once: true });
      }
    }
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true;
            kill();
          }, opts.timeoutMs)
        : undefined;
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      stdout = (stdout + chunk).slice(-KEEP);
      for (const line of outLines.push(chunk)) {
        opts.onLine?.(line, 'stdout');
      }
    });
    child.stderr?.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-KEEP);
      for (const line of errLines.push(chunk)) {
        opts.onLine?.(line, 'stderr');
      }
    });
    child.on('error', (err) => finish({ code: null, signal: null, spawnError: errorText(err) }));
    child.on('close', (code, signal) => finish({ code, signal }));
  });
}

function errorText(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown };
    if (e.code === 'ENOENT') {
      return 'not found (ENOENT)';
    }
    if (typeof e.message === 'string') {
      return e.message;
    }
  }
  return String(err);
}

/** `<python> -c "import tandem"`: is the server importable in this interpreter? */
export async function checkTandemImportable(python: string, timeoutMs = 30_000): Promise<ImportCheckResult & { location?: string }> {
  const r = await runProcess(python, importCheckArgs(), { timeoutMs });
  if (r.spawnError) {
    return { ok: false, spawnError: r.spawnError };
  }
  if (r.timedOut) {
    return { ok: false, timedOut: true };
  }
  return { ok: r.code === 0, exitCode: r.code, stderr: r.stderr, location: r.stdout.trim() || undefined };
}

/** The build command: `<python> -m tandem_models.build`. */
export function buildModelArgs(): string[] {
  return ['-m', 'tandem_models.build'];
}
