"""The examples a docstring gives, as runnable checks.

Two forms are read: doctest (`>>> call` followed by the expected output), parsed by the
standard library's doctest; and the one-line forms people write in prose, where the left side
is a call of the function itself: `f(2, 3) == 5`, `f(2, 3) -> 5`, `f(2, 3) => 5`, `f(2, 3) ➞ 5`.
A one-line example becomes the doctest `(f(2, 3)) == (5)` expecting `True`; its arguments and
expected value must be literals (so `f(n) -> f(n - 1) + 1`, a definition, is not taken).
A doctest `>>> f(2) == 4` with no output line expects `True`, as its author meant.
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
        # `>>> f(2) == 4` with no output line: the author means it is True.
        want = ex.want or ("True\n" if _is_equality(ex.source) else "")
        found.append(Example(ex.source, want, ex.lineno))
        doctest_lines.update(range(ex.lineno, ex.lineno + ex.source.count("\n") + max(1, ex.want.count("\n"))))
    for i, line in enumerate(docstring.splitlines()):
        if i in doctest_lines or line.lstrip().startswith(">>>"):
            continue
        m = _ARROW.search(line)
        if not m or m["call"].split("(", 1)[0].split(".")[-1] != name:
            continue
        call, want = m["call"], m["want"].rstrip(".,;")
        if not (_literal_call(call) and _literal(want)):
            continue  # `f(n) -> f(n-1) + f(n-2)` is a definition, not an example
        found.append(Example(f"({call}) == ({want})\n", "True\n", i))
    found.sort(key=lambda e: e.line)
    return found[:MAX_EXAMPLES]


def _parse(code: str) -> ast.expr | None:
    try:
        return ast.parse(code.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return None


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def _literal(code: str) -> bool:
    node = _parse(code)
    return node is not None and _is_literal(node)


def _literal_call(code: str) -> bool:
    """A call whose arguments are all literals: `f(2, [1, 2], key="a")`."""
    node = _parse(code)
    return isinstance(node, ast.Call) and all(_is_literal(a) for a in node.args) and \
        all(_is_literal(k.value) for k in node.keywords)


def _is_equality(source: str) -> bool:
    node = _parse(source) if source.count("\n") <= 1 else None
    return isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)
