"""A model ready to serve: ONNX session, tokenizer and special ids, chosen by device."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from tokenizers import Tokenizer

from ..completion.prompt import FimIds
from .chat import ChatTemplate, ChatTemplateError
from .loader import ModelError, ModelFiles, resolve_model
from .runtime import CausalLM, choose_providers, debug_delay, default_threads

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
    lm: CausalLM
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

    def describe(self) -> dict:
        m = self.files.manifest
        return {"model": m.get("name"), "variant": m.get("variant"), "precision": m.get("precision"),
                "device": self.device, "path": str(self.files.directory)}


def load_model(path: str | None, device: str) -> LoadedModel:
    """Load the model for `device` ('auto', 'cuda' or 'cpu'); ModelError says what went wrong."""
    if delay := debug_delay("load"):
        time.sleep(delay)
    providers, note = choose_providers(device)
    wanted = "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"
    files = resolve_model(path, wanted)
    manifest = files.manifest
    try:
        tok = manifest["tokenizer"]
        fim = FimIds(**{k: int(tok["fim_ids"][k]) for k in ("prefix", "suffix", "middle")})
        stop_ids = {int(i) for i in tok["stop_ids"]}
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"The manifest in {files.directory} lacks the tokenizer's FIM ids; rebuild the "
                         "model with `make model`.") from None
    try:
        codec = TextCodec(Tokenizer.from_file(str(files.tokenizer)))
    except Exception as e:
        raise ModelError(f"The tokenizer {files.tokenizer} cannot be read ({e}); rebuild the model "
                         "with `make model`.") from None
    try:
        lm = CausalLM(files.onnx, providers, default_threads())
    except Exception as e:
        raise ModelError(f"onnxruntime cannot load {files.onnx}: {str(e)[:300]}. The file is corrupt or "
                         "incomplete; rebuild the model with `make model`.") from None
    if wanted == "cuda" and lm.device != "cuda":
        note = "A GPU was found but onnxruntime could not use it (CUDA/cuDNN libraries?); running on the CPU."
    try:
        chat = ChatTemplate.from_dir(files.directory)
    except ChatTemplateError as e:  # completions still work; chat features say why they cannot
        log.warning("%s: %s", files.directory, e)
        chat = None
    log.info("loaded %s on %s (%s)", files.label, lm.device, files.directory)
    return LoadedModel(files, lm, codec, fim, stop_ids, note, chat)
