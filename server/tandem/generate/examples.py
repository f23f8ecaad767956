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
    exc_msg: str | None = None  # an expected exception's message (doctest's Traceback form)
    options: tuple[tuple[int, bool], ...] = ()  # doctest directives, e.g. +ELLIPSIS

    def describe(self) -> str:
        call = self.source.strip().splitlines()[0] if self.source.strip() else ""
        return f"{call[:80]}" + (f" -> {self.want.strip()[:60]}" if self.want.strip() else "")


def extract_examples(docstring: str, name: str) -> list[Example]:
    """Examples in `docstring` for the function called `name`, in order."""
    found: list[Example] = []
    doctest_lines: set[int] = set()
    for ex in _doctest_examples(docstring):
        if ex.options.get(doctest.SKIP):
            continue
        # `>>> f(2) == 4` with no output line: the author means it is True.
        want = ex.want or ("True\n" if _is_equality(ex.source) and ex.exc_msg is None else "")
        found.append(Example(ex.source, want, ex.lineno, ex.exc_msg, tuple(sorted(ex.options.items()))))
        doctest_lines.update(range(ex.lineno, ex.lineno + ex.source.count("\n") + max(1, ex.want.count("\n"))))
    for i, line in enumerate(docstring.splitlines()):
        if i in doctest_lines or line.lstrip().startswith(">>>"):
            continue
        m = _ARROW.search(line)
        if not m or m["call"].split("(", 1)[0].split(".")[-1] != name:
            continue
        call, want = m["call"], m["want"].rstrip(".,;")
        if not _literal(want) and "#" in want:  # `f(1) == 2.  # the simple case`
            want = want[:want.index("#")].rstrip().rstrip(".,;")
        if not (_literal_call(call) and _literal(want)):
            continue  # `f(n) -> f(n-1) + f(n-2)` is a definition, not an example
        call, want = ast.unparse(_parse(call)), ast.unparse(_parse(want))  # also drops comments
        found.append(Example(f"({call}) == ({want})\n", "True\n", i))
    found.sort(key=lambda e: e.line)
    return found[:MAX_EXAMPLES]


def _doctest_examples(docstring: str) -> list[doctest.Example]:
    """doctest's examples; when one block is malformed (doctest then rejects the whole
    docstring), the blocks between blank lines are read one by one and the bad ones skipped."""
    parser = doctest.DocTestParser()
    try:
        return parser.get_examples(docstring)
    except ValueError:
        pass
    found, line = [], 0
    for block in re.split(r"(\n[ \t]*\n)", docstring):
        if block.strip():
            try:
                for ex in parser.get_examples(block):
                    ex.lineno += line
                    found.append(ex)
            except ValueError:
                pass
        line += block.count("\n")
    return found


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
