/**
 * Status bar text from the server's `tandem/status` notification and the client's own state.
 * Pure: no `vscode` import, so it is unit-tested directly.
 */

export type ServerState = 'loading' | 'ready' | 'error' | 'disabled';

/** Params of the server -> client notification `tandem/status`. */
export interface TandemStatus {
  state: ServerState;
  message: string;
  model: string | null;
  device: 'cpu' | 'cuda' | null;
  lastLatencyMs: number | null;
}

/** What the client itself knows about the server process. */
export type ClientPhase = 'starting' | 'running' | 'stopped' | 'failed';

export interface StatusInput {
  phase: ClientPhase;
  /** Last `tandem/status` from the server; null until the first arrives. */
  server: TandemStatus | null;
  /** The `tandem.enable` setting. */
  enabled: boolean;
  /** Remaining snooze in ms, 0 when not snoozed. */
  snoozeRemainingMs: number;
  /** Set when the client could not start the server (e.g. tandem not importable). */
  clientError?: string;
}

export type StatusKind = 'busy' | 'ok' | 'off' | 'warning' | 'error';

export interface StatusView {
  text: string;
  tooltip: string;
  kind: StatusKind;
}

const STATES: readonly string[] = ['loading', 'ready', 'error', 'disabled'];

/** Validate an untrusted notification payload; returns null when it is not usable. */
export function parseStatus(raw: unknown): TandemStatus | null {
  if (typeof raw !== 'object' || raw === null) {
    return null;
  }
  const r = raw as Record<string, unknown>;
  if (typeof r.state !== 'string' || !STATES.includes(r.state)) {
    return null;
  }
  const device = r.device === 'cpu' || r.device === 'cuda' ? r.device : null;
  const latency =
    typeof r.lastLatencyMs === 'number' && Number.isFinite(r.lastLatencyMs) && r.lastLatencyMs >= 0
      ? r.lastLatencyMs
      : null;
  return {
    state: r.state as ServerState,
    message: typeof r.message === 'string' ? r.message : '',
    model: typeof r.model === 'string' && r.model !== '' ? r.model : null,
    device,
    lastLatencyMs: latency,
  };
}

export function formatLatency(ms: number): string {
  if (ms < 1000) {
    return `${Math.round(ms)} ms`;
  }
  return `${(ms / 1000).toFixed(1)} s`;
}

/** "4m", "1h 05m", "30s" for the remaining snooze. */
export function formatRemaining(ms: number): string {
  const totalSeconds = Math.max(0, Math.ceil(ms / 1000));
  if (totalSeconds < 60) {
    return `${totalSeconds}s`;
  }
  const minutes = Math.ceil(totalSeconds / 60);
  if (minutes < 60) {
    return `${minutes}m`;
  }
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return `${h}h ${String(m).padStart(2, '0')}m`;
}

const CLICK_HINT = 'Click to turn Tandem completions on or off.';

export function computeStatus(input: StatusInput): StatusView {
  const { phase, server, enabled, snoozeRemainingMs } = input;
  const lines: string[] = [];
  if (server?.model) {
    lines.push(`Model: ${server.model}`);
  }
  if (server?.device) {
    lines.push(`Device: ${server.device}`);
  }
  if (server?.lastLatencyMs !== null && server?.lastLatencyMs !== undefined) {
    lines.push(`Last completion: ${formatLatency(server.lastLatencyMs)}`);
  }
  const tooltip = (head: string): string => [head, ...lines, CLICK_HINT].join('\n');

  if (input.clientError) {
    return { text: '$(error) Tandem', tooltip: tooltip(`Tandem could not start: ${input.clientError}`), kind: 'error' };
  }
  if (phase === 'failed') {
    return { text: '$(error) Tandem', tooltip: tooltip('The Tandem server stopped. Run "Tandem: Restart Server".'), kind: 'error' };
  }
  if (!enabled) {
    return { text: '$(circle-slash) Tandem', tooltip: tooltip('Tandem completions are disabled.'), kind: 'off' };
  }
  if (phase === 'stopped') {
    return { text: '$(debug-disconnect) Tandem', tooltip: tooltip('The Tandem server is not running.'), kind: 'off' };
  }
  if (phase === 'starting' || server === null) {
    return { text: '$(loading~spin) Tandem', tooltip: tooltip('Starting the Tandem server...'), kind: 'busy' };
  }
  if (server.state === 'error') {
    return { text: '$(error) Tandem', tooltip: tooltip(server.message || 'The Tandem server reported an error.'), kind: 'error' };
  }
  if (server.state === 'loading') {
    const what = server.message || 'Loading the model...';
    return { text: '$(loading~spin) Tandem: loading', tooltip: tooltip(what), kind: 'busy' };
  }
  if (server.state === 'disabled') {
    return { text: '$(circle-slash) Tandem', tooltip: tooltip(server.message || 'Tandem completions are disabled.'), kind: 'off' };
  }
  // ready
  if (snoozeRemainingMs > 0) {
    const left = formatRemaining(snoozeRemainingMs);
    return { text: `$(clock) Tandem ${left}`, tooltip: tooltip(`Snoozed: completions resume in ${left}.`), kind: 'warning' };
  }
  const parts = ['$(sparkle) Tandem'];
  if (server.device) {
    parts.push(server.device);
  }
  if (server.lastLatencyMs !== null) {
    parts.push(formatLatency(server.lastLatencyMs));
  }
  return { text: parts.join(' '), tooltip: tooltip(server.message || 'Tandem is ready.'), kind: 'ok' };
}

/**
 * Decides when a server error message is shown as a pop-up: once per distinct message,
 * not on every repeated `tandem/status` notification. A return to a healthy state re-arms it.
 */
export class ErrorOnce {
  private shown = new Set<string>();

  /** Feed every status; returns the message to show now, or undefined. */
  next(status: TandemStatus): string | undefined {
    if (status.state === 'ready') {
      this.shown.clear();
      return undefined;
    }
    if (status.state !== 'error') {
      return undefined;
    }
    const message = status.message || 'The Tandem server reported an error.';
    const key = errorKey(message);
    if (this.shown.has(key)) {
      return undefined;
    }
    this.shown.add(key);
    return message;
  }

  reset(): void {
    this.shown.clear();
  }
}

/** LSP `MessageType` values of `window/showMessage`. */
export const MessageType = { Error: 1, Warning: 2, Info: 3, Log: 4, Debug: 5 } as const;

export interface ServerMessage {
  type: number;
  message: string;
}

export function parseServerMessage(raw: unknown): ServerMessage | null {
  if (typeof raw !== 'object' || raw === null) {
    return null;
  }
  const r = raw as Record<string, unknown>;
  if (typeof r.message !== 'string' || typeof r.type !== 'number') {
    return null;
  }
  return { type: r.type, message: r.message };
}

/**
 * The server pops up its errors itself (`window/showMessage`, "Tandem: <text>") right next to
 * the `tandem/status` error with the same text. Both go through one `ErrorOnce` under this
 * key, so the user sees each problem once.
 */
export function errorKey(message: string): string {
  return message.replace(/^Tandem:\s*/, '').trim();
}
