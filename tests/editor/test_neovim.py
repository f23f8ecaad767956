"""Tandem in a real editor: headless Neovim 0.12 with its built-in LSP inline completion.

Each test starts Neovim with a minimal config (tests/editor/nvim.py), opens a file, presses `i`
at the cursor, waits for Tandem's ghost text, accepts it with <Tab>, writes the file and
checks the file on disk. The tiny test model knows models/data/tiny_corpus.py by heart, so
what it should write is known.
"""
from __future__ import annotations

import pytest

from .nvim import run_case

pytestmark = pytest.mark.nvim


@pytest.fixture
def settings(tiny_model, nvim_binary) -> dict:
    return {"modelPath": str(tiny_model)}


def _report(r) -> None:
    print(f"\n[{r.name}] ghost {r.ghost_text!r} shown {r.ghost_ms:.0f} ms after InsertEnter "
          f"(request sent after {r.debounce_ms:.0f} ms of Neovim's debounce, answered in {r.request_ms:.0f} ms); "
          f"item {r.item}; screen {r.screen}")


def test_empty_function_body_is_completed_and_accepted(settings):
    r = run_case("def add(a, b):\n    |\n", settings, name="add", ghost_timeout=20)
    _report(r)
    assert r.raw["request"]["position"] == {"line": 1, "character": 4}  # asked at the cursor
    assert r.ghost_text == "return a + b"
    assert r.screen and r.screen[0] == "    return a + b"  # what the user sees before accepting
    assert r.accepted is True
    assert r.buffer_text == "def add(a, b):\n    return a + b\n"
    assert r.final_text == "def add(a, b):\n    return a + b\n"  # the file Neovim wrote
    assert r.cursor_after_accept == (1, len("    return a + b"))  # after the inserted text
    assert r.ghost_ms < 10_000


def test_mid_line_completion_replaces_the_closing_brackets(settings):
    """`fibonacci(|)`: Tandem's item replaces what follows the cursor on the line (its range
    ends after the `)` it rewrites), so the text is not doubled. Neovim 0.12 draws an item that
    has a range as an *overlay* starting at range.start (not inline), and accepting it
    replaces exactly that range with nvim_buf_set_text."""
    head = "def fibonacci(n):\n    if n < 2:\n        return n\n"
    before = head + "    return fibonacci(n - 1) + fibonacci(|)\n"
    r = run_case(before, settings, name="fibonacci", filename="fib.py", ghost_timeout=20)
    _report(r)
    expected_line = "    return fibonacci(n - 1) + fibonacci(n - 2)"
    assert r.final_text == f"{head}{expected_line}\n"
    assert r.buffer_text == r.final_text
    col = len("    return fibonacci(n - 1) + fibonacci(")
    rng = r.item["range"]
    assert (rng["start"]["line"], rng["start"]["character"]) == (3, col)
    if rng["end"] != rng["start"]:
        # A replace range: from the cursor over the `)` that the suggestion rewrites.
        assert (rng["end"]["line"], rng["end"]["character"]) == (3, col + 1)
        assert r.item["insertText"].endswith(")")
    assert r.extmark["virt_text_pos"] == "overlay"
    # What the user sees before accepting is the line as it will be.
    assert r.screen and r.screen[0] == expected_line
    assert r.ghost_ms < 10_000


def test_completion_after_non_ascii_text_lands_at_the_cursor(settings):
    before = "def add(a, b):\n    x = '😀😀'; return |\n"
    r = run_case(before, settings, name="non-ascii", filename="emoji.py", ghost_timeout=20)
    _report(r)
    assert r.raw.get("offset_encoding") == "utf-8"
    # Model-independent: whatever Tandem suggests must land at the cursor, which here is the
    # end of line 2 (a zero-width range at the request position).
    pos = r.raw["request"]["position"]
    rng = r.item["range"]
    assert rng["start"] == pos and rng["end"] == pos, f"range {rng} != request position {pos}"
    text = before.replace("|", "")
    i = before.index("|")
    assert r.final_text == text[:i] + r.item["insertText"] + text[i:]
