"""Shared fixtures: the tiny real model, built by the project's own pipeline and cached."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A 0.5M-parameter qwen2 model with a locally trained tokenizer, fine-tuned on a small
    corpus and exported to ONNX by models/ (cached under ~/.cache/tandem/test-models)."""
    from tandem_models.tiny import build_tiny_model

    return build_tiny_model()


@pytest.fixture
def broken_model(tiny_model: Path, tmp_path: Path) -> Path:
    """A copy of the tiny model whose ONNX graph is truncated, as after a failed copy."""
    copy = tmp_path / "broken-model"
    shutil.copytree(tiny_model, copy)
    for onnx in copy.rglob("model.onnx"):
        data = onnx.read_bytes()
        onnx.write_bytes(data[: len(data) // 3])
    return copy


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch) -> Path:
    """A TANDEM_HOME with no models in it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TANDEM_HOME", str(home))
    return home


def pytest_collection_modifyitems(config, items):
    # Without an explicit -m, the slow default-model tests are deselected by addopts.
    if os.environ.get("TANDEM_SKIP_NVIM") == "1":
        skip = pytest.mark.skip(reason="TANDEM_SKIP_NVIM=1")
        for item in items:
            if "nvim" in item.keywords:
                item.add_marker(skip)
