""""Generate function from docstring" in a real editor: headless Neovim 0.12 lists the code
action at the signature, resolves it through Tandem, applies the edit and writes the file
(tests/editor/code_action.lua). The tiny test model knows `square` from its corpus."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from .nvim import HERE
from .scripted import run_script

pytestmark = pytest.mark.nvim


def test_generate_function_from_docstring_in_neovim(tiny_model, nvim_binary):
    source = 'def square(x):\n    """Return x multiplied by itself.\n\n    >>> square(3)\n    9\n    """\n    ...\n'
    result = run_script(HERE / "code_action.lua", {"funcs.py": source}, {"file": "funcs.py", "line": 0, "col": 6},
                        {"modelPath": str(tiny_model), "functionPrompt": "fim"}, timeout=180, keep=True)
    workdir = Path(result["workdir"])
    after = (workdir / "workspace" / "funcs.py").read_text(encoding="utf-8")
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nNeovim: resolve {result.get('resolve_ms')} ms, edit applied after {result.get('edit_ms')} ms; "
          f"title {result.get('resolved_title')!r}; events {result.get('events')}")
    assert result["resolved_title"] == "Generate function from docstring: 1/1 examples pass"
    expected = source.replace('    """\n    ...\n', '    """\n    return x * x\n')
    assert after == expected
    ast.parse(after)
