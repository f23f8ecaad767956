"""Line completions at held-out cut sites, through the serving engine.

The model is loaded by `tandem.model.loaded.load_model`, exactly as the server loads it (the
same variant, runtime, tokenizer and special ids), the prompt is the server's FIM prompt
(`build_fim_prompt`) and decoding is the runtime's own greedy loop, stopped at the end of the
line. Measured per site: exact match of the line (whitespace at the ends ignored), edit
similarity (1 - Levenshtein distance / longer length) and wall-clock latency.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

from ..completion.prompt import build_fim_prompt
from .workspace import CutSite

CONTEXT_TOKENS = 1024
PREFIX_SHARE = 0.7
MAX_NEW_TOKENS = 32


def edit_similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


@dataclass
class EvalResult:
    exact_match: float  # percent
    edit_similarity: float  # percent
    latency_ms_p50: float
    latency_ms_mean: float
    sites: int
    model: str
    samples: list[dict]

    def to_json(self, samples: int = 200) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "samples"}
        d["samples"] = self.samples[:samples]
        return d


def complete_line(model, site: CutSite, context_tokens: int = CONTEXT_TOKENS,
                  cancel: threading.Event | None = None) -> tuple[str, float]:
    codec = model.codec
    prompt = build_fim_prompt(codec, model.fim, site.prefix, site.suffix, context_tokens, PREFIX_SHARE)
    t0 = time.perf_counter()
    gen = model.lm.generate(prompt.ids, max_new_tokens=MAX_NEW_TOKENS, stop_ids=model.stop_ids, cancel=cancel,
                            stop_check=lambda ids: "\n" in codec.decode(ids))
    dt = time.perf_counter() - t0
    return codec.decode(gen.ids).split("\n", 1)[0], dt


def evaluate_model(model, sites: list[CutSite], context_tokens: int = CONTEXT_TOKENS,
                   cancel: threading.Event | None = None, on_site=None, time_limit_s: float | None = None,
                   min_sites: int = 10) -> EvalResult:
    """`model` is a LoadedModel (see tandem.model.loaded.load_model). With `time_limit_s`, sites
    after the limit are left out (at least `min_sites` are done): `sites` given in a random
    order, the result's `sites` says how many of the first ones were used."""
    if not sites:
        raise ValueError("no cut sites to evaluate")
    exact, sims, lat, samples = [], [], [], []
    t0 = time.perf_counter()
    for n, site in enumerate(sites):
        if time_limit_s is not None and n >= min_sites and time.perf_counter() - t0 > time_limit_s:
            break
        got, dt = complete_line(model, site, context_tokens, cancel)
        want = site.target.strip()
        exact.append(got.strip() == want)
        sims.append(edit_similarity(got.strip(), want))
        lat.append(dt * 1000)
        samples.append({"file": site.file, "line": site.line + 1, "want": want, "got": got.strip(),
                        "exact": exact[-1]})
        if on_site:
            on_site(n + 1, len(sites))
    return EvalResult(round(100 * sum(exact) / len(exact), 2), round(100 * statistics.mean(sims), 2),
                      round(statistics.median(lat), 1), round(statistics.mean(lat), 1), len(exact),
                      model.label, samples)


def evaluate_path(path: str, sites: list[CutSite], device: str = "cpu", **kw) -> EvalResult:
    from ..model.loaded import load_model
    model = load_model(path, device)
    try:
        return evaluate_model(model, sites, **kw)
    finally:
        try:
            model.lm.close()
        except Exception:
            pass
