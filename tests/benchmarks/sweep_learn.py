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

`--feedback-sites N` (with `--focus`) measures `tandem learn --use-feedback` on a simulated
session: the user writes the focus files' heads, the editor asks the base model (built into the
server's CPU variant, through the completion engine with the context block) at N line sites
there, and the user accepts and keeps the suggestions that are exactly the line written (only
those would pass the log's retention check). The kept suggestions become the feedback log's
examples, as the tracker records them (1,500 characters before, the accepted text, 500 after);
the `feedback` variant trains on them beside the windows (`feedback_rate` of the batch).

    .venv/bin/python tests/benchmarks/sweep_learn.py WORKSPACE --focus 3 --feedback-sites 80 --variants size,feedback

`--served cpu-int8,cpu-fp32` asks whether what training learns reaches the model the server
would load: the base model and, after each variant's training, its merged checkpoint are built
into those serving variants by the project's pipeline, and each graph is scored on the same
sites: the held-out loss and the share of tokens that are its first choice, teacher-forced
through the graph (`GenaiLM.score`) in the layout PyTorch scored, then exact match and edit
similarity of the lines through the completion engine and the same loss after the engine's own
prompt (`tandem.learn.evaluate`, as `tandem learn`'s gate does).

    .venv/bin/python tests/benchmarks/sweep_learn.py WORKSPACE --variants default --served cpu-int8,cpu-fp32

`--blocks` (with `--served`) also asks each graph for a block at the same sites with the rest of
their block removed (the user writing new code there; `tandem.learn.evaluate.evaluate_blocks`):
lines offered against lines in the block, and lines right before the first wrong one.

`--merge-scales 1,0.5` (with `--served`) merges each trained adapter at those fractions of its
weight (LoRA's scaling times the factor: the weights move that share of the way from the base
model to the tuned one, weight-space ensembling as in WiSE-FT) and scores each merge as above.

    .venv/bin/python tests/benchmarks/sweep_learn.py WORKSPACE --variants default --served cpu-int8 --merge-scales 1,0.75,0.5
Prints one JSON line per point and a table; nothing is saved but --out.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
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
    "feedback": {"feedback_examples": True},  # with --feedback-sites: the simulated log's examples
    "blocks": {"block_rate": 0.33},  # a third of the line completions ask for the rest of the block (the default)
    "noblocks": {"block_rate": 0.0},  # line completions only (the default before block_rate)
    "seq192": {"seq_len": 192},
    "seq512": {"seq_len": 512},
    "seq768b2": {"seq_len": 768, "batch_size": 2},  # about the tokens of a default step, longer windows
    "seq1536b1": {"seq_len": 1536, "batch_size": 1},  # the serving prompt's length
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
    ap.add_argument("--feedback-sites", type=int, default=0, help="simulate a feedback log at N focus sites (above)")
    ap.add_argument("--served", default="", help="serving variants to build and score after training (above)")
    ap.add_argument("--merge-scales", default="1", help="merge each adapter at these fractions of its weight (above)")
    ap.add_argument("--blocks", action="store_true",
                    help="with --served: also offer blocks at the sites with their block not written yet (below)")
    ap.add_argument("--keep", type=Path, help="keep the served variants built from the trained models here")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from tandem.learn.context import ContextSettings, WorkspaceContext
    from tandem.learn.context import recent_files
    from tandem.learn.workspace import SourceFile, collect, cut_sites, split
    from tandem.model.loader import default_model_path
    from tandem_models.common import load_tokenizer
    from tandem_models.learn import (TOKENIZER_FILES, LearnConfig, _lora_model, heldout_examples, heldout_scores,
                                     server_settings, train_step, train_threads, workspace_sampler)

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
        heads, tails, head_sites = [], [], []
        for f in focus:
            lines = f.text.split("\n")
            n = int(len(lines) * a.focus_head)
            heads.append(SourceFile(f.rel, "\n".join(lines[:n]) + "\n"))
            head_sites += cut_sites([heads[-1]], 10 ** 6, base_cfg.seed)
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

    # Scored in the default layout whatever a variant trains with (seq_len included).
    held_examples = {k: heldout_examples(workspace_sampler(train_files, tok, base_cfg, context, a.score_seq), v)
                     for k, v in groups.items()}

    def losses(inner, bf16) -> dict:
        out = {}
        for k, v in held_examples.items():
            out[f"{k}_loss"], out[f"{k}_acc"] = heldout_scores(inner, v, bf16)
        return out

    served = [v for v in a.served.split(",") if v]
    tmp = Path(tempfile.mkdtemp(prefix="sweep-served-"))

    def write(p: dict) -> None:
        """One JSON line on stdout and in --out."""
        print(json.dumps(p), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(p) + "\n")

    feedback = []
    if a.feedback_sites:
        if not a.focus:
            ap.error("--feedback-sites needs --focus")
        from tandem.learn.evaluate import evaluate_model
        from tandem.learn.feedback import around
        from tandem.model.loaded import load_model
        from tandem_models.build import build
        random.Random(base_cfg.seed).shuffle(head_sites)
        asked = head_sites[:a.feedback_sites]
        variant = "cpu-int8"
        t = time.monotonic()
        built = build(source=str(hf), name="feedback-base", home=tmp, cpu_variant=variant, cuda=False, verify=False)
        model = load_model(str(built / variant), "cpu")
        try:
            r = evaluate_model(model, asked, settings=server_settings(base_cfg), context=context)
        finally:
            model.lm.close()
        shutil.rmtree(built, ignore_errors=True)
        for site, sample in zip(asked, r.samples):
            if sample["exact"]:  # accepted and still there 2 minutes later
                before, after = around(site.prefix + site.suffix, len(site.prefix))
                feedback.append((before, site.target, after))  # as the tracker records it
        record_fb = {"feedback_sites": len(asked), "accepted_kept": len(feedback),
                     "exact_match": r.exact_match, "s": round(time.monotonic() - t, 1)}
        write(record_fb)

    def serve_scores(source: Path, tag: str) -> dict:
        """Build `source` (an HF checkpoint) into each served variant and score the graphs."""
        from tandem.learn.evaluate import evaluate_blocks, evaluate_model, teacher_forced
        from tandem.model.loaded import load_model
        from tandem_models.build import build
        eval_settings = server_settings(base_cfg)
        out = {}
        for variant in served:
            t = time.monotonic()
            built = build(source=str(source), name=tag, home=tmp, cpu_variant=variant, cuda=False, verify=False)
            model = load_model(str(built / variant), "cpu")
            try:
                for k, v in held_examples.items():
                    loss, acc, _n = teacher_forced(model.lm, [(ids, m + 1) for ids, m in v])  # as PyTorch scores
                    r = evaluate_model(model, groups[k], settings=eval_settings, context=context, score_lines=True)
                    out.update({f"{variant}/{k}_loss": loss, f"{variant}/{k}_acc": acc,
                                f"{variant}/{k}_served_loss": r.heldout_loss, f"{variant}/{k}_served_acc": r.token_accuracy,
                                f"{variant}/{k}_exact": r.exact_match, f"{variant}/{k}_es": r.edit_similarity,
                                f"{variant}/{k}_lines": [s["got"] for s in r.samples]})
                    if a.blocks:
                        b = evaluate_blocks(model, groups[k], settings=eval_settings, context=context)
                        out.update({f"{variant}/{k}_blocks": {key: v for key, v in b.__dict__.items() if key != "samples"},
                                    f"{variant}/{k}_block_texts": [x["text"] for x in b.samples]})
            finally:
                model.lm.close()
            out[f"{variant}/s"] = round(time.monotonic() - t, 1)
        if a.keep and tag != "base":
            a.keep.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(a.keep / tag, ignore_errors=True)
            shutil.move(str(tmp / "models" / tag), str(a.keep / tag))
        shutil.rmtree(tmp / "models" / tag, ignore_errors=True)
        return out

    rows = []

    def record(p: dict) -> None:
        rows.append(p)
        write(p)

    base = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    t = time.monotonic()
    record({"variant": "base", "train_s": 0, **losses(base, base_cfg.bf16), "score_s": round(time.monotonic() - t, 1),
            **(serve_scores(hf, "base") if served else {})})
    del base

    for name in a.variants.split(","):
        cfg = replace(base_cfg, **VARIANTS[name])
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        sampler = workspace_sampler(train_files, tok, cfg, context, extra=feedback if cfg.feedback_examples else None)
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
        if served:
            import copy

            from peft.tuners.lora import LoraLayer
            model.eval()
            scales = [float(x) for x in a.merge_scales.split(",")]
            for n, scale in enumerate(scales):
                for m in model.modules():
                    if isinstance(m, LoraLayer):
                        m.set_scale("default", scale)  # LoRA's scaling (alpha / r) times `scale`
                tag = name if scale == 1 else f"{name}-x{scale:g}"
                # The last merge may consume the model; the others merge a copy (2 GB for the 0.5B).
                merged = (model if n == len(scales) - 1 else copy.deepcopy(model)).merge_and_unload()
                src = tmp / f"merged-{tag}"
                merged.save_pretrained(str(src))
                del merged
                for f in TOKENIZER_FILES:
                    if (hf / f).exists():
                        shutil.copy2(hf / f, src / f)
                record({"variant": tag, "step": step, "train_s": round(train_s, 1), "served": True,
                        "merge_scale": scale, **serve_scores(src, tag)})
                shutil.rmtree(src, ignore_errors=True)
        del model, opt

    shutil.rmtree(tmp, ignore_errors=True)
    for k, v in held_examples.items():
        for variant in served:
            print(f"\n{k}, served {variant} ({len(v)} sites): loss, first choices (as PyTorch laid them out; "
                  "after the engine's prompt), exact match %, edit similarity %")
            for r in rows:
                if f"{variant}/{k}_loss" in r:
                    print(f"  {r['variant']:<10} {r[f'{variant}/{k}_loss']:.3f}  {100 * r[f'{variant}/{k}_acc']:.1f}%  "
                          f"{r[f'{variant}/{k}_served_loss']:.3f}  {100 * r[f'{variant}/{k}_served_acc']:.1f}%  "
                          f"{r[f'{variant}/{k}_exact']:.1f}  {r[f'{variant}/{k}_es']:.1f}")
            if a.blocks:
                print(f"\n{k}, served {variant}, blocks not written yet: lines wanted, offered (one line / none), "
                      "right from the start, first line right, p50 ms")
                for r in rows:
                    if f"{variant}/{k}_blocks" in r:
                        b = r[f"{variant}/{k}_blocks"]
                        print(f"  {r['variant']:<10} {b['lines_wanted']:.2f}  {b['lines_offered']:.2f} ({b['one_line']} / "
                              f"{b['nothing']})  {b['lines_right']:.2f}  {b['first_line_right']}  {b['latency_ms_p50']:.0f}")
        base_loss = rows[0][f"{k}_loss"]
        print(f"\n{k} loss, {len(v)} sites (base {base_loss:.3f}):")
        for name in a.variants.split(","):
            pts = [r for r in rows if r["variant"] == name and not r.get("served")]
            print(f"  {name:<10} " + "  ".join(f"{r['train_s']:.0f}s {r[f'{k}_loss']:.3f}" for r in pts) +
                  f"   {100 * (pts[-1][f'{k}_loss'] - base_loss) / base_loss:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
