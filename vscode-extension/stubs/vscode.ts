/**
 * A small stand-in for the `vscode` module: enough API for the extension's modules, plus a
 * `__test` handle to set settings, answer prompts and read what was shown.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */

type Listener<T> = (e: T) => unknown;

export class Disposable {
  constructor(private readonly fn: () => unknown = () => undefined) {}
  static from(...items: { dispose(): unknown }[]): Disposable {
    return new Disposable(() => items.forEach((i) => i.dispose()));
  }
  dispose(): void {
    this.fn();
  }
}

export class EventEmitter<T> {
  private listeners = new Set<Listener<T>>();
  event = (listener: Listener<T>): Disposable => {
    this.listeners.add(listener);
    return new Disposable(() => this.listeners.delete(listener));
  };
  fire(e: T): void {
    [...this.listeners].forEach((l) => l(e));
  }
  dispose(): void {
    this.listeners.clear();
  }
}

export class CancellationTokenSource {
  private emitter = new EventEmitter<void>();
  private cancelled = false;
  token = {
    get isCancellationRequested(): boolean {
      return false;
    },
    onCancellationRequested: this.emitter.event,
  };
  constructor() {
    const self = this; // eslint-disable-line @typescript-eslint/no-this-alias
    Object.defineProperty(this.token, 'isCancellationRequested', { get: () => self.cancelled });
  }
  cancel(): void {
    if (!this.cancelled) {
      this.cancelled = true;
      this.emitter.fire();
    }
  }
  dispose(): void {
    this.emitter.dispose();
  }
}

export class ThemeColor {
  constructor(public readonly id: string) {}
}

export enum StatusBarAlignment {
  Left = 1,
  Right = 2,
}
export enum ProgressLocation {
  SourceControl = 1,
  Window = 10,
  Notification = 15,
}
export enum ConfigurationTarget {
  Global = 1,
  Workspace = 2,
  WorkspaceFolder = 3,
}
export enum ViewColumn {
  Active = -1,
  Beside = -2,
  One = 1,
}
export enum InlineCompletionTriggerKind {
  Invoke = 0,
  Automatic = 1,
}

export class Uri {
  private constructor(
    public readonly scheme: string,
    public readonly path: string,
  ) {}
  static from(c: { scheme: string; path?: string }): Uri {
    return new Uri(c.scheme, c.path ?? '');
  }
  static file(p: string): Uri {
    return new Uri('file', p);
  }
  get fsPath(): string {
    return this.path;
  }
  toString(): string {
    return `${this.scheme}://${this.path}`;
  }
}

export class Position {
  constructor(
    public readonly line: number,
    public readonly character: number,
  ) {}
}
export class Range {
  readonly start: Position;
  readonly end: Position;
  constructor(start: Position | number, end: Position | number, endLine?: number, endCharacter?: number) {
    if (typeof start === 'number' && typeof end === 'number') {
      this.start = new Position(start, end);
      this.end = new Position(endLine ?? start, endCharacter ?? end);
    } else {
      this.start = start as Position;
      this.end = end as Position;
    }
  }
  get isEmpty(): boolean {
    return this.start.line === this.end.line && this.start.character === this.end.character;
  }
}
export class SnippetString {
  constructor(public readonly value: string) {}
}

export class InlineCompletionItem {
  filterText?: string;
  constructor(
    public insertText: string | SnippetString,
    public range?: Range,
    public command?: { title: string; command: string; arguments?: unknown[] },
  ) {}
}

export class InlineCompletionList {
  constructor(public items: InlineCompletionItem[]) {}
}

export class Selection extends Range {
  constructor(
    public readonly anchor: Position,
    public readonly active: Position,
  ) {
    super(anchor, active);
  }
}

// ---- test state ---------------------------------------------------------------------------

interface Shown {
  level: 'info' | 'warning' | 'error';
  message: string;
  items: string[];
}

const state = {
  settings: new Map<string, unknown>(), // key without the "tandem." prefix... full key, e.g. "tandem.enable"
  workspaceSettings: new Map<string, unknown>(),
  updates: [] as { key: string; value: unknown; target: unknown }[],
  messages: [] as Shown[],
  messageAnswer: undefined as string | undefined,
  inputAnswers: [] as (string | undefined)[],
  executed: [] as { command: string; args: unknown[] }[],
  commands: new Map<string, (...args: any[]) => unknown>(),
  statusItems: [] as any[],
  progressReports: [] as { title?: string; message?: string }[],
  activeTextEditor: undefined as any,
  contentProviders: new Map<string, any>(),
  configEmitter: new EventEmitter<any>(),
};

function fullKey(section: string | undefined, key: string): string {
  return section ? `${section}.${key}` : key;
}

function changeEvent(keys: string[]): { affectsConfiguration(s: string): boolean } {
  return {
    affectsConfiguration: (s: string) => keys.some((k) => k === s || k.startsWith(`${s}.`)),
  };
}

export const __test = {
  state,
  reset(): void {
    state.settings.clear();
    state.workspaceSettings.clear();
    state.updates = [];
    state.messages = [];
    state.messageAnswer = undefined;
    state.inputAnswers = [];
    state.executed = [];
    state.commands.clear();
    state.statusItems = [];
    state.progressReports = [];
    state.activeTextEditor = undefined;
    state.contentProviders.clear();
    state.configEmitter.dispose();
    state.configEmitter = new EventEmitter<any>();
  },
  /** Change settings the way the user would: values, then the change event. */
  setSettings(values: Record<string, unknown>): void {
    for (const [k, v] of Object.entries(values)) {
      state.settings.set(k, v);
    }
    state.configEmitter.fire(changeEvent(Object.keys(values)));
  },
  changeEvent,
};

// ---- API ----------------------------------------------------------------------------------

function show(level: Shown['level']) {
  return (message: string, ...items: any[]): Promise<string | undefined> => {
    const labels = items.filter((i) => typeof i === 'string');
    state.messages.push({ level, message, items: labels });
    return Promise.resolve(state.messageAnswer !== undefined && labels.includes(state.messageAnswer) ? state.messageAnswer : undefined);
  };
}

function fakeLog(name: string): any {
  const lines: string[] = [];
  const add = (level: string) => (msg: string) => lines.push(`[${level}] ${msg}`);
  return {
    name,
    lines,
    logLevel: 2,
    onDidChangeLogLevel: new EventEmitter<number>().event,
    trace: add('trace'),
    debug: add('debug'),
    info: add('info'),
    warn: add('warn'),
    error: (m: unknown) => lines.push(`[error] ${String(m)}`),
    append: (s: string) => lines.push(s),
    appendLine: (s: string) => lines.push(s),
    replace: () => undefined,
    clear: () => (lines.length = 0),
    shown: 0,
    show(): void {
      this.shown += 1;
    },
    hide: () => undefined,
    dispose: () => undefined,
  };
}

export const window = {
  get activeTextEditor(): any {
    return state.activeTextEditor;
  },
  createStatusBarItem(id?: string, alignment?: StatusBarAlignment, priority?: number): any {
    const item = {
      id,
      alignment,
      priority,
      text: '',
      tooltip: undefined as unknown,
      command: undefined as unknown,
      backgroundColor: undefined as ThemeColor | undefined,
      name: undefined as string | undefined,
      visible: false,
      disposed: false,
      show(): void {
        this.visible = true;
      },
      hide(): void {
        this.visible = false;
      },
      dispose(): void {
        this.disposed = true;
      },
    };
    state.statusItems.push(item);
    return item;
  },
  showInformationMessage: show('info'),
  showWarningMessage: show('warning'),
  showErrorMessage: show('error'),
  showInputBox(options: { validateInput?: (v: string) => unknown }): Promise<string | undefined> {
    const answer = state.inputAnswers.shift();
    if (answer !== undefined && options?.validateInput?.(answer)) {
      return Promise.resolve(undefined); // an invalid value cannot be accepted
    }
    return Promise.resolve(answer);
  },
  async showQuickPick<T>(items: T[]): Promise<T | undefined> {
    return items[0]; // tests: the first item is picked
  },
  async withProgress<R>(options: { title?: string }, task: (progress: any, token: any) => Promise<R>): Promise<R> {
    const source = new CancellationTokenSource();
    return task(
      {
        report: (v: { message?: string }) => state.progressReports.push({ title: options.title, message: v.message }),
      },
      source.token,
    );
  },
  createOutputChannel: (name: string) => fakeLog(name),
  showTextDocument: async () => undefined,
};

export const workspace = {
  workspaceFolders: undefined as any,
  getConfiguration(section?: string): any {
    const get = (key: string, dflt?: unknown) => {
      const k = fullKey(section, key);
      if (state.workspaceSettings.has(k)) {
        return state.workspaceSettings.get(k);
      }
      return state.settings.has(k) ? state.settings.get(k) : dflt;
    };
    return {
      get,
      has: (key: string) => state.settings.has(fullKey(section, key)),
      inspect: (key: string) => {
        const k = fullKey(section, key);
        return {
          key: k,
          globalValue: state.settings.get(k),
          workspaceValue: state.workspaceSettings.get(k),
        };
      },
      update: async (key: string, value: unknown, target: unknown) => {
        const k = fullKey(section, key);
        state.updates.push({ key: k, value, target });
        if (target === ConfigurationTarget.Workspace || target === ConfigurationTarget.WorkspaceFolder) {
          state.workspaceSettings.set(k, value);
        } else {
          state.settings.set(k, value);
        }
        state.configEmitter.fire(changeEvent([k]));
      },
    };
  },
  get onDidChangeConfiguration() {
    return state.configEmitter.event;
  },
  registerTextDocumentContentProvider(scheme: string, provider: unknown): Disposable {
    state.contentProviders.set(scheme, provider);
    return new Disposable(() => state.contentProviders.delete(scheme));
  },
  openTextDocument: async (uri: Uri) => ({ uri }),
};

export const commands = {
  registerCommand(id: string, fn: (...args: any[]) => unknown): Disposable {
    if (state.commands.has(id)) {
      throw new Error(`command '${id}' already exists`);
    }
    state.commands.set(id, fn);
    return new Disposable(() => state.commands.delete(id));
  },
  async executeCommand(command: string, ...args: unknown[]): Promise<unknown> {
    state.executed.push({ command, args });
    const fn = state.commands.get(command);
    return fn ? fn(...args) : undefined;
  },
};

export const extensions = {
  getExtension: (_id: string): unknown => undefined,
};
