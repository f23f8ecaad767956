"""The examples a docstring gives, as runnable checks.

Two forms are read: doctest (`>>> call` followed by the expected output), parsed by the
standard library's doctest; and the one-line forms people write in prose, where the left side
is a call of the function itself: `f(2, 3) == 5`, `f(2, 3) -> 5`, `f(2, 3) => 5`, `f(2, 3) ➞ 5`.
A one-line example becomes the doctest `(f(2, 3)) == (5)` expecting `True`.
"""
from __future__ import annotations

import ast
import doctest
import re
from dataclasses import dataclass

MAX_EXAMPLES = 50

_ARROW = re.compile(r"(?<![\w.])(?P<call>[A-Za-z_][\w.]*\(.*\))\s*(?:==|->|=>|➞|→|⇒)\s*(?P<want>.+?)\s*$")


@dataclass(frozen=True)
class Example:
    source: str  # code to run, ending in a newline
    want: str  # expected output, as doctest compares it ("" for none)
    line: int  # 0-based line within the docstring, for messages

    def describe(self) -> str:
        call = self.source.strip().splitlines()[0] if self.source.strip() else ""
        return f"{call[:80]}" + (f" -> {self.want.strip()[:60]}" if self.want.strip() else "")


def extract_examples(docstring: str, name: str) -> list[Example]:
    """Examples in `docstring` for the function called `name`, in order."""
    found: list[Example] = []
    try:
        parsed = doctest.DocTestParser().get_examples(docstring)
    except ValueError:  # malformed doctest (e.g. bad indentation): fall back to the prose forms
        parsed = []
    doctest_lines: set[int] = set()
    for ex in parsed:
        found.append(Example(ex.source, ex.want, ex.lineno))
        doctest_lines.update(range(ex.lineno, ex.lineno + ex.source.count("\n") + max(1, ex.want.count("\n"))))
    for i, line in enumerate(docstring.splitlines()):
        if i in doctest_lines or line.lstrip().startswith(">>>"):
            continue
        m = _ARROW.search(line)
        if not m or m["call"].split("(", 1)[0].split(".")[-1] != name:
            continue
        call, want = m["call"], m["want"].rstrip(".,;")
        if not (_is_expression(call) and _is_expression(want)):
            continue
        found.append(Example(f"({call}) == ({want})\n", "True\n", i))
    found.sort(key=lambda e: e.line)
    return found[:MAX_EXAMPLES]


def _is_expression(code: str) -> bool:
    try:
        ast.parse(code, mode="eval")
        return True
    except (SyntaxError, ValueError):
        return False
