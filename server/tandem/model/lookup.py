"""Drafts for speculative decoding, looked up in the prompt (prompt-lookup decoding).

Code repeats itself: the line being written often continues like one a few lines up, like the
code after the cursor (which a fill-in-the-middle prompt holds), or like a definition in the
context block. When the last few tokens generated also occur earlier in the prompt or the
answer, the tokens that followed them there are a cheap guess at what comes next. The decode
loop (backend.decode_loop) runs the guess through the model in one pass with the token it has
just chosen, and keeps the longest run of the guess that the model itself would have chosen
token by token: the output is the model's (up to the rounding of a several-token pass in a
quantized graph; see backend.decode_loop), only fewer passes run.

Nothing here knows about models; it works on token ids.
"""
from __future__ import annotations

import os

# Measured on 2 CPU cores with the default model (README, "Serving speed"): a pass of 6 tokens
# costs 22.3 ms where a pass of one costs 12.9, so a drafted token pays for itself only if
# about one in six is kept. Drafts of at most 3, 5 or 7 tokens, and 1-token matches or only
# 3-token ones, decoded held-out completions within a few percent of each other
# (tests/benchmarks/bench_drafts.py); 5 and (3, 2) were best.
DRAFT_TOKENS = 5
NGRAM_SIZES = (3, 2)  # the longest match wins
# Adaptive length: after a draft kept whole, the next may be 2 tokens longer (up to
# DRAFT_TOKENS + 3); after a miss, one longer than what was kept. Where the prompt rarely
# predicts the answer this cut the cost of trying from +13% to +4% per token, and where it
# often does it decoded within 4% of fixed drafts.
ADAPTIVE = True
# Also look in what the cache held before this request past the part it shares with it: the
# last answer (after Enter, the line the editor showed as the next one) and the old prompt's
# end. A match there is tried first. On Enter (tests/benchmarks/bench_enter.py, 54 sites) it took
# the p50 from 480 to 349 ms; at unrelated places it changed nothing measurable.
PRIOR = True


def draft_tokens() -> int:
    """Draft length: TANDEM_DRAFT_TOKENS (0 turns drafting off), else DRAFT_TOKENS."""
    v = os.environ.get("TANDEM_DRAFT_TOKENS", "")
    return int(v) if v.isdigit() else DRAFT_TOKENS


class PromptLookup:
    """An n-gram index over prompt + generated tokens, built on first use and extended as
    tokens arrive; `propose` returns what followed the most recent earlier occurrence of the
    sequence's last n tokens (in `prior` first: what the cache held before), `outcome` hears
    how many of them the model kept."""

    def __init__(self, prompt: list[int], limit: int, sizes: tuple[int, ...] | None = None,
                 prior: list[int] | None = None):
        self.history = list(prompt)
        self.prior = list(prior or ()) if PRIOR else []
        self._prior_index: dict[tuple[int, ...], int] | None = None
        self.limit = limit
        self.length = limit
        self.adaptive = ADAPTIVE
        self.sizes = sizes or NGRAM_SIZES
        self._index: dict[tuple[int, ...], int] = {}
        self._indexed = 0  # n-grams ending before this position are in the index
        self._synced = 0  # generated tokens already appended to history

    def propose(self, generated: list[int], room: int) -> list[int]:
        """At most min(limit, room) tokens to try after `generated` (the answer so far)."""
        history = self.history
        if len(generated) > self._synced:
            history.extend(generated[self._synced:])
            self._synced = len(generated)
        end = len(history) - 1  # the last position: the n-gram to look up ends here
        index = self._index
        _index_ngrams(index, history, self._indexed, end, self.sizes)
        self._indexed = max(self._indexed, end)
        count = min(self.length, room)
        if count <= 0:
            return []
        if self._prior_index is None:  # an n-gram at the very end has nothing after it
            self._prior_index = {}
            _index_ngrams(self._prior_index, self.prior, 0, len(self.prior) - 1, self.sizes)
        for n in self.sizes:
            if end + 1 >= n:
                key = tuple(history[end + 1 - n:])
                j = self._prior_index.get(key)
                if j is not None:
                    return self.prior[j + 1:j + 1 + count]
                j = index.get(key)
                if j is not None:
                    return history[j + 1:j + 1 + count]
        return []

    def outcome(self, drafted: int, accepted: int) -> None:
        """How many of the last draft's tokens the model kept."""
        if self.adaptive and drafted:
            self.length = min(self.limit + 3, self.length + 2) if accepted == drafted else accepted + 1


def _index_ngrams(index: dict, seq: list[int], start: int, stop: int, sizes) -> None:
    """Index the n-grams of `seq` that end at positions start..stop-1, by where they end (a
    later occurrence replaces an earlier one: the most recent wins)."""
    for j in range(start, stop):
        for n in sizes:
            if j + 1 >= n:
                index[tuple(seq[j + 1 - n:j + 1])] = j
