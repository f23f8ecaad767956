"""`warmAtCursor` in a real Neovim: the README's CursorHold block (read from README.md by
tests/editor/warm.lua and run as is) tells Tandem where the cursor rests in normal mode, and
Tandem computes the prompt there before the first keystroke."""
from __future__ import annotations

from pathlib import Path

import pytest

from .nvim import HERE
from .scripted import run_script

pytestmark = pytest.mark.nvim

README = HERE.parents[1] / "README.md"


def test_the_readmes_cursorhold_block_warms_the_prompt_where_the_cursor_rests(tiny_model, nvim_binary):
    corpus = (HERE.parents[1] / "models" / "data" / "tiny_corpus.py").read_text()
    source = corpus + "\n\ndef double(n):\n    return \n"
    line = source.count("\n", 0, source.rindex("return "))
    result = run_script(HERE / "warm.lua", {"work.py": source},
                        {"file": "work.py", "line": line, "col": len("    return "), "readme": str(README)},
                        {"modelPath": str(tiny_model)}, timeout=120)
    print(f"\nNeovim: warm {result['warm']} {result['warm_ms']:.0f} ms after CursorHold; events {result['events']}")
    assert result["warm"]["warmed"] == 1 and result["warm"]["tokens"] > 200
