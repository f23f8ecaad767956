"""Fine-tune a Hugging Face causal LM on code files in fill-in-the-middle format.

nanoGPT style: one config, one data sampler, one training loop, read top to bottom.

Examples use Qwen2.5-Coder's PSM layout, built by the completion engine's own prompt code
(tandem.completion.engine.serving_prompt, which the engine calls for every completion) and
followed by what the model must write and the end token:

    <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> [healed] [indent] middle <|endoftext|>

as the engine asks: a cursor on a line holding only indentation leaves the indentation for
the model to write, and token healing drops the last prompt tokens before the cursor, which
the model writes again. The special tokens are inserted by id, never by encoding their text
(some tokenizers split that text into pieces). Prefix, suffix and middle are tokenized
separately, as they are at serving time, so the model sees the same token boundaries at the
cursor that the server will give it. A share of examples (1 - fim_rate) is plain left-to-right
text. `tandem learn` (learn.py) adds the server's context block before the same layout.
`--layout plain` (the tiny test model's recipe) keeps the cursor's text as it is, without
healing or moving the indentation.

Usage: python -m tandem_models.finetune --base DIR --data DIR_OR_FILES --out DIR [--steps N]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tandem.completion.engine import serving_prompt
from tandem.completion.postprocess import rule_on
from tandem.completion.prompt import FimIds, build_fim_prompt
from tandem.settings import Settings

from .common import load_tokenizer

SERVING_PREFIX_SHARE = Settings().prefixShare  # the server's default split of the prompt budget
SOURCE_SUFFIXES = {".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".mjs", ".go", ".rs", ".java",
                   ".kt", ".scala", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php",
                   ".swift", ".lua", ".sh", ".sql"}
SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".tox",
             ".mypy_cache", ".pytest_cache", "site-packages", "build", "dist"}
MAX_FILE_BYTES = 1_000_000  # larger files are generated or vendored, not code worth learning
# Where FIM splits fall in a line (see FimSampler.split): after the indentation, at a resting
# place (after one of REST_AFTER), else anywhere.
CURSOR_AT_INDENT, CURSOR_AT_REST = 0.4, 0.45
REST_AFTER = " ([{.,"
FIM_TOKEN_NAMES = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|endoftext|>")


@dataclass
class FinetuneConfig:
    steps: int = 300
    lr: float = 5e-5  # for a pretrained model; a model trained from scratch wants ~3e-3
    min_lr: float = 5e-6  # cosine decay ends here
    warmup: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    batch_size: int = 8
    seq_len: int = 512  # longest example in tokens; windows are sized to fit
    fim_rate: float = 0.9  # share of FIM examples; the rest is plain left-to-right text
    whole_file_rate: float = 0.1  # share of windows that are a whole file, where it fits
    middle_weight: float = 1.0  # loss weight of a FIM middle (and its end token) vs. the rest
    # "serving": the completion engine's layout (serving_prompt: indentation left to the model,
    # token healing); "plain": build_fim_prompt alone, the cursor's text as it is (the tiny test
    # model's recipe: the tests' expectations were written against what it learnt that way).
    layout: str = "serving"
    seed: int = 1337
    bf16: bool = True  # bf16 autocast: about 1.5x faster on these CPUs (AVX512-BF16); weights stay fp32
    micro_tokens: int = 2048  # padded tokens per forward pass (bounds memory: logits are
    #                            tokens x vocab floats); a step may take several
    log_every: int = 10


def log(msg: str) -> None:
    print(f"[finetune] {msg}", file=sys.stderr, flush=True)


# -- data -----------------------------------------------------------------------------------

def collect_files(paths: list[Path]) -> list[Path]:
    """Source files under `paths` (files are taken as given), sorted for a stable order."""
    found: set[Path] = set()
    for p in paths:
        if p.is_file():
            found.add(p)
            continue
        for f in p.rglob("*"):
            rel = f.relative_to(p).parts
            if any(part in SKIP_DIRS for part in rel[:-1]) or f.suffix not in SOURCE_SUFFIXES:
                continue
            if f.is_file() and not f.is_symlink() and _is_text(f):
                found.add(f)
    return sorted(found)


def _is_text(f: Path) -> bool:
    try:
        if f.stat().st_size > MAX_FILE_BYTES:
            return False
        head = f.read_bytes()[:8192]
        head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False  # a multi-byte char cut at 8192 also lands here: rare, and harmless to skip
    return b"\0" not in head


class FimSampler:
    """Draws training examples (lists of token ids) from source texts."""

    def __init__(self, texts: list[str], tokenizer, cfg: FinetuneConfig, rng: random.Random):
        self.tok, self.cfg, self.rng = tokenizer, cfg, rng
        # The `tokenizers` tokenizer underneath: token healing's vocabulary table reads it, as it
        # reads the server's TextCodec; encoding with it gives the server's ids.
        self._tok = getattr(tokenizer, "backend_tokenizer", None)
        if self._tok is None:
            raise ValueError("the tokenizer has no fast (`tokenizers`) backend: the server cannot load it either")
        self.docs = [t for t in texts if t.strip()]
        if not self.docs:
            raise ValueError("no training text: every file is empty")
        self.weights = [len(t) for t in self.docs]
        vocab = tokenizer.get_vocab()
        missing = [t for t in FIM_TOKEN_NAMES if t not in vocab]
        if missing:
            raise ValueError(f"the tokenizer has no {missing}: it cannot be trained for FIM")
        self.prefix_id, self.suffix_id, self.middle_id, self.eot_id = (
            tokenizer.convert_tokens_to_ids(t) for t in FIM_TOKEN_NAMES)
        self.fim_ids = FimIds(self.prefix_id, self.suffix_id, self.middle_id)
        # Characters per token, to size windows without tokenizing every candidate (in
        # pieces: one long encode makes transformers warn about the model's context length).
        sample = "".join(self.docs)[:200_000]
        n = sum(len(self.encode(sample[i:i + 4000])) for i in range(0, len(sample), 4000))
        self.chars_per_token = len(sample) / max(1, n)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids if text else []

    def example(self) -> list[int]:
        text = self.window()
        if self.rng.random() >= self.cfg.fim_rate:
            return (self.encode(text) + [self.eot_id])[:self.cfg.seq_len]
        return self.fim_example(*self.split(text))

    def fim_budget(self, middle: str) -> int:
        """The prompt's token budget (the server's contextTokens) that seq_len leaves beside the
        middle (and a few tokens for the healed text and the indentation)."""
        return self.cfg.seq_len - len(self.encode(middle)) - 8

    def fim_example(self, prefix: str, middle: str, suffix: str, head=()) -> list[int]:
        """The prompt the engine sends for a cursor between `prefix` and `suffix` (after the
        context block `head`, if any), then what the model must write there (the healed text,
        the indentation, the middle) and the end token. The outer ends are trimmed first (whole
        lines, the prefix from an aligned line, as at serving time): the middle is what we
        train for."""
        if self.cfg.layout == "plain":
            mid = self.encode(middle)
            prompt = build_fim_prompt(self, self.fim_ids, prefix, suffix, self.cfg.seq_len - len(mid) - 4,
                                      SERVING_PREFIX_SHARE, head)
            return [*prompt.ids, *mid, self.eot_id][:self.cfg.seq_len]
        sp = serving_prompt(self, self.fim_ids, prefix, suffix, self.fim_budget(middle), SERVING_PREFIX_SHARE, head,
                            heal=rule_on("heal"))  # as the engine: healing unless an evaluation turned it off
        return [*sp.ids, *self.encode(sp.written_first + middle), self.eot_id][:self.cfg.seq_len]

    # A window is a run of whole lines, usually whole top-level blocks (a function, a
    # class), so an example reads like a small file and its end is a natural stopping point.
    def window(self) -> str:
        rng = self.rng
        doc = rng.choices(self.docs, weights=self.weights)[0]
        lines = doc.splitlines(keepends=True)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))
        budget = int((self.cfg.seq_len - 8) * self.chars_per_token * 0.9)
        if len(doc) <= budget and rng.random() < self.cfg.whole_file_rate:
            return doc.rstrip() + "\n"  # the whole file: prompts at serving time often are
        top = [i for i, line in enumerate(lines) if line.strip() and not line[0].isspace()]
        if top and rng.random() < 0.8:
            first = rng.choice(top)
        else:
            first = rng.randrange(len(lines))
        if rng.random() < 0.75:
            blocks = 1
            while rng.random() < 0.35:
                blocks += 1
            ends = [i for i in top if i > first] + [len(lines)]  # exclusive: next block's start
            last = ends[min(blocks, len(ends)) - 1]
        else:
            last = rng.randint(first + 1, len(lines))
        text = doc[starts[first]:starts[last]][:budget]
        if len(text) == budget and "\n" in text[:-1]:
            text = text[:text.rfind("\n", 0, len(text) - 1) + 1]  # end on a whole line
        return text.rstrip() + "\n"  # no trailing blank lines: the end is the end

    # Split points as a completion engine meets them: mostly the rest of a line (from its
    # indentation or from inside it), sometimes a few whole lines, sometimes everything
    # up to the end (empty suffix), and some uniformly random spans.
    def split(self, text: str) -> tuple[str, str, str]:
        rng = self.rng
        lines = text.splitlines(keepends=True)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))
        code = [i for i, line in enumerate(lines) if line.strip()] or [0]
        i = rng.choice(code)
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        body_end = len(line.rstrip("\n"))
        # Where a cursor rests: after the indentation, after a space or an opening bracket
        # ("return |", "min(|"), else anywhere. Such a prompt ends on a token the text itself
        # does not have there (" " alone, "(" without its word), a case worth practising.
        where = rng.random()
        rests = [c for c in range(indent + 1, body_end) if line[c - 1] in REST_AFTER]
        if where < CURSOR_AT_INDENT:
            col = indent
        elif where < CURSOR_AT_INDENT + CURSOR_AT_REST and rests:
            col = rng.choice(rests)
        else:
            col = rng.randint(indent, max(indent, body_end))
        begin = starts[i] + col
        mode = rng.random()
        if mode < 0.45:  # rest of this line, sometimes a few more lines
            j = i
            while j + 1 < len(lines) and rng.random() < 0.3:
                j += 1
            end = starts[j] + len(lines[j].rstrip("\n"))
            if rng.random() < 0.3:
                end = starts[j + 1]  # the newline too
        elif mode < 0.65:  # whole lines starting at a line start
            begin = starts[i]
            end = starts[min(len(lines), i + 1 + int(rng.expovariate(0.7)))]
        elif mode < 0.85:  # to the end: the cursor is at the end of the file
            end = len(text)
        else:  # uniformly random span
            begin, end = sorted(rng.randrange(len(text) + 1) for _ in range(2))
        return text[:begin], text[begin:end], text[end:]


# -- training -------------------------------------------------------------------------------

def _bucket(n: int) -> int:
    return -(-n // 64) * 64


def finetune(base_dir: Path, files: list[Path], out_dir: Path, cfg: FinetuneConfig) -> Path:
    """Train the checkpoint in `base_dir` on `files`; save model and tokenizer to `out_dir`."""
    import torch  # torch before transformers keeps the CPU wheel (see pyproject.toml)
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)

    tok = load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    texts = [Path(f).read_text(encoding="utf-8", errors="replace") for f in files]
    sampler = FimSampler(texts, tok, cfg, rng)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else sampler.eot_id
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{len(files)} files, {sum(map(len, texts)):,} chars; model {n_params / 1e6:.1f}M params; "
        f"{cfg.steps} steps x {cfg.batch_size} examples <= {cfg.seq_len} tokens, bf16={cfg.bf16}")

    # Weight decay on matrices only, as in nanoGPT: not on norms or biases.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))

    def micro_batches():
        """One step's examples as (inputs, targets) tensors, grouped by length.

        Sorted by length, so little is padding; widths rounded up to a multiple of 64, as
        oneDNN compiles kernels per shape (bf16 especially) and a new width every step is
        several times slower; at most micro_tokens (padded) per forward pass."""
        examples = sorted((sampler.example() for _ in range(cfg.batch_size)), key=len)
        groups: list[list[list[int]]] = [[]]
        for ids in examples:
            if groups[-1] and _bucket(len(ids)) * (len(groups[-1]) + 1) > cfg.micro_tokens:
                groups.append([])
            groups[-1].append(ids)
        for group in groups:
            width = _bucket(len(group[-1]))
            x = torch.full((len(group), width), pad_id, dtype=torch.long)
            y = torch.zeros((len(group), width), dtype=torch.long)
            w = torch.zeros((len(group), width))  # loss weight: 0 on padding
            for row, ids in enumerate(group):
                x[row, :len(ids)] = torch.tensor(ids)
                y[row, :len(ids) - 1] = torch.tensor(ids[1:])
                w[row, :len(ids) - 1] = 1.0
                if sampler.middle_id in ids:  # the middle and its end: what FIM is for
                    w[row, ids.index(sampler.middle_id):len(ids) - 1] = cfg.middle_weight
            yield x, y, w

    model.train()
    t0 = time.perf_counter()
    tokens = 0
    running = None
    loss_value = float("nan")
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batches = list(micro_batches())
        total = sum(float(w.sum()) for _, _, w in batches)
        opt.zero_grad(set_to_none=True)
        loss_value = 0.0
        for x, y, w in batches:
            # Right padding under a causal mask never affects real tokens: no attention mask.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(input_ids=x).logits
            # Divided by the whole step's weight: every token counts the same whichever
            # micro-batch it landed in.
            ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
            loss = (ce * w.flatten()).sum() / total
            loss.backward()
            loss_value += loss.item()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        tokens += sum(int((w > 0).sum()) for _, _, w in batches)
        running = loss_value if running is None else 0.9 * running + 0.1 * loss_value
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            dt = time.perf_counter() - t0
            log(f"step {step + 1}/{cfg.steps} loss {loss_value:.4f} (avg {running:.4f}) "
                f"lr {lr_at(step):.2e} {tokens / dt:,.0f} tok/s {dt:.0f}s")

    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "finetune.json").write_text(json.dumps({
        "base": str(base_dir), "files": len(files), "config": asdict(cfg),
        "final_loss": loss_value, "tokens": tokens,
        "seconds": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")
    log(f"saved to {out_dir}")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tandem_models.finetune", description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="Hugging Face checkpoint directory")
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="source files or directories")
    ap.add_argument("--out", type=Path, required=True, help="where to save the fine-tuned checkpoint")
    defaults = FinetuneConfig()
    ap.add_argument("--steps", type=int, default=defaults.steps)
    ap.add_argument("--lr", type=float, default=defaults.lr)
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size)
    ap.add_argument("--seq-len", type=int, default=defaults.seq_len)
    ap.add_argument("--fim-rate", type=float, default=defaults.fim_rate)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--no-bf16", action="store_true", help="train in plain float32")
    ap.add_argument("--layout", choices=("serving", "plain"), default=defaults.layout,
                    help="FIM examples as the completion engine prompts (serving) or the cursor's text as it is")
    args = ap.parse_args(argv)

    files = collect_files(args.data)
    if not files:
        print(f"no source files found in {', '.join(map(str, args.data))}", file=sys.stderr)
        return 2
    cfg = FinetuneConfig(steps=args.steps, lr=args.lr, min_lr=args.lr / 10, batch_size=args.batch_size,
                         seq_len=args.seq_len, fim_rate=args.fim_rate, seed=args.seed, bf16=not args.no_bf16,
                         layout=args.layout)
    finetune(args.base, files, args.out, cfg)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
