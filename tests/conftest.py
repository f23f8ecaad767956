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


@pytest.fixture(scope="session")
def llama_endpoint(tiny_model: Path):
    """A real llama.cpp server (llama-cpp-python's) on a free loopback port serving the tiny
    model as a GGUF made by models/gguf_export.py; skipped, with the reason, where it cannot run."""
    from tests.llama_server import Unavailable, llama_server, tiny_gguf

    try:
        server = llama_server(tiny_gguf(), alias="tandem-tiny-test")
        url = server.__enter__()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(params=["local", "llama"])
def backend(request) -> dict:
    """Settings that pick the backend: the in-process runtime, or the OpenAI-compatible backend
    pointed at the llama.cpp server (the same tests, through a real serving engine)."""
    if request.param == "local":
        return {}
    return {"backend": "openai", "endpoint": request.getfixturevalue("llama_endpoint")}


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
