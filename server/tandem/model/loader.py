"""Find and check a built model on disk, and pick the variant for a device.

A model path is either a bundle (a directory with tandem-bundle.json naming one variant per
device) or a single variant directory (model.onnx, tokenizer.json, tandem-model.json).
Every failure is a ModelError whose message says what is wrong and the command that fixes it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

BUNDLE_NAME = "tandem-bundle.json"
MANIFEST_NAME = "tandem-model.json"
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
BUILD_HINT = "Build it with `make model` (or `tandem-models build`) in the Tandem checkout."


class ModelError(RuntimeError):
    """The model cannot be used; the message is meant for the user."""


def tandem_home() -> Path:
    if os.environ.get("TANDEM_HOME"):
        return Path(os.environ["TANDEM_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "tandem"


def default_model_path() -> Path:
    return tandem_home() / "models" / DEFAULT_MODEL


@dataclass(frozen=True)
class ModelFiles:
    directory: Path
    manifest: dict

    @property
    def onnx(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def tokenizer(self) -> Path:
        return self.directory / "tokenizer.json"

    @property
    def label(self) -> str:
        return f"{self.manifest.get('name', self.directory.parent.name)} ({self.manifest.get('precision', '?')})"


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{what} {path} is missing. {BUILD_HINT}") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{what} {path} is unreadable or corrupt ({e}). Rebuild the model: {BUILD_HINT}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{what} {path} is corrupt (not a JSON object). {BUILD_HINT}")
    return data


def resolve_model(path: str | os.PathLike | None, device: str) -> ModelFiles:
    """Return the variant directory to load for `device` ('cuda' or 'cpu')."""
    root = Path(path).expanduser() if path else default_model_path()
    if not root.exists():
        if not path:
            raise ModelError(f"The default model is not built yet (looked in {root}). {BUILD_HINT}")
        raise ModelError(f"The model path {root} does not exist. Fix the `tandem.modelPath` setting, "
                         f"or leave it empty to use the default model. {BUILD_HINT}")
    if root.is_file():
        raise ModelError(f"The model path {root} is a file; it must be a model directory built by "
                         f"`tandem-models build --source {root}`.")
    if (root / BUNDLE_NAME).exists():
        bundle = _read_json(root / BUNDLE_NAME, "Model bundle")
        variants = bundle.get("variants") or {}
        order = [device, "cpu"] if device == "cuda" else ["cpu"]
        name = next((variants[d] for d in order if d in variants and (root / variants[d]).is_dir()), None)
        if name is None:
            raise ModelError(f"The model bundle {root} has no built variant for {device}. {BUILD_HINT}")
        root = root / name
    manifest = _read_json(root / MANIFEST_NAME, "Model manifest")
    files = ModelFiles(root, manifest)
    for f in (files.onnx, files.tokenizer):
        if not f.exists() or f.stat().st_size == 0:
            raise ModelError(f"{f} is missing or empty: the model build did not finish. {BUILD_HINT}")
    for name, meta in (manifest.get("files") or {}).items():
        p = root / name
        if not p.exists() or p.stat().st_size != meta.get("size"):
            raise ModelError(f"{p} is missing or has the wrong size (corrupt or half-copied). "
                             f"Rebuild the model: {BUILD_HINT}")
    return files
