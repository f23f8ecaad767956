"""Similar code, as Copilot's neighbouring tabs do: Jaccard similarity between the identifier
sets of the lines before the cursor (its 16-line block) and of windows of lines of recently
opened files, of the modules the file imports and of the file itself (away from the cursor)."""
from __future__ import annotations

import re
from dataclasses import dataclass

WINDOW_LINES = 20
STRIDE_LINES = 10
QUERY_LINES = 20
# The query ends at the start of the cursor's block of this many lines (the prompt's prefix is
# aligned the same way): moving to another line of the block keeps the windows. Enter inserts a
# line, which shifts the file's own windows below the cursor: the block then changes at 49 of
# the 90 bench_repo_context sites (block_kept_enter), and is prefilled again.
QUERY_ALIGN = 16
MIN_SCORE = 0.15
# The current file's own windows count when they are away from the cursor: the prompt already
# shows about this many lines above and below it (1,076 of 1,536 tokens at the defaults).
SELF_SKIP_ABOVE = 100
SELF_SKIP_BELOW = 40
MIN_QUERY_TOKENS = 6  # fewer distinct identifiers above the cursor: too little to compare, no snippet
MAX_WINDOWS_PER_DOC = 4000  # about 40,000 lines
MAX_DOC_CHARS = 1_000_000
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STOP = frozenset("self def return if else elif for in while import from as class pass None True False and or not "
                  "is with try except finally raise lambda yield".split())


def tokens(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text) if w not in _STOP)


@dataclass(frozen=True)
class Window:
    first: int  # 0-based lines, inclusive
    last: int
    tokens: frozenset[str]


def windows(text: str, memo: dict | None = None) -> list[Window]:
    """The file's windows of WINDOW_LINES lines every STRIDE_LINES lines. `memo` (a window's
    text -> its identifiers, filled here) spares re-reading the windows an edit did not touch."""
    if len(text) > MAX_DOC_CHARS:
        return []
    lines = text.split("\n")
    out = []
    for start in range(0, max(1, len(lines) - WINDOW_LINES + STRIDE_LINES), STRIDE_LINES):
        chunk = lines[start:start + WINDOW_LINES]
        if memo is None:
            toks = tokens("\n".join(chunk))
        else:
            body = "\n".join(chunk)
            toks = memo.get(body)
            if toks is None:
                toks = memo[body] = tokens(body)
        if toks:
            out.append(Window(start, start + len(chunk) - 1, toks))
        if len(out) >= MAX_WINDOWS_PER_DOC:
            break
    return out


def query_lines(text: str, offset: int, align: int = 1) -> str:
    """The QUERY_LINES whole lines before the cursor's line (the line being typed is left out,
    so the query, and the context it picks, stays the same while the user types on it).
    With `align` > 1, before the first line of the cursor's block of `align` lines instead:
    the same query, hence the same windows, for every line of the block."""
    line_start = text.rfind("\n", 0, offset) + 1
    if align > 1:
        for _ in range(text.count("\n", 0, line_start) % align):
            line_start = text.rfind("\n", 0, line_start - 1) + 1
    a = line_start
    for _ in range(QUERY_LINES):
        if a <= 0:
            break
        a = text.rfind("\n", 0, a - 1) + 1
    return text[a:line_start]


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def best_windows(query: frozenset[str], docs: list[tuple[str, list[Window]]], k: int) -> list[tuple[float, str, Window]]:
    """The k best (score, key, window) over all docs, at most one window per doc area (no two
    overlapping windows from one doc), best first; ties broken by key and line (deterministic)."""
    scored = []
    for key, wins in docs:
        for w in wins:
            s = jaccard(query, w.tokens)
            if s >= MIN_SCORE:
                scored.append((-s, key, w.first, w))
    scored.sort(key=lambda x: (x[0], x[1], x[2]))
    out: list[tuple[float, str, Window]] = []
    for neg, key, _first, w in scored:
        if any(k2 == key and not (w.last < o.first or w.first > o.last) for _s, k2, o in out):
            continue
        out.append((-neg, key, w))
        if len(out) >= k:
            break
    return out
