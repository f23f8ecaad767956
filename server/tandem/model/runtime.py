"""The onnxruntime backend for optimum-onnx exports: a raw `InferenceSession` and its own
KV-cache loop (see backend.py for the seam and genai.py for the default backend).

Kept for architectures onnxruntime-genai's model builder does not know, and for models built
before Tandem used the builder. Decoding runs on a worker thread through
`backend.decode_loop`; the KV cache of each slot's last request is kept, so a new prompt
that starts with the same tokens only runs the tokens after the shared part.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .lookup import draft_tokens
from .backend import (BackendError, Cancelled, Generation, Sampling, common_prefix, debug_delay, held,  # noqa: F401
                      decode_loop, gpu_present)

log = logging.getLogger(__name__)


def _ort():
    from .ortenv import import_onnxruntime  # telemetry off before the runtime starts
    return import_onnxruntime()


def preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries that pip's nvidia-* wheels (onnxruntime-gpu's
    [cuda,cudnn] extras) put in site-packages, which the dynamic loader does not search."""
    ort = _ort()
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as e:  # the system's CUDA may still be found through the loader path
            log.debug("preload_dlls: %s", e)


def choose_providers(device: str) -> tuple[list[str], str | None]:
    """Providers to ask for, plus a note for the user when the wish cannot be met."""
    ort = _ort()
    cuda_built = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"], None
    if cuda_built and gpu_present():
        preload_cuda_libraries()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], None
    if device == "cuda":
        why = ("no NVIDIA GPU driver was found" if cuda_built else
               "the installed onnxruntime has no CUDA support (install onnxruntime-gpu instead of onnxruntime)")
        return ["CPUExecutionProvider"], f"`tandem.device` is 'cuda' but {why}; running on the CPU."
    return ["CPUExecutionProvider"], None


@dataclass
class _Cache:
    ids: list[int] = field(default_factory=list)
    kv: list[np.ndarray] | None = None


class CausalLM:
    supports_constraint = True

    def __init__(self, onnx_path: Path, providers: list[str], threads: int | None = None):
        ort = _ort()
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
        self._slots: dict[str, _Cache] = {}
        self._step_delay = debug_delay("step")
        self.draft_tokens = draft_tokens()  # this graph computes every position's logits: drafts are free

    # -- one forward pass -------------------------------------------------------------
    def _forward(self, ids: list[int], past: list[np.ndarray], past_len: int):
        n = len(ids)
        feed = {"input_ids": np.asarray([ids], dtype=np.int64),
                "attention_mask": np.ones((1, past_len + n), dtype=np.int64)}
        if self.has_position_ids:
            feed["position_ids"] = np.arange(past_len, past_len + n, dtype=np.int64)[None, :]
        feed.update(zip(self.past_names, past))
        try:
            out = self.session.run(self.output_names, feed)
        except Exception as e:  # the runtime's own failure: out of memory, lost device, bad input
            raise BackendError(str(e)) from e
        return out[0][0], out[1:]

    def _empty_past(self) -> list[np.ndarray]:
        return [np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)] * len(self.past_names)

    def forward_logits(self, ids: list[int]) -> np.ndarray:
        """Logits for every position of `ids` from an empty cache (used by parity checks)."""
        with self._lock:
            logits, _ = self._forward(ids, self._empty_past(), 0)
        return logits

    def cached(self, prompt: list[int], slot: str = "completion") -> int:
        with self._lock:
            c = self._slots.get(slot)
            return held(c.ids, prompt) if c is not None and c.kv is not None else 0

    def clear_cache(self) -> None:
        with self._lock:
            self._slots.clear()

    def close(self) -> None:
        self.clear_cache()

    # -- generation ---------------------------------------------------------------------
    def generate(self, prompt: list[int], *, max_new_tokens: int, stop_ids: set[int],
                 cancel: threading.Event | None = None, stop_check=None,
                 sampling: Sampling | None = None, constraint=None, slot: str = "completion") -> Generation:
        """Greedy decode, or sampled with `sampling`. `stop_check(ids) -> bool` lets the caller
        stop on decoded text. Logprobs are the model's own (before temperature), per token."""
        if not prompt:
            raise ValueError("empty prompt")
        cancel = cancel or threading.Event()
        with self._lock:
            cache = self._slots.setdefault(slot, _Cache())
            reuse = common_prefix(cache.ids, prompt) if cache.kv is not None else 0
            prior = cache.ids[reuse:]  # what this request makes the cache forget: a draft source
            past = [kv[:, :, :reuse, :] for kv in cache.kv] if reuse else self._empty_past()
            cache.ids, cache.kv = list(prompt[:reuse]), past

            def verify(ids: list[int]) -> np.ndarray:
                # Each pass leaves the cache consistent: a cancel between passes keeps
                # what was computed for the next request to reuse.
                logits, cache.kv = self._forward(ids, cache.kv, len(cache.ids))
                cache.ids.extend(ids)
                return logits

            def drop(n: int) -> None:
                keep = len(cache.ids) - n
                cache.kv = [kv[:, :, :keep, :] for kv in cache.kv]
                del cache.ids[keep:]

            speculate = SimpleNamespace(draft_tokens=self.draft_tokens, verify=verify, drop=drop) \
                if self.draft_tokens else None

            t0 = time.perf_counter()
            gen = decode_loop(prompt, reuse, lambda ids, want: verify(ids)[-1], max_new_tokens=max_new_tokens,
                              stop_ids=stop_ids, cancel=cancel, stop_check=stop_check, sampling=sampling,
                              constraint=constraint, step_delay=self._step_delay, speculate=speculate,
                              prior=prior)
            gen.timings["total_s"] = time.perf_counter() - t0
            return gen
