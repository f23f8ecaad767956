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

`--focus N` measures training weighted to the files the user works in. The N largest held-out
files stand for the files being written: the first `--focus-head` of each file's lines (the
part already written) join the training files, and the loss is taken at sites in the rest (what
the user writes next), beside sites in the other held-out files (elsewhere), which no variant
sees. `focus` variants draw that share of training windows from those heads; `size` (and
`default`) draws windows by file size alone.

    .venv/bin/python tests/benchmarks/sweep_learn.py WORKSPACE --focus 3 --variants size,focus50
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
    "size": {"focus_share": 0.0},  # windows by file size alone (learn's default)
    "focus25": {"focus_share": 0.25},
    "focus50": {"focus_share": 0.5},
    "focus75": {"focus_share": 0.75},
    "seq192": {"seq_len": 192},
    "seq512": {"seq_len": 512},
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
    ap.add_argument("--score-seq", type=int, default=0,
                    help="lay out the held-out lines in examples of this many tokens (default: learn's seq_len)")
    ap.add_argument("--focus", type=int, default=0, help="the N largest held-out files are being written (above)")
    ap.add_argument("--focus-head", type=float, default=0.6, help="share of a focus file's lines already written")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from tandem.learn.context import ContextSettings, WorkspaceContext
    from tandem.learn.context import recent_files
    from tandem.learn.workspace import SourceFile, collect, cut_sites, split
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
    def shuffled_sites(files):
        sites = cut_sites(files, base_cfg.eval_sites, base_cfg.seed)
        random.Random(base_cfg.seed).shuffle(sites)  # as learn does: its evaluation uses the first ones
        return sites[:a.sites]

    open_files = recent_files(coll.root, train_files)
    if a.focus:
        focus = sorted(held, key=lambda f: -len(f.text))[:a.focus]
        held = [f for f in held if f not in focus]
        heads, tails = [], []
        for f in focus:
            lines = f.text.split("\n")
            n = int(len(lines) * a.focus_head)
            heads.append(SourceFile(f.rel, "\n".join(lines[:n]) + "\n"))
            tails += [s for s in cut_sites([f], 10 ** 6, base_cfg.seed) if s.line >= n]
        random.Random(base_cfg.seed).shuffle(tails)
        train_files = sorted(train_files + heads, key=lambda f: f.rel)
        open_files = open_files[len(heads):] + heads  # the editor has them open
        base_cfg = replace(base_cfg, focus=tuple(f.rel for f in focus))
        groups = {"focus": tails[:a.sites], "elsewhere": shuffled_sites(held)}
    else:
        groups = {"heldout": shuffled_sites(held)}
    settings = ContextSettings(base_cfg.context_share)
    context = WorkspaceContext(coll.root, open_files, settings) if settings.on else None
    print(f"{coll.root}: {len(train_files)} training files, {len(held)} held out, "
          + ", ".join(f"{len(v)} {k} sites" for k, v in groups.items())
          + (f" (focus: {', '.join(base_cfg.focus)})" if a.focus else "")
          + f"; {torch.get_num_threads()} threads", flush=True)

    def sampler_for(cfg: LearnConfig) -> WorkspaceSampler:
        fcfg = FinetuneConfig(batch_size=cfg.batch_size, seq_len=cfg.seq_len, fim_rate=cfg.fim_rate,
                              middle_weight=cfg.middle_weight, seed=cfg.seed, bf16=cfg.bf16)
        return WorkspaceSampler(train_files, tok, fcfg, random.Random(cfg.seed), None, 0.0, context, cfg.line_rate,
                                cfg.focus, cfg.focus_share)

    # Scored in the default layout whatever a variant trains with (seq_len included).
    score_cfg = replace(base_cfg, seq_len=a.score_seq) if a.score_seq else base_cfg
    held_examples = {k: heldout_examples(sampler_for(score_cfg), v) for k, v in groups.items()}

    def losses(inner, bf16) -> dict:
        return {f"{k}_loss": heldout_loss(inner, v, bf16) for k, v in held_examples.items()}

    rows = []

    def record(p: dict) -> None:
        rows.append(p)
        print(json.dumps(p), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(p) + "\n")

    base = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    t = time.monotonic()
    record({"variant": "base", "train_s": 0, **losses(base, base_cfg.bf16), "score_s": round(time.monotonic() - t, 1)})
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
                        "train_loss": round(loss, 3), **losses(inner, cfg.bf16)})
                model.train()
        del model, opt

    for k, v in held_examples.items():
        base_loss = rows[0][f"{k}_loss"]
        print(f"\n{k} loss, {len(v)} sites (base {base_loss:.3f}):")
        for name in a.variants.split(","):
            pts = [r for r in rows if r["variant"] == name]
            print(f"  {name:<10} " + "  ".join(f"{r['train_s']:.0f}s {r[f'{k}_loss']:.3f}" for r in pts) +
                  f"   {100 * (pts[-1][f'{k}_loss'] - base_loss) / base_loss:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
