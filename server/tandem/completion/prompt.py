"""Fill-in-the-middle prompts within a token budget.

The budget is split between text before the cursor (prefixShare) and after it; what one
side does not use goes to the other. The prefix is cut at a line start whose line number is
a multiple of PREFIX_ALIGN, so while the user types the prompt's first tokens stay the same
and the model's KV cache from the last request can be reused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

PREFIX_ALIGN = 16  # lines
CHARS_PER_TOKEN_MAX = 8  # generous: code averages 3-4; only bounds how much we tokenize


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class FimIds:
    prefix: int
    suffix: int
    middle: int


@dataclass(frozen=True)
class FimPrompt:
    ids: list[int]
    prefix_start: int  # offset in the given prefix where the prompt's prefix begins
    suffix_end: int  # offset in the given suffix where the prompt's suffix ends
    prefix_tokens: int
    suffix_tokens: int
    head_tokens: int = 0  # context (tandem/context) before <|fim_prefix|>: ids[head_tokens] is fim.prefix


def build_fim_prompt(enc: Encoder, fim: FimIds, prefix: str, suffix: str,
                     budget: int, prefix_share: float, head: Sequence[int] = ()) -> FimPrompt:
    """`budget` tokens for the current file's text; `head` (the repository context and the
    file's own `<|file_sep|>path` line, see tandem/context) goes first, unchanged."""
    budget = max(budget, 8)
    want_prefix = int(budget * prefix_share)
    suffix_ids, suffix_end = _head(enc, suffix, budget - want_prefix + _spare(enc, prefix, want_prefix))
    prefix_ids, prefix_start = _tail(enc, prefix, budget - len(suffix_ids))
    ids = [*head, fim.prefix, *prefix_ids, fim.suffix, *suffix_ids, fim.middle]
    return FimPrompt(ids, prefix_start, suffix_end, len(prefix_ids), len(suffix_ids), len(head))


def _spare(enc: Encoder, prefix: str, want: int) -> int:
    """Budget the prefix will not use (short files), which the suffix may take."""
    if len(prefix) >= want * CHARS_PER_TOKEN_MAX:
        return 0  # certainly long enough to fill its share; skip tokenizing it twice
    return max(0, want - len(enc.encode(prefix)))


def _head(enc: Encoder, suffix: str, budget: int) -> tuple[list[int], int]:
    """The first lines of `suffix` that fit in `budget` tokens."""
    text = suffix[: budget * CHARS_PER_TOKEN_MAX]
    ids = enc.encode(text)
    while len(ids) > budget and text:
        cut = text.rfind("\n", 0, max(1, len(text) * budget // max(len(ids), 1)))
        text = text[:cut + 1] if cut > 0 else ""
        ids = enc.encode(text)
    return ids, len(text)


def _tail(enc: Encoder, prefix: str, budget: int) -> tuple[list[int], int]:
    """The last lines of `prefix` that fit in `budget` tokens, starting on an aligned line."""
    window = max(0, len(prefix) - budget * CHARS_PER_TOKEN_MAX)
    start = _aligned_line_start(prefix, window)
    while start < len(prefix):
        ids = enc.encode(prefix[start:])
        if len(ids) <= budget:
            return ids, start
        # Skip ahead roughly the excess, then to the next aligned line start.
        excess = (len(ids) - budget) / len(ids)
        nxt = _aligned_line_start(prefix, start + max(1, int((len(prefix) - start) * excess)))
        if nxt <= start:
            break
        start = nxt
    # No aligned line start fits (very long lines): keep the last tokens before the cursor.
    ids = enc.encode(prefix[window:])[-budget:]
    return ids, len(prefix)


def _aligned_line_start(text: str, offset: int) -> int:
    """The first line start at or after `offset` whose line number is a multiple of PREFIX_ALIGN."""
    if offset <= 0:
        return 0
    line = text.count("\n", 0, offset)
    pos = text.rfind("\n", 0, offset) + 1
    if pos < offset:  # offset is inside a line: move to the next one
        nl = text.find("\n", offset)
        if nl < 0:
            return len(text)
        pos, line = nl + 1, line + 1
    while line % PREFIX_ALIGN:
        nl = text.find("\n", pos)
        if nl < 0:
            return len(text)
        pos, line = nl + 1, line + 1
    return pos
