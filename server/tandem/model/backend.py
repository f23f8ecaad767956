"""The inference-backend seam: what completion, the docstring action and explanations ask of a
model runtime, with nothing in it about which runtime answers.

A backend turns a prompt (token ids) into generated token ids, one token at a time, and owns
its KV caches. Everything above this module (completion/, generate/, provenance/) imports
only the names defined here; the runtimes live behind it:

- `genai.GenaiLM`: onnxruntime-genai's `Generator` over a graph made by its model builder
  (fused GroupQueryAttention, the KV cache in place on the device, CUDA graphs for decode
  steps on a GPU). The default.
- `runtime.CausalLM`: a raw onnxruntime `InferenceSession` over an optimum-onnx export, for
  architectures the builder does not know and for models built before it.

Both share `decode_loop` below, so sampling, per-token logprobs, drafts from the prompt
(speculative decoding, model/lookup.py), stop checks, constraints and cancellation behave the
same whichever runtime runs the model.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from .lookup import PromptLookup

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256  # tokens per prefill pass: bounds the time to notice a cancel
TOP_K_SCAN = 512  # sampling looks for the nucleus among this many most likely tokens

# Cache slots: each keeps its own KV cache, so a docstring candidate or a background
# explanation does not evict the prefix that the next keystroke's completion reuses.
SLOTS = ("completion", "function", "explain")


class Cancelled(Exception):
    """The caller's cancellation flag was set; generation stopped early."""


class BackendError(RuntimeError):
    """The runtime itself failed (lost GPU, out of memory, broken graph): the only kind of
    failure that makes the server switch device. Bugs elsewhere are not this."""


@dataclass(frozen=True)
class Sampling:
    """Temperature and nucleus sampling; None in `generate` means greedy."""
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0


@dataclass
class Generation:
    ids: list[int]
    logprobs: list[float]
    stop_reason: str  # "stop_token", "stop_text", "max_tokens"
    prompt_tokens: int
    reused_tokens: int
    prefill_s: float
    decode_s: float
    text: str = ""
    timings: dict = field(default_factory=dict)


class Constraint(Protocol):
    """Restricts the next token, e.g. token healing: the first tokens must spell the
    characters the prompt was backed off by."""

    def allowed(self, generated: list[int]) -> np.ndarray | None:
        """Token ids allowed next after `generated`, or None when anything goes."""


class Speculation(Protocol):
    """What a backend lends the decode loop to check drafted tokens (see `decode_loop`)."""
    draft_tokens: int  # the longest draft to try; 0: none

    def verify(self, ids: list[int]) -> np.ndarray:
        """Append `ids` to the cache; the float32 logits after each of them, [len(ids), vocab]."""

    def drop(self, n: int) -> None:
        """Forget the last `n` tokens of the cache."""


class Backend(Protocol):
    device: str  # "cpu" or "cuda"
    supports_constraint: bool

    def generate(self, prompt: list[int], *, max_new_tokens: int, stop_ids: set[int],
                 cancel: threading.Event | None = None, stop_check: Callable[[list[int]], bool] | None = None,
                 sampling: Sampling | None = None, constraint: Constraint | None = None,
                 slot: str = "completion") -> Generation: ...

    def forward_logits(self, ids: list[int]) -> np.ndarray:
        """Logits of the positions the graph computes (every position, or the last one for
        a graph built to skip the others) from an empty cache: parity checks use it."""

    def cached(self, prompt: list[int], slot: str = "completion") -> int:
        """How many leading tokens of `prompt` cache slot `slot` holds now (local backends)."""

    def clear_cache(self) -> None: ...

    def close(self) -> None: ...


def debug_delay(name: str) -> float:
    """Seconds of artificial delay from TANDEM_DEBUG_DELAYS (e.g. "load=2000,step=20", in ms).
    Only tests set it: it makes slow models reproducible so cancellation can be proven."""
    for part in os.environ.get("TANDEM_DEBUG_DELAYS", "").split(","):
        key, _, value = part.partition("=")
        if key.strip() == name:
            try:
                return max(0.0, float(value) / 1000)
            except ValueError:
                return 0.0
    return 0.0


def pick(last: np.ndarray, sampling: Sampling | None, rng: np.random.Generator | None) -> int:
    """Greedy, or temperature + nucleus sampling, over one position's logits (float32)."""
    if sampling is None or sampling.temperature <= 0:
        return int(last.argmax())
    z = last / np.float32(sampling.temperature)
    p = np.exp(z - z.max())
    p /= p.sum(dtype=np.float64)
    # The nucleus lies among the top few hundred tokens; sorting the whole vocabulary (150k
    # for Qwen) every step would cost as much as a third of a decode step on a CPU.
    k = min(len(p) - 1, TOP_K_SCAN)
    top = np.argpartition(-p, k)[:k] if k > 0 else np.arange(len(p))
    order = top[np.argsort(-p[top])]
    keep = order[: int(np.searchsorted(np.cumsum(p[order], dtype=np.float64), sampling.top_p)) + 1]
    q = p[keep].astype(np.float64)
    return int(keep[rng.choice(len(keep), p=q / q.sum())])


def log_normalizer(logits: np.ndarray, scratch: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """log(sum(exp(logits))) in float32 with a reused scratch buffer: over a 150k vocabulary
    this is about a tenth of what the float64 version costs (measured: 0.11 vs 1.1 ms), which
    on a GPU is the difference between a Python loop at the runtime's speed or half of it."""
    if scratch is None or scratch.shape != logits.shape:
        scratch = np.empty_like(logits)
    m = float(logits.max())
    np.subtract(logits, m, out=scratch)
    np.exp(scratch, out=scratch)
    return m + math.log(float(scratch.sum(dtype=np.float64))), scratch


def held(cached: list[int], prompt: list[int]) -> int:
    """How many leading tokens of `prompt` a cache holding `cached` has computed."""
    n, limit = 0, min(len(cached), len(prompt))
    while n < limit and cached[n] == prompt[n]:
        n += 1
    return n


def common_prefix(cached: list[int], prompt: list[int]) -> int:
    """How many leading prompt tokens a cache holding `cached` can keep; at least one prompt
    token is always run, since its logits start the generation."""
    return min(held(cached, prompt), max(len(prompt) - 1, 0))


def prefill(lm: "Backend", prompt: list[int], slot: str, stop_ids: set[int], cancel: threading.Event | None = None,
            holders: tuple[str, ...] = ()) -> int:
    """Run `prompt` into cache slot `slot` without generating (a warm, ahead of the request that
    will use it), unless `slot` or one of `holders` already holds it. Returns how many prompt
    tokens were computed: 0 when held already, or for a backend without cache slots (a remote
    server, whose own prefix cache is its business)."""
    if not hasattr(lm, "cached") or max(lm.cached(prompt, s) for s in (slot, *holders)) >= len(prompt) - 1:
        return 0
    gen = lm.generate(prompt, max_new_tokens=0, stop_ids=stop_ids, cancel=cancel, slot=slot)
    return len(prompt) - gen.reused_tokens


def prefill_sizes(n: int, chunk: int, bucketed: bool = False) -> list[int]:
    """How `n` prompt tokens are cut into forward passes of at most `chunk` tokens. Bucketed:
    into powers of two, so that every pass has one of a dozen shapes and a runtime that
    prepares kernels per input shape meets no new shape once warm."""
    if not bucketed:
        return [min(chunk, n - i) for i in range(0, n, chunk)]
    sizes = []
    while n > 0:
        size = min(chunk, 1 << (n.bit_length() - 1))
        sizes.append(size)
        n -= size
    return sizes


def decode_loop(prompt: list[int], reuse: int, feed: Callable[[list[int], bool], np.ndarray | None], *,
                max_new_tokens: int, stop_ids: set[int], cancel: threading.Event,
                stop_check=None, sampling: Sampling | None = None, constraint: Constraint | None = None,
                step_delay: float = 0.0, prefill_chunk: int = PREFILL_CHUNK, bucketed: bool = False,
                speculate: Speculation | None = None, prior: list[int] | None = None) -> Generation:
    """Run `prompt[reuse:]` through `feed(ids, want_logits)` (which appends tokens to the
    backend's cache and, when asked, returns the float32 logits of the last one), then decode.
    The cancellation flag is checked before every forward pass, so a cancelled request stops
    within one step (one prefill chunk).

    With `speculate` (a backend that returns the logits of every position of a pass), each
    pass also carries a draft looked up in the prompt (model/lookup.py): the logits it returns
    for the drafted positions are the model's next steps as long as the tokens picked match
    the draft, so those steps need no pass of their own. Whatever picks the token (greedy,
    sampling with its random draws in the same order, a constraint) picks it from the logits
    of the same tokens it would have had one token at a time. Only rounding differs: an int8
    graph computes a pass of several tokens with other kernels than a pass of one (default
    model, 12 positions: both within the same distance of PyTorch float32, max |dlogit| 0.63
    and 0.59), so a greedy answer can change where two tokens are that close."""
    rng = np.random.default_rng(sampling.seed) if sampling else None
    t0 = time.perf_counter()
    logits = None
    start = reuse
    for size in prefill_sizes(len(prompt) - reuse, prefill_chunk, bucketed):
        if cancel.is_set():
            log.debug("cancelled during prefill at token %d of %d", start, len(prompt))
            raise Cancelled()
        end = start + size
        logits = feed(prompt[start:end], end >= len(prompt))
        start = end
    t1 = time.perf_counter()
    ids: list[int] = []
    logprobs: list[float] = []
    reason = "max_tokens"
    scratch = None
    rows = [logits]  # logits for the next positions: rows[i + 1] holds if pending[:i + 1] are picked
    pending: list[int] = []  # drafted tokens in the cache beyond the ones picked so far
    lookup = PromptLookup(prompt, speculate.draft_tokens, prior=prior) \
        if speculate and speculate.draft_tokens > 0 else None
    drafted = accepted = passes = 0
    for step in range(max_new_tokens):
        logits = rows.pop(0)
        last = logits if logits.dtype == np.float32 else logits.astype(np.float32)
        log_z, scratch = log_normalizer(last, scratch)
        allowed = constraint.allowed(ids) if constraint is not None else None
        if allowed is not None and len(allowed):
            masked = np.full_like(last, -np.inf)
            masked[allowed] = last[allowed]
            tok = pick(masked, sampling, rng)
        else:
            tok = pick(last, sampling, rng)
        if tok in stop_ids:
            reason = "stop_token"
            break
        ids.append(tok)
        logprobs.append(float(last[tok]) - log_z)  # the model's own, before temperature or constraint
        if stop_check is not None and stop_check(ids):
            reason = "stop_text"
            break
        if step == max_new_tokens - 1:
            break
        if pending:
            if pending[0] == tok:  # the draft guessed this step: its logits are already here
                pending.pop(0)
                accepted += 1
                if not pending:
                    lookup.outcome(draft_len, draft_len)
                if cancel.is_set():
                    _cancelled(ids, passes)
                continue
            lookup.outcome(draft_len, draft_len - len(pending))
            speculate.drop(len(pending))  # a wrong guess: the cache forgets the rest of the draft
            pending, rows = [], []
        if step_delay:
            time.sleep(step_delay)
        if cancel.is_set():
            _cancelled(ids, passes)
        draft = lookup.propose(ids, max_new_tokens - step - 2) if lookup is not None else []
        passes += 1
        if draft:
            rows = list(speculate.verify([tok, *draft]))
            pending, draft_len = draft, len(draft)
            drafted += len(draft)
        else:
            rows = [feed([tok], True)]
    t2 = time.perf_counter()
    gen = Generation(ids, logprobs, reason, len(prompt), reuse, t1 - t0, t2 - t1)
    gen.timings["decode_passes"] = passes
    if lookup is not None:
        gen.timings.update(drafted=drafted, draft_accepted=accepted)
    return gen


def _cancelled(ids: list[int], passes: int):
    log.info("generation cancelled after %d new tokens (%d forward passes)", len(ids), passes)
    raise Cancelled()


def gpu_present() -> bool:
    """Is an NVIDIA driver loaded? Checked before asking a runtime for CUDA, so a machine
    without a GPU never sees onnxruntime's missing-library errors."""
    from pathlib import Path
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def default_threads() -> int | None:
    """Leave onnxruntime's choice (physical cores) unless TANDEM_THREADS says otherwise."""
    v = os.environ.get("TANDEM_THREADS")
    return int(v) if v and v.isdigit() and int(v) > 0 else None


def physical_cores() -> int:
    """The physical cores this process may run on (what onnxruntime's own default uses for a
    session): hyperthread siblings counted once, the CPU affinity mask respected."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        allowed = set(range(os.cpu_count() or 1))
    cores, cpu, phys = set(), None, "0"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    cpu = int(value)
                elif key == "physical id":
                    phys = value
                elif key == "core id" and cpu in allowed:
                    cores.add((phys, value))
    except (OSError, ValueError):
        cores = set()
    return max(1, len(cores) or len(allowed))
