"""Parity of an exported ONNX variant against the PyTorch checkpoint it came from.

On fixed prompts (FIM and left-to-right code) we compare the logits of the prompt (every
position, or the last one for a graph built to compute only that) and the greedy
continuation, the latter produced by the server's own backend and decode loop, so the check
covers what users run. Also measures decode speed.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import FIM_TOKENS, load_tokenizer, log

PROMPTS = [
    ("fim", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    ", "\n\n\nprint(fibonacci(10))\n"),
    ("fim", "import os\n\ndef list_python_files(root):\n    result = []\n    for dirpath, _, files in os.walk(root):\n        ", "\n    return result\n"),
    ("fim", "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        ", "\n\n    def pop(self):\n        return self.items.pop()\n"),
    ("ltr", "def is_prime(n: int) -> bool:\n", ""),
    ("ltr", "# Sort a list of dictionaries by the 'age' key\npeople = [{'name': 'a', 'age': 3}]\n", ""),
]


def prompt_ids(tok, kind: str, prefix: str, suffix: str) -> list[int]:
    enc = lambda s: tok(s, add_special_tokens=False, return_token_type_ids=False)["input_ids"]  # noqa: E731
    if kind == "ltr":
        return enc(prefix)
    ids = tok.convert_tokens_to_ids
    return [ids(FIM_TOKENS["prefix"]), *enc(prefix), ids(FIM_TOKENS["suffix"]), *enc(suffix), ids(FIM_TOKENS["middle"])]


def open_variant(variant_dir: Path, device: str = "cpu"):
    """The backend the server would use for this variant directory."""
    from tandem.model.genai import GenaiLM, is_genai_model
    from tandem.model.runtime import CausalLM

    if is_genai_model(variant_dir):
        return GenaiLM(variant_dir, device)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    return CausalLM(variant_dir / "model.onnx", providers)


def verify_variant(hf_dir: Path, variant_dir: Path, new_tokens: int = 32, torch_model=None, tok=None,
                   stop_ids: set[int] | None = None, device: str = "cpu") -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    tok = tok or load_tokenizer(hf_dir)
    model = torch_model or AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    lm = open_variant(variant_dir, device)
    stop_ids = stop_ids if stop_ids is not None else {tok.eos_token_id}
    max_diffs, argmax_agree, greedy_match, exact, decode_tps = [], [], [], [], []
    for kind, prefix, suffix in PROMPTS:
        ids = prompt_ids(tok, kind, prefix, suffix)
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].float().numpy()
        got = lm.forward_logits(ids).astype(np.float32)
        ref = ref[-len(got):]  # a graph that computes the last position only returns one row
        max_diffs.append(float(np.abs(ref - got).max()))
        argmax_agree.append(float((ref.argmax(-1) == got.argmax(-1)).mean()))
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=new_tokens, do_sample=False, eos_token_id=sorted(stop_ids),
                                 pad_token_id=tok.eos_token_id)
        ref_new = [t for t in out[0, len(ids):].tolist()]
        while ref_new and ref_new[-1] in stop_ids:
            ref_new.pop()
        lm.clear_cache()
        gen = lm.generate(ids, max_new_tokens=new_tokens, stop_ids=stop_ids)
        n = 0
        while n < min(len(ref_new), len(gen.ids)) and ref_new[n] == gen.ids[n]:
            n += 1
        greedy_match.append(n / len(ref_new) if ref_new else float(not gen.ids))  # both empty: a match
        exact.append(ref_new == gen.ids)
        if gen.decode_s > 0 and len(gen.ids) > 1:
            decode_tps.append((len(gen.ids) - 1) / gen.decode_s)
    result = {
        "prompts": len(PROMPTS),
        "new_tokens": new_tokens,
        "max_abs_logit_diff": round(max(max_diffs), 4),
        "mean_max_abs_logit_diff": round(float(np.mean(max_diffs)), 4),
        "argmax_agreement": round(float(np.mean(argmax_agree)), 4),
        "greedy_prefix_match": round(float(np.mean(greedy_match)), 4),
        "greedy_exact": f"{sum(exact)}/{len(exact)}",
        f"decode_tokens_per_s_{device}": round(float(np.median(decode_tps)), 2) if decode_tps else None,
        "logit_positions": "last" if got.shape[0] == 1 else "all",
        "device": device,
        "backend": type(lm).__name__,
        "reference": "transformers float32 on CPU",
    }
    lm.close()
    log(f"parity {variant_dir.name}: {result}")
    return result
