"""Turn a GGUF file into a Hugging Face checkpoint directory, tokenizer included.

transformers dequantizes the GGUF to float32 (about 40 s for the 0.5B model on 2 cores).
The tokenizer read from a GGUF does not mark the FIM tokens as special, so we mark every
added control token special before saving: then encoding `<|fim_prefix|>` gives its one id.
"""
from __future__ import annotations

import re
from pathlib import Path

from .common import FIM_TOKENS, PipelineError, Stamp, log, sha256_file, step


def convert_gguf(gguf: Path, out_dir: Path, gguf_sha256: str | None = None) -> Path:
    import torch  # noqa: F401  (import order: torch before transformers keeps the CPU wheel)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stamp = Stamp(out_dir / ".convert.json", {"gguf": gguf_sha256 or sha256_file(gguf), "v": 2})
    if (out_dir / "config.json").exists() and stamp.fresh():
        log(f"checkpoint already converted: {out_dir}")
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with step(f"converting {gguf.name} to a Hugging Face checkpoint (dequantizing to float32)"):
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         torch_dtype="float32")
        except Exception as e:  # a corrupt or unsupported GGUF: say so in words
            raise PipelineError(f"could not read {gguf} as a GGUF model: {e}") from e
        mark_control_tokens_special(tok)
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        stamp.write()
    return out_dir


def mark_control_tokens_special(tok) -> None:
    """Make `<|...|>` added tokens special so they encode to one id and are skipped on decode."""
    control = re.compile(r"^<\|[A-Za-z0-9_]+\|>$")
    specials = sorted((t for t in tok.get_vocab() if control.match(t)), key=tok.convert_tokens_to_ids)
    tok.add_special_tokens({"additional_special_tokens": specials}, replace_additional_special_tokens=False)
    if len(tok) != len(tok.get_vocab()) or any(tok.convert_tokens_to_ids(t) >= tok.vocab_size + 64 for t in specials):
        raise PipelineError("marking control tokens special changed the vocabulary; refusing to continue")
    for name in FIM_TOKENS.values():
        ids = tok.encode(name, add_special_tokens=False)
        if len(ids) != 1:
            raise PipelineError(f"tokenizer splits {name} into {ids}; FIM prompts would be wrong")
