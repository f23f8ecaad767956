"""The default model's whole path: fetch, convert, export, load, complete (`make test-slow`).

Runs the real build (a no-op when the model is already built, minutes otherwise), then
asks the real server for completions on ordinary code.
"""
from __future__ import annotations

import ast
import json

import pytest

from tandem.model.loader import default_model_path

from .harness import status_field, tandem
from .test_inline_completion import apply, cursor

pytestmark = pytest.mark.slow
URI = "file:///tmp/tandem-test/slow.py"


@pytest.fixture(scope="module")
def default_model():
    from tandem_models.build import build

    path = build()
    manifest = json.loads((path / "cpu-int8" / "tandem-model.json").read_text())
    assert manifest["source"]["gguf_sha256"] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert manifest["parity"]["argmax_agreement"] > 0.95
    assert manifest["tokenizer"]["fim_ids"] == {"prefix": 151659, "suffix": 151661, "middle": 151660}
    return path


async def test_default_model_completes_real_code(default_model):
    assert default_model == default_model_path()
    async with tandem(settings={}) as s:  # no modelPath: the default model
        await s.wait_for_state("ready", timeout=180)
        assert "qwen2.5-coder-0.5b-instruct" in status_field(s.statuses[-1], "model")

        text, line, col = cursor(
            'def is_palindrome(text: str) -> bool:\n    """Return True if text reads the same backwards."""\n    |\n')
        s.open(URI, text)
        item = (await s.complete(URI, line, col, timeout=120)).items[0]
        body = apply(text, item)
        ast.parse(body)  # a whole, valid function
        assert "return" in item.insert_text

        text, line, col = cursor("import os\n\nfiles = os.listdir(|)\n")
        s.open(URI, text)
        result = await s.complete(URI, line, col, timeout=120)
        if result.items:  # the model may rightly suggest nothing here
            ast.parse(apply(text, result.items[0]))
