"""Model integrity through the real server: weights changed without changing their size are
refused with what to do, and a model repaired in place serves again without a settings change."""
from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

from lsprotocol import types

from tandem.model.loader import BUNDLE_NAME

from .harness import TIMEOUT, status_field, tandem
from tests.corrupt import flip_byte, put_byte

SOURCE = "def add(a, b):\n    "


def served_weights(model: Path) -> Path:
    """The largest ONNX file of the variant the CPU is served: the weights."""
    bundle = json.loads((model / BUNDLE_NAME).read_text())
    variant = model / bundle["variants"]["cpu"]
    return max(variant.glob("model.onnx*"), key=lambda p: p.stat().st_size)


async def serves_again(s, uri: str, timeout: float = TIMEOUT) -> list:
    """Ask for completions, as an editor does while the user types, until one comes back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await s.complete(uri, 1, 4)
        if result.items:
            return result.items
        await asyncio.sleep(0.5)
    raise AssertionError(f"no completion within {timeout}s; statuses={s.statuses[-3:]}")


async def test_a_flipped_byte_is_refused_and_the_restored_model_serves_again(tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = served_weights(model)
    size = weights.stat().st_size
    offset, old = flip_byte(weights)
    assert weights.stat().st_size == size
    async with tandem(settings={"modelPath": str(model), "device": "cpu"},
                      env={"TANDEM_HOME": str(tmp_path / "home")}) as s:
        await s.wait_for_state("error")
        message = status_field(s.statuses[-1], "message")
        assert weights.name in message and "sha256" in message and "make model" in message, message
        assert any("sha256" in m for m in s.messages(types.MessageType.Error))  # told, not only logged
        uri = (tmp_path / "add.py").as_uri()
        s.open(uri, SOURCE)
        assert (await s.complete(uri, 1, 4)).items == []

        put_byte(weights, offset, old)  # restored in place; no setting changes
        items = await serves_again(s, uri)
        assert "return a + b" in items[0].insert_text
        assert s.state == "ready"


async def test_a_model_repaired_in_place_after_an_error_is_picked_up(tiny_model, tmp_path):
    """A half-copied model (caught by its size) finished in place: the server notices by itself."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = served_weights(model)
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])
    async with tandem(settings={"modelPath": str(model), "device": "cpu"},
                      env={"TANDEM_HOME": str(tmp_path / "home")}) as s:
        await s.wait_for_state("error")
        seen = len(s.statuses)
        uri = (tmp_path / "add.py").as_uri()
        s.open(uri, SOURCE)
        assert (await s.complete(uri, 1, 4)).items == []
        await asyncio.sleep(1)
        # Nothing changed on disk: no new load, so no pop-up repeating the error on every keystroke.
        assert [status_field(st, "state") for st in s.statuses[seen:]] in ([], ["error"]), s.statuses[seen:]

        with open(weights, "r+b") as f:  # the copy finishes
            f.write(good)
        items = await serves_again(s, uri)
        assert "return a + b" in items[0].insert_text
        assert s.state == "ready"
