"""Turn raw model text into a suggestion worth showing, or nothing.

Rules, in order: drop a line the model was still repeating itself on when it ran out of tokens
(`0000...`, `a, b, a, b, ...`: it was looping, the line has no end worth showing); stop at the
mode's line limit (at the end of a finished line: the next line);
on a blank line, put the code the model wrote after a blank line of its own on the cursor's line;
trim to the end of the block; never repeat
the code that already follows the cursor; continue a partly typed word instead of retyping
it; balance brackets; drop blank results; and say how much of the text after the cursor the
suggestion replaces (the editor shows it over that).

Each rule can be switched off for measurement (tests/benchmarks/eval_lines.py) with
TANDEM_EVAL_RULES_OFF, a comma list of: repeat, stops, dedup, words, balance, range, nextline,
lead (and heal, read by the engine). It is not a user setting: the rules are on in the product.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .context import SCAN_CHARS, CursorContext, indent_of

PAIRS = {")": "(", "]": "[", "}": "{"}
OPEN = {v: k for k, v in PAIRS.items()}
RULES = ("repeat", "stops", "dedup", "words", "balance", "range", "nextline", "lead", "heal")
BALANCE_SCAN = 4_000  # characters each side of the cursor that bracket balancing looks at
_WORD_END = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_WORD_START = re.compile(r"[A-Za-z0-9_]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
# A line that ends in a loop: a piece of 3+ characters then 5+ more copies of it, or of 10+
# characters then 3+ more (the thresholds of Tabby's removeLineEndsWithRepetition filter).
LOOP_SCAN = 240  # characters at the line's end searched (the search is quadratic in them: 0.1-4 ms)
_LOOPS = (re.compile(r"(.{3,}?)\1{5,}$"), re.compile(r"(.{10,}?)\1{3,}$"))
# What the bracket scanner stops at: string delimiters, comments, escapes, line breaks, brackets.
_SCAN = re.compile(r"\\.|\"\"\"|'''|[\"'`#\n()\[\]{}]")


def rule_on(name: str) -> bool:
    """False when the evaluation switched the rule off (TANDEM_EVAL_RULES_OFF)."""
    off = os.environ.get("TANDEM_EVAL_RULES_OFF", "")
    return not off or name not in {r.strip() for r in off.split(",")}


@dataclass(frozen=True)
class Suggestion:
    text: str
    replace_chars: int  # characters after the cursor, on its line, that `text` replaces


def stop_early(ctx: CursorContext, text: str) -> bool:
    """Checked after each token: enough text to stop decoding?"""
    if not rule_on("stops"):
        return False
    if not ctx.multiline:
        if text.startswith("\n") and next_line_wanted(ctx):
            return "\n" in text[1:]  # the end of the next line (or a blank line: nothing)
        return "\n" in text
    return _end_of_block(ctx, text) is not None


def next_line_wanted(ctx: CursorContext) -> bool:
    """The cursor ends a line of code with nothing after it (`x = compute(a)|`): a suggestion
    that starts with a line break writes the next line, instead of nothing."""
    return (not ctx.multiline and not ctx.line_suffix.strip() and bool(ctx.line_prefix.strip())
            and ctx.line_prefix == ctx.line_prefix.rstrip() and rule_on("nextline"))


def finish(ctx: CursorContext, raw: str, hit_token_limit: bool) -> Suggestion | None:
    text = raw.replace("\r\n", "\n")
    if hit_token_limit and rule_on("repeat") and _loops(text[text.rfind("\n") + 1:]):
        # The model never ended this line: it was repeating itself until the budget ran out.
        # A finished line that repeats (a `# ====` rule) ended before the limit and stays.
        text, hit_token_limit = text[:text.rfind("\n") + 1], False  # no unfinished line left
    if not rule_on("stops"):
        pass
    elif not ctx.multiline:
        if text.startswith("\n") and next_line_wanted(ctx):
            nxt = text[1:].split("\n", 1)[0]
            if not nxt.strip() or (rule_on("dedup") and nxt.strip() == ctx.next_code_line.strip()):
                return None  # a blank line, or the line that already follows
            text = "\n" + nxt
        else:
            text = text.split("\n", 1)[0]  # elsewhere a leading line break means: nothing here
    else:
        if rule_on("lead"):
            text = _onto_cursor_line(ctx, text)
        end = _end_of_block(ctx, text)
        if end is not None:
            text = text[:end]
        elif hit_token_limit and "\n" in text.strip("\n"):
            text = text[: text.rstrip("\n").rfind("\n")]  # drop the unfinished last line
    if ctx.multiline and rule_on("dedup"):
        text = _cut_repeat_of_suffix(ctx, text)
    if rule_on("words"):
        text = continue_word(ctx, text)
    text = text.rstrip()
    if rule_on("balance"):
        text = _balance(ctx, text)
    if not text.strip():
        return None
    if not rule_on("range"):
        if rule_on("dedup") and ctx.line_suffix.rstrip().startswith(text):
            return None
        return Suggestion(text, 0)
    return _fit_to_line_suffix(ctx, text)


def _loops(line: str) -> bool:
    line = line.rstrip()[-LOOP_SCAN:]
    return any(p.search(line) for p in _LOOPS)


def _onto_cursor_line(ctx: CursorContext, text: str) -> str:
    """The cursor stands on a blank line (after its indentation, if any) and the model began
    with a line break: it left the cursor's line empty and wrote its code on the next one.
    Token healing makes this likelier: the prompt's last line break is written again by the
    model, which may pick the token that writes two (`)\n\n`). The user placed the cursor on
    the line to write there, so the code goes there: the blank lines are dropped, and of the
    code's indentation, what the cursor already has. Code that does not start with the
    cursor's indentation (indented less) is left where the model put it."""
    if ctx.line_prefix.strip() or not text.startswith("\n"):  # (a block: nothing after the cursor)
        return text
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or not lines[first].startswith(ctx.line_prefix):
        return text
    return "\n".join([lines[first][len(ctx.line_prefix):], *lines[first + 1:]])


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


def continue_word(ctx: CursorContext, text: str) -> str:
    """The cursor ends a partly typed word (`session: Se|`): the suggestion must continue that
    word, never type it again. A model that sees the word cut off mid-token often writes it
    anew (`Se` + `Session`) or a mangled tail (`Se` + `ssession`); where the document knows a
    word that the typed part plus a tail of the suggestion's first word spells, keep only that
    tail (`ssion`); where the suggestion starts with the typed part itself, drop it."""
    typed = _WORD_END.search(ctx.line_prefix)
    lead = _WORD_START.match(text)
    if typed is None or lead is None:
        return text
    p, w = typed.group(), lead.group()
    window = ctx.prefix[-SCAN_CHARS:-len(p)] + " " + ctx.suffix[:SCAN_CHARS]
    words = set(_IDENT.findall(window))
    if p + w in words:
        return text
    for k in range(1, len(w) - 1):
        if p + w[k:] in words:
            return text[k:]
    if len(p) >= 2 and w.lower().startswith(p.lower()) and len(w) > len(p):
        return text[len(p):]
    return text


def _brackets(text: str, cursor: int | None = None):
    """(offset, bracket) for each bracket outside string literals and `#` comments. With
    `cursor`, also yields (cursor, None) once, to tell whether the cursor is in code."""
    quote = None
    comment = False
    for m in _SCAN.finditer(text):
        i, tok = m.start(), m.group()
        if cursor is not None and i >= cursor:
            yield cursor, (None if quote is None and not comment else "")
            cursor = None
        if tok == "\n":
            comment = False
            if quote in ("'", '"', "`"):
                quote = None  # an unterminated one-line string ends with its line
        elif comment or tok.startswith("\\"):
            continue
        elif quote:
            if tok == quote:
                quote = None
        elif tok == "#":
            comment = True
        elif tok in ("\"\"\"", "'''", '"', "'", "`"):
            quote = tok
        else:
            yield i, tok
    if cursor is not None:
        yield cursor, (None if quote is None and not comment else "")


def _statement_start(prefix: str) -> int:
    """Offset of the last top-level line start before the cursor (within BALANCE_SCAN): the
    brackets open at the cursor are counted from there."""
    lo = max(0, len(prefix) - BALANCE_SCAN)
    pos = len(prefix)
    while pos > lo:
        start = prefix.rfind("\n", lo, pos) + 1
        if start == 0 and lo > 0:
            break
        line = prefix[start:pos]
        if line.strip() and not line[0].isspace() and line[0] not in ")]}":
            return start
        pos = start - 1
    return lo


def _statement_end(suffix: str) -> int:
    """Offset in `suffix` of the next top-level line (not one that starts with a closer)."""
    pos = suffix.find("\n")
    limit = min(len(suffix), BALANCE_SCAN)
    while 0 <= pos < limit:
        start = pos + 1
        end = suffix.find("\n", start)
        line = suffix[start:end if end >= 0 else len(suffix)]
        if line.strip() and not line[0].isspace() and line[0] not in ")]}":
            return start
        pos = end
    return limit


def closed_below(ctx: CursorContext) -> list[str]:
    """Closers after the cursor that wait for a bracket the document does not open before it:
    the code below closes a bracket the suggestion is expected to open (`def |` above
    `    a,\n) -> str:`). Counted over the statement around the cursor, outside strings and
    comments. Empty when the brackets around the cursor already balance."""
    start = _statement_start(ctx.prefix)
    head = ctx.prefix[start:]
    text = head + ctx.suffix[:_statement_end(ctx.suffix)]
    before: list[str] = []
    after: list[str] = []
    excess: list[str] = []
    cursor_seen = False
    for _, ch in _brackets(text, len(head)):
        if ch is None or ch == "":
            if ch == "":
                return []  # the cursor is inside a string or comment: brackets there mean nothing
            cursor_seen = True
        elif not cursor_seen:
            if ch in OPEN:
                before.append(ch)
            elif before and before[-1] == PAIRS[ch]:
                before.pop()
        elif ch in OPEN:
            after.append(ch)
        elif after:
            after.pop()
        else:
            excess.append(ch)
    # The first closers below close the innermost brackets: the suggestion's, then the line's.
    return excess[:len(excess) - len(before)]


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
            later = closed_below(ctx)
            if not (later and later[0] == closers[0]):  # else the code below closes it
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
