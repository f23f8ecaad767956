"""One inline completion, start to end: context -> prompt -> decode -> post-process.

Plain Python over a LoadedModel; the LSP layer only converts positions and results.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from ..model.backend import prefill
from ..model.loaded import LoadedModel
from ..settings import Settings
from . import healing, postprocess
from .context import SCAN_CHARS, CursorContext, analyze, should_skip
from .prompt import CHARS_PER_TOKEN_MAX, FimIds, FimPrompt, build_fim_prompt

log = logging.getLogger(__name__)

MAX_DOCUMENT_CHARS = 20_000_000  # past this we do not even slice the text
# Two KV cache slots for completions, used as a tiny LRU: a completion runs in the one holding
# most of its prompt, a warm (the cursor resting elsewhere, features/warm.py) in the one the
# last completion did not use, so looking somewhere else and coming back to type where you were
# finds your prompt still there. One more KV buffer: ~100 MB for the 0.5B on a CPU.
COMPLETION_SLOTS = ("completion", "completion-2")


@dataclass(frozen=True)
class Completion:
    text: str
    replace_chars: int
    multiline: bool
    latency_ms: float
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    cached: bool = False
    logprobs: tuple[float, ...] = ()
    token_ids: tuple[int, ...] = ()  # the generated tokens, for confidence spans on acceptance
    token_skip: int = 0  # characters of their text dropped before `text` (indentation already typed)
    prompt_start: int = 0  # the document offsets the prompt covered: first character of its prefix
    prompt_end: int = 0  # ... and end of its suffix


class CompletionEngine:
    def __init__(self, model: LoadedModel, cache_size: int = 64):
        self.model = model
        self._slots = list(COMPLETION_SLOTS)  # most recently used by a completion first
        self.last_slot = COMPLETION_SLOTS[0]  # where the last completion ran (its prompt is there)
        self._cache: OrderedDict[tuple, Completion] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        if self._heals():  # the vocabulary table takes ~0.5 s for Qwen: build it off the request path
            threading.Thread(target=healing.vocab_table, args=(model.codec,), daemon=True,
                             name="tandem-vocab-table").start()

    def _heals(self) -> bool:
        """Token healing needs a decode loop that honours `constraint=` (runtime attribute
        `supports_constraint`); the evaluation may switch it off (TANDEM_EVAL_RULES_OFF=heal)."""
        return bool(getattr(self.model.lm, "supports_constraint", False)) and postprocess.rule_on("heal")

    def complete(self, text: str, offset: int, settings: Settings,
                 cancel: threading.Event | None = None, context=None) -> Completion | None:
        """`context`: a tandem.context.ContextBlock (other files, this file's path) whose ids
        go first in the prompt, within the same contextTokens budget."""
        t0 = time.perf_counter()
        if len(text) > MAX_DOCUMENT_CHARS:
            return None
        offset = max(0, min(offset, len(text)))
        prefix, suffix = text[:offset], text[offset:]
        ctx = analyze(prefix, suffix)
        if should_skip(ctx.line_suffix):
            return None
        budget = settings.contextTokens
        # Cache key: exactly what the model would see, plus the limits that shape the output.
        span = budget * CHARS_PER_TOKEN_MAX  # the most text the prompt builder can look at
        window = (prefix[-span:], suffix[:span])
        head = tuple(context.ids) if context is not None else ()
        key = (window, ctx.multiline, settings.maxTokensSingleLine, settings.maxTokensMultiLine,
               budget, settings.prefixShare, context.key if context is not None else None)
        hit = self._cached(key, t0)
        if hit is not None:
            return hit if hit.text else None
        sp = serving_prompt(self.model.codec, self.model.fim, prefix, suffix, budget, settings.prefixShare, head,
                            heal=self._heals())
        prompt, ids, heal, constraint, indent = sp.prompt, sp.ids, sp.heal, sp.constraint, sp.indent
        limit = settings.maxTokensMultiLine if ctx.multiline else settings.maxTokensSingleLine
        codec = self.model.codec

        def text_of(ids: list[int]) -> str:
            return _drop_indent(_unheal(codec.decode(ids), heal.text), indent)

        extra = {"constraint": constraint} if constraint is not None else {}
        slot = self._slot_for(ids)
        gen = self.model.lm.generate(
            ids, max_new_tokens=limit + heal.drop, stop_ids=self.model.stop_ids, cancel=cancel,
            stop_check=lambda ids: postprocess.stop_early(ctx, text_of(ids)), slot=slot, **extra)
        decoded = codec.decode(gen.ids)
        raw = text_of(gen.ids)
        sugg = postprocess.finish(ctx, raw, hit_token_limit=gen.stop_reason == "max_tokens")
        latency = (time.perf_counter() - t0) * 1000
        log.debug("completion: %d prompt tokens (%d reused, %d healed), %d generated in %.0f ms (prefill %.0f, "
                  "decode %.0f in %s passes, %s of %s drafted tokens kept), raw=%r", len(ids), gen.reused_tokens,
                  heal.drop, len(gen.ids), latency, gen.prefill_s * 1e3, gen.decode_s * 1e3,
                  gen.timings.get("decode_passes", "?"), gen.timings.get("draft_accepted", 0),
                  gen.timings.get("drafted", 0), raw[:200])
        result = Completion(sugg.text if sugg else "", sugg.replace_chars if sugg else 0, ctx.multiline,
                            latency, len(ids), gen.reused_tokens, len(gen.ids),
                            logprobs=tuple(gen.logprobs), token_ids=tuple(gen.ids),
                            token_skip=len(decoded) - len(raw), prompt_start=prompt.prefix_start,
                            prompt_end=offset + prompt.suffix_end)
        self._store(key, result)
        self._store_typed_through(key, ctx, result)
        return result if result.text else None

    def warm(self, text: str, offset: int, settings: Settings, cancel: threading.Event | None = None,
             context=None) -> int:
        """Run the prompt a completion at `offset` would send through the model, without
        generating, so that the KV cache holds it when the user starts typing there: the tokens
        before the cursor are then reused, and the whole prompt when the editor asks at this
        very place. Returns how many prompt tokens were computed (0: all were in the cache).
        `cancel` stops it within one prefill pass; what was computed by then is kept."""
        if not hasattr(self.model.lm, "cached") or len(text) > MAX_DOCUMENT_CHARS:
            return 0  # a remote server has its own prefix cache, and a request would cost the team
        offset = max(0, min(offset, len(text)))
        head = tuple(context.ids) if context is not None else ()
        sp = serving_prompt(self.model.codec, self.model.fim, text[:offset], text[offset:], settings.contextTokens,
                            settings.prefixShare, head, heal=self._heals())
        # Into the slot the last completion did not use, so the place being worked on stays
        # cached; nothing when a slot holds it already (e.g. the last completion asked here: its
        # answer stays after the prompt, to draft the next line after Enter).
        computed = prefill(self.model.lm, sp.ids, self._slots[-1], self.model.stop_ids, cancel, self._slots)
        log.debug("warmed: %d prompt tokens, %d of them computed", len(sp.ids), computed)
        return computed

    def _slot_for(self, ids: list[int]) -> str:
        """The completion slot holding most of `ids` (the most recently used on a tie), now the
        most recently used."""
        lm = self.model.lm
        slot = max(self._slots, key=lambda s: lm.cached(ids, s)) if hasattr(lm, "cached") else self._slots[0]
        self._slots.remove(slot)
        self._slots.insert(0, slot)
        self.last_slot = slot
        return slot

    # -- cache -------------------------------------------------------------------------
    def _cached(self, key, t0) -> Completion | None:
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            self._cache.move_to_end(key)
        return replace(hit, latency_ms=(time.perf_counter() - t0) * 1000, cached=True)

    def _store(self, key, value: Completion) -> None:
        with self._cache_lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _store_typed_through(self, key, ctx: CursorContext, result: Completion) -> None:
        """Pre-store the rest of the suggestion for each prefix of it the user may type, so
        typing along a shown suggestion costs no model call (as Tabby does)."""
        if not result.text or result.replace_chars:
            return
        (pre, suf), rest = key[0], key[1:]
        first_line = result.text.split("\n", 1)[0]
        for i in range(1, min(len(first_line), 24)):
            typed = result.text[:i]
            follow = result.text[i:]
            if not follow.strip():
                break
            near = analyze(ctx.prefix[-SCAN_CHARS:] + typed, ctx.suffix[:SCAN_CHARS])  # local view suffices
            if near.multiline != ctx.multiline:
                break  # a different kind of completion would be asked for
            window = ((pre + typed)[-key[4] * CHARS_PER_TOKEN_MAX:], suf)
            self._store((window, *rest), Completion(follow, 0, result.multiline, 0.0, result.prompt_tokens,
                                                    result.reused_tokens, 0, False))


@dataclass(frozen=True)
class ServingPrompt:
    prompt: FimPrompt
    ids: list[int]  # what the model is given (healed)
    indent: str  # the cursor line's indentation, left out of the prompt: the model writes it
    heal: healing.Healing  # prompt tokens dropped before the cursor: the model writes heal.text first
    constraint: healing.PrefixConstraint | None

    @property
    def written_first(self) -> str:
        """What the model must write before the text after the cursor: the healed text and the
        indentation the prompt left out."""
        return self.heal.text + self.indent


def serving_prompt(codec, fim: FimIds, prefix: str, suffix: str, budget: int, prefix_share: float,
                   head=(), heal: bool = True) -> ServingPrompt:
    """The prompt the engine sends for a cursor between `prefix` and `suffix`, `budget` tokens
    (`contextTokens`) with the context `head` first. Public so that `tandem learn` builds its
    training examples with it: one layout for training and serving."""
    # On a line holding only indentation, end the prompt at the line break and let the
    # model write the indentation itself: models indent better than they continue a run of
    # spaces. The engine then removes the part of it the cursor already stands on.
    line_prefix = prefix[prefix.rfind("\n") + 1:]
    indent = line_prefix if not line_prefix.strip() else ""
    prompt = build_fim_prompt(codec, fim, _encodable(prefix[:len(prefix) - len(indent)]), _encodable(suffix),
                              max(64, budget - len(head)), prefix_share, head)
    ids, healed, constraint = _heal(codec, prompt) if heal else (prompt.ids, healing.NO_HEALING, None)
    return ServingPrompt(prompt, ids, indent, healed, constraint)


def _heal(codec, prompt) -> tuple[list[int], healing.Healing, healing.PrefixConstraint | None]:
    """Back the prompt's prefix off to the last token boundary the text would keep, and
    constrain the first generated tokens to write the dropped text again."""
    if not prompt.prefix_tokens:
        return prompt.ids, healing.NO_HEALING, None
    table = healing.vocab_table(codec)
    h = prompt.head_tokens  # ids: [*context, fim prefix, *prefix, fim suffix, *suffix, fim middle]
    end = h + 1 + prompt.prefix_tokens
    heal = healing.backoff(table, prompt.ids[h + 1:end])
    if not heal.drop:
        return prompt.ids, heal, None
    return prompt.ids[:end - heal.drop] + prompt.ids[end:], heal, healing.PrefixConstraint.for_healing(table, heal)


def _encodable(text: str) -> str:
    """Lone surrogates (possible in JSON strings) cannot be tokenized: replace them."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _unheal(decoded: str, healed: str) -> str:
    """The generated text after the part that rewrites the healed prompt tokens."""
    if not healed or decoded.startswith(healed):
        return decoded[len(healed):]
    if healed.startswith(decoded):
        return ""  # still writing the healed text
    return decoded  # the decode loop did not honour the constraint: keep what it wrote


def _drop_indent(text: str, indent: str) -> str:
    """Remove up to len(indent) leading whitespace characters: the cursor already has them."""
    n = 0
    while n < len(indent) and n < len(text) and text[n] in " \t":
        n += 1
    return text[n:]
