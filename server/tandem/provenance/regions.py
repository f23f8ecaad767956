"""Keeping a remembered region in place while the document is edited around and inside it.

Plain functions on character offsets (Python str indices). An edit replaces the span [a, b)
of the old text with `new` text. A region [start, end):
  - edit wholly before it (b <= start): it moves by the length difference;
  - edit wholly after it (a >= end): unchanged (typing right after it is not Tandem's text);
  - edit covering all of it: dropped, unless the replacement still holds its text verbatim
    (a formatter or a line-wise client rewrote the lines around it), then it moves there;
  - edit inside or across one boundary: it keeps what is left, and the caller compares its
    current text with the generated text to know whether it changed since generation.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

DIFF_MAX_LINES = 5000  # beyond this a whole-document change is treated as one edit


@dataclass(frozen=True)
class Edit:
    start: int  # offsets in the text before the edit
    end: int
    new: str

    @property
    def delta(self) -> int:
        return len(self.new) - (self.end - self.start)


def adjust(start: int, end: int, current: str, edit: Edit) -> tuple[int, int] | None:
    """New [start, end) of a region after `edit`, or None when the edit removed it.
    `current` is the region's text before the edit (to find it again inside a replacement)."""
    a, b = edit.start, edit.end
    if b <= start:  # also an insertion right at its start: that text is not Tandem's
        return start + edit.delta, end + edit.delta
    if a >= end:
        return start, end
    if a <= start and b >= end:
        # The whole region was replaced. Keep it if the new text still holds it.
        i = _nearest(edit.new, current, start - a)
        if i is None:
            return None
        return a + i, a + i + len(current)
    if a >= start and b <= end:  # inside
        new_start, new_end = start, end + edit.delta
    elif a < start:  # across the start: the new text lies before what is left
        new_start, new_end = a + len(edit.new), end + edit.delta
    else:  # across the end: what is left ends where the edit began
        new_start, new_end = start, a
    return (new_start, new_end) if new_end > new_start else None


def _nearest(haystack: str, needle: str, near: int) -> int | None:
    if not needle:
        return None
    best = None
    i = haystack.find(needle)
    while i >= 0:
        if best is None or abs(i - near) < abs(best - near):
            best = i
        i = haystack.find(needle, i + 1)
    return best


def locate(text: str, needle: str, near: int, window: int | None = None) -> int | None:
    """Offset of the occurrence of `needle` in `text` nearest to `near` (within `window`
    characters of it when given), or None."""
    if not needle:
        return None
    lo, hi = 0, len(text)
    if window is not None:
        lo, hi = max(0, near - window), min(len(text), near + window + len(needle))
    i = _nearest(text[lo:hi], needle, near - lo)
    return None if i is None else lo + i


def diff_edit(old: str, new: str) -> Edit | None:
    """The one edit that turns `old` into `new` (common prefix and suffix kept), or None
    when they are equal. Used for full-document changes."""
    if old == new:
        return None
    n = min(len(old), len(new))
    p = 0
    # Compare in blocks first: long unchanged prefixes are the usual case.
    step = 4096
    while p + step <= n and old[p:p + step] == new[p:p + step]:
        p += step
    while p < n and old[p] == new[p]:
        p += 1
    s = 0
    limit = n - p
    while s + step <= limit and old[len(old) - s - step:len(old) - s] == new[len(new) - s - step:len(new) - s]:
        s += step
    while s < limit and old[len(old) - 1 - s] == new[len(new) - 1 - s]:
        s += 1
    return Edit(p, len(old) - s, new[p:len(new) - s])


def diff_edits(old: str, new: str) -> list[Edit]:
    """Edits (in `old`'s offsets, in ascending order, not overlapping) that turn `old` into
    `new`: line blocks from difflib, each narrowed to the characters that differ. Apply them
    from the last to the first. Used for full-document changes, so that separate edits (a
    header added above, a fix inside a region) are seen as separate."""
    whole = diff_edit(old, new)
    if whole is None:
        return []
    a0, a1, mid = whole.start, whole.end, whole.new
    old_mid = old[a0:a1]
    old_lines, new_lines = old_mid.splitlines(keepends=True), mid.splitlines(keepends=True)
    if len(old_lines) > DIFF_MAX_LINES or len(new_lines) > DIFF_MAX_LINES or len(old_lines) + len(new_lines) < 3:
        return [whole]
    old_at = [0]
    for line in old_lines:
        old_at.append(old_at[-1] + len(line))
    new_at = [0]
    for line in new_lines:
        new_at.append(new_at[-1] + len(line))
    edits = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        o, n = old_mid[old_at[i1]:old_at[i2]], mid[new_at[j1]:new_at[j2]]
        e = diff_edit(o, n)
        if e is not None:
            edits.append(Edit(a0 + old_at[i1] + e.start, a0 + old_at[i1] + e.end, e.new))
    return edits
