"""Turn raw model text into a suggestion worth showing, or nothing.

Rules, in order: stop at the mode's line limit; trim to the end of the block; never repeat
the code that already follows the cursor; balance brackets; drop blank results; and say how
much of the text after the cursor the suggestion replaces (the editor shows it over that).
"""
from __future__ import annotations

from dataclasses import dataclass

from .context import CursorContext, indent_of

PAIRS = {")": "(", "]": "[", "}": "{"}
OPEN = {v: k for k, v in PAIRS.items()}


@dataclass(frozen=True)
class Suggestion:
    text: str
    replace_chars: int  # characters after the cursor, on its line, that `text` replaces


def stop_early(ctx: CursorContext, text: str) -> bool:
    """Checked after each token: enough text to stop decoding?"""
    if not ctx.multiline:
        return "\n" in text
    return _end_of_block(ctx, text) is not None


def finish(ctx: CursorContext, raw: str, hit_token_limit: bool) -> Suggestion | None:
    text = raw.replace("\r\n", "\n")
    if not ctx.multiline:
        text = text.split("\n", 1)[0]  # a leading line break means: nothing for this line
    else:
        end = _end_of_block(ctx, text)
        if end is not None:
            text = text[:end]
        elif hit_token_limit and "\n" in text.strip("\n"):
            text = text[: text.rstrip("\n").rfind("\n")]  # drop the unfinished last line
        text = _cut_repeat_of_suffix(ctx, text)
    text = text.rstrip()
    text = _balance(ctx, text)
    if not text.strip():
        return None
    return _fit_to_line_suffix(ctx, text)


def _end_of_block(ctx: CursorContext, text: str) -> int | None:
    """Offset where the block being written ends: a line indented less than the block, or
    (at top level) a blank line followed by a new top-level statement."""
    lines = text.split("\n")
    if len(lines) < 2:
        return None
    pos = len(lines[0]) + 1
    seen_code = bool(lines[0].strip())
    blank_before = False
    for line in lines[1:-1]:  # the last line may still be growing
        if line.strip():
            ind = indent_of(line)
            dedent = ind < ctx.block_indent or (ctx.block_indent == 0 and ind == 0 and blank_before and seen_code)
            if dedent and seen_code:
                return pos - 1
            seen_code = True
            blank_before = False
        else:
            blank_before = True
        pos += len(line) + 1
    return None


def _cut_repeat_of_suffix(ctx: CursorContext, text: str) -> str:
    """Cut where the completion starts writing the line that already follows the cursor."""
    nxt = ctx.next_code_line.strip()
    if not nxt:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == nxt:
            return "\n".join(lines[:i])
    return text


def _brackets(text: str):
    """(offset, bracket) for each bracket outside string literals."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in OPEN or ch in PAIRS:
            yield i, ch


def _open_brackets(line: str) -> list[str]:
    stack: list[str] = []
    for _, ch in _brackets(line):
        if ch in OPEN:
            stack.append(ch)
        elif stack and stack[-1] == PAIRS[ch]:
            stack.pop()
    return stack


def _balance(ctx: CursorContext, text: str) -> str:
    """Drop a closer that matches nothing open; close what the completion itself opened
    (single-line suggestions only: a block may legitimately continue)."""
    stack = _open_brackets(ctx.line_prefix)
    own: list[str] = []
    for i, ch in _brackets(text):
        if ch in OPEN:
            stack.append(ch)
            own.append(ch)
        elif not stack or stack[-1] != PAIRS[ch]:
            return text[:i].rstrip()
        else:
            stack.pop()
            if own:
                own.pop()
    if not ctx.multiline and own:
        closers = "".join(OPEN[c] for c in reversed(own))
        if not ctx.line_suffix.lstrip().startswith(closers):
            text += closers
    return text


def _fit_to_line_suffix(ctx: CursorContext, text: str) -> Suggestion | None:
    """Decide what of the rest of the line the suggestion replaces, so no character is
    doubled: `foo(|)` + `a, b)` -> `foo(a, b)`, not `foo(a, b))`."""
    rest = ctx.line_suffix.rstrip()
    if not rest:
        return Suggestion(text, 0)
    if "\n" in text:
        return Suggestion(text, 0)
    if rest.startswith(text):
        return None  # it would only retype what is already there
    if text.endswith(rest):
        return Suggestion(text, len(rest))
    closes_line = len(_open_brackets(ctx.line_prefix + text)) < len(_open_brackets(ctx.line_prefix))
    if closes_line:
        # `sum(|) + x` + `a)` -> replace the `)`: the suggestion closed what the line opened.
        lead = len(rest) - len(rest.lstrip(")]}"))
        for k in range(lead, 0, -1):
            if text.endswith(rest[:k]):
                return Suggestion(text, k)
        # `foo(|)` + `a, b):` -> the `)` is inside the suggestion, followed by more.
        if set(rest) <= set(")]}") and rest in text:
            return Suggestion(text, len(rest))
    return Suggestion(text, 0)
