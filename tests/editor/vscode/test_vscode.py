"""Tandem's VS Code extension in real VS Code: code-server driven by Playwright in headless Chromium.

VS Code's desktop build cannot be downloaded here; code-server is the same workbench and
extension host served to a browser. The test installs its tools once (tools.py), installs
the built .vsix into a fresh, isolated code-server, opens a workspace in headless Chromium
and does what a user does, checking what the user sees:

  1. the extension activates and starts `python -m tandem` (tandem.python = this Python,
     tandem.modelPath = the tiny test model, both in the remote machine settings: see
     codeserver.py); the status bar item goes from loading to ready with the device
     ("Tandem cpu") and names the model in its tooltip;
  2. in example.py (`def add(a, b):`), End + Enter puts the cursor on the indented body
     line; Tandem's ghost text `return a + b` appears; Tab accepts it; Ctrl+S writes it;
  3. hovering the mouse over the accepted text shows Tandem's hover (markdown from the server:
     "Tandem wrote this", the model `tandem-tiny-test`, then the explanation once written),
     which proves the inline completion's accept command (`tandem.completionAccepted`)
     reached the server; the server's "remembered inline" log line says so too;
  4. typing a function into an empty file gets its body suggested the same way;
  5. in square.py (a stub with a docstring and a doctest), with the cursor on the `def` line
     the lightbulb shows; Ctrl+. (Quick Fix) and the lightbulb's menu list "Generate function
     from docstring"; choosing it replaces `...` with `return x * x`
     (tandem.functionPrompt = "fim" for the tiny model), Ctrl+S writes it, and the hover
     over it says it was generated from its docstring and that its example passes;
  6. the command palette lists the Tandem commands; "Tandem: Show Log" shows the log
     channel with the extension's and the server's lines.

Screenshots, the Tandem channel's log, code-server's log and timings.json go to
$TANDEM_VSCODE_ARTIFACTS (default: a new /tmp/tandem-vscode-* folder); their paths are printed.
On a failure the code-server folder (settings, VS Code's logs, the workspace) is kept too
(always with TANDEM_VSCODE_KEEP=1). TANDEM_VSCODE_MODEL=<dir> uses an already built model;
TANDEM_SKIP_VSCODE=1 skips the check. The tiny model knows models/data/tiny_corpus.py by
heart, so what it writes is known (the same case as tests/editor/test_neovim.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .codeserver import CodeServer
from .tools import ToolsUnavailable, ensure_tools, ensure_vsix

pytestmark = [pytest.mark.vscode, pytest.mark.timeout(1200)]

EXTENSION_ID = "tandem.tandem"
READY_TIMEOUT_MS = 120_000   # server start + tiny model load on a busy 2-core machine
GHOST_TIMEOUT_MS = 30_000
UI_TIMEOUT_MS = 30_000
GENERATE_TIMEOUT_MS = 180_000  # "Generate function from docstring": candidates + running the example
HOVER_TIMEOUT_S = 120          # until the hover shows the explanation (written in the background)

# Exactly this: the tiny model learnt it (other text around it can make it write something else).
SQUARE = 'def square(x):\n    """Return x multiplied by itself.\n\n    >>> square(3)\n    9\n    """\n    ...\n'
TITLE = "Generate function from docstring"
SQUARE_DONE = SQUARE.replace("    ...\n", "    return x * x\n")

# Records each change of the Tandem status bar item from page load on (a MutationObserver,
# so a short "loading" phase is seen even if it lasts less than one Python-side poll).
STATUS_RECORDER = """
(() => {
  window.__tandemStatus = [];
  const t0 = performance.now();
  let last = null;
  const record = () => {
    const el = [...document.querySelectorAll('.statusbar-item')].find((e) => (e.id || '').endsWith('tandem.status'));
    const icon = el && el.querySelector('.codicon');
    const snap = el ? { text: el.innerText.replace(/\\s+/g, ' ').trim(),
                        icon: icon ? [...icon.classList].filter((c) => c.startsWith('codicon-')).join(' ') : '',
                        label: el.getAttribute('aria-label') || '' }
                    : { text: null, icon: '', label: '' };  // not created yet
    const key = JSON.stringify(snap);
    if (key !== last) {
      last = key;
      window.__tandemStatus.push({ ms: Math.round(performance.now() - t0), ...snap });
    }
  };
  const start = () => {
    record();
    new MutationObserver(record).observe(document.body,
      { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['aria-label', 'class'] });
  };
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
"""

GHOST_TEXT_JS = """() => {
  const ed = document.querySelector('.editor-group-container.active .monaco-editor') || document.querySelector('.monaco-editor');
  if (!ed) return null;
  const parts = [...ed.querySelectorAll('.ghost-text-decoration, .ghost-text-decoration-preview, .ghost-text')];
  if (!parts.length) return null;
  return parts.map((e) => e.textContent).join('').replace(/\\u00a0/g, ' ');
}"""

EDITOR_LINES_JS = """() => {
  const ed = document.querySelector('.editor-group-container.active .monaco-editor') || document.querySelector('.monaco-editor');
  if (!ed) return null;
  const rows = [...ed.querySelectorAll('.view-lines .view-line')]
    .map((e) => [parseFloat(e.style.top) || 0, e.textContent.replace(/\\u00a0/g, ' ')]);
  rows.sort((a, b) => a[0] - b[0]);
  return rows.map((r) => r[1]);
}"""


# The visible hover widget's text (VS Code keeps hidden ones in the DOM).
HOVER_TEXT_JS = """() => {
  const vis = (e) => { const r = e.getBoundingClientRect(); const cs = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none'; };
  const hs = [...document.querySelectorAll('.monaco-hover')].filter(vis);
  return hs.length ? hs.map((e) => e.innerText).join('\\n') : null;
}"""

# Where `word` is drawn on the editor line whose text is `line`: the centre of its characters.
WORD_BOX_JS = """([line, word]) => {
  const ed = document.querySelector('.editor-group-container.active .monaco-editor');
  if (!ed) return null;
  for (const el of ed.querySelectorAll('.view-lines .view-line')) {
    // The line's own text (not ghost text drawn in it): the word may span several tokens.
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    const nodes = [];
    let text = '', node;
    while ((node = walker.nextNode())) {
      if (node.parentElement.closest('[class*="ghost-text"]')) continue;
      nodes.push([node, text.length]);
      text += node.textContent;
    }
    text = text.replace(/\\u00a0/g, ' ');
    if (text !== line) continue;
    const i = text.indexOf(word);
    if (i < 0) return null;
    const at = (k) => { let j = nodes.length - 1; while (j > 0 && nodes[j][1] > k) j--; return [nodes[j][0], k - nodes[j][1]]; };
    const range = document.createRange();
    range.setStart(...at(i));
    range.setEnd(...at(i + word.length - 1));
    range.setEnd(range.endContainer, range.endOffset + 1);
    const r = range.getBoundingClientRect();
    return { x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height };
  }
  return null;
}"""

# The lightbulb in the active editor (a widget in the text, or a glyph in the gutter): its classes and box.
LIGHTBULB_JS = """() => {
  const ed = document.querySelector('.editor-group-container.active .monaco-editor');
  if (!ed) return null;
  const found = [...ed.querySelectorAll('.lightBulbWidget, [class*="codicon-light-bulb"], [class*="codicon-lightbulb"]')]
    .filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0
                     && getComputedStyle(e).visibility !== 'hidden'; });
  if (!found.length) return null;
  const r = found[0].getBoundingClientRect();
  return { cls: found[0].className, x: r.left + r.width / 2, y: r.top + r.height / 2 };
}"""

# The open Quick Fix / code action menu: its rows' text.
ACTION_MENU_JS = """() => {
  const w = [...document.querySelectorAll('.action-widget')].find((e) => e.getBoundingClientRect().height > 0);
  if (!w) return null;
  return [...w.querySelectorAll('.monaco-list-row')].map((r) => r.innerText.replace(/\\s+/g, ' ').trim());
}"""


class Editor:
    """One code-server with Tandem, one browser page, and where the artifacts go."""

    def __init__(self, page, server: CodeServer, workspace: Path, artifacts: Path, extensions: str, timings: dict):
        self.page = page
        self.server = server
        self.workspace = workspace
        self.artifacts = artifacts
        self.extensions = extensions
        self.timings = timings
        self.shots: list[Path] = []

    def shot(self, name: str, settled: bool = False) -> Path:
        """A screenshot; `settled`: finite CSS animations (a hover's fade-in) shown finished."""
        path = self.artifacts / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), animations="disabled" if settled else "allow")
        self.shots.append(path)
        print(f"screenshot: {path}")
        return path

    def statuses(self) -> list[dict]:
        return self.page.evaluate("() => window.__tandemStatus || []")

    def status(self) -> dict | None:
        s = self.statuses()
        return s[-1] if s else None

    def ghost_text(self) -> str | None:
        return self.page.evaluate(GHOST_TEXT_JS)

    def lines(self) -> list[str]:
        return self.page.evaluate(EDITOR_LINES_JS) or []

    def cursor_label(self) -> str:
        """The status bar's "Ln x, Col y"."""
        return self.page.locator("#status\\.editor\\.selection").inner_text(timeout=UI_TIMEOUT_MS).strip()

    def channel_log(self) -> str:
        """The Tandem output channel as VS Code writes it to its logs folder."""
        logs = sorted((self.server.user_data / "logs").rglob("Tandem.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_text(errors="replace") if logs else ""

    def wait_ready(self) -> dict:
        self.page.wait_for_function(
            "() => { const s = window.__tandemStatus || []; const l = s[s.length - 1];"
            " return l && l.icon.includes('codicon-sparkle'); }", timeout=READY_TIMEOUT_MS, polling=100)
        return self.status()

    def open_file(self, name: str) -> None:
        """Click the file in the Explorer, as a person does, and wait for its editor tab."""
        self.page.get_by_role("treeitem", name=name).first.click(timeout=UI_TIMEOUT_MS)
        self.page.locator(f".tabs-container .tab[aria-label^='{name}']").first.wait_for(timeout=UI_TIMEOUT_MS)
        self.page.locator(".editor-group-container.active .monaco-editor .view-lines").first.wait_for(
            timeout=UI_TIMEOUT_MS)
        self.page.locator(".editor-group-container.active .monaco-editor .view-lines").first.click()

    def wait_file(self, name: str, text: str, timeout_ms: int = UI_TIMEOUT_MS) -> str:
        """Wait until the file on disk holds `text`; returns what it holds."""
        path = self.workspace / name
        deadline = time.monotonic() + timeout_ms / 1000
        while (now := path.read_text()) != text and time.monotonic() < deadline:
            time.sleep(0.05)
        return now

    def hover_text(self) -> str | None:
        return self.page.evaluate(HOVER_TEXT_JS)

    def hover_word(self, line: str, word: str, until, timeout_s: float, name: str) -> tuple[list[str], float]:
        """Move the mouse onto `word` in the editor line `line`, as a person does, until the
        hover's text satisfies `until(text)`. Each try first closes the hover (Escape, which
        also dismisses ghost text, whose drawing would change the line) and moves the mouse
        off the text, so that VS Code asks the server again. Returns the texts of the hovers
        shown, in order (the last one satisfies `until`), and the seconds it took."""
        page = self.page
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        seen: list[str] = []
        while True:
            page.keyboard.press("Escape")
            try:
                page.wait_for_function(f"() => !({HOVER_TEXT_JS})() && !({GHOST_TEXT_JS})()", timeout=5_000,
                                       polling=50)
            except Exception:
                pass  # still shown: the next hover replaces it; a ghost is caught by the line check
            box = page.evaluate(WORD_BOX_JS, [line, word])
            assert box, f"{word!r} is not drawn in a line {line!r}; lines {self.lines()!r}"
            page.mouse.move(box["x"], box["y"] + 300)  # off the text: below these short files
            page.mouse.move(box["x"] - 3, box["y"], steps=3)
            page.mouse.move(box["x"], box["y"], steps=3)
            text = None
            try:
                page.wait_for_function(f"() => !!({HOVER_TEXT_JS})()", polling=50,
                                       timeout=max(1_000, min(15_000, (deadline - time.monotonic()) * 1000)))
                # Its content may still be coming ("Loading..."): let it settle.
                page.wait_for_function(f"() => !(({HOVER_TEXT_JS})() || '').includes('Loading')",
                                       timeout=10_000, polling=50)
                text = self.hover_text()
            except Exception:
                pass
            if text is not None:
                seen.append(text)
                if until(text):
                    return seen, time.monotonic() - t0
            if time.monotonic() >= deadline:
                self.shot(f"{name}-not-shown")
                raise AssertionError(f"hovering {word!r} never showed what was wanted within {timeout_s:.0f} s; "
                                     f"hovers shown: {seen!r}")
            time.sleep(1.0)

    def wait_action_menu(self, name: str) -> list[str]:
        """Wait for the code action menu to list TITLE; screenshot it; returns its rows."""
        try:
            self.page.wait_for_function(
                f"() => (({ACTION_MENU_JS})() || []).some((r) => r.startsWith({json.dumps(TITLE)}))",
                timeout=UI_TIMEOUT_MS, polling=50)
        finally:
            self.shot(name)
        return self.page.evaluate(ACTION_MENU_JS)

    def wait_ghost(self, expected: str | None = None, timeout_ms: int = GHOST_TIMEOUT_MS) -> tuple[str, float]:
        """Wait for ghost text (equal to `expected` when given); returns it and the wait in ms."""
        t0 = time.monotonic()
        fn = (f"() => !!({GHOST_TEXT_JS})()" if expected is None
              else f"() => ({GHOST_TEXT_JS})() === {json.dumps(expected)}")
        try:
            self.page.wait_for_function(fn, timeout=timeout_ms, polling=20)
        except Exception as e:  # playwright TimeoutError: say what was on screen
            self.shot("no-ghost-text")
            raise AssertionError(f"no ghost text {expected!r} within {timeout_ms} ms; shown: {self.ghost_text()!r}; "
                                 f"lines {self.lines()!r}; status {self.status()}") from e
        return self.ghost_text(), (time.monotonic() - t0) * 1000


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("TANDEM_VSCODE_ARTIFACTS") or tempfile.mkdtemp(prefix="tandem-vscode-"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nartifacts (screenshots, logs): {path}")
    return path


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    """The tiny test model ($TANDEM_VSCODE_MODEL: an already built one, to skip the build)."""
    if os.environ.get("TANDEM_VSCODE_MODEL"):
        return Path(os.environ["TANDEM_VSCODE_MODEL"])
    return request.getfixturevalue("tiny_model")


@pytest.fixture(scope="module")
def editor(model_dir, artifacts, request):
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        tools = ensure_tools()
        timings["tools_s"] = time.monotonic() - t0
        t = time.monotonic()
        vsix = ensure_vsix()
        timings["vsix_s"] = time.monotonic() - t
    except ToolsUnavailable as e:
        pytest.fail(f"cannot set up the VS Code check: {e}\n(set TANDEM_SKIP_VSCODE=1 to skip it)")
    sync_playwright = tools.import_playwright()

    work = Path(tempfile.mkdtemp(prefix="tandem-code-server-"))
    workspace = work / "workspace"
    workspace.mkdir()
    (workspace / "example.py").write_text("def add(a, b):\n")
    (workspace / "typed.py").write_text("")
    (workspace / "square.py").write_text(SQUARE)
    machine_settings = {"tandem.python": sys.executable, "tandem.modelPath": str(model_dir),
                        "tandem.functionPrompt": "fim"}  # the tiny model has no chat template
    server = CodeServer(tools, work, {"workbench.secondarySideBar.defaultVisibility": "hidden"}, machine_settings)
    ok = False
    try:
        t = time.monotonic()
        extensions = server.install_extension(vsix)
        timings["install_extension_s"] = time.monotonic() - t
        t = time.monotonic()
        url = server.start()
        timings["code_server_start_s"] = time.monotonic() - t
        with sync_playwright() as p:
            chromium = "/usr/lib/chromium/chromium" if Path("/usr/lib/chromium/chromium").exists() else tools.chromium
            browser = p.chromium.launch(executable_path=str(chromium), headless=True, timeout=60_000)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                context.set_default_timeout(UI_TIMEOUT_MS)
                context.add_init_script(STATUS_RECORDER)
                page = context.new_page()
                t = time.monotonic()
                page.goto(f"{url}/?folder={workspace}", timeout=60_000)
                page.locator(".monaco-workbench").wait_for(timeout=90_000)
                timings["workbench_s"] = time.monotonic() - t
                ed = Editor(page, server, workspace, artifacts, extensions, timings)
                failed_before = request.session.testsfailed
                yield ed
                ok = request.session.testsfailed == failed_before and not os.environ.get("TANDEM_VSCODE_KEEP")
            finally:
                browser.close()
    finally:
        server.stop()
        timings["total_s"] = time.monotonic() - t0
        logs = sorted((work / "user-data" / "logs").rglob("Tandem.log"))
        for src in logs[-1:]:
            shutil.copy(src, artifacts / "Tandem.log")
        if (server.logs / "code-server.log").exists():
            shutil.copy(server.logs / "code-server.log", artifacts / "code-server.log")
        (artifacts / "timings.json").write_text(json.dumps(timings, indent=2))
        print(f"\ntimings: {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"code-server folder kept: {work}")


def test_extension_activates_and_status_bar_goes_from_loading_to_ready(editor):
    assert f"{EXTENSION_ID}@" in editor.extensions  # installed from the .vsix
    t = time.monotonic()
    ready = editor.wait_ready()
    editor.timings["ready_after_workbench_s"] = time.monotonic() - t
    editor.shot("ready")
    history = editor.statuses()
    print("status bar item over time:", json.dumps(history, indent=1))
    texts = [s["text"] for s in history]
    # Activation: the item exists, first spinning, then loading the model, then ready.
    assert any("codicon-loading" in s["icon"] for s in history), history
    loading = [i for i, s in enumerate(history) if s["text"] == "Tandem: loading"]
    assert loading, f"never showed 'Tandem: loading': {texts}"
    assert loading[0] < len(history) - 1
    # Ready, with the device the server reported, and the model in the tooltip.
    device = ready["text"].removeprefix("Tandem ")
    assert device in ("cpu", "cuda"), ready  # "Tandem cpu" here; "Tandem cuda" with onnxruntime-gpu
    assert "codicon-sparkle" in ready["icon"]
    assert f"Device: {device}" in ready["label"] and "Model: tandem-tiny-test" in ready["label"], ready["label"]


def test_ghost_text_appears_and_tab_accepts_it(editor):
    page = editor.page
    editor.wait_ready()
    editor.open_file("example.py")
    page.keyboard.press("Control+Home")
    page.keyboard.press("End")
    page.keyboard.press("Enter")  # VS Code indents the body line: cursor at "    |"
    ghost, ms = editor.wait_ghost("return a + b")
    editor.timings["ghost_ms"] = ms
    shot = editor.shot("ghost-text")
    print(f"ghost text {ghost!r} on screen {ms:.0f} ms after Enter ({shot})")
    assert editor.lines()[:2] == ["def add(a, b):", "    return a + b"]  # the ghost is drawn inline
    assert editor.cursor_label() == "Ln 2, Col 5"  # not inserted yet: the cursor is before it
    assert (editor.workspace / "example.py").read_text() == "def add(a, b):\n"

    page.keyboard.press("Tab")
    page.wait_for_function(f"() => !({GHOST_TEXT_JS})()", timeout=UI_TIMEOUT_MS, polling=20)
    page.wait_for_function("() => document.querySelector('#status\\\\.editor\\\\.selection')"
                           "?.innerText.includes('Col 17')", timeout=UI_TIMEOUT_MS)
    assert editor.lines()[:2] == ["def add(a, b):", "    return a + b"]
    assert editor.cursor_label() == "Ln 2, Col 17"  # after the accepted text
    page.keyboard.press("Control+s")
    path = editor.workspace / "example.py"
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while path.read_text() != "def add(a, b):\n    return a + b\n" and time.monotonic() < deadline:
        time.sleep(0.05)
    editor.shot("accepted-and-saved")
    assert path.read_text() == "def add(a, b):\n    return a + b\n"
    # The status bar now shows the last completion's latency too.
    assert re.fullmatch(r"Tandem (cpu|cuda) \d+(\.\d)? m?s", editor.status()["text"]), editor.status()


def test_hover_over_accepted_completion_shows_tandems_provenance(editor):
    """The accept command (`tandem.completionAccepted`, sent by VS Code when Tab accepts the
    ghost text) reached the server: it remembered the text, and its hover says so."""
    assert (editor.workspace / "example.py").read_text() == "def add(a, b):\n    return a + b\n", \
        "needs the accepted completion of test_ghost_text_appears_and_tab_accepts_it"
    # The cursor away from the end of line 2, where the tiny model offers more ghost text.
    editor.page.keyboard.press("Control+Home")
    # The hover's provenance comes at once; its explanation, written in the background since
    # the acceptance, may not be there yet ("Tandem is writing the explanation"): hover again.
    seen, s = editor.hover_word("    return a + b", "a + b", lambda t: "Explained" in t, HOVER_TIMEOUT_S, "hover")
    editor.timings["hover_explained_s"] = s
    editor.shot("hover-accepted-completion", settled=True)
    print(f"{len(seen)} hover(s) in {s:.1f} s; the last:\n{seen[-1]}")
    for text in seen:  # every hover, the first one too, is Tandem's, with the provenance
        assert text.startswith("Tandem wrote this · inline completion · accepted "), seen
        assert "Model tandem-tiny-test" in text and "Confidence:" in text, seen
    assert re.search(r"Explained .* by tandem-tiny-test", seen[-1]), seen[-1]
    editor.page.keyboard.press("Escape")
    # The server's log line for the accepted completion (12 characters: "return a + b").
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while "remembered inline (12 chars)" not in editor.channel_log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert re.search(r"INFO tandem\.features\.tracking: remembered inline \(12 chars\) at \d+ in \S+example\.py",
                     editor.channel_log()), editor.channel_log()[-3000:]


def test_typing_a_function_gets_its_body_suggested(editor):
    page = editor.page
    editor.wait_ready()
    editor.open_file("typed.py")
    page.keyboard.press("Control+End")
    # Typed key by key; VS Code closes the bracket itself and types over the `)`.
    page.keyboard.type("def add(a, b):", delay=40)
    page.keyboard.press("Enter")
    ghost, ms = editor.wait_ghost("return a + b")
    editor.shot("typed-ghost-text")
    print(f"after typing: ghost text {ghost!r} {ms:.0f} ms after Enter")
    page.keyboard.press("Tab")
    page.wait_for_function(f"() => !({GHOST_TEXT_JS})()", timeout=UI_TIMEOUT_MS, polling=20)
    page.keyboard.press("Control+s")
    path = editor.workspace / "typed.py"
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while "return" not in path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.read_text() == "def add(a, b):\n    return a + b"


def test_resting_the_cursor_in_an_edited_file_warms_the_prompt_there(editor):
    """VS Code asks for code actions wherever the cursor moves (the light bulb); in a file the
    user edited, the server then computes the prompt there before the first keystroke
    (server/tandem/features/warm.py) and says so in its log, once at INFO."""
    assert "return a + b" in (editor.workspace / "typed.py").read_text(), \
        "needs the edited typed.py of test_typing_a_function_gets_its_body_suggested"
    editor.page.keyboard.press("Control+Home")  # a cursor move in the edited file; then rest
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while "warmed the prompt where the cursor rests" not in editor.channel_log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert re.search(r"INFO tandem\.features\.warm: warmed the prompt where the cursor rests \(\d+ tokens computed",
                     editor.channel_log()), editor.channel_log()[-3000:]


def test_generate_function_from_docstring_in_the_quick_fix_menu(editor):
    page = editor.page
    editor.wait_ready()
    editor.open_file("square.py")
    page.keyboard.press("Control+Home")  # on the `def` line
    page.keyboard.press("Escape")
    assert editor.lines()[:7] == SQUARE.splitlines()
    # VS Code asks for code actions where the cursor is and shows its lightbulb.
    try:
        page.wait_for_function(f"() => !!({LIGHTBULB_JS})()", timeout=UI_TIMEOUT_MS, polling=50)
    finally:
        editor.shot("lightbulb")
    print(f"lightbulb: {page.evaluate(LIGHTBULB_JS)}")
    # Ctrl+. (Quick Fix...) lists the action...
    t = time.monotonic()
    page.keyboard.press("Control+.")
    rows = editor.wait_action_menu("quick-fix-menu")
    editor.timings["quick_fix_menu_s"] = time.monotonic() - t
    print(f"Quick Fix menu (Ctrl+.) after {editor.timings['quick_fix_menu_s']:.1f} s: {rows}")
    page.keyboard.press("Escape")
    page.wait_for_function(f"() => !({ACTION_MENU_JS})()", timeout=UI_TIMEOUT_MS, polling=50)
    # ...and so does the lightbulb's menu; it is chosen there.
    bulb = page.evaluate(LIGHTBULB_JS)
    assert bulb, "the lightbulb went away after the Quick Fix menu closed"
    t = time.monotonic()
    page.mouse.click(bulb["x"], bulb["y"])
    rows = editor.wait_action_menu("lightbulb-menu")
    editor.timings["lightbulb_menu_s"] = time.monotonic() - t
    print(f"lightbulb menu after {editor.timings['lightbulb_menu_s']:.1f} s: {rows}")
    t = time.monotonic()
    item = page.locator(".action-widget .monaco-list-row", has_text=TITLE).first
    item.hover()  # the row is focused under the mouse, as with a person's click
    item.click()
    try:
        page.wait_for_function(f"() => (({EDITOR_LINES_JS})() || []).includes('    return x * x')",
                               timeout=GENERATE_TIMEOUT_MS, polling=100)
    except Exception as e:
        editor.shot("not-generated")
        raise AssertionError(f"the body was not written within {GENERATE_TIMEOUT_MS} ms; lines {editor.lines()!r}; "
                             f"log:\n{editor.channel_log()[-3000:]}") from e
    editor.timings["generate_function_s"] = time.monotonic() - t
    print(f"body written {editor.timings['generate_function_s']:.1f} s after choosing the action")
    assert editor.lines()[:7] == SQUARE_DONE.splitlines(), editor.lines()
    page.keyboard.press("Control+s")
    saved = editor.wait_file("square.py", SQUARE_DONE)
    editor.shot("function-generated-and-saved")
    assert saved == SQUARE_DONE, saved
    # The action's command told the server: the hover shows the function's provenance and check.
    seen, s = editor.hover_word("    return x * x", "x * x", lambda t: "Tandem wrote this" in t, UI_TIMEOUT_MS / 1000,
                                "hover-function")
    editor.shot("hover-generated-function", settled=True)
    text = seen[-1]
    print(f"hover over the generated body ({s:.1f} s):\n{text}")
    assert "function generated from its docstring" in text and "tandem-tiny-test" in text, text
    assert "Verification: ✅ 1/1 examples pass" in text, text
    page.keyboard.press("Escape")


def test_commands_in_palette_and_show_log_shows_the_server_log(editor):
    page = editor.page
    editor.wait_ready()
    editor.open_file("example.py")  # "Explain Selection" is listed only when an editor is open
    page.keyboard.press("Escape")
    page.keyboard.press("F1")
    box = page.locator(".quick-input-widget input")
    box.wait_for(timeout=UI_TIMEOUT_MS)
    box.fill(">Tandem:")
    titles = ["Enable Completions", "Disable Completions", "Toggle Completions", "Snooze Completions...",
              "Restart Server", "Build Default Model", "Explain Selection", "Show Log"]
    rows = page.locator(".quick-input-list .monaco-list-row")
    try:
        page.wait_for_function(
            "n => document.querySelectorAll('.quick-input-list .monaco-list-row').length >= n",
            arg=len(titles), timeout=UI_TIMEOUT_MS)
    finally:
        editor.shot("command-palette")
    labels = [r.get_attribute("aria-label") or "" for r in rows.all()]
    print("palette:", labels)
    for title in titles:
        assert any(label.startswith(f"Tandem: {title}") for label in labels), (title, labels)

    box.fill(">Tandem: Show Log")
    page.locator(".quick-input-list .monaco-list-row[aria-label^='Tandem: Show Log']").first.wait_for(
        timeout=UI_TIMEOUT_MS)
    page.keyboard.press("Enter")
    # The Output view's text (the panel's other editors, e.g. its filter box, are small inputs).
    output_js = ("() => [...document.querySelectorAll('.part.panel .monaco-editor .view-lines')]"
                 ".map((e) => e.innerText).join('\\n').replace(/\\u00a0/g, ' ')")
    # The channel scrolls to its end, and the server logs every completion: filter it to the
    # line wanted, with the Output view's own filter box, as a person would.
    page.locator(".part.panel .monaco-editor .view-lines").first.wait_for(timeout=UI_TIMEOUT_MS)
    page.locator(".part.panel .viewpane-filter input").first.fill("model ready")
    try:
        page.wait_for_function(f"() => ({output_js})().includes('model ready')", timeout=UI_TIMEOUT_MS)
    finally:
        editor.shot("log-channel")
    text = page.evaluate(output_js)
    print("log channel (visible part):\n" + text)
    # The Output view shows the "Tandem" channel.
    channel = page.evaluate("() => { const s = document.querySelector('.part.panel select.monaco-select-box');"
                            " return s ? s.options[s.selectedIndex].text : null; }")
    assert channel == "Tandem", channel
    # The server's own lines (window/logMessage) are in it; the view is scrolled to the end.
    assert re.search(r"model ready:.*? on (cpu|cuda)", text, re.S), text  # lines wrap in the view
    # The whole channel, as VS Code keeps it on disk: the extension's lines come first.
    log = editor.channel_log()
    assert f"[info] Python: {sys.executable} (setting)" in log, log[:2000]
    assert "[info] INFO tandem.server: model ready:" in log, log[:2000]
