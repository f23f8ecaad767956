"""A model ready to serve: ONNX session, tokenizer and special ids, chosen by device."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from ..completion.prompt import FimIds
from .chat import ChatTemplate, ChatTemplateError
from .loader import BUNDLE_NAME, ModelError, ModelFiles, has_variant, resolve_model
from .backend import Backend, debug_delay, default_threads
from .genai import GenaiLM, is_genai_model
from .runtime import CausalLM, choose_providers

log = logging.getLogger(__name__)


class TextCodec:
    """The `tokenizers` tokenizer, with the two calls the server needs."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        # A byte-level token sequence cut mid-character decodes to U+FFFD: hold it back
        # until the next token completes the character.
        return self._tok.decode(ids, skip_special_tokens=True).rstrip("\ufffd")


@dataclass
class LoadedModel:
    files: ModelFiles
    lm: Backend
    codec: TextCodec
    fim: FimIds
    stop_ids: set[int]
    note: str | None  # e.g. "asked for CUDA but running on CPU because ..."
    chat: ChatTemplate | None = None  # instruct models only

    def encode_chat(self, messages: list[dict], assistant_prefix: str = "") -> list[int] | None:
        """Token ids of a chat prompt in the model's own template; None without a template."""
        if self.chat is None:
            return None
        return self.codec.encode(self.chat.render(messages, assistant_prefix=assistant_prefix))

    @property
    def device(self) -> str:
        return self.lm.device

    @property
    def label(self) -> str:
        return self.files.label

    @property
    def bundle(self) -> Path | None:
        """The bundle this variant was loaded from (a fine-tuned version's variant sits under the
        bundle's versions/ folder); None for a variant directory given on its own."""
        for d in list(self.files.directory.parents)[:3]:
            if (d / BUNDLE_NAME).is_file():
                return d
        return None

    def describe(self) -> dict:
        m = self.files.manifest
        return {"model": m.get("name"), "variant": m.get("variant"), "precision": m.get("precision"),
                "device": self.device, "path": str(self.files.directory), "version": self.files.version}


# The pinned default models by size (models/manifests/); `auto` takes the larger one on a GPU
# when it has been built there (`make model` builds it on machines with an NVIDIA GPU).
DEFAULT_MODELS = {"0.5b": "qwen2.5-coder-0.5b-instruct", "1.5b": "qwen2.5-coder-1.5b-instruct"}


def default_model_for(size: str, device: str) -> str | None:
    """The directory of the default model of `size` ('auto', '0.5b', '1.5b') for `device`;
    None for the built-in default (0.5B)."""
    from .loader import tandem_home
    if size == "auto":
        big = tandem_home() / "models" / DEFAULT_MODELS["1.5b"]
        return str(big) if device == "cuda" and has_variant(big, "cuda") else None
    return str(tandem_home() / "models" / DEFAULT_MODELS[size]) if size in DEFAULT_MODELS else None


def special_ids(files: ModelFiles) -> tuple[FimIds, set[int]]:
    """The FIM and stop token ids a model's manifest records (the local and remote loaders)."""
    try:
        tok = files.manifest["tokenizer"]
        fim = FimIds(**{k: int(tok["fim_ids"][k]) for k in ("prefix", "suffix", "middle")})
        return fim, {int(i) for i in tok["stop_ids"]}
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"The manifest in {files.directory} lacks the tokenizer's FIM ids; rebuild the "
                         "model with `make model`.") from None


def _choose_default(path: str | None, size: str, wanted: str) -> tuple[str | None, str, str | None]:
    """The model path a load for a variant of `wanted` ('cuda' or 'cpu') takes: `path` itself,
    else the default model of `size` there; with the size it ended on and a note for the user."""
    if not path and size == "1.5b" and wanted != "cuda" and not has_variant(default_model_for(size, wanted), "cpu"):
        # The 1.5B is built for the GPU unless asked for (`make model-1.5b`): without a GPU or
        # its CPU variant, the 0.5B keeps serving, and says so.
        return default_model_for("0.5b", wanted), "0.5b", (
            "`tandem.modelSize` is '1.5b', which is built for an NVIDIA GPU only; serving the 0.5B model "
            "on the CPU (`make model-1.5b` builds the 1.5B's CPU variant: better completions, about 3x slower).")
    return path or default_model_for(size, wanted), size, None


def serving_path(path: str | None, device: str = "auto", size: str = "auto") -> tuple[str | None, str | None]:
    """The model `load_model(path, device, size)` would serve, without loading it, and the note it
    would give: for the shell's `tandem learn` and `tandem versions`, which must act on the model
    an editor with the same settings serves (the 1.5B on a GPU, for one). None: the default 0.5B."""
    providers, note = choose_providers(device)
    path, _, size_note = _choose_default(path, size, "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu")
    return path, " ".join(filter(None, [note, size_note])) or None


def load_model(path: str | None, device: str, size: str = "auto") -> LoadedModel:
    """Load the model for `device` ('auto', 'cuda' or 'cpu'); ModelError says what went wrong.
    Without a `path`, the pinned default model of `size` (see `default_model_for`)."""
    if delay := debug_delay("load"):
        time.sleep(delay)
    providers, note = choose_providers(device)
    wanted = "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"
    requested = path
    path, size, size_note = _choose_default(path, size, wanted)
    note = " ".join(filter(None, [note, size_note])) or None
    files = resolve_model(path, wanted)
    fim, stop_ids = special_ids(files)
    try:
        codec = TextCodec(Tokenizer.from_file(str(files.tokenizer)))
    except Exception as e:
        raise ModelError(f"The tokenizer {files.tokenizer} cannot be read ({e}); rebuild the model "
                         "with `make model`.") from None
    try:
        lm = _open_backend(files, wanted, providers)
    except Exception as e:
        if wanted != "cuda":
            raise ModelError(f"onnxruntime cannot load {files.onnx}: {str(e)[:300]}. The file is corrupt or "
                             "incomplete; rebuild the model with `make model`.") from None
        # A CUDA/cuDNN mismatch, or no GPU memory left: the CPU variant keeps serving.
        log.warning("the GPU variant failed to load (%s); trying the CPU", e)
        note = (f"A GPU was found but the model could not be loaded on it ({str(e)[:200]}); "
                "running on the CPU.")
        # The user's own model path stays; a default model falls back to the default CPU model,
        # the 0.5B, unless `modelSize` asked for the 1.5B and its CPU variant is built.
        return dataclasses.replace(load_model(requested, "cpu", size), note=note)
    if wanted == "cuda" and lm.device != "cuda":
        note = "A GPU was found but onnxruntime could not use it (CUDA/cuDNN libraries?); running on the CPU."
    try:
        chat = ChatTemplate.from_dir(files.directory)
    except ChatTemplateError as e:  # completions still work; chat features say why they cannot
        log.warning("%s: %s", files.directory, e)
        chat = None
    log.info("loaded %s on %s with %s (%s)", files.label, lm.device, type(lm).__name__, files.directory)
    return LoadedModel(files, lm, codec, fim, stop_ids, note, chat)


def _open_backend(files: ModelFiles, device: str, providers: list[str]) -> Backend:
    """onnxruntime-genai for graphs made by its builder, a raw session for optimum exports."""
    if is_genai_model(files.directory):
        lm = GenaiLM(files.directory, device, default_threads(), files.manifest.get("context_length"))
        log.info("warmed up %s in %.2fs", files.label, lm.warm_up())  # a GPU failing here falls back too
        return lm
    return CausalLM(files.onnx, providers, default_threads())
