"""Tandem, live in a real editor: `make demo`.

Starts a headless Neovim 0.12 with Tandem as its language server (the same setup a user
writes in their init.lua), opens a few realistic Python files, and for each one puts the
cursor somewhere, enters insert mode, waits for Tandem's ghost text, accepts it with <Tab>
and saves. Prints what the editor showed, how long it took, and the code that was written.
Then it runs "Generate function from docstring" from Neovim's code-action menu on a stub
with doctest examples and hovers the body it wrote (tests/editor/code_action.lua).

    python tests/editor/demo.py                    # the default model (built by `make model`)
    python tests/editor/demo.py --model PATH       # any model bundle, e.g. the tiny test model
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.editor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.editor.nvim import Case, NvimError, NvimNotFound, find_nvim, nvim_version, run_cases  # noqa: E402

# Realistic files; `|` is where the cursor is when the user starts typing.
SAMPLES = [
    Case("An empty function body after its docstring", '''\
"""Small statistics helpers."""


def average(numbers):
    """Return the arithmetic mean of a non-empty list of numbers."""
    |
''', "stats.py"),
    Case("In the middle of a line, inside a call", '''\
def clamp(value, low, high):
    """Limit value to the range [low, high]."""
    return max(low, min(|))
''', "bounds.py"),
    Case("The body of a for loop", '''\
def count_words(text):
    """Count how often each word occurs in text."""
    counts = {}
    for word in text.split():
        |
    return counts
''', "words.py"),
]

# "Generate function from docstring", then a hover over what it wrote.
FUNCTION_SAMPLE = ("text.py", '''\
def is_palindrome(text):
    """Return True when text reads the same forwards and backwards, ignoring case and spaces.

    >>> is_palindrome("Never odd or even")
    True
    >>> is_palindrome("Tandem")
    False
    """
''')

CURSOR = "\u258f"  # ▏ marks the cursor in the printed context
BAR = "\u2500" * 78


def _color(code: str):
    use = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    return (lambda s: f"\033[{code}m{s}\033[0m") if use else (lambda s: s)


dim, bold, green, red, grey = _color("2"), _color("1"), _color("32"), _color("31"), _color("90")


def numbered(lines: list[str], first: int, mark: set[int] = frozenset()) -> str:
    out = []
    for i, line in enumerate(lines, start=first):
        out.append(f"  {i:>3} {'>' if i in mark else ' '}\u2502 {line}")
    return "\n".join(out)


def context(text: str, line: int, col_bytes: int, around: int = 4) -> str:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cur = lines[line]
    col = len(cur.encode("utf-8")[:col_bytes].decode("utf-8", "replace"))
    shown = lines[:]
    shown[line] = cur[:col] + CURSOR + cur[col:]
    lo, hi = max(0, line - around), min(len(lines), line + around + 1)
    return numbered(shown[lo:hi], lo + 1, {line + 1})


def changed_region(before: str, after: str, line: int, around: int = 2) -> str:
    """The lines of `after` from the cursor line to the end of what was inserted, with context."""
    b, a = before.split("\n"), after.split("\n")
    for x in (a, b):
        if x and x[-1] == "":
            x.pop()
    # lines common at the end of both files stay the same: everything in between is new
    tail = 0
    while tail < min(len(a), len(b)) - line - 1 and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    new_end = len(a) - tail
    lo, hi = max(0, line - around), min(len(a), new_end + around)
    return numbered(a[lo:hi], lo + 1, set(range(line + 1, new_end + 1)))


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "?"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a model bundle directory (default: the model built by `make model`)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each ghost text (default 60)")
    ap.add_argument("--max-tokens-multi-line", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep Neovim's temp dir (files, init.lua, logs)")
    args = ap.parse_args(argv)

    from tandem.model.loader import ModelError, default_model_path, resolve_model

    model_path = Path(args.model).expanduser() if args.model else default_model_path()
    print(bold("Tandem demo: AI code completion in a real editor (headless Neovim)"))
    print(BAR)
    try:
        files = resolve_model(model_path if args.model else None, "cuda" if args.device == "cuda" else "cpu")
    except ModelError as e:
        print(red(f"The model is not ready: {e}"), file=sys.stderr)
        if not args.model:
            print("Run `make model` first (it builds the default model; `make demo` does it for you).",
                  file=sys.stderr)
        return 2
    try:
        nvim = find_nvim()
    except NvimNotFound as e:
        print(red(str(e)), file=sys.stderr)
        return 2
    print(f"Editor : {nvim_version(nvim)}  ({nvim})")
    print(f"Server : {sys.executable} -m tandem   (stdio LSP, textDocument/inlineCompletion)")
    print(f"Model  : {model_path}")
    print(f"         variant {files.directory.name}: {files.label}")
    print(grey("Each file is opened, the cursor placed at \u258f, insert mode entered; Tandem's ghost text "
               "appears,\nis accepted with <Tab>, and the file is saved. Times are measured inside Neovim."))
    print(BAR)
    print("Starting Neovim and loading the model ...", flush=True)

    settings = {"modelPath": str(model_path), "device": args.device,
                "maxTokensMultiLine": args.max_tokens_multi_line}
    try:
        run = run_cases(SAMPLES, settings, ready_timeout=max(120.0, args.timeout), ghost_timeout=args.timeout,
                        keep=args.keep, keep_going=True)
    except NvimError as e:
        print(red("The demo failed:"), file=sys.stderr)
        print(textwrap.indent(str(e), "  "), file=sys.stderr)
        return 1

    ready = next((s for s in run.statuses if s.get("state") == "ready"), None)
    if ready:
        print(f"Model ready {fmt_ms(ready.get('at_ms'))} after Neovim started: {ready.get('message')}")
    failed = []
    for n, (case, r) in enumerate(zip(SAMPLES, run.cases), start=1):
        print()
        print(bold(f"[{n}/{len(SAMPLES)}] {case.name}") + grey(f"   ({r.path.name}, line {r.line + 1})"))
        print(context(r.text_before, r.line, r.col))
        if r.ghost_text is None:
            answers = r.answers
            print(red(f"  No ghost text appeared: {r.error or 'unknown reason'}."))
            print(grey(f"  The server answered {len(answers)} request(s): {answers!r:.300}"))
            failed.append(case.name)
            continue
        multi = "\n" in r.ghost_text
        print(f"  Tandem's ghost text appeared {bold(fmt_ms(r.ghost_ms))} after entering insert mode "
              + grey(f"(Neovim waits {fmt_ms(r.debounce_ms)} before asking; the server answered in "
                     f"{fmt_ms(r.request_ms)})"))
        print("  Suggestion" + (" (multi-line)" if multi else "") + ":")
        # A multi-line suggestion's later lines carry their own indentation: start its first
        # line at the cursor's column so the block reads as it will be in the file.
        line_text = r.text_before.split("\n")[r.line]
        pad = " " * len(line_text.encode("utf-8")[:r.col].decode("utf-8", "replace")) if multi else ""
        print("\n".join("      " + green(x) for x in (pad + r.ghost_text).split("\n")))
        if r.item and r.item.get("range") and r.item["range"]["start"] != r.item["range"]["end"]:
            rng = r.item["range"]
            print(grey(f"  (it replaces the text from column {rng['start']['character'] + 1} to "
                       f"{rng['end']['character'] + 1} of the line, so nothing is typed twice)"))
        print("  What the editor showed (ghost text in place):")
        print(textwrap.indent("\n".join(r.screen or []), "      " + grey("\u2502 ")))
        ok = r.accepted and r.final_text is not None and r.final_text == r.buffer_text
        print(f"  After <Tab> and :write, {r.path.name} reads:" if ok else red("  Accepting it failed:"))
        print(changed_region(r.text_before, r.final_text or r.buffer_text or "", r.line))
        if not ok:
            failed.append(case.name)
    print()
    print(BAR)
    shown = [r for r in run.cases if r.ghost_ms is not None]
    if shown:
        times = ", ".join(fmt_ms(r.ghost_ms) for r in shown)
        print(f"{len(shown)}/{len(SAMPLES)} completions shown and accepted in Neovim; time to ghost text: {times}.")
    if failed:
        print(red(f"Nothing usable appeared for: {'; '.join(failed)}."), file=sys.stderr)
        print(grey(f"Neovim's files and logs: {run.workdir}" if args.keep else
                   "Run with --keep to keep Neovim's files and logs."), file=sys.stderr)
        return 1
    if generate_function_demo(settings) != 0:
        return 1
    print(green("Demo finished: Tandem completed code, wrote a checked function and explained it, "
                "in a real editor."))
    return 0


def generate_function_demo(settings: dict) -> int:
    """Neovim's code-action menu: "Generate function from docstring", then `K` over the body."""
    import shutil

    from tandem.generate.stub import find_stub
    from tests.editor.nvim import HERE
    from tests.editor.scripted import run_script

    name, source = FUNCTION_SAMPLE
    stub = find_stub(source, 0)
    body_line = source.count("\n", 0, stub.doc_end) + 1
    print()
    print(bold("[function] Generate function from docstring") + grey(f"   ({name}, cursor on line 1)"))
    print(numbered(source.rstrip("\n").split("\n"), 1))
    print("  Running vim.lsp.buf.code_action() and choosing the action, then hovering the new body ...",
          flush=True)
    try:
        r = run_script(HERE / "code_action.lua", {name: source},
                       {"file": name, "line": 0, "col": 4, "hover": {"line": body_line, "col": 8, "timeout_ms": 60_000}},
                       settings, timeout=240, keep=True)
    except NvimError as e:
        print(red("The docstring action failed:"), file=sys.stderr)
        print(textwrap.indent(str(e), "  "), file=sys.stderr)
        return 1
    workdir = Path(r["workdir"])
    after = (workdir / "workspace" / name).read_text(encoding="utf-8")
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"  {r.get('resolved_title')}  " + grey(f"(written and checked in {fmt_ms(r.get('resolve_ms'))})"))
    print(f"  After the edit and :write, {name} reads:")
    print(changed_region(source, after, body_line))
    if r.get("hover"):
        print(f"  Hovering the body (`K`) shows, {fmt_ms(r.get('hover_ms'))} after asking:")
        print(textwrap.indent(r["hover"].strip(), "      " + grey("\u2502 "), lambda _line: True))
    else:
        print(red("  No hover appeared over the generated body."))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
