/**
 * The inline-completion middleware: gate (enabled / snoozed), then a cancel-aware debounce,
 * then the request. Only type imports from the language client, so no runtime `vscode`.
 */
import type { Middleware } from 'vscode-languageclient';
import { completionGate, debounceFor, delay, type Timers } from './logic/debounce';

export interface GateState {
  enabled(): boolean;
  snoozed(): boolean;
  debounceMs(): unknown;
}

export type ProvideInlineCompletionItems = NonNullable<Middleware['provideInlineCompletionItems']>;

export function inlineCompletionMiddleware(state: GateState, timers?: Timers): ProvideInlineCompletionItems {
  return async (document, position, context, token, next) => {
    if (completionGate(state.enabled(), state.snoozed()) !== 'allow') {
      return undefined;
    }
    const waited = await delay(debounceFor(state.debounceMs(), context.triggerKind), token, timers);
    if (!waited || token.isCancellationRequested) {
      return undefined; // typed on: VS Code cancelled this request, the server never sees it
    }
    // Re-check: the user may have snoozed or disabled during the wait.
    if (completionGate(state.enabled(), state.snoozed()) !== 'allow') {
      return undefined;
    }
    return next(document, position, context, token);
  };
}
