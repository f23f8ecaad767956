/** Small pure helpers about settings. */

export interface InspectResult<T> {
  globalValue?: T;
  workspaceValue?: T;
  workspaceFolderValue?: T;
}

/** 1 = Global, 2 = Workspace, 3 = WorkspaceFolder (vscode.ConfigurationTarget values). */
export type Target = 1 | 2 | 3;

/**
 * Where to write `tandem.enable` so that the change takes effect: the most specific scope
 * that already sets it (writing Global under a Workspace override would do nothing).
 */
export function enableTarget(inspect: InspectResult<boolean> | undefined): Target {
  if (inspect?.workspaceFolderValue !== undefined) {
    return 3;
  }
  if (inspect?.workspaceValue !== undefined) {
    return 2;
  }
  return 1;
}

/**
 * Runs async jobs one after another (start/stop/restart of the client must not interleave).
 * A failing job does not block the ones after it.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(job: () => Promise<T>): Promise<T> {
    const result = this.tail.then(job, job);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
