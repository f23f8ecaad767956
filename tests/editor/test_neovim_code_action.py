""""Generate function from docstring" in a real editor: headless Neovim 0.12 lists the code
action at the signature, resolves it through Tandem, applies the edit and writes the file
(tests/editor/code_action.lua). The tiny test model knows `square` from its corpus."""
from __future__ import annotations

import ast

import pytest

from .nvim import HERE, NvimNotFound, find_nvim, run_scenario

pytestmark = pytest.mark.nvim


@pytest.fixture(scope="module")
def nvim_binary() -> str:
    try:
        return find_nvim()
    except NvimNotFound as e:
        pytest.skip(str(e))


def test_generate_function_from_docstring_in_neovim(tiny_model, nvim_binary):
    source = 'def square(x):\n    """Return x multiplied by itself.\n\n    >>> square(3)\n    9\n    """\n    ...\n'
    result, after, workdir = run_scenario(
        HERE / "code_action.lua", {"funcs.py": source},
        {"modelPath": str(tiny_model), "functionPrompt": "fim"}, {"file": "funcs.py", "line": 0, "col": 6},
        timeout=180)
    print(f"\nNeovim: resolve {result.get('resolve_ms')} ms, edit applied after {result.get('edit_ms')} ms; "
          f"title {result.get('resolved_title')!r}; events {result.get('events')}")
    assert not result.get("error"), result
    assert result["resolved_title"] == "Generate function from docstring: 1/1 examples pass"
    expected = source.replace('    """\n    ...\n', '    """\n    return x * x\n')
    assert after["funcs.py"] == expected
    ast.parse(after["funcs.py"])
