"""Greedy decoding with a KV cache on a raw onnxruntime InferenceSession.

One `CausalLM` owns one session. Decoding is synchronous and meant to run on a worker
thread; it checks a cancellation flag before every forward pass (prefill runs in chunks
for the same reason), so a cancelled request stops within one step.

The KV cache of the previous request is kept: a new prompt that starts with the same tokens
(the usual case while typing: the prefix barely changes between keystrokes) only runs the
tokens after the shared part.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256  # tokens per prefill pass: bounds the time to notice a cancel
TOP_K_SCAN = 512  # sampling looks for the nucleus among this many most likely tokens


class Cancelled(Exception):
    """The caller's cancellation flag was set; generation stopped early."""


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


def gpu_present() -> bool:
    """Is an NVIDIA driver loaded? Checked before asking onnxruntime for CUDA, so a machine
    without a GPU never sees onnxruntime's missing-library errors."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def choose_providers(device: str) -> tuple[list[str], str | None]:
    """Providers to ask for, plus a note for the user when the wish cannot be met."""
    import onnxruntime as ort

    cuda_built = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"], None
    if cuda_built and gpu_present():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], None
    if device == "cuda":
        why = ("no NVIDIA GPU driver was found" if cuda_built else
               "the installed onnxruntime has no CUDA support (install onnxruntime-gpu instead of onnxruntime)")
        return ["CPUExecutionProvider"], f"`tandem.device` is 'cuda' but {why}; running on the CPU."
    return ["CPUExecutionProvider"], None


@dataclass(frozen=True)
class Sampling:
    """Temperature and nucleus sampling; None in `generate` means greedy."""
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0


def _pick(last: np.ndarray, sampling: Sampling | None, rng: np.random.Generator | None) -> int:
    if sampling is None or sampling.temperature <= 0:
        return int(last.argmax())
    z = last / sampling.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    # The nucleus lies among the top few hundred tokens; sorting the whole vocabulary (150k
    # for Qwen) every step would cost as much as a third of a decode step on a CPU.
    k = min(len(p) - 1, TOP_K_SCAN)
    top = np.argpartition(-p, k)[:k] if k > 0 else np.arange(len(p))
    order = top[np.argsort(-p[top])]
    keep = order[: int(np.searchsorted(np.cumsum(p[order]), sampling.top_p)) + 1]
    q = p[keep] / p[keep].sum()
    return int(keep[rng.choice(len(keep), p=q)])


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


class CausalLM:
    def __init__(self, onnx_path: Path, providers: list[str], threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: warnings about fallbacks are not for users
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = sorted((n for n in inputs if n.startswith("past_key_values.")),
                                 key=lambda n: (int(n.split(".")[1]), n.split(".")[2]))
        if "input_ids" not in inputs or not self.past_names:
            raise ValueError("the ONNX graph has no input_ids / past_key_values inputs: export it "
                             "with task text-generation-with-past")
        self.has_position_ids = "position_ids" in inputs
        first = inputs[self.past_names[0]]
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.kv_dtype = np.float16 if "float16" in first.type else np.float32
        self.output_names = ["logits"] + [n.replace("past_key_values", "present") for n in self.past_names]
        self._lock = threading.Lock()  # one decode at a time on the shared session
        self._cache_ids: list[int] = []
        self._cache_kv: list[np.ndarray] | None = None
        self._step_delay = debug_delay("step")

    # -- one forward pass -------------------------------------------------------------
    def _forward(self, ids: list[int], past: list[np.ndarray], past_len: int):
        n = len(ids)
        feed = {"input_ids": np.asarray([ids], dtype=np.int64),
                "attention_mask": np.ones((1, past_len + n), dtype=np.int64)}
        if self.has_position_ids:
            feed["position_ids"] = np.arange(past_len, past_len + n, dtype=np.int64)[None, :]
        feed.update(zip(self.past_names, past))
        out = self.session.run(self.output_names, feed)
        return out[0][0], out[1:]

    def _empty_past(self) -> list[np.ndarray]:
        return [np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)] * len(self.past_names)

    def forward_logits(self, ids: list[int]) -> np.ndarray:
        """Logits for every position of `ids` from an empty cache (used by parity checks)."""
        with self._lock:
            logits, _ = self._forward(ids, self._empty_past(), 0)
        return logits

    def clear_cache(self) -> None:
        self._cache_ids, self._cache_kv = [], None

    # -- generation ---------------------------------------------------------------------
    def generate(self, prompt: list[int], *, max_new_tokens: int, stop_ids: set[int],
                 cancel: threading.Event | None = None, stop_check=None,
                 sampling: Sampling | None = None) -> Generation:
        """Greedy decode, or sampled with `sampling`. `stop_check(ids) -> bool` lets the caller
        stop on decoded text. Logprobs are the model's own (before temperature), per token."""
        if not prompt:
            raise ValueError("empty prompt")
        cancel = cancel or threading.Event()
        with self._lock:
            return self._generate(prompt, max_new_tokens, stop_ids, cancel, stop_check, sampling)

    def _generate(self, prompt, max_new_tokens, stop_ids, cancel, stop_check, sampling) -> Generation:
        rng = np.random.default_rng(sampling.seed) if sampling else None
        t0 = time.perf_counter()
        reuse = 0
        if self._cache_kv is not None:
            limit = min(len(prompt) - 1, len(self._cache_ids))  # keep one token to compute logits
            while reuse < limit and self._cache_ids[reuse] == prompt[reuse]:
                reuse += 1
        past = [kv[:, :, :reuse, :] for kv in self._cache_kv] if reuse else self._empty_past()
        self.clear_cache()  # if we are cancelled midway the old cache is no longer trustworthy
        pos = reuse
        logits = None
        for start in range(reuse, len(prompt), PREFILL_CHUNK):
            if cancel.is_set():
                log.debug("cancelled during prefill at token %d of %d", start, len(prompt))
                raise Cancelled()
            chunk = prompt[start:start + PREFILL_CHUNK]
            logits, past = self._forward(chunk, past, pos)
            pos += len(chunk)
        t1 = time.perf_counter()
        ids: list[int] = []
        logprobs: list[float] = []
        cached = list(prompt)
        reason = "max_tokens"
        for step in range(max_new_tokens):
            last = logits[-1].astype(np.float64)
            tok = _pick(last, sampling, rng)
            m = last.max()
            logprobs.append(float(last[tok] - m - np.log(np.exp(last - m).sum())))
            if tok in stop_ids:
                logprobs.pop()
                reason = "stop_token"
                break
            ids.append(tok)
            if stop_check is not None and stop_check(ids):
                reason = "stop_text"
                break
            if step == max_new_tokens - 1:
                break
            if self._step_delay:
                time.sleep(self._step_delay)
            if cancel.is_set():
                log.info("generation cancelled after %d new tokens", len(ids))
                raise Cancelled()
            logits, past = self._forward([tok], past, pos)
            cached.append(tok)
            pos += 1
        self._cache_ids, self._cache_kv = cached, past
        t2 = time.perf_counter()
        return Generation(ids, logprobs, reason, len(prompt), reuse, t1 - t0, t2 - t1)


def default_threads() -> int | None:
    """Leave onnxruntime's choice (physical cores) unless TANDEM_THREADS says otherwise."""
    v = os.environ.get("TANDEM_THREADS")
    return int(v) if v and v.isdigit() and int(v) > 0 else None
