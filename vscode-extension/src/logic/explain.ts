/** Helpers for "Tandem: Explain Selection" (`workspace/executeCommand` `tandem.explain`). */

export const EXPLAIN_COMMAND = 'tandem.explain';

/**
 * JSON-RPC MethodNotFound: a server without `workspace/executeCommand` at all. A pygls 2
 * server that lacks just this command answers InvalidParams (-32602) with
 * "Command name 'tandem.explain' is not defined", so the message is checked too.
 */
const METHOD_NOT_FOUND = -32601;

/** True when the error means the server does not (yet) implement the command. */
export function isCommandNotFound(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) {
    return false;
  }
  const e = error as { code?: unknown; message?: unknown };
  if (e.code === METHOD_NOT_FOUND) {
    return true;
  }
  const message = typeof e.message === 'string' ? e.message : '';
  return /command\b.*\b(not found|not defined|unknown|not supported|not registered)|unknown command|no such command/i.test(message);
}

/** The server answers a markdown string; accept `{markdown}`/`{value}`/`{contents}` objects too. */
export function explanationText(result: unknown): string | undefined {
  if (typeof result === 'string') {
    return result.trim() === '' ? undefined : result;
  }
  if (typeof result === 'object' && result !== null) {
    const r = result as Record<string, unknown>;
    for (const key of ['markdown', 'value', 'contents']) {
      if (typeof r[key] === 'string' && (r[key] as string).trim() !== '') {
        return r[key] as string;
      }
    }
  }
  return undefined;
}
