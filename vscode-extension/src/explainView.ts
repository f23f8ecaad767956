/**
 * Shows an explanation (markdown) in VS Code's markdown preview, through a read-only virtual
 * document, so nothing asks to be saved. Falls back to the plain document.
 */
import * as vscode from 'vscode';

export const EXPLAIN_SCHEME = 'tandem-explain';

export class ExplainView implements vscode.TextDocumentContentProvider, vscode.Disposable {
  private readonly docs = new Map<string, string>();
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  private readonly registration: vscode.Disposable;
  private counter = 0;
  readonly onDidChange = this.changed.event;

  constructor() {
    this.registration = vscode.workspace.registerTextDocumentContentProvider(EXPLAIN_SCHEME, this);
  }

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.docs.get(uri.toString()) ?? '';
  }

  async show(markdown: string, title: string): Promise<void> {
    this.counter += 1;
    const safe = title.replace(/[^A-Za-z0-9_.-]+/g, '-').slice(0, 60) || 'selection';
    const uri = vscode.Uri.from({ scheme: EXPLAIN_SCHEME, path: `/explain-${safe}-${this.counter}.md` });
    this.docs.set(uri.toString(), markdown);
    try {
      await vscode.commands.executeCommand('markdown.showPreviewToSide', uri);
    } catch {
      const doc = await vscode.workspace.openTextDocument(uri);
      await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside, preview: true });
    }
  }

  dispose(): void {
    this.registration.dispose();
    this.changed.dispose();
    this.docs.clear();
  }
}
