/** Builds the real `LanguageClient` for `<python> -m tandem` over stdio. */
import * as vscode from 'vscode';
import {
  ExecuteCommandRequest,
  LanguageClient,
  RevealOutputChannelOn,
  State,
  TransportKind,
  type LanguageClientOptions,
  type Middleware,
  type ServerOptions,
} from 'vscode-languageclient/node';
import type { TandemClient } from './controller';

export const CLIENT_ID = 'tandem';
export const CLIENT_NAME = 'Tandem';

export function serverOptions(python: string, cwd: string | undefined, extraEnv: Record<string, string> = {}): ServerOptions {
  return {
    command: python,
    args: ['-m', 'tandem'],
    transport: TransportKind.stdio,
    options: {
      cwd,
      // extraEnv: the API key from secret storage, when one is set (see secrets.ts).
      env: { ...process.env, PYTHONUNBUFFERED: '1', ...extraEnv },
    },
  };
}

export function clientOptions(log: vscode.LogOutputChannel, middleware: Middleware): LanguageClientOptions {
  return {
    // Every real file and unsaved buffer: a FIM model completes any language; the server
    // decides what it serves.
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
    // The server pulls section "tandem" with workspace/configuration; this makes
    // didChangeConfiguration reach it when a tandem.* setting changes.
    synchronize: { configurationSection: CLIENT_ID },
    outputChannel: log,
    traceOutputChannel: log, // message tracing follows the channel's log level (Trace)
    revealOutputChannelOn: RevealOutputChannelOn.Never, // we show actionable pop-ups ourselves
    // Without this the client pops up its own message as well as the controller's.
    initializationFailedHandler: (error) => {
      log.error(`Server initialization failed: ${error instanceof Error ? error.message : String(error)}`);
      return false; // do not retry; start() rejects and the controller reports it once
    },
    middleware,
  };
}

/** The controller's view of a LanguageClient. */
export function createTandemClient(
  python: string,
  log: vscode.LogOutputChannel,
  middleware: Middleware,
  extraEnv: Record<string, string> = {},
): TandemClient {
  const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const client = new LanguageClient(CLIENT_ID, CLIENT_NAME, serverOptions(python, cwd, extraEnv), clientOptions(log, middleware));
  // vscode-languageclient >= 11 registers inline completion (LSP 3.18) as a standard
  // feature. Up to 10.0 it was proposed and needed `client.registerProposedFeatures()`.
  let stopping = false;
  return {
    start: async () => {
      stopping = false;
      await client.start();
    },
    stop: async (timeoutMs?: number) => {
      stopping = true;
      // dispose() = stop (shutdown + exit, then kill) and release the registered features.
      await client.dispose(timeoutMs);
    },
    onNotification: (method, handler) => client.onNotification(method, handler),
    executeCommand: (command, args) => client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args }),
    onStateChange: (listener) =>
      client.onDidChangeState((e) => {
        if (e.newState === State.Running) {
          listener(true); // also after the client's own restart following a crash
        } else if (e.newState === State.Stopped && !stopping) {
          listener(false);
        }
      }),
  };
}
