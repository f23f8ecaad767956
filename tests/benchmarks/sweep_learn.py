"""Where `tandem learn`'s budget pays: training variants compared by held-out loss.

Exact match on the few dozen held-out lines a CPU run can evaluate moves by one line at a time,
so variants of the training recipe are compared here by the **held-out loss** that `tandem learn`
reports (models/learn.py `heldout_loss`: the teacher-forced loss per token of each held-out
line, laid out as a training example with the context block the server would gather there), on
more sites and at several points of the training time. Each variant trains with learn's own
sampler, LoRA model and optimizer step (`train_step`) from the same base, for the same time.

    .venv/bin/python tests/benchmarks/sweep_learn.py WORKSPACE --variants mix,lines,default
    .venv/bin/python tests/benchmarks/sweep_learn.py WORKSPACE --variants default,lr1e-4 --train-s 300

WORKSPACE: e.g. a repository from bench_learn.py (~/.cache/tandem/bench-learn/src/...).
Prints one JSON line per point and a table; nothing is saved but --out.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(ROOT))

VARIANTS = {  # LearnConfig fields
    "default": {},
    "mix": {"line_rate": 0.0},  # finetune.py's split mix only (the default before line_rate)
    "lines": {"line_rate": 1.0},
    "lr1e-4": {"lr": 1e-4},
    "lr1e-3": {"lr": 1e-3},
    "lr2e-3": {"lr": 2e-3},
    "layers4": {"layers": 4},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--hf", type=Path, help="the checkpoint to fine-tune (default: the default model's hf/)")
    ap.add_argument("--variants", default="mix,default")
    ap.add_argument("--train-s", type=float, default=300.0, help="training time per variant")
    ap.add_argument("--every", type=float, default=100.0, help="held-out loss every this many seconds")
    ap.add_argument("--sites", type=int, default=40)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from tandem.learn.context import ContextSettings, WorkspaceContext
    from tandem.learn.workspace import collect, cut_sites, split
    from tandem.model.loader import default_model_path
    from tandem_models.common import load_tokenizer
    from tandem_models.finetune import FinetuneConfig
    from tandem_models.learn import (LearnConfig, WorkspaceSampler, _lora_model, heldout_examples, heldout_loss,
                                     train_step, train_threads)

    hf = a.hf or default_model_path() / "hf"
    base_cfg = LearnConfig(threads=a.threads)
    torch.set_num_threads(train_threads(base_cfg))
    tok = load_tokenizer(hf)
    coll = collect(a.workspace)
    train_files, held = split(coll.files, base_cfg.heldout_share, base_cfg.seed)
    sites = cut_sites(held, base_cfg.eval_sites, base_cfg.seed)
    random.Random(base_cfg.seed).shuffle(sites)  # as learn does: its evaluation uses the first ones
    sites = sites[:a.sites]
    context = WorkspaceContext.for_run(coll.root, train_files, ContextSettings(base_cfg.context_share))
    print(f"{coll.root}: {len(train_files)} training files, {len(held)} held out, {len(sites)} sites; "
          f"{torch.get_num_threads()} threads", flush=True)

    def sampler_for(cfg: LearnConfig) -> WorkspaceSampler:
        fcfg = FinetuneConfig(batch_size=cfg.batch_size, seq_len=cfg.seq_len, fim_rate=cfg.fim_rate,
                              middle_weight=cfg.middle_weight, seed=cfg.seed, bf16=cfg.bf16)
        return WorkspaceSampler(train_files, tok, fcfg, random.Random(cfg.seed), None, 0.0, context, cfg.line_rate)

    held_examples = heldout_examples(sampler_for(base_cfg), sites)
    rows = []

    def record(p: dict) -> None:
        rows.append(p)
        print(json.dumps(p), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(p) + "\n")

    base = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    t = time.monotonic()
    record({"variant": "base", "train_s": 0, "heldout_loss": heldout_loss(base, held_examples, base_cfg.bf16),
            "score_s": round(time.monotonic() - t, 1)})
    del base

    for name in a.variants.split(","):
        cfg = replace(base_cfg, **VARIANTS[name])
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        sampler = sampler_for(cfg)
        model = _lora_model(hf, cfg)
        inner = model.get_base_model()
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else sampler.eot_id
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
        step, tokens, train_s, mark = 0, 0, 0.0, a.every
        model.train()
        while train_s < a.train_s:
            t = time.monotonic()
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)  # learn's schedule over this time
            lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, train_s / a.train_s)))
            for g in opt.param_groups:
                g["lr"] = lr
            loss, n = train_step(model, inner, opt, sampler, cfg, pad_id)
            step, tokens, train_s = step + 1, tokens + n, train_s + time.monotonic() - t
            if train_s >= mark or train_s >= a.train_s:
                mark += a.every
                model.eval()
                record({"variant": name, "step": step, "train_s": round(train_s, 1), "tokens": tokens,
                        "train_loss": round(loss, 3), "heldout_loss": heldout_loss(inner, held_examples, cfg.bf16)})
                model.train()
        del model, opt

    base_loss = rows[0]["heldout_loss"]
    print(f"\nheld-out loss, {len(held_examples)} sites (base {base_loss:.3f}):")
    for name in a.variants.split(","):
        pts = [r for r in rows if r["variant"] == name]
        print(f"  {name:<10} " + "  ".join(f"{r['train_s']:.0f}s {r['heldout_loss']:.3f}" for r in pts) +
              f"   {100 * (pts[-1]['heldout_loss'] - base_loss) / base_loss:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
