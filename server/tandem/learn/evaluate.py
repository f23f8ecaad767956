"""Line completions at held-out cut sites, through the serving engine, as the user sees them.

The model is loaded by `tandem.model.loaded.load_model`, exactly as the server loads it (the
same variant, runtime, tokenizer and special ids), and each site is completed by the inline
completion path's own engine (`tandem.completion.engine.CompletionEngine.complete`): the same
prompt (context block from other files when a WorkspaceContext is given, FIM layout, token
healing), the runtime's decode loop with the engine's stop rules, and the same post-processing
(block end, dedup, word continuation, bracket balance, range). The site's document is the file
without the rest of the cut line; the completed line is what accepting the suggestion leaves on
that line (its text before the cursor, the suggestion's first line, what the suggestion keeps of
the rest). Measured per site: exact match of that line with the original (trailing whitespace
ignored), edit similarity (1 - Levenshtein distance / longer length) and wall-clock latency.

With `score_lines`, each site's line is also scored teacher-forced through the loaded graph
(`GenaiLM.score`), after the engine's own prompt for that site (the cache slot still holds it,
so only the line's tokens run): the loss per token of what the model should have written (the
healed text, the indentation, the line) and the share of those tokens that are its own first
choice. A measure of a few hundred tokens where exact match sees a few dozen lines, taken on the
model that would be served, after merge, export and quantization.

One shortcut, which does not change what is scored: a cursor after a line's indentation asks for
a block, and only its first line is scored, so decoding stops once that line is finished (the
post-processing rules never change a block's first line because of the lines after it).
"""
from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from dataclasses import dataclass

from ..completion.engine import CompletionEngine, serving_prompt
from ..settings import Settings
from .workspace import CutSite, block_site

CONTEXT_TOKENS = Settings().contextTokens  # the server's default prompt budget
PREFIX_SHARE = Settings().prefixShare


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
    heldout_loss: float | None = None  # teacher-forced, per token (None: not measured)
    token_accuracy: float | None = None  # share of those tokens that are the model's first choice
    scored_tokens: int = 0

    def to_json(self, samples: int = 200) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "samples"}
        d["samples"] = self.samples[:samples]
        return d


class _FirstLine:
    """The runtime, stopping a decode once the first line of text is finished (see above)."""

    def __init__(self, lm, codec):
        self._lm, self._codec = lm, codec

    def __getattr__(self, name):
        return getattr(self._lm, name)

    def generate(self, ids, *args, stop_check=None, **kw):
        # Token healing: the first tokens write the prompt's dropped text again (`required`),
        # which may itself end a line (`:\n`); the line that counts starts after it.
        c = kw.get("constraint")
        healed = c.required.decode("utf-8", "replace") if c is not None else ""

        def check(gen_ids) -> bool:
            text = self._codec.decode(gen_ids)
            first_done = text.startswith(healed) and "\n" in text[len(healed):].lstrip()
            return first_done or bool(stop_check and stop_check(gen_ids))
        return self._lm.generate(ids, *args, stop_check=check, **kw)


def engine_for(model) -> CompletionEngine:
    return CompletionEngine(dataclasses.replace(model, lm=_FirstLine(model.lm, model.codec)))


def _context_block(model, context, file: str, doc: str, offset: int, settings: Settings):
    """The context block the server would put before the prompt at `offset` in `doc` (None:
    no WorkspaceContext, or nothing to add)."""
    return context.block(model.codec, file, doc, offset, settings.contextTokens) if context is not None else None


def complete_line(engine: CompletionEngine, site: CutSite, settings: Settings, context=None,
                  cancel: threading.Event | None = None) -> tuple[str, float, int]:
    """(the completed line, seconds, prompt tokens) for `site` through the engine; `context`:
    a tandem.learn.context.WorkspaceContext (None: no context block)."""
    doc = site.prefix + site.suffix
    offset = len(site.prefix)
    t0 = time.perf_counter()
    block = _context_block(engine.model, context, site.file, doc, offset, settings)
    r = engine.complete(doc, offset, settings, cancel, block)
    dt = time.perf_counter() - t0
    line_prefix = site.line_start
    if r is None:
        return line_prefix, dt, 0
    line_end = site.suffix.find("\n")
    rest = site.suffix if line_end < 0 else site.suffix[:line_end]
    first = r.text.split("\n", 1)[0]
    return line_prefix + first + (rest[r.replace_chars:] if "\n" not in r.text else ""), dt, r.prompt_tokens


class TeacherForced:
    """Accumulates teacher-forced scores through a runtime's `score` (above); `None` figures when
    the runtime cannot score (no `score`, or a graph without the output it needs)."""

    def __init__(self, lm):
        self.score = getattr(lm, "score", None)
        self.nll, self.hits, self.n = 0.0, 0, 0

    def add(self, ids: list[int], start: int, slot: str | None = None) -> None:
        if self.score is None:
            return
        try:
            logprobs, picks = self.score(ids, start, slot=slot)
        except ValueError:
            self.score = None
            return
        self.nll -= sum(logprobs)
        self.hits += sum(p == t for p, t in zip(picks, ids[start:]))
        self.n += len(logprobs)

    def result(self) -> tuple[float | None, float | None, int]:
        """(loss per token, share of first choices, tokens scored)."""
        if self.score is None or not self.n:
            return None, None, 0
        return round(self.nll / self.n, 4), round(self.hits / self.n, 4), self.n


def teacher_forced(lm, examples) -> tuple[float | None, float | None, int]:
    """TeacherForced.result() of `examples` [(ids, start)], each from a fresh cache."""
    t = TeacherForced(lm)
    for ids, start in examples:
        t.add(ids, start)
    return t.result()


def _line_ids(engine: CompletionEngine, site: CutSite, settings: Settings, context) -> tuple[list[int], int]:
    """The engine's prompt for `site` and, after it, what the model should write there (the
    healed text, the indentation the prompt left out, the line): (ids, where that starts)."""
    model = engine.model
    doc = site.prefix + site.suffix
    block = _context_block(model, context, site.file, doc, len(site.prefix), settings)
    sp = serving_prompt(model.codec, model.fim, site.prefix, site.suffix, settings.contextTokens,
                        settings.prefixShare, tuple(block.ids) if block is not None else (), heal=engine._heals())
    return sp.ids + model.codec.encode(sp.written_first + site.target), len(sp.ids)


def evaluate_model(model, sites: list[CutSite], settings: Settings | None = None, context=None,
                   cancel: threading.Event | None = None, on_site=None, time_limit_s: float | None = None,
                   min_sites: int = 10, score_lines: bool = False) -> EvalResult:
    """`model` is a LoadedModel (see tandem.model.loaded.load_model). With `time_limit_s`, sites
    after the limit are left out (at least `min_sites` are done): `sites` given in a random
    order, the result's `sites` says how many of the first ones were used. `score_lines`: also
    score each site's line teacher-forced (above)."""
    if not sites:
        raise ValueError("no cut sites to evaluate")
    settings = settings or Settings()
    engine = engine_for(model)
    exact, sims, lat, samples = [], [], [], []
    teacher = TeacherForced(model.lm) if score_lines else None
    t0 = time.perf_counter()
    for n, site in enumerate(sites):
        if time_limit_s is not None and n >= min_sites and time.perf_counter() - t0 > time_limit_s:
            break
        line, dt, tokens = complete_line(engine, site, settings, context, cancel)
        want = (site.line_start + site.target).rstrip()
        got = line.rstrip()
        exact.append(got == want)
        sims.append(edit_similarity(got.strip(), want.strip()))
        lat.append(dt * 1000)
        samples.append({"file": site.file, "line": site.line + 1, "want": want.strip(), "got": got.strip(),
                        "exact": exact[-1], "prompt_tokens": tokens})
        if teacher is not None and not (cancel and cancel.is_set()):
            teacher.add(*_line_ids(engine, site, settings, context), slot=engine.last_slot)
        if on_site:
            on_site(n + 1, len(sites))
    loss, accuracy, scored = teacher.result() if teacher is not None else (None, None, 0)
    return EvalResult(round(100 * sum(exact) / len(exact), 2), round(100 * statistics.mean(sims), 2),
                      round(statistics.median(lat), 1), round(statistics.mean(lat), 1), len(exact),
                      model.label, samples, loss, accuracy, scored)


@dataclass
class BlockResult:
    """Block completions at sites whose block is not written yet (workspace.block_site)."""
    sites: int
    lines_wanted: float  # mean lines in the block
    lines_offered: float  # mean lines in the suggestion (0: none)
    one_line: int  # sites offered a single line
    nothing: int  # sites offered nothing
    lines_right: float  # mean lines right from the block's start, before the first wrong one
    first_line_right: int
    latency_ms_p50: float
    samples: list[dict]


def evaluate_blocks(model, sites: list[CutSite], settings: Settings | None = None, context=None,
                    cancel: threading.Event | None = None) -> BlockResult:
    """What the user is offered on a new line when the rest of the block is still to write (the
    engine in full: multi-line mode, its stop rules and post-processing), against the block the
    file has there. Line completions alone cannot see a model that stops after one line."""
    settings = settings or Settings()
    engine = CompletionEngine(model)
    rows = []
    for site in sites:
        bsite, want = block_site(site)
        doc = bsite.prefix + bsite.suffix
        t0 = time.perf_counter()
        block = _context_block(model, context, site.file, doc, len(bsite.prefix), settings)
        r = engine.complete(doc, len(bsite.prefix), settings, cancel, block)
        dt = time.perf_counter() - t0
        got = [g.rstrip() for g in (bsite.line_start + r.text).split("\n")] if r is not None else []
        right = 0
        for g, w in zip(got, want):
            if g != w:
                break
            right += 1
        rows.append({"file": site.file, "line": site.line + 1, "want": len(want), "got": len(got),
                     "right": right, "first": bool(got) and got[0] == want[0], "ms": round(dt * 1000, 1),
                     "text": "\n".join(got)[:400]})
    n = len(rows)
    if not n:
        raise ValueError("no cut sites to evaluate")
    return BlockResult(n, round(sum(r["want"] for r in rows) / n, 2), round(sum(r["got"] for r in rows) / n, 2),
                       sum(r["got"] == 1 for r in rows), sum(r["got"] == 0 for r in rows),
                       round(sum(r["right"] for r in rows) / n, 2), sum(r["first"] for r in rows),
                       round(statistics.median(r["ms"] for r in rows), 1), rows)


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
