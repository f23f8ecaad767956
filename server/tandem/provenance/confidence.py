"""How sure the model was of what it wrote, from the log-probabilities of its tokens.

`spans_of_ids` maps the per-token log-probabilities of a generation onto character spans of
the text that was shown, from the generated token ids themselves; `summarize` turns them into
a level (high / medium / low), the geometric-mean token probability, the lowest one, and the
least confident spans.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

HIGH, MEDIUM = 0.80, 0.55  # geometric-mean probability thresholds
LOW_TOKEN = 0.5  # a token below this probability is worth pointing at


def spans_of_ids(codec, ids, logprobs, *, skip: int = 0, limit: int) -> list[tuple[int, int, float]]:
    """(start, end, logprob) of each token of `ids` in their decoded text, with the first
    `skip` characters left out (indentation the cursor already had) and spans clipped to
    `limit` characters after them (tokens post-processing cut off get none)."""
    spans: list[tuple[int, int, float]] = []
    pos = 0
    for i in range(min(len(ids), len(logprobs))):
        end = len(codec.decode(ids[:i + 1]))  # a character split across tokens ends on its last
        a, b = max(0, pos - skip), min(limit, end - skip)
        pos = max(pos, end)
        if b > a:
            spans.append((a, b, float(logprobs[i])))
        if end - skip >= limit:
            break
    return spans


@dataclass(frozen=True)
class Summary:
    level: str  # "high" | "medium" | "low" | "unknown"
    mean_p: float | None  # geometric mean of the token probabilities
    min_p: float | None
    tokens: int
    low: list[tuple[int, int, float]]  # least confident spans, (start, end, probability), by position

    def describe(self) -> str:
        if self.mean_p is None:
            return "unknown: no token probabilities were recorded"
        return (f"{self.level}: average token probability {self.mean_p:.0%}, lowest {self.min_p:.0%} "
                f"over {self.tokens} token{'s' if self.tokens != 1 else ''}")


def summarize(tokens, text: str = "", max_spans: int = 3) -> Summary:
    tokens = [(int(a), int(b), float(lp)) for a, b, lp in tokens or ()]
    if not tokens:
        return Summary("unknown", None, None, 0, [])
    lps = [lp for _, _, lp in tokens]
    mean_p = math.exp(sum(lps) / len(lps))
    min_p = math.exp(min(lps))
    level = "high" if mean_p >= HIGH else "medium" if mean_p >= MEDIUM else "low"
    # Least confident tokens, joined with neighbours that are unsure too, most doubtful first.
    unsure = [(a, b, math.exp(lp)) for a, b, lp in tokens if math.exp(lp) < LOW_TOKEN]
    if text:
        unsure = [(a, b, p) for a, b, p in unsure if text[a:b].strip()]  # whitespace says little
    merged: list[list] = []
    for a, b, p in unsure:
        if merged and a <= merged[-1][1] + (1 if text and text[merged[-1][1]:a].strip() == "" else 0):
            merged[-1][1] = max(merged[-1][1], b)
            merged[-1][2] = min(merged[-1][2], p)
        else:
            merged.append([a, b, p])
    worst = sorted(merged, key=lambda m: m[2])[:max_spans]
    low = sorted(((a, b, p) for a, b, p in worst), key=lambda m: m[0])
    return Summary(level, mean_p, min_p, len(tokens), low)
