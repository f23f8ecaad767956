"""A reference model of an LSP client's document (LSP 3.18), written independently of
tandem.text: char by char, no regular expressions, no line index. Used by the unit tests of
the document copy, the stdio sync test and tests/benchmarks/bench_reliability.py."""
from __future__ import annotations

import random

UNITS = {"utf-16": lambda c: 2 if ord(c) > 0xFFFF else 1, "utf-32": lambda c: 1,
         "utf-8": lambda c: len(c.encode("utf-8", "surrogatepass"))}
PIECES = ["a", "bc", " ", "é", "中文", "😀", "👩\u200d👩\u200d👧", "\u0301", "\t", "\r\n", "\r", "\n",
          "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "def f():", "\ufeff"]


def ref_offset(text: str, line: int, character: int, encoding: str) -> int:
    """What the client means by (line, character): an independent, char-by-char reading of LSP 3.18."""
    units = UNITS[encoding]
    cur, col, i = 0, 0, 0
    while i < len(text):
        c = text[i]
        if cur == line:
            if c in "\r\n" or col >= character:
                return i
            col += units(c)
        elif c == "\r" and text[i + 1:i + 2] == "\n":
            i += 1
            cur += 1
        elif c in "\r\n":
            cur += 1
        i += 1
    return len(text)


def ref_lines(text: str, encoding: str) -> list[int]:
    """Each line's length in the client's units (for picking positions)."""
    units = UNITS[encoding]
    out, col, i = [], 0, 0
    while i < len(text):
        c = text[i]
        if c in "\r\n":
            out.append(col)
            col = 0
            i += 2 if text[i:i + 2] == "\r\n" else 1
            continue
        col += units(c)
        i += 1
    out.append(col)
    return out


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(n))


def random_edit(rng: random.Random, text: str, encoding: str):
    lines = ref_lines(text, encoding)

    def pos():
        line = rng.randrange(len(lines) + (2 if rng.random() < 0.1 else 0))
        width = lines[line] if line < len(lines) else 0
        ch = rng.randrange(width + (3 if rng.random() < 0.2 else 1))
        return line, ch

    a, b = pos(), pos()
    if rng.random() < 0.9:
        a, b = min(a, b), max(a, b)  # now and then a reversed range, as a buggy client sends
    return a, b, random_text(rng, rng.randrange(4))


def apply_ref(text: str, a, b, new: str, encoding: str) -> str:
    x, y = ref_offset(text, *a, encoding), ref_offset(text, *b, encoding)
    x, y = min(x, y), max(x, y)
    return text[:x] + new + text[y:]
