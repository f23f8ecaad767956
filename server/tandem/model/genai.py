"""The default backend: onnxruntime-genai's `Generator` over a graph from its model builder.

Why this runtime (measured; README "Serving speed"): the builder's graph fuses attention
(GroupQueryAttention with rotary inside) and writes the KV cache in place in a buffer that
stays on the device between steps and between requests; on a GPU the decode step replays a
CUDA graph. Tandem keeps its own decode loop on top (`backend.decode_loop`): the generator
appends tokens and hands back the last position's logits, or, for a pass that carries drafted
tokens, every position's (the `logits_tail` output the pipeline adds to CPU graphs); sampling,
per-token logprobs, drafts, stop checks, constraints and cancellation are Tandem's, the same
for every backend.

Each cache slot (completion, function, explain) is its own `Generator`, so their prefixes do
not evict each other. A new prompt rewinds its slot to the tokens it shares with the last
one (`rewind_to`) and runs only the rest.
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .backend import (BackendError, Generation, Sampling, common_prefix, debug_delay, decode_loop, held, log_normalizer,
                      physical_cores)
from .lookup import draft_tokens
from .runtime import preload_cuda_libraries

log = logging.getLogger(__name__)

CONFIG_NAME = "genai_config.json"
# The graph output with the logits of a pass's last positions (models/genai_build.py adds it).
TAIL_OUTPUT = "logits_tail"
# How many of a pass's last positions that output covers: the longest run of tokens the decode
# loop verifies in one pass (a drafted continuation and the token before it).
TAIL_POSITIONS = 16
# KV buffer per slot, in tokens, grown (to the model's context length at most) when a prompt
# needs more. Every slot holds one such buffer: 0.5B, fp32 on a CPU: 24 KiB per token.
DEFAULT_MAX_LENGTH = {"cpu": 4096, "cuda": 8192}
# Tokens per prefill pass, which bounds the time to notice a cancel: about a second on two
# CPU cores; on a GPU 2,048 tokens take milliseconds, and every pass has a fixed cost.
PREFILL_CHUNK = {"cpu": 256, "cuda": 2048}


def _og():
    from .ortenv import import_onnxruntime_genai  # telemetry off before the runtime starts
    return import_onnxruntime_genai()


def is_genai_model(directory: Path) -> bool:
    return (Path(directory) / CONFIG_NAME).is_file()


def runtime_config(directory: Path, device: str, threads: int | None = None, session_options: dict | None = None):
    """The runtime's configuration for a graph as Tandem serves it (also what the benchmark
    gives genai's own loop): CUDA with graphs for decode steps, or the CPU on every physical core."""
    if device == "cuda":
        preload_cuda_libraries()
    config = _og().Config(str(directory))
    config.clear_providers()
    if device == "cuda":
        config.append_provider("cuda")
        # Decode steps (one token) replay a captured CUDA graph: launches cost nothing.
        config.set_provider_option("cuda", "enable_cuda_graph", "1")
    options = dict(session_options or {})
    if not threads and device != "cuda":
        # Measured (README "Serving speed", on a CPU): left unset, the runtime's CPU session
        # ran the prompt on about one core (2 cores: 2.43 s for 1,024 tokens against 1.34 s
        # with both). Every physical core, as onnxruntime's own sessions default to.
        threads = physical_cores()
    if threads:
        options["intra_op_num_threads"] = threads
    if options:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    return config


@dataclass
class _Slot:
    generator: object
    max_length: int
    ids: list[int] = field(default_factory=list)


class GenaiLM:
    supports_constraint = True

    def __init__(self, directory: Path, device: str, threads: int | None = None, context_length: int | None = None,
                 session_options: dict | None = None):
        self.model = _og().Model(runtime_config(directory, device, threads, session_options))
        self.directory = Path(directory)
        self.device = "cuda" if device == "cuda" else "cpu"
        with open(self.directory / CONFIG_NAME) as f:  # the graph's own limit (rotary cache size)
            graph_limit = int(json.load(f)["model"].get("context_length") or 32768)
        self.context_length = min(int(context_length or graph_limit), graph_limit)
        self._lock = threading.Lock()  # one decode at a time
        self._slots: dict[str, _Slot] = {}
        self._step_delay = debug_delay("step")
        # Measured on an H200 (README, "Serving speed"): a prefill pass of a length the CUDA
        # session has not run before costs about 50 ms more than the same pass again, so on a
        # GPU prompts are cut into power-of-two passes whose shapes `warm_up` runs once at load.
        # On a CPU a new length costs nothing extra, and fewer, longer passes are faster.
        buckets = os.environ.get("TANDEM_PREFILL_BUCKETS", "")
        self.bucketed = buckets == "1" or (buckets != "0" and self.device == "cuda")
        # Speculative decoding with drafts from the prompt (backend.decode_loop) needs the
        # logits of every drafted position: graphs built by this project's pipeline have them
        # as a second output (models/genai_build.py, add_logits_tail).
        self.has_tail = _has_output(self.directory / "model.onnx", TAIL_OUTPUT)
        self.draft_tokens = draft_tokens() if self.has_tail else 0

    # -- cache slots -------------------------------------------------------------------
    def _new_slot(self, max_length: int) -> _Slot:
        og = _og()
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=max_length, do_sample=False)
        return _Slot(og.Generator(self.model, params), max_length)

    def _slot(self, name: str, needed: int) -> _Slot:
        slot = self._slots.get(name)
        if slot is None or slot.max_length < needed:
            size = min(DEFAULT_MAX_LENGTH[self.device], self.context_length)
            while size < needed:
                size *= 2
            size = min(size, self.context_length)
            if size < needed:
                raise ValueError(f"prompt and answer need {needed} tokens; the model's context is {self.context_length}")
            self._slots.pop(name, None)  # free the old buffer before taking a larger one
            slot = self._slots[name] = self._new_slot(size)
        return slot

    def cached(self, prompt: list[int], slot: str = "completion") -> int:
        with self._lock:
            s = self._slots.get(slot)
            return held(s.ids, prompt) if s is not None else 0

    def clear_cache(self) -> None:
        with self._lock:
            self._slots.clear()

    def close(self) -> None:
        self.clear_cache()
        self.model = None

    def warm_up(self) -> float:
        """Run every prefill shape the bucketed loop uses, and one decode step (which captures
        the CUDA graph), so the first completions do not pay for them. Returns seconds spent."""
        t0 = time.perf_counter()
        if self.bucketed:
            size = 1
            while size <= min(PREFILL_CHUNK[self.device], self.context_length // 2):
                ids = [1 + (i % 97) for i in range(size)]
                self.generate([7, *ids], max_new_tokens=2, stop_ids=set())
                size *= 2
            self.generate([7], max_new_tokens=2, stop_ids=set())  # rewinds: leaves a cold cache
        return time.perf_counter() - t0

    # -- forward passes ---------------------------------------------------------------
    @staticmethod
    def _append(slot: _Slot, ids: list[int], want_logits: bool) -> np.ndarray | None:
        try:
            slot.generator.append_tokens(np.asarray(ids, dtype=np.int32))
            # Copied to the host only when the loop reads them (not for a prefill chunk's).
            logits = slot.generator.get_logits()[0, -1] if want_logits else None
        except Exception as e:  # the runtime's own failure: out of memory, lost device
            raise BackendError(str(e)) from e
        slot.ids.extend(ids)
        return logits

    @staticmethod
    def _verify(slot: _Slot, ids: list[int]) -> np.ndarray:
        try:
            slot.generator.append_tokens(np.asarray(ids, dtype=np.int32))
            rows = slot.generator.get_output(TAIL_OUTPUT)[0, -len(ids):]
        except Exception as e:
            raise BackendError(str(e)) from e
        slot.ids.extend(ids)
        return rows if rows.dtype == np.float32 else rows.astype(np.float32)

    @staticmethod
    def _drop(slot: _Slot, n: int) -> None:
        """Forget the last `n` tokens of the slot's cache (a rejected draft, or what a new
        prompt does not share with the last one)."""
        try:
            slot.generator.rewind_to(len(slot.ids) - n)
        except Exception as e:
            raise BackendError(str(e)) from e
        del slot.ids[len(slot.ids) - n:]

    def _speculation(self, slot: _Slot) -> SimpleNamespace | None:
        if not self.draft_tokens:
            return None
        return SimpleNamespace(draft_tokens=self.draft_tokens, verify=lambda ids: self._verify(slot, ids),
                               drop=lambda n: self._drop(slot, n))

    def forward_logits(self, ids: list[int]) -> np.ndarray:
        """Logits of the prompt's last position from an empty cache (the serving graph is built
        to compute no other position), as a [1, vocab] array."""
        with self._lock:
            slot = self._new_slot(max(len(ids) + 1, 16))
            slot.generator.append_tokens(np.asarray(ids, dtype=np.int32))
            return np.array(slot.generator.get_logits()[0, -1:], dtype=np.float32)

    def score(self, ids: list[int], start: int, slot: str | None = None) -> tuple[list[float], list[int]]:
        """Teacher-forced: the log-probability the model gives each of `ids[start:]` after the
        tokens before it, and the token it would have picked there (argmax), in passes of at most
        the `logits_tail` positions. From a fresh cache, or in cache slot `slot`, reusing what it
        holds of `ids` (scoring the answer to a prompt just completed there runs only the
        answer). What the graph is measured with when its answers are not (`tandem learn`'s
        held-out loss through the served model). Needs a graph with `logits_tail` (the
        pipeline's CPU variants)."""
        if not self.has_tail:
            raise ValueError(f"{self.directory} has no {TAIL_OUTPUT} output to score with")
        if not 0 < start < len(ids):
            raise ValueError("start must leave at least one token before and one to score")
        logprobs, picks, scratch = [], [], None
        with self._lock:
            if slot is None:
                s, reuse = self._new_slot(len(ids) + 1), 0
            else:
                s = self._slot(slot, len(ids) + 1)
                reuse = min(common_prefix(s.ids, ids), start - 1)  # position start-1 must run: its logits
            try:
                if len(s.ids) > reuse:
                    self._drop(s, len(s.ids) - reuse)
                if start - 1 > reuse:
                    self._append(s, ids[reuse:start - 1], want_logits=False)
                pos = start - 1  # the position whose logits predict ids[start]
                while pos < len(ids) - 1:
                    chunk = ids[pos:min(len(ids) - 1, pos + TAIL_POSITIONS)]
                    rows = self._verify(s, chunk)
                    for row, target in zip(rows, ids[pos + 1:pos + 1 + len(chunk)]):
                        log_z, scratch = log_normalizer(row, scratch)
                        logprobs.append(float(row[target]) - log_z)
                        picks.append(int(row.argmax()))
                    pos += len(chunk)
            except BackendError:
                if slot is not None:
                    self._slots.pop(slot, None)
                raise
        return logprobs, picks

    # -- generation ---------------------------------------------------------------------
    def generate(self, prompt: list[int], *, max_new_tokens: int, stop_ids: set[int],
                 cancel: threading.Event | None = None, stop_check=None,
                 sampling: Sampling | None = None, constraint=None, slot: str = "completion") -> Generation:
        if not prompt:
            raise ValueError("empty prompt")
        cancel = cancel or threading.Event()
        with self._lock:
            s = self._slot(slot, len(prompt) + max_new_tokens + 1)
            t0 = time.perf_counter()
            try:
                reuse = common_prefix(s.ids, prompt)
                prior = s.ids[reuse:]  # what this request makes the cache forget: a draft source
                if prior:
                    self._drop(s, len(prior))
                gen = decode_loop(prompt, reuse, lambda ids, want: self._append(s, ids, want),
                                  max_new_tokens=max_new_tokens, stop_ids=stop_ids, cancel=cancel,
                                  stop_check=stop_check, sampling=sampling, constraint=constraint,
                                  step_delay=self._step_delay, prefill_chunk=PREFILL_CHUNK[self.device],
                                  bucketed=self.bucketed, speculate=self._speculation(s), prior=prior)
            except BackendError:
                self._slots.pop(slot, None)  # its cache can no longer be trusted: a fresh one next time
                raise
            gen.timings["total_s"] = time.perf_counter() - t0
            return gen


def _has_output(graph: Path, name: str) -> bool:
    """Does the graph file name an output `name`? A search of its bytes (onnx is not a server
    dependency): the builder keeps the weights in model.onnx.data, so the file is small, and a
    graph with its weights inside is searched through a memory map, not read into memory."""
    try:
        with open(graph, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(name.encode()) >= 0
    except (OSError, ValueError):  # missing, unreadable, or empty
        return False
