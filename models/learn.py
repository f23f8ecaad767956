"""`tandem learn`: fine-tune the current model on a workspace with LoRA, prove the gain through
the serving engine, and promote the result only when it helps.

    collect -> split by file -> evaluate the model the server serves (held-out cut sites)
    -> LoRA on FIM examples (the server's own prompt builder) within a time budget
    -> merge -> build the serving variant with the project's pipeline (parity checked)
    -> evaluate it the same way -> report -> promote (switch the bundle) only on a gain

Everything a run writes goes to <bundle>/versions/.run-<id> (hidden: the server never looks
there) and is deleted at the end, cancelled or not; what is kept is moved into
<bundle>/versions/<id> in one rename. A run killed outright leaves its .run directory, which
the next run deletes (under the same lock that keeps two runs from overlapping).

Progress: one JSON object per line on stdout with --json (what the language server reads),
else readable lines on stderr.

Usage: python -m tandem_models.learn WORKSPACE [--model-path BUNDLE] [--budget-minutes 10]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tandem.learn.context import ContextSettings, WorkspaceContext
from tandem.learn import versions as V
from tandem.learn.cli import add_model_arguments, model_path
from tandem.learn.evaluate import CONTEXT_TOKENS, evaluate_path
from tandem.settings import Settings
from tandem.learn.workspace import WorkspaceError, block_end, collect, cut_sites, split
from tandem.model.loader import sha256_file

from .common import MANIFEST_NAME, PipelineError, load_tokenizer, read_json, write_json
from .finetune import FimSampler, FinetuneConfig, _bucket

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json")


@dataclass
class LearnConfig:
    budget_s: float = 600.0  # the whole run, on this machine; training gets what the rest leaves
    max_steps: int = 100_000  # a cap; the budget usually ends training first
    lr: float = 5e-4
    warmup: int = 5
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    batch_size: int = 4
    seq_len: int = 320  # measured (README, "Window length"): 192 trains 47% more steps but ends worse;
    #                     512 ends level with 320 after 5 minutes on 2 cores
    fim_rate: float = 0.95
    # Of the FIM examples, this share is cut as a line completion (the cursor after a line's
    # indentation, the rest of the line, sometimes a line or two more), the rest by finetune.py's
    # mix (mid-line cursors, whole lines, to the end of the window, random spans). Measured
    # (README, "What the held-out loss shows"): long to-the-end middles dominated the loss.
    line_rate: float = 0.75
    # Of those line completions, this share asks for the rest of the line's block instead
    # (workspace.block_end, up to BLOCK_LINES lines), with the suffix going on after the block:
    # the user writing new code on a blank line, where the code that follows is not written yet.
    # Measured (README, "Blocks on a new line"): line completions alone taught the model to stop
    # after one line (1.4-1.8 lines offered where the base offers 4.8-4.9); a third restores it.
    block_rate: float = 0.33
    middle_weight: float = 2.0
    heldout_share: float = 0.2
    eval_sites: int = 60
    eval_share: float = 0.12  # of the budget, at most, for each evaluation (at least 10 sites)
    context_tokens: int = CONTEXT_TOKENS  # the evaluation's prompt budget: the server's contextTokens
    context_share: float = ContextSettings.share  # other files' context in every prompt (0: none), as
    context_sources: tuple = ContextSettings.sources  # the server's contextShare / contextSources
    # Held-out loss during the run: the teacher-forced loss (PyTorch, the training layout with
    # its context block) of the lines at this many held-out sites, before the first step, at
    # the curve points and after the last step. Measured (README, "What the held-out loss shows"): it
    # falls steadily where exact match on a few dozen lines cannot tell a change from noise.
    curve_sites: int = 12
    curve_points: int = 1  # held-out loss also at every 1/N of the training time (1: only first and last)
    checkpoint_s: float = 60.0  # training time between checkpoints (a killed run resumes from the last one)
    min_gain: float = 2.0  # points of held-out exact match needed to promote
    min_net_lines: int = 2  # and held-out lines newly right minus lines newly wrong
    seed: int = 0
    bf16: bool = True
    feedback_examples: bool = False  # also train on retained accepted completions (opt-in log)
    feedback_rate: float = 0.25
    promote: bool = True
    variant: str = ""  # serving variant to build; empty: the base's CPU variant
    cuda: bool | None = None  # also the fp16 CUDA variant; None: when the base has one and a GPU is here
    threads: int = 0  # torch threads; 0: all cores, or 1 when other work already fills them
    layers: int = 8  # LoRA on the last N transformer layers only (0: all): the backward pass
    #                  stops at the first adapted layer, so fewer layers train faster on a CPU
    middle_only: bool = True  # FIM loss on the middle only: lm_head (150k x hidden) runs on
    #                           those positions alone, not on every prompt token
    # The files the user works in (relative paths; the editor's open and recently edited
    # documents): they always train, and at least this share of the training windows comes from
    # them (0: windows by file size alone, as for every other file). Measured (README, "The
    # files you work in"): 0.5 lowered the loss of the lines written next in those files more
    # than by size (-27% against -21.5%, -29% against -25%), but in a whole run the other
    # files' held-out loss fell by 11.8% instead of 19.2%, and those are what the promotion
    # gate scores: opt-in until that trade is measured on more runs.
    focus: tuple = ()
    focus_share: float = 0.0


class Cancelled(Exception):
    pass


class Reporter:
    def __init__(self, as_json: bool):
        self.as_json = as_json

    def __call__(self, event: str, **data) -> None:
        data = {"event": event, **data}
        if self.as_json:
            print(json.dumps(data), flush=True)
        else:
            text = data.get("message") or ", ".join(f"{k}={v}" for k, v in data.items() if k != "event")
            print(f"[learn] {event}: {text}", file=sys.stderr, flush=True)


# -- training -------------------------------------------------------------------------------

class WorkspaceSampler(FimSampler):
    """FIM examples from the workspace: finetune.py's windows and splits, laid out by the
    completion engine's own prompt code (tandem.completion.engine.serving_prompt: the line's
    indentation left for the model to write, token healing, the budget split), with the context
    block the server would put before each (the same providers over the same workspace,
    tandem.learn.context), then what the model must write and the end token. Opt-in, examples
    from retained accepted completions (no document: no context, as the log keeps none)."""

    def __init__(self, files, tok, cfg: FinetuneConfig, rng, extra: list[tuple[str, str, str]] | None = None,
                 extra_rate: float = 0.0, context=None, line_rate: float = 0.0, focus=(), focus_share: float = 0.0,
                 block_rate: float = 0.0):
        files = [f for f in files if f.text.strip()]
        super().__init__([f.text for f in files], tok, cfg, rng)
        self.rels = [f.rel for f in files]  # parallel to self.docs
        self.extra, self.extra_rate = extra or [], extra_rate if extra else 0.0
        self.context = context  # tandem.learn.context.WorkspaceContext, or None: no context block
        self.line_rate, self.block_rate = line_rate, block_rate
        self.focus_weight(set(focus), focus_share)
        self.last_window = (0, 0)  # (index in docs, character offset) of the last window()
        self.stats = {"examples": 0, "tokens": 0, "context_examples": 0, "context_tokens": 0}

    def focus_weight(self, focus: set, share: float) -> None:
        """Scale the focus files' window weights (by size, like every file's) so that they get
        at least `share` of the windows; never less than their size gives them."""
        mine = sum(w for rel, w in zip(self.rels, self.weights) if rel in focus)
        rest = sum(self.weights) - mine
        if not mine or not rest or share <= 0 or mine / (mine + rest) >= share:
            return
        if share >= 1:
            self.weights = [w if rel in focus else 0 for rel, w in zip(self.rels, self.weights)]
            return
        scale = share * rest / ((1 - share) * mine)
        self.weights = [w * scale if rel in focus else w for rel, w in zip(self.rels, self.weights)]

    def window(self) -> str:
        """finetune.py's window, remembering which file it came from and where."""
        index = self.rng.choices(range(len(self.docs)), weights=self.weights)[0]
        docs, weights = self.docs, self.weights
        self.docs, self.weights = [docs[index]], [1]
        try:
            text = super().window()
        finally:
            self.docs, self.weights = docs, weights
        start = max(0, docs[index].find(text.rstrip()))
        self.last_window = (index, start)
        return text

    def example(self) -> list[int]:
        if self.extra and self.rng.random() < self.extra_rate:
            prefix, middle, suffix = self.rng.choice(self.extra)
            return self._count(self.fim_example(prefix, middle, suffix))
        text = self.window()
        index, start = self.last_window
        if self.rng.random() >= self.cfg.fim_rate:
            return self._count((self.encode(text) + [self.eot_id])[:self.cfg.seq_len])
        prefix, middle, suffix = self.split(text)
        if self.context is None:
            return self._count(self.fim_example(prefix, middle, suffix))
        doc = self.docs[index]
        cursor = min(len(doc), start + len(prefix))
        # The document as the user has it at that cursor: the middle not written yet.
        return self._count(self.fim_example(prefix, middle, suffix,
                                            (self.rels[index], doc[:cursor] + doc[cursor + len(middle):], cursor)))

    def split(self, text: str) -> tuple[str, str, str]:
        """A line completion (`line_rate` of the time), else finetune.py's split."""
        rng = self.rng
        if rng.random() >= self.line_rate:
            return super().split(text)
        lines = text.splitlines(keepends=True)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))
        code = [i for i, line in enumerate(lines) if len(line.strip()) >= 4] or [0]
        i = rng.choice(code)
        begin = starts[i] + len(lines[i]) - len(lines[i].lstrip())
        j = i
        if self.block_rate and rng.random() < self.block_rate:
            j = block_end(lines, i)
        else:
            while j + 1 < len(lines) and lines[j + 1].strip() and rng.random() < 0.2:
                j += 1
        end = starts[j] + len(lines[j].rstrip("\n"))
        return text[:begin], text[begin:end], text[end:]

    def fim_example(self, prefix: str, middle: str, suffix: str, where=None) -> list[int]:
        """finetune.py's example (the engine's prompt, then what the model must write), with the
        context block the server would put before it for the document `where` = (rel, text,
        offset), if given, within the same budget (the server's contextTokens)."""
        head = ()
        if where is not None:
            block = self.context.block(self, *where, self.fim_budget(middle))
            if block is not None:
                head = block.ids
                self.stats["context_examples"] += 1
                self.stats["context_tokens"] += len(head)
        return super().fim_example(prefix, middle, suffix, head)

    def _count(self, ids: list[int]) -> list[int]:
        self.stats["examples"] += 1
        self.stats["tokens"] += len(ids)
        return ids


def server_settings(cfg: LearnConfig) -> Settings:
    """The server settings the run's evaluations complete with (prompt budget, context)."""
    return Settings(contextTokens=cfg.context_tokens, contextShare=cfg.context_share,
                    contextSources=tuple(cfg.context_sources))


def workspace_sampler(files, tok, cfg: LearnConfig, context=None, seq_len: int = 0, extra=None) -> WorkspaceSampler:
    """The run's sampler (`seq_len`: another window length, e.g. the server's prompt budget for
    laying out held-out lines as the server would)."""
    fcfg = FinetuneConfig(batch_size=cfg.batch_size, seq_len=seq_len or cfg.seq_len, fim_rate=cfg.fim_rate,
                          middle_weight=cfg.middle_weight, seed=cfg.seed, bf16=cfg.bf16)
    return WorkspaceSampler(files, tok, fcfg, random.Random(cfg.seed), extra, cfg.feedback_rate, context,
                            cfg.line_rate, cfg.focus, cfg.focus_share, cfg.block_rate)


def _lora_model(hf_dir: Path, cfg: LearnConfig):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in names]
    if not targets:
        raise PipelineError(f"the model in {hf_dir} has none of the layers LoRA adapts ({', '.join(LORA_TARGETS)})")
    n_layers = model.config.num_hidden_layers
    layers = list(range(max(0, n_layers - cfg.layers), n_layers)) if cfg.layers > 0 else None
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      task_type="CAUSAL_LM", bias="none", layers_to_transform=layers)
    return get_peft_model(model, lcfg)


def heldout_examples(sampler: "WorkspaceSampler", sites) -> list[tuple[list[int], int]]:
    """(token ids, index of the FIM middle token) for each held-out site, laid out as a
    training example (the serving prompt, with the context block the server would gather for
    the document as the user has it there), without the end token: what is scored is the line."""
    out, stats = [], dict(sampler.stats)
    for s in sites:
        where = (s.file, s.prefix + s.suffix, len(s.prefix)) if sampler.context is not None else None
        ids = sampler.fim_example(s.prefix, s.target, s.suffix, where)
        if sampler.middle_id in ids and ids[-1] == sampler.eot_id:
            out.append((ids[:-1], ids.index(sampler.middle_id)))
    sampler.stats = stats  # the training examples' figures, not these
    return out


def heldout_loss(inner, examples, bf16: bool) -> float | None:
    """Mean loss per token of the held-out lines, teacher-forced (the output layer runs on the
    scored positions only)."""
    return heldout_scores(inner, examples, bf16)[0]


def heldout_scores(inner, examples, bf16: bool) -> tuple[float | None, float | None]:
    """heldout_loss, and the share of those tokens that are the model's own first choice."""
    import torch
    import torch.nn.functional as F
    if not examples:
        return None, None
    total, hits, n = 0.0, 0, 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for ids, m in examples:
            x = torch.tensor([ids])
            hidden = inner.model(input_ids=x).last_hidden_state[0, m:-1]
            logits = inner.lm_head(hidden).float()
            total += float(F.cross_entropy(logits, x[0, m + 1:], reduction="sum"))
            hits += int((logits.argmax(-1) == x[0, m + 1:]).sum())
            n += len(ids) - 1 - m
    return round(total / max(1, n), 4), round(hits / max(1, n), 4)


# -- checkpoints: a killed run resumes ---------------------------------------------------------

CHECKPOINT = "checkpoint.json"  # the pointer, written last (atomically): names the state file and its sha256
BEFORE = "before.json"  # the first evaluation's result, so a resumed run does not repeat it


class CheckpointError(Exception):
    """A checkpoint that cannot be used (corrupt, truncated, from other settings)."""


def save_checkpoint(run: Path, key: str, state: dict, tensors: dict) -> None:
    """`tensors` (the adapter's weights, the optimizer's state) to checkpoint-<step>.pt, then the
    pointer naming it with its size and sha256: a kill at any moment leaves either the previous
    checkpoint or this one whole. Older state files are removed after the pointer moved."""
    import torch
    name = f"checkpoint-{state['step']:07d}.pt"
    tmp = run / f".{name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        torch.save(tensors, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run / name)
    V.write_json_atomic(run / CHECKPOINT, {**state, "key": key, "file": name, "bytes": (run / name).stat().st_size,
                                          "sha256": sha256_file(run / name), "saved": time.time()})
    for old in run.glob("checkpoint-*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(run: Path, key: str) -> tuple[dict, dict] | None:
    """(state, tensors) of the run's checkpoint; None when there is none; CheckpointError when
    it is unusable (the caller discards the folder and starts over)."""
    import torch
    meta_path = run / CHECKPOINT
    if not meta_path.exists():
        return None
    try:
        state = json.loads(meta_path.read_text())
        f = run / str(state["file"])
        if state.get("key") != key:
            raise CheckpointError("it was made with other settings or data")
        if not f.is_file() or f.stat().st_size != state["bytes"] or sha256_file(f) != state["sha256"]:
            raise CheckpointError(f"{f.name} does not match its recorded size and sha256")
        tensors = torch.load(f, map_location="cpu", weights_only=True)
        if not isinstance(tensors, dict) or "adapter" not in tensors or "optimizer" not in tensors:
            raise CheckpointError(f"{f.name} lacks the adapter or the optimizer state")
        return state, tensors
    except CheckpointError:
        raise
    except Exception as e:  # bad JSON, missing keys, a file torch cannot read
        raise CheckpointError(f"{type(e).__name__}: {e}") from e


def run_key(hf_dir: Path, bundle: Path, root: Path, cfg: LearnConfig, data_digest: str) -> str:
    """What a resumable run depends on: the model (its checkpoint files and the version served),
    the workspace and its data split, and every setting except the machine's thread count."""
    import hashlib
    model = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in hf_dir.iterdir() if f.is_file())
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("threads", "promote", "checkpoint_s")}
    blob = json.dumps({"model": model, "active": V.active(bundle), "workspace": str(root), "data": data_digest,
                       "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def data_digest(train_files, held, sites) -> str:
    import hashlib
    h = hashlib.sha256()
    for tag, files in (("train", train_files), ("held", held)):
        for f in files:
            h.update(f"{tag}\0{f.rel}\0{hashlib.sha256(f.text.encode()).hexdigest()}\0".encode())
    h.update(f"sites\0{len(sites)}".encode())
    return h.hexdigest()


def train(hf_dir: Path, files, curve_sites, out: Path, cfg: LearnConfig, deadline: float,
          emit, cancel: threading.Event, extra=None, context: WorkspaceContext | None = None,
          key: str = "", resume: tuple[dict, dict] | None = None) -> dict:
    """LoRA on `files` until `deadline` (time.monotonic) or cfg.max_steps; saves the adapter in
    out/adapter and the merged checkpoint in out/merged. Returns the training history.

    Every cfg.checkpoint_s of training (and after the last step) the adapter, the optimizer's
    state, the step, the history and the sampler's random state go to out/checkpoint-*.pt
    (save_checkpoint); `resume` (load_checkpoint's result) continues from one: the same
    examples, the same learning-rate schedule (by training time, counted across the runs)."""
    import torch

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(train_threads(cfg))
    tok = load_tokenizer(hf_dir)
    sampler = workspace_sampler(files, tok, cfg, context, extra=extra)
    model = _lora_model(hf_dir, cfg)
    inner = model.get_base_model()  # the causal LM with the LoRA layers in it
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else sampler.eot_id
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)

    history = {"steps": [], "loss": [], "curve": [], "trainable_params": trainable, "tokens": 0}
    t0 = time.monotonic()
    total_s = max(1.0, deadline - t0)
    step, tokens, loss_value, compute_s, before_s = 0, 0, float("nan"), 0.0, 0.0
    if resume is not None:
        from peft import set_peft_model_state_dict
        state, tensors = resume
        set_peft_model_state_dict(model, tensors["adapter"])
        opt.load_state_dict(tensors["optimizer"])
        step, tokens, compute_s = int(state["step"]), int(state["tokens"]), float(state["compute_s"])
        before_s, total_s = float(state["train_s"]), float(state["train_total_s"])
        loss_value = state["history"]["loss"][-1] if state["history"]["loss"] else float("nan")
        history.update({k: state["history"][k] for k in ("steps", "loss", "curve")})
        sampler.rng.setstate(_rng_state(state["sampler_rng"]))
        sampler.stats = dict(state["stats"])
        history["resumed_from_step"] = step

    def elapsed() -> float:  # training time across the runs
        return before_s + time.monotonic() - t0

    def checkpoint() -> None:
        from peft import get_peft_model_state_dict
        save_checkpoint(out, key, {
            "step": step, "tokens": tokens, "compute_s": compute_s, "train_s": elapsed(), "train_total_s": total_s,
            "history": {k: history[k] for k in ("steps", "loss", "curve")}, "stats": sampler.stats,
            "sampler_rng": sampler.rng.getstate()},
            {"adapter": get_peft_model_state_dict(model), "optimizer": opt.state_dict()})

    held_examples = heldout_examples(sampler, curve_sites)

    def curve_point(step: int) -> None:
        if not held_examples or (history["curve"] and history["curve"][-1]["step"] == step):
            return
        model.eval()
        loss = heldout_loss(inner, held_examples, cfg.bf16)
        model.train()
        history["curve"].append({"step": step, "heldout_loss": loss})
        emit("curve", step=step, heldout_loss=loss, sites=len(held_examples))

    # Curve points at these fractions of the training time (the last one after the last step).
    marks = [i / cfg.curve_points for i in range(1, cfg.curve_points) if i / cfg.curve_points > elapsed() / total_s]
    t_curve = time.monotonic()
    curve_point(step)  # before the first step (a resumed run has it already)
    # The last point comes after the last step: its time is kept out of training's.
    stop_at = deadline - (time.monotonic() - t_curve if held_examples else 0.0)
    model.train()
    saved_at = time.monotonic()
    while step < cfg.max_steps and time.monotonic() < stop_at:
        if cancel.is_set():
            raise Cancelled()
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        # Cosine over the run: by steps when a step cap ends it first, else by time.
        frac = max(step / cfg.max_steps, elapsed() / total_s)
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))  # cosine over the time budget
        for g in opt.param_groups:
            g["lr"] = lr
        t_step = time.monotonic()
        loss_value, n_tokens = train_step(model, inner, opt, sampler, cfg, pad_id)
        step += 1
        tokens += n_tokens
        history["steps"].append(step)
        history["loss"].append(round(loss_value, 4))
        compute_s += time.monotonic() - t_step
        dt = time.monotonic() - t0
        emit("train", step=step, loss=round(loss_value, 4), tokens_per_s=round(tokens / compute_s, 1),
             seconds=round(dt, 1), time_left_s=round(max(0.0, deadline - time.monotonic()), 1))
        while marks and elapsed() / total_s >= marks[0]:
            marks.pop(0)
            curve_point(step)
        if key and time.monotonic() - saved_at >= cfg.checkpoint_s:
            checkpoint()
            saved_at = time.monotonic()
    if step == 0:
        raise PipelineError("the time budget ended before the first training step; give a larger budget")
    curve_point(step)
    if key:
        checkpoint()  # training done: a kill during the build resumes at the merge
    history.update(tokens=tokens, train_s=round(elapsed(), 1), final_loss=loss_value,
                   step_s=round(compute_s / step, 2), tokens_per_s=round(tokens / max(1e-9, compute_s), 1),
                   threads=torch.get_num_threads(), examples=sampler.stats["examples"],
                   tokens_per_example=round(sampler.stats["tokens"] / max(1, sampler.stats["examples"]), 1),
                   context_examples=sampler.stats["context_examples"],
                   context_tokens_per_example=round(sampler.stats["context_tokens"] / max(1, sampler.stats["examples"]), 1))
    if cancel.is_set():
        raise Cancelled()

    emit("phase", phase="merge", message="merging the adapter into the model")
    model.save_pretrained(str(out / "adapter"))
    merged = model.merge_and_unload()
    mdir = out / "merged"
    mdir.mkdir(parents=True)
    for f in TOKENIZER_FILES:
        if (hf_dir / f).exists():
            shutil.copy2(hf_dir / f, mdir / f)
    merged.save_pretrained(str(mdir))
    return history


def train_step(model, inner, opt, sampler: WorkspaceSampler, cfg: LearnConfig, pad_id: int) -> tuple[float, int]:
    """One optimizer step on cfg.batch_size new examples from `sampler`: (loss, tokens)."""
    import torch
    import torch.nn.functional as F
    examples = sorted((sampler.example() for _ in range(cfg.batch_size)), key=len)
    width = _bucket(len(examples[-1]))
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.zeros((len(examples), width), dtype=torch.long)
    w = torch.zeros((len(examples), width))
    for row, ids in enumerate(examples):
        x[row, :len(ids)] = torch.tensor(ids)
        y[row, :len(ids) - 1] = torch.tensor(ids[1:])
        w[row, :len(ids) - 1] = 1.0
        if sampler.middle_id in ids:
            m = ids.index(sampler.middle_id)
            if cfg.middle_only:
                w[row, :m] = 0.0
            w[row, m:len(ids) - 1] = cfg.middle_weight
    sel = w > 0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        hidden = inner.model(input_ids=x).last_hidden_state
        logits = inner.lm_head(hidden[sel])  # only where the loss looks
    ce = F.cross_entropy(logits.float(), y[sel], reduction="none")
    loss = (ce * w[sel]).sum() / w[sel].sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    return float(loss.item()), int(sum(len(e) for e in examples))


def _rng_state(saved):
    """random.Random.getstate() as JSON gave it back (lists for tuples)."""
    version, internal, gauss = saved
    return version, tuple(internal), gauss


def busy_elsewhere(interval: float = 0.5) -> float | None:
    """How many CPUs' worth of work other processes did over the next `interval` seconds: the
    system's busy time (/proc/stat) less this process's own; None where /proc/stat is missing."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        own = os.times()
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.monotonic()
    try:
        b0, o0, t0 = sample()
        time.sleep(interval)
        b1, o1, t1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, (b1 - b0) - (o1 - o0)) / max(1e-3, t1 - t0)


def train_threads(cfg: LearnConfig) -> int:
    """The cores other work leaves free, at least one: measured on 2 shared cores (load ~10), a
    step of the tiny model took 0.6 s with 1 thread and 8 s with 2 (OpenMP threads spinning while
    they wait for a core). Measured now, not from the load average: that still counts the run's
    own evaluation of the minute before (2 threads on 2 cores), which made an idle machine look
    busy and halved training's speed (183 against ~300 tokens/s, README "Tandem learns")."""
    if cfg.threads > 0:
        return cfg.threads
    from tandem.model.backend import physical_cores  # the serving runtime's count of the cores
    cores = physical_cores()
    others = busy_elsewhere()
    if others is None:
        try:
            others = os.getloadavg()[0]
        except OSError:
            others = 0.0
    return max(1, min(cores, int(cores - others + 0.5)))


# -- the whole run ---------------------------------------------------------------------------

def memory_warning(weights: int, available: int | None) -> str | None:
    """A word before a run that may not fit in memory. Peaks measured on 2 cores (README, the
    run's whole process group, the builder included): 9.4 GiB for the 0.5B's 1.8 GiB of float32
    weights, 17.6 GiB for the 1.5B's 5.8 GiB; about 5.5 GiB + 2.1x the weights."""
    need = 5.5 * 2**30 + 2.1 * weights
    if available is None or available >= need:
        return None
    return (f"this run may need about {need / 2**30:.0f} GiB of memory at its peak (the build of the tuned "
            f"model); {available / 2**30:.1f} GiB are available now. If it runs out, the run stops with a "
            "message and the model that serves stays as it is; closing other programs helps.")


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), in bytes; None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_disk(path: Path, need_bytes: int) -> None:
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise PipelineError(f"only {free / 2**30:.1f} GiB free under {path}; learning this model needs about "
                            f"{need_bytes / 2**30:.1f} GiB for its working files. Free some space and run again.")


def learn(workspace: Path, model_path: str | None, cfg: LearnConfig, emit, cancel: threading.Event) -> dict:
    t_start = time.monotonic()
    deadline = t_start + cfg.budget_s
    bundle = V.bundle_for(model_path)
    hf_dir = bundle / "hf"
    if not (hf_dir / "config.json").exists():
        raise PipelineError(f"{bundle} has no Hugging Face checkpoint (hf/) to fine-tune; rebuild it with "
                            "`tandem-models build`.")
    with V.locked(bundle, ".learn.lock", blocking=False):
        emit("phase", phase="collect", message=f"collecting source files in {workspace}")
        coll = collect(workspace)
        if not coll.files:
            why = ("; " + ", ".join(f"{n} {r}" for r, n in coll.skipped.most_common())) if coll.skipped else ""
            raise WorkspaceError(f"no source files to learn from in {coll.root}{why}.")
        cfg = replace(cfg, focus=focus_files(coll, cfg.focus))
        if cfg.focus:
            emit("phase", phase="collect", message=f"{len(cfg.focus)} file(s) you work in always train"
                                                   + (f", {cfg.focus_share:.0%} of the examples from them"
                                                      if cfg.focus_share > 0 else "") + ": " + ", ".join(cfg.focus[:5]))
        train_files, held = split(coll.files, cfg.heldout_share, cfg.seed, keep=cfg.focus)
        sites = cut_sites(held, cfg.eval_sites, cfg.seed)
        random.Random(cfg.seed).shuffle(sites)  # the first ones are used when time is short
        if not sites:
            raise WorkspaceError(f"the held-out files ({', '.join(f.rel for f in held[:5])}) have no lines to test "
                                 "completions on.")
        key = run_key(hf_dir, bundle, coll.root, cfg, data_digest(train_files, held, sites))
        vdir = bundle / V.VERSIONS_DIR
        vdir.mkdir(exist_ok=True)
        run = vdir / f".run-{key[:16]}"  # the same model, workspace, data and settings: the same folder
        for other in vdir.glob(".run-*"):  # another run's, killed outright: it cannot be resumed by this one
            if other != run:
                if (other / CHECKPOINT).exists():
                    emit("phase", phase="collect", message=f"discarding an interrupted run's checkpoint "
                                                           f"({other.name}): it was for another workspace, "
                                                           "model or settings")
                shutil.rmtree(other, ignore_errors=True)
        resume = None
        if run.exists():
            try:
                resume = load_checkpoint(run, key)
            except CheckpointError as e:
                emit("phase", phase="collect", message=f"the interrupted run's checkpoint is unusable ({e}); "
                                                       "discarding it and starting over")
            if resume is None:
                shutil.rmtree(run, ignore_errors=True)
            else:
                for part in ("adapter", "merged", "build", "keep"):  # half-done work after the checkpoint
                    shutil.rmtree(run / part, ignore_errors=True)
        run.mkdir(exist_ok=True)
        vid = V.new_version_id()
        while (vdir / vid).exists():
            time.sleep(1)
            vid = V.new_version_id()
        try:
            return _learn(coll, train_files, held, sites, key, resume, bundle, hf_dir, run, vid, cfg, emit, cancel,
                          t_start, deadline)
        finally:
            shutil.rmtree(run, ignore_errors=True)  # done, failed or cancelled: a kill leaves it to resume


def focus_files(coll, paths) -> tuple:
    """The files the user works in (absolute paths, or relative to the workspace) that are
    among the workspace's source files, as relative paths; the rest are ignored."""
    rels = {f.rel for f in coll.files}
    out = []
    for p in paths:
        path = Path(p)
        try:
            rel = path.resolve().relative_to(coll.root.resolve()).as_posix() if path.is_absolute() else path.as_posix()
        except ValueError:
            continue  # outside the workspace
        if rel in rels and rel not in out:
            out.append(rel)
    return tuple(out)


def _learn(coll, train_files, held, sites, key, resume, bundle, hf_dir, run, vid, cfg, emit, cancel, t_start,
           deadline) -> dict:
    weights = sum((hf_dir / f).stat().st_size for f in os.listdir(hf_dir) if f.endswith((".safetensors", ".bin")))
    _check_disk(run, 3 * weights + (64 << 20))
    emit("phase", phase="collect", message=coll.summary(), train_files=len(train_files),
         heldout_files=len(held), sites=len(sites))
    if (warning := memory_warning(weights, _available_memory())) is not None:
        emit("phase", phase="collect", message=warning, warning=True)

    # Other files' context, as the server gathers it for a document of this workspace (the
    # same seam, index and budget split), in the evaluation's prompts and the training examples.
    csettings = ContextSettings(cfg.context_share, tuple(cfg.context_sources))
    context = WorkspaceContext.for_run(coll.root, train_files, csettings, cfg.focus)
    if context is not None:
        emit("phase", phase="collect", message=f"context from other files: {', '.join(csettings.sources)}, "
                                               f"{csettings.share:g} of each prompt; {len(context.open_files)} "
                                               f"training files as the open documents")
    settings = server_settings(cfg)

    def on_site(phase):
        return lambda n, total: emit("eval", phase=phase, done=n, total=total,
                                     time_left_s=round(max(0.0, deadline - time.monotonic()), 1))

    if cancel.is_set():
        raise Cancelled()
    saved = _read_before(run, key) if resume is not None else None
    if saved is not None:
        before, eval_s = saved
        st = resume[0]
        emit("phase", phase="train", resumed_from_step=st["step"],
             message=f"resuming the interrupted run from its checkpoint at training step {st['step']} "
                     f"({st['train_s']:.0f} of {st['train_total_s']:.0f} s of training done); the first evaluation "
                     "is reused")
    else:
        if resume is not None:
            emit("phase", phase="collect", message="the interrupted run's first evaluation is missing; starting over")
            resume = None
        emit("phase", phase="eval-before", message=f"evaluating the served model on {len(sites)} held-out lines")
        t = time.monotonic()
        before = evaluate_path(str(bundle), sites, settings=settings, context=context, cancel=cancel,
                               on_site=on_site("eval-before"), time_limit_s=cfg.eval_share * cfg.budget_s,
                               score_lines=True)
        eval_s = time.monotonic() - t
        V.write_json_atomic(run / BEFORE, {"key": key, "eval_s": eval_s, "result": before.to_json(samples=10**6)})
    # The held-out loss's sites: the first of the shuffled held-out sites, whatever the machine's
    # speed let the evaluation reach (so runs on the same workspace score the same lines).
    curve_sites = sites[:cfg.curve_sites]
    sites = sites[:before.sites]  # the same sites after training
    if cancel.is_set():
        raise Cancelled()
    emit("phase", phase="eval-before", message=f"exact match {before.exact_match}%, edit similarity "
                                               f"{before.edit_similarity}%, p50 {before.latency_ms_p50} ms")

    # Training gets what the rest of the budget leaves: the second evaluation takes about as
    # long as the first; what follows training (its last step, merge, build, parity check)
    # takes what it took the last time this model was tuned on this machine, with a margin;
    # the first time, a bound that scales with the checkpoint (measured on 2 shared cores, the
    # 0.5B model's 2.3 GiB of float32 weights: 75 s at load ~4, 135 s of build alone at load
    # ~10): 45 s per GiB. That bound left 100 s of a 10-minute budget unused on an idle machine.
    base_info = V.read_bundle(bundle)
    name = base_info.get("name") or bundle.name
    timing_key = _timing_key(name, cfg)
    after_training = _read_timings().get(timing_key)
    reserve = 1.1 * eval_s + (1.2 * after_training + 10 if after_training else 20 + 45 * weights / 2**30)
    train_deadline = max(time.monotonic() + 0.15 * cfg.budget_s, deadline - reserve)
    if resume is not None:  # what the interrupted run had left of its training time
        st = resume[0]
        train_deadline = min(train_deadline, time.monotonic() + max(0.0, st["train_total_s"] - st["train_s"]))
    extra = []
    if cfg.feedback_examples:
        from tandem.learn.feedback import retained_examples
        extra = retained_examples()
        emit("phase", phase="train", message=f"{len(extra)} retained accepted completions as extra examples")
    emit("phase", phase="train", message=f"LoRA on {len(train_files)} files for up to "
                                         f"{max(0, train_deadline - time.monotonic()):.0f}s")
    history = train(hf_dir, train_files, curve_sites, run, cfg, train_deadline, emit, cancel, extra, context,
                    key=key, resume=resume)

    base_variants = base_info.get("base_variants") or base_info.get("variants") or {}
    base_cpu = base_variants.get("cpu", "cpu-int8")
    variant = cfg.variant or (base_cpu if base_cpu in ("cpu-int8", "cpu-int4", "cpu-fp32") else "cpu-int8")
    from .build import _cuda_present, build
    # A model that serves on a GPU gets its tuned version there too (the gate below measures the
    # CPU variant: the same weights, int8).
    cuda = cfg.cuda if cfg.cuda is not None else ("cuda" in base_variants and _cuda_present())
    built_variants = {"cpu": variant, **({"cuda": "cuda-fp16"} if cuda else {})}
    emit("phase", phase="build", message=f"building the serving variant{'s' if cuda else ''} "
                                         f"{', '.join(built_variants.values())} (and checking parity)")
    built = build(source=str(run / "merged"), name=name, home=run / "build", cpu_variant=variant,
                  cuda=cuda, verify=True)
    if not cancel.is_set() and resume is None:
        _write_timing(timing_key, time.monotonic() - train_deadline)
    variant_dir = built / variant
    shutil.rmtree(run / "merged", ignore_errors=True)  # the merged float32 checkpoint: GBs, not kept
    if cancel.is_set():
        raise Cancelled()

    emit("phase", phase="eval-after", message="evaluating the tuned model the same way")
    after = evaluate_path(str(variant_dir), sites, settings=settings, context=context, cancel=cancel,
                          on_site=on_site("eval-after"), score_lines=True)
    if cancel.is_set():
        raise Cancelled()
    promote, decision, (gain, wins, losses) = decide(before, after, cfg)
    change = heldout_change(history)
    if change is not None and not promote:
        curve = history["curve"]
        decision += (f" (held-out loss {curve[0]['heldout_loss']:.3f} -> {curve[-1]['heldout_loss']:.3f}, "
                     f"{change:+.1f}%)")
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    info = {"version": vid, "workspace": str(coll.root), "date": date, "gain_points": gain,
            "promoted": promote, "decision": decision, "base": str(hf_dir), "from_version": V.active(bundle),
            "variants": built_variants if promote else {}}
    report = {
        **info, "machine": _machine(), "config": asdict(cfg),
        "data": {"files": len(coll.files), "train_files": len(train_files), "heldout_files": len(held),
                 "heldout": [f.rel for f in held], "sites": len(sites), "skipped": dict(coll.skipped)},
        "before": before.to_json(), "after": after.to_json(),
        "edit_similarity_gain_points": round(after.edit_similarity - before.edit_similarity, 2),
        "lines_gained": wins, "lines_lost": losses, "heldout_loss_change_pct": change,
        "served_heldout_loss_change_pct": round(100 * (after.heldout_loss - before.heldout_loss) / before.heldout_loss, 1)
        if before.heldout_loss and after.heldout_loss is not None else None,
        "training": {k: v for k, v in history.items() if k not in ("steps", "loss")},
        "loss": history["loss"], "seconds_total": round(time.monotonic() - t_start, 1),
        "peak_rss_mib": _peak_rss_mib(),
        # The serving-variant build runs onnxruntime-genai's builder as a child process while
        # this one still holds the model: the machine needs up to both at once.
        "peak_rss_children_mib": _peak_rss_mib(children=True),
    }
    stage = run / "keep"
    stage.mkdir()
    shutil.copytree(run / "adapter", stage / "adapter")
    if promote:
        for name in built_variants.values():
            manifest = read_json(built / name / MANIFEST_NAME) or {}
            manifest["tuned"] = {"version": vid, "workspace": str(coll.root), "date": date, "gain_points": gain}
            write_json(built / name / MANIFEST_NAME, manifest)
            os.replace(built / name, stage / name)
    write_report(stage, report, history, before, after)
    (stage / V.VERSION_FILE).write_text(json.dumps(info, indent=2) + "\n")
    os.replace(stage, bundle / V.VERSIONS_DIR / vid)  # one rename: the version appears whole
    if promote:
        V.switch(bundle, vid)
    emit("done", promoted=promote, version=vid, decision=decision, report=str(bundle / V.VERSIONS_DIR / vid / "report.md"),
         before=before.exact_match, after=after.exact_match, gain=gain)
    return report


TIMINGS = "learn-timings.json"  # under TANDEM_HOME/state: what followed training, per model and machine


def _timing_key(name: str, cfg: LearnConfig) -> str:
    """Runs that share a key take about as long after training: the same model (by name, so a
    private copy of a bundle counts too), variants and cores."""
    return f"{name}|{cfg.variant or 'default'}|cuda={cfg.cuda}|cores={os.cpu_count()}"


def _read_timings() -> dict:
    from tandem.model.loader import tandem_home
    try:
        data = json.loads((tandem_home() / "state" / TIMINGS).read_text())
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and 0 < v < 86400}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_timing(key: str, seconds: float) -> None:
    """Remember how long training's end, merge, build and parity took (best effort)."""
    from tandem.model.loader import tandem_home
    try:
        path = tandem_home() / "state" / TIMINGS
        path.parent.mkdir(parents=True, exist_ok=True)
        V.write_json_atomic(path, {**_read_timings(), key: round(max(1.0, seconds), 1)})
    except OSError:
        pass


def decide(before, after, cfg: LearnConfig) -> tuple[bool, str, tuple[float, int, int]]:
    """Promote or keep, and why, from the evaluations before and after training (EvalResults on
    the same sites): (promote, decision, (gain in points, lines gained, lines lost))."""
    gain = round(after.exact_match - before.exact_match, 2)
    # Lines the tuned model gets right that the served one did not, and the reverse: a gain of
    # one line on a handful of sites is noise, whatever the points say.
    wins = sum(a["exact"] and not b["exact"] for a, b in zip(after.samples, before.samples))
    losses = sum(b["exact"] and not a["exact"] for a, b in zip(after.samples, before.samples))
    # A model whose held-out lines became less likely, through the very graph that would be
    # served, is not better, whatever a few dozen lines' exact match says.
    served_worse = (before.heldout_loss is not None and after.heldout_loss is not None
                    and after.heldout_loss >= before.heldout_loss)
    promote = (cfg.promote and gain >= cfg.min_gain and after.exact_match > before.exact_match
               and wins - losses >= cfg.min_net_lines and not served_worse)
    if promote:
        decision = f"promoted: held-out exact match {before.exact_match}% -> {after.exact_match}% ({gain:+.1f} points)"
    elif not cfg.promote:
        decision = f"not promoted (--no-promote): {gain:+.1f} points"
    elif gain >= cfg.min_gain and wins - losses >= cfg.min_net_lines:
        decision = (f"kept the current model: held-out exact match {before.exact_match}% -> {after.exact_match}% "
                    f"({gain:+.1f} points), but the held-out lines' loss through the tuned model rose "
                    f"({before.heldout_loss:.3f} -> {after.heldout_loss:.3f} per token)")
    elif gain >= cfg.min_gain:
        decision = (f"kept the current model: held-out exact match {before.exact_match}% -> {after.exact_match}% "
                    f"({gain:+.1f} points) is {wins} line(s) gained and {losses} lost of {after.sites}, fewer than "
                    f"the {cfg.min_net_lines} net lines needed")
    else:
        decision = (f"kept the current model: held-out exact match {before.exact_match}% -> {after.exact_match}% "
                    f"({gain:+.1f} points), below the {cfg.min_gain:g}-point margin")
    return promote, decision, (gain, wins, losses)


def _read_before(run: Path, key: str):
    """The interrupted run's first evaluation (EvalResult, seconds), or None."""
    from tandem.learn.evaluate import EvalResult
    try:
        d = json.loads((run / BEFORE).read_text())
        if d.get("key") != key:
            return None
        return EvalResult(**d["result"]), float(d["eval_s"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _machine() -> dict:
    import platform
    return {"cpus": os.cpu_count(), "torch_threads": _torch_threads(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "note": "CPU only; cores shared with other jobs unless stated otherwise"}


def _torch_threads():
    try:
        import torch
        return torch.get_num_threads()
    except Exception:
        return None


def _peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process, or of its largest finished child process."""
    import resource
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def write_report(d: Path, report: dict, history: dict, before, after) -> None:
    (d / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    png = _plot(d / "report.png", history, before, after)
    rows = [("exact match (%)", before.exact_match, after.exact_match),
            ("edit similarity (%)", before.edit_similarity, after.edit_similarity),
            ("latency p50 (ms)", before.latency_ms_p50, after.latency_ms_p50),
            ("latency mean (ms)", before.latency_ms_mean, after.latency_ms_mean)]
    if before.heldout_loss is not None and after.heldout_loss is not None:
        rows += [(f"loss per token of the held-out lines, teacher-forced ({after.scored_tokens} tokens)",
                  before.heldout_loss, after.heldout_loss),
                 ("of those tokens, the model's first choice (%)", round(100 * before.token_accuracy, 1),
                  round(100 * after.token_accuracy, 1))]
    tr = report["training"]
    lines = [f"# tandem learn: {Path(report['workspace']).name} ({report['version']})", "",
             f"**{report['decision']}**", "",
             f"Workspace `{report['workspace']}`: {report['data']['files']} files, "
             f"{report['data']['train_files']} for training, {report['data']['heldout_files']} held out; "
             f"{report['data']['sites']} line completions cut from the held-out files.{_focus_sentence(report['config'])}",
             "",
             "Measured through the serving engine (the variant the server loads, its runtime and prompt):", "",
             "| | before | after |", "|---|---|---|",
             *[f"| {name} | {b} | {a} |" for name, b, a in rows], "",
             f"Held-out lines newly right: {report['lines_gained']}, newly wrong: {report['lines_lost']} "
             f"(of {after.sites}).", "",
             f"Training: LoRA r={report['config']['rank']}, {len(history['steps'])} steps, {tr.get('tokens', 0):,} "
             f"tokens, {tr.get('tokens_per_s')} tokens/s ({tr.get('step_s')} s a step, {tr.get('threads')} thread(s)), "
             f"{tr.get('train_s')} s with the curve points; final loss "
             f"{tr.get('final_loss', float('nan')):.4f}; {tr.get('trainable_params', 0):,} trainable parameters.",
             f"Examples: {tr.get('tokens_per_example')} tokens each on average, {tr.get('context_tokens_per_example')} "
             f"of them other files' context ({tr.get('context_examples')} of {tr.get('examples')} examples carry a "
             f"context block)." + (f" Resumed from the checkpoint at step {tr['resumed_from_step']} of an "
                                   "interrupted run." if tr.get("resumed_from_step") else ""),
             f"Whole run {report['seconds_total']} s, peak memory {report['peak_rss_mib']} MiB (this process; "
             f"the model builder beside it: {report.get('peak_rss_children_mib', 0)} MiB more at most), machine: "
             f"{report['machine']['cpus']} CPUs ({report['machine']['note']}).", ""]
    if png:
        lines += ["![loss and held-out exact match](report.png)", ""]
    curve = [c for c in history["curve"] if c.get("heldout_loss") is not None]
    change = heldout_change(history)
    lines += [f"Held-out loss during training (teacher-forced loss per token of the lines at "
              f"{report['config']['curve_sites']} held-out sites, PyTorch, the training layout): " +
              (", ".join(f"step {c['step']}: {c['heldout_loss']:.3f}" for c in curve) or "not measured") +
              (f" ({change:+.1f}%)" if change is not None else ""), ""]
    (d / "report.md").write_text("\n".join(lines))


def _focus_sentence(config: dict) -> str:
    if not config.get("focus"):
        return ""
    share = f", at least {config['focus_share']:.0%} of the examples" if config["focus_share"] else ""
    return f" The files you work in (always trained{share}): {', '.join(f'`{f}`' for f in config['focus'])}."


def heldout_change(history: dict) -> float | None:
    """The held-out loss's change over the run, in percent (first point to last)."""
    pts = [c["heldout_loss"] for c in history.get("curve", []) if c.get("heldout_loss") is not None]
    return round(100 * (pts[-1] - pts[0]) / pts[0], 1) if len(pts) >= 2 and pts[0] else None


def _plot(path: Path, history: dict, before, after) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history["steps"], history["loss"], color="tab:blue", lw=1, label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax2 = ax.twinx()
    last = history["steps"][-1] if history["steps"] else 1
    ax2.plot([0, last], [before.exact_match, after.exact_match], "s--", color="tab:red",
             label="held-out exact match, serving engine (before, after)")
    pts = [(c["step"], c["heldout_loss"]) for c in history["curve"] if c.get("heldout_loss") is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="tab:green",
                label=f"held-out loss (teacher-forced, {len(pts)} points)")
    ax2.set_ylabel("exact match (%)", color="tab:red")
    fig.legend(loc="upper center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tandem learn", description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("workspace", nargs="?", default=".", type=Path)
    add_model_arguments(ap)
    ap.add_argument("--budget-minutes", type=float, default=10.0, help="the whole run's time budget")
    ap.add_argument("--max-steps", type=int, default=LearnConfig.max_steps)
    ap.add_argument("--eval-sites", type=int, default=LearnConfig.eval_sites)
    ap.add_argument("--min-gain", type=float, default=LearnConfig.min_gain,
                    help="points of held-out exact match needed to promote")
    ap.add_argument("--lr", type=float, default=LearnConfig.lr)
    ap.add_argument("--rank", type=int, default=LearnConfig.rank)
    ap.add_argument("--seq-len", type=int, default=LearnConfig.seq_len)
    ap.add_argument("--batch-size", type=int, default=LearnConfig.batch_size)
    ap.add_argument("--curve-sites", type=int, default=LearnConfig.curve_sites)
    ap.add_argument("--context-tokens", type=int, default=LearnConfig.context_tokens)
    ap.add_argument("--context-share", type=float, default=LearnConfig.context_share,
                    help="share of each prompt for other files' context, as the server's contextShare (0: none)")
    ap.add_argument("--context-sources", default=",".join(LearnConfig.context_sources),
                    help="context providers, as the server's contextSources (imports,similar,path)")
    ap.add_argument("--checkpoint-seconds", type=float, default=LearnConfig.checkpoint_s,
                    help="training time between checkpoints; a killed run resumes from the last one (0: every step)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: automatic)")
    ap.add_argument("--layers", type=int, default=LearnConfig.layers, help="adapt the last N layers (0: all)")
    ap.add_argument("--line-rate", type=float, default=LearnConfig.line_rate,
                    help="share of the examples cut as line completions (the rest: mixed FIM splits)")
    ap.add_argument("--block-rate", type=float, default=LearnConfig.block_rate,
                    help="share of those line completions that ask for the rest of the line's block")
    ap.add_argument("--focus", action="append", default=[], metavar="FILE",
                    help="a file you work in (repeatable; the editor passes its open and recently edited files): "
                         "it always trains, and gets --focus-share of the examples")
    ap.add_argument("--focus-share", type=float, default=LearnConfig.focus_share,
                    help="share of the training examples drawn from the --focus files, at least")
    ap.add_argument("--use-feedback", action="store_true", help="also train on retained accepted completions")
    ap.add_argument("--no-promote", action="store_true", help="evaluate and report, never switch")
    ap.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=None,
                    help="also build the tuned model's fp16 CUDA variant (default: when the model serves "
                         "on a GPU and one is here)")
    ap.add_argument("--json", action="store_true", help="progress as JSON lines on stdout")
    a = ap.parse_args(argv)
    cfg = LearnConfig(budget_s=a.budget_minutes * 60, max_steps=a.max_steps, eval_sites=a.eval_sites,
                      min_gain=a.min_gain, lr=a.lr, rank=a.rank, alpha=2 * a.rank, seq_len=a.seq_len,
                      batch_size=a.batch_size, curve_sites=a.curve_sites, context_tokens=a.context_tokens,
                      context_share=a.context_share, checkpoint_s=a.checkpoint_seconds,
                      context_sources=tuple(x for x in a.context_sources.split(",") if x.strip()),
                      seed=a.seed, threads=a.threads, layers=a.layers, line_rate=a.line_rate,
                      block_rate=a.block_rate,
                      feedback_examples=a.use_feedback, promote=not a.no_promote, cuda=a.cuda,
                      focus=tuple(x for f in a.focus for x in f.split(",") if x.strip()), focus_share=a.focus_share)
    emit = Reporter(a.json)
    cancel = threading.Event()

    def on_signal(signum, frame):
        cancel.set()
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)  # the cleanup that follows is not interrupted
        raise Cancelled()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    try:
        learn(a.workspace, model_path(a), cfg, emit, cancel)
        return 0
    except BaseException as e:  # a cancel request may surface as any error of the step it hit
        if not (cancel.is_set() or isinstance(e, Cancelled)) or isinstance(e, SystemExit):
            return _failed(e, emit)
        emit("cancelled", message="cancelled; nothing of this run was kept")
        return 3


def _failed(e: BaseException, emit) -> int:
    try:
        raise e
    except (WorkspaceError, PipelineError, V.VersionError) as e:
        emit("error", message=str(e))
        return 2
    except MemoryError:
        emit("error", message="out of memory while learning; nothing was kept. Try a smaller --batch-size or "
                              "--seq-len, or close other programs.")
        return 2
    except OSError as e:
        if e.errno == 28:
            emit("error", message=f"the disk filled up ({e}); nothing of this run was kept. Free space and run again.")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
