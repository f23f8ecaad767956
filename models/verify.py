"""Parity of an exported ONNX variant against the PyTorch checkpoint it came from.

On fixed prompts (FIM and left-to-right code) we compare the logits of the whole prompt
and the greedy continuation, the latter produced by the server's own decode loop
(tandem.model.runtime), so the check covers what users run. Also measures decode speed.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import FIM_TOKENS, log

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


def verify_variant(hf_dir: Path, onnx_path: Path, new_tokens: int = 32, torch_model=None, tok=None,
                   stop_ids: set[int] | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tandem.model.runtime import CausalLM

    tok = tok or AutoTokenizer.from_pretrained(hf_dir)
    model = torch_model or AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    lm = CausalLM(onnx_path, ["CPUExecutionProvider"])
    stop_ids = stop_ids if stop_ids is not None else {tok.eos_token_id}
    max_diffs, argmax_agree, greedy_match, exact, decode_tps = [], [], [], [], []
    for kind, prefix, suffix in PROMPTS:
        ids = prompt_ids(tok, kind, prefix, suffix)
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].float().numpy()
        got = lm.forward_logits(ids).astype(np.float32)
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
        greedy_match.append(n / max(len(ref_new), 1))
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
        "decode_tokens_per_s_cpu": round(float(np.median(decode_tps)), 2) if decode_tps else None,
        "reference": "transformers float32 on CPU",
    }
    log(f"parity {onnx_path.parent.name}: {result}")
    return result
