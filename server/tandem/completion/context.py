"""What kind of completion the cursor asks for, decided from the text around it.

Language-agnostic rules on indentation and block openers (Python's `:`, C-like `{`):
- mid-line (code after the cursor)        -> single line: the rest of the line
- after code on the line                  -> single line
- line ends with a block opener           -> multi-line: the block
- on a blank line                         -> multi-line, up to the end of the block
"""
from __future__ import annotations

import re
from dataclasses import dataclass

OPENERS = (":", "{", "(", "[", "=>", " do", " then")
CLOSERS = set(")]}>\"'`;,:")
_WORD = re.compile(r"[\w$]")
SCAN_CHARS = 20_000  # how far to look for the neighbouring code line: bounded work per keystroke


@dataclass(frozen=True)
class CursorContext:
    prefix: str
    suffix: str
    line_prefix: str  # text on the cursor's line before it
    line_suffix: str  # text on the cursor's line after it, without the line break
    multiline: bool
    block_indent: int  # lines of a multi-line completion indented less than this end it
    empty_block: bool  # the cursor opens a block that has no body yet

    @property
    def next_code_line(self) -> str:
        """The first non-blank line after the cursor's line ('' if none)."""
        for line in self.suffix[:SCAN_CHARS].split("\n")[1:]:
            if line.strip():
                return line
        return ""


def indent_of(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def should_skip(line_suffix: str) -> bool:
    """Prefilter: no completion when a word continues right after the cursor (`fo|o`): the
    model would have to rewrite what follows. Only the next character is looked at, so a
    cursor at the end of a partly typed word (`session: Se|` before `,`, `)` or the line end)
    is completed: the engine heals the prompt's last token and postprocess.continue_word
    keeps the suggestion from typing the word again."""
    return bool(line_suffix) and bool(_WORD.match(line_suffix[0]))


def analyze(prefix: str, suffix: str) -> CursorContext:
    line_start = prefix.rfind("\n") + 1
    line_prefix = prefix[line_start:]
    nl = suffix.find("\n")
    line_suffix = (suffix if nl < 0 else suffix[:nl]).rstrip("\r")
    prev_lines = prefix[max(0, line_start - SCAN_CHARS):line_start].split("\n")[:-1]
    prev_code = next((l for l in reversed(prev_lines) if l.strip()), "")
    ctx = dict(prefix=prefix, suffix=suffix, line_prefix=line_prefix, line_suffix=line_suffix)

    if line_suffix.strip():
        return CursorContext(**ctx, multiline=False, block_indent=0, empty_block=False)
    if line_prefix.strip():
        if line_prefix.rstrip().endswith(OPENERS):
            # `def f():|` -- the completion starts with a line break and writes the body.
            body = indent_of(line_prefix) + 1
            nxt = CursorContext(**ctx, multiline=True, block_indent=body, empty_block=False).next_code_line
            empty = not nxt or indent_of(nxt) <= indent_of(line_prefix)
            return CursorContext(**ctx, multiline=empty, block_indent=body, empty_block=empty)
        return CursorContext(**ctx, multiline=False, block_indent=0, empty_block=False)
    # Blank line: write a block. It is an empty block when the line above opens one and
    # nothing below is indented under it.
    here = indent_of(line_prefix)
    opened = prev_code.rstrip().endswith(OPENERS)
    probe = CursorContext(**ctx, multiline=True, block_indent=here, empty_block=False)
    nxt = probe.next_code_line
    empty = opened and (not nxt or indent_of(nxt) <= indent_of(prev_code))
    return CursorContext(**ctx, multiline=True, block_indent=here, empty_block=empty)
