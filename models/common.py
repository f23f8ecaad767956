"""Shared pieces of the model pipeline: paths, hashing, progress, the build manifest."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# The server reads what the pipeline writes: one definition of names, places and checksums for
# both. (Importing the loader also switches onnxruntime's telemetry off before the pipeline
# imports onnxruntime: see tandem/model/ortenv.py.)
from tandem.model.loader import (BUNDLE_NAME, MANIFEST_NAME, file_hashes, sha256_file,  # noqa: F401
                                 tandem_home, variant_files)

# Special tokens the serving path needs, by name. Qwen2.5-Coder spells them this way; the
# tiny test model reuses the same names so both go through identical code.
FIM_TOKENS = {"prefix": "<|fim_prefix|>", "suffix": "<|fim_suffix|>", "middle": "<|fim_middle|>"}
STOP_TOKENS = ["<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>",
               "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]


def manifests_dir() -> Path:
    return Path(__file__).resolve().parent / "manifests"


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def log(msg: str) -> None:
    print(f"[tandem-models] {msg}", file=sys.stderr, flush=True)


@contextmanager
def step(name: str):
    """Print a visible progress line around one pipeline step and time it."""
    log(f"{name} ...")
    t0 = time.perf_counter()
    yield
    log(f"{name} done in {time.perf_counter() - t0:.1f}s")


class PipelineError(RuntimeError):
    """A failure the user can act on; the message says what is wrong and what to do."""


def tool_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for mod in ("torch", "transformers", "optimum", "onnx", "onnxruntime", "tokenizers", "gguf"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # not installed or no version: record that honestly
            versions[mod] = None
    return versions


def write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    try:
        if path.read_text() == text:
            return  # unchanged: keep the mtime, so a running server does not reload for nothing
    except OSError:
        pass
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: a reader never sees half a manifest


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Stamp:
    """Marks a finished step by the hash of its inputs, so a rerun with nothing changed skips it."""

    path: Path
    inputs: dict = field(default_factory=dict)

    def fresh(self) -> bool:
        data = read_json(self.path)
        return bool(data) and data.get("inputs") == sha256_json(self.inputs)

    def write(self, **extra) -> None:
        write_json(self.path, {"inputs": sha256_json(self.inputs), **extra})


# transformers 4.57.3 and later (to 5.0) take any local checkpoint whose config.json was written
# by a 4.57.3-4.x transformers for a Mistral one, and warn that its tokenizer has "an incorrect
# regex pattern" (the message links a Mistral discussion). For Qwen2 it is a false alarm: the
# warning changes nothing and the pre-tokenizer stays the model's own (the server encodes with
# the same tokenizer.json). Saying so explicitly keeps the warning for real Mistral checkpoints.
_MISTRAL_TYPES = {"mistral", "mistral3", "voxtral", "ministral", "pixtral"}


def load_tokenizer(directory: Path | str, **kwargs):
    """`AutoTokenizer.from_pretrained(directory)` without the false Mistral-regex warning."""
    from transformers import AutoTokenizer

    config = read_json(Path(directory) / "config.json") or {}
    if config.get("model_type") not in _MISTRAL_TYPES:
        kwargs.setdefault("fix_mistral_regex", False)
    return AutoTokenizer.from_pretrained(str(directory), **kwargs)
