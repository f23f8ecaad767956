"""Hover explanations in a real editor: headless Neovim 0.12 with its built-in LSP client.

hover.lua accepts an inline completion with <Tab> (Neovim itself runs the item's command,
tandem.completionAccepted), hovers the accepted code with vim.lsp.buf.hover() and reads the
floating window, edits inside the code and hovers again, hovers code the user wrote, and runs
the "Explain this code" code action on a selection, reading the document the server opens.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from .scripted import run_script

pytestmark = pytest.mark.nvim

HERE = Path(__file__).resolve().parent
SOURCE = 'def add(a, b):\n    \n\n\ndef greet(name):\n    return f"Hello, {name}!"\n'


def test_hover_over_an_accepted_completion_in_neovim(tiny_model, nvim_binary, tmp_path):
    config = {
        "filename": "example.py", "line": 1, "col": 4,
        "hover": {"row": 1, "col": 8},  # on `return a + b` once accepted
        "edit": {"row": 1, "col": 13, "text": "-"},  # a + b -> a - b
        "outside": {"row": 0, "col": 6},  # `def add`, written by the user
        "select": {"start_row": 0, "end_row": 6},
        "ready_timeout_ms": 60_000, "ghost_timeout_ms": 20_000, "hover_timeout_ms": 10_000,
        "explain_timeout_ms": 30_000,
    }
    r = run_script(HERE / "hover.lua", {"example.py": SOURCE}, config, {"modelPath": str(tiny_model)},
                   timeout=150, env={"TANDEM_HOME": str(tmp_path / "home")})
    print("\n".join(r["events"]))
    assert r["server_hover"] is True
    assert r["accepted_text"].startswith("def add(a, b):\n    ") and r["accepted_text"] != SOURCE
    (accept,) = [c for c in r["commands"] if c["command"] == "tandem.completionAccepted"]
    assert accept.get("error") is None and accept["result"]["region"]

    accepted, edited, outside = r["hovers"]
    text = "\n".join(accepted["lines"])
    assert "Tandem wrote this" in text and "inline completion" in text
    assert "being written" not in text and "writing the explanation" not in text
    assert "Confidence:" in text
    assert "tandem-tiny-test" in text and "cpu" in text
    assert "Generated" in text and "from this file lines 1–6" in text  # the whole file was in the prompt
    assert "Edited since" not in text

    text = "\n".join(edited["lines"])
    assert "Edited since Tandem wrote it" in text

    assert outside.get("lines") is None and outside["notice"] == "No information available"

    doc = r["explain_doc"]
    assert doc["name"].endswith(".md")
    body = "\n".join(doc["lines"])
    assert doc["lines"][0] == "**Tandem: what this code does**"
    assert "*Model* tandem-tiny-test" in body
