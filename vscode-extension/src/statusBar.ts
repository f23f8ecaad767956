/** The status bar item: renders `computeStatus` and toggles `tandem.enable` on click. */
import * as vscode from 'vscode';
import { computeStatus, type StatusInput, type StatusView } from './logic/status';

export class TandemStatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private last: StatusView | undefined;

  constructor() {
    this.item = vscode.window.createStatusBarItem('tandem.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'Tandem';
    this.item.command = 'tandem.toggle';
    this.item.show();
  }

  render(input: StatusInput): StatusView {
    const view = computeStatus(input);
    this.last = view;
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor =
      view.kind === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : view.kind === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
    return view;
  }

  get view(): StatusView | undefined {
    return this.last;
  }

  dispose(): void {
    this.item.dispose();
  }
}
