/**
 * Cancel-aware delay used by the inline-completion middleware: the request reaches the
 * server only after the user stopped typing for `ms`; a cancelled request never does.
 * Structural token type, so it works with `vscode.CancellationToken` and with test fakes.
 */

export interface CancelToken {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => unknown): { dispose(): unknown };
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** Resolves true after `ms`, or false as soon as the token is cancelled. Never rejects. */
export function delay(ms: number, token: CancelToken, timers: Timers = realTimers): Promise<boolean> {
  if (token.isCancellationRequested) {
    return Promise.resolve(false);
  }
  if (ms <= 0) {
    return Promise.resolve(true);
  }
  return new Promise<boolean>((resolve) => {
    // Held in an object: the token may fire while we subscribe, before `sub` is assigned.
    const refs: { handle?: unknown; sub?: { dispose(): unknown }; settled: boolean } = { settled: false };
    const finish = (value: boolean): void => {
      if (refs.settled) {
        return;
      }
      refs.settled = true;
      timers.clearTimeout(refs.handle);
      refs.sub?.dispose();
      resolve(value);
    };
    refs.handle = timers.setTimeout(() => finish(true), ms);
    refs.sub = token.onCancellationRequested(() => finish(false));
    if (refs.settled) {
      refs.sub.dispose();
    }
  });
}

/**
 * `vscode.InlineCompletionTriggerKind.Invoke`. The middleware sees VS Code's enum
 * (Invoke = 0, Automatic = 1), not LSP's (Invoked = 1, Automatic = 2).
 */
export const VSCODE_TRIGGER_INVOKE = 0;

/** Clamp the debounce setting; an explicit (manual) trigger is not delayed. */
export function debounceFor(settingMs: unknown, triggerKind: number): number {
  if (triggerKind === VSCODE_TRIGGER_INVOKE) {
    return 0;
  }
  const ms = typeof settingMs === 'number' && Number.isFinite(settingMs) ? settingMs : 150;
  return Math.min(5000, Math.max(0, Math.round(ms)));
}

export type Gate = 'allow' | 'disabled' | 'snoozed';

/** Whether the middleware may ask the server at all. */
export function completionGate(enabled: boolean, snoozed: boolean): Gate {
  if (!enabled) {
    return 'disabled';
  }
  return snoozed ? 'snoozed' : 'allow';
}
