/**
 * The API key for an OpenAI-compatible endpoint (tandem.backend "openai"), kept in VS Code's
 * SecretStorage (the OS keychain), never in settings.
 *
 * It reaches the server only as an environment variable of the server process (named by
 * tandem.apiKeyEnv, TANDEM_API_KEY by default), set when the client starts it: not in
 * initializationOptions or workspace/configuration, which message tracing would log. The key
 * is never logged or shown; "Tandem: Set API Key" asks for it in a password box.
 */

export const SECRET_ID = 'tandem.apiKey';
export const DEFAULT_KEY_ENV = 'TANDEM_API_KEY';

/** The part of vscode.SecretStorage used here. */
export interface SecretStore {
  get(key: string): Thenable<string | undefined>;
  store(key: string, value: string): Thenable<void>;
  delete(key: string): Thenable<void>;
}

/** Names the key may be read from: TANDEM_* or a serving engine's usual variable. Any other
 * name (say AWS_SECRET_ACCESS_KEY) would send an unrelated secret to the endpoint; the server
 * refuses such names the same way (settings.py). */
export const KEY_ENV_PATTERN = /^(TANDEM_[A-Z0-9_]+|OPENAI_API_KEY|VLLM_API_KEY|LLAMA_API_KEY)$/;

export function validKeyEnv(name: string | undefined): string {
  return name && KEY_ENV_PATTERN.test(name) ? name : DEFAULT_KEY_ENV;
}

/** Extra environment for the server process: the key under `keyEnv`, or nothing. */
export function serverEnv(keyEnv: string | undefined, apiKey: string | undefined): Record<string, string> {
  return apiKey ? { [validKeyEnv(keyEnv)]: apiKey } : {};
}

/** The stored key, loaded once and kept current. */
export class ApiKeyHolder {
  private value: string | undefined;

  constructor(private readonly store: SecretStore | undefined) {}

  get current(): string | undefined {
    return this.value;
  }

  async load(): Promise<void> {
    try {
      this.value = (await this.store?.get(SECRET_ID)) || undefined;
    } catch {
      this.value = undefined; // no keychain (e.g. a headless Linux without one): no key
    }
  }
}

export interface SetKeyDeps {
  store: SecretStore | undefined;
  ask(options: { prompt: string; password: boolean; ignoreFocusOut: boolean; placeHolder: string }): Thenable<string | undefined>;
  info(message: string): unknown;
  /** Called after the stored key changed: reload it and restart the server with it. */
  changed(): Promise<void> | void;
}

/**
 * "Tandem: Set API Key": a password box; a value stores it, an empty value removes it, Escape
 * changes nothing. Returns what happened (for tests); the messages never contain the key.
 */
export async function setApiKey(deps: SetKeyDeps): Promise<'stored' | 'removed' | 'cancelled' | 'unavailable'> {
  if (!deps.store) {
    deps.info('Tandem: this VS Code has no secret storage; set the key in the environment variable named by tandem.apiKeyEnv instead.');
    return 'unavailable';
  }
  const value = await deps.ask({
    prompt: 'API key for the OpenAI-compatible endpoint (tandem.endpoint). Stored in VS Code\'s secret storage; leave empty to remove it.',
    password: true,
    ignoreFocusOut: true,
    placeHolder: 'sk-...',
  });
  if (value === undefined) {
    return 'cancelled';
  }
  const key = value.trim();
  if (key) {
    await deps.store.store(SECRET_ID, key);
  } else {
    await deps.store.delete(SECRET_ID);
  }
  await deps.changed();
  deps.info(key ? 'Tandem: API key stored; the server restarted with it.' : 'Tandem: API key removed.');
  return key ? 'stored' : 'removed';
}
