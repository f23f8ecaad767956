"""Stub detection, docstring examples, body extraction and ranking (no model needed)."""
from __future__ import annotations

import ast

from tandem.generate.examples import extract_examples
from tandem.generate.function import Candidate, _cut, _reindent
from tandem.generate.sandbox import Verdict
from tandem.generate.stub import MAX_PARSE_CHARS, all_stubs, find_stub

FILE = '''import os


def plain(a):
    """Doc only."""


class Shelf:
    @property
    def size(self) -> int:
        """Number of books."""
        ...

    async def fetch(self, key):
        """Fetch a book.

        >>> 1 + 1
        2
        """
        raise NotImplementedError("later")


def outer():
    def inner(x):
        """Nested."""
        pass
    return inner


def written(a):
    """Has a body."""
    return a


def no_doc(a):
    pass


def empty():
    """   """


def one_liner(a): """Inline docstring."""
'''


def test_finds_every_kind_of_stub_and_nothing_else():
    found = {s.qualname: s for s in all_stubs(FILE)}
    assert set(found) == {"plain", "Shelf.size", "Shelf.fetch", "inner", "one_liner"}
    assert found["plain"].scope == "module"
    assert found["Shelf.size"].scope == "class" and found["Shelf.fetch"].scope == "class"
    assert found["inner"].scope == "function"
    assert found["Shelf.fetch"].docstring.startswith("Fetch a book.\n\n>>> 1 + 1")
    assert found["one_liner"].inline_doc and found["one_liner"].body_indent == "    "
    # A decorated method starts at its decorator; the edit covers the stub statements only.
    size = found["Shelf.size"]
    assert FILE[size.start:].startswith("@property")
    assert FILE[size.edit_start:size.edit_end] == "\n        ..."
    assert FILE[found["plain"].edit_start:found["plain"].edit_end] == ""
    assert FILE[found["Shelf.fetch"].top_start:].startswith("class Shelf:")


def test_cursor_must_be_on_the_signature_or_docstring():
    at = FILE.index("def plain")
    assert find_stub(FILE, at).name == "plain"
    assert find_stub(FILE, FILE.index("Doc only")).name == "plain"
    assert find_stub(FILE, FILE.index("import os")) is None
    assert find_stub(FILE, FILE.index("raise NotImplementedError")) is None  # the stub body itself
    assert find_stub(FILE, FILE.index("return a")) is None
    assert find_stub(FILE, FILE.index("@property") + 2).name == "size"


def test_syntax_errors_elsewhere_tabs_crlf_and_unicode():
    text = 'x = = 2\r\n\r\ndef f(s):\r\n\t"""Ünïcode ☕ docstring."""\r\n\tpass  # todo\r\n\r\ny = (\r\n'  # an unclosed bracket after it
    (stub,) = all_stubs(text)
    assert stub.newline == "\r\n" and stub.body_indent == "\t"
    assert text[stub.edit_start:stub.edit_end] == "\r\n\tpass  # todo"
    assert all_stubs("def f(:\n    '''x'''\n") == []
    assert find_stub("x" * (MAX_PARSE_CHARS + 1), 0) is None


def test_doctest_and_one_line_examples():
    doc = ("Add.\n\n>>> add(1, 2)\n3\n>>> add(\n...     2, 2)\n4\n\nAlso: add(3, 4) == 7\n"
           "add(1, 1) ➞ 2.\nadd(x) -> the sum\nsub(1, 1) == 0\n>>> print('x')\nx\n")
    got = [(e.source, e.want) for e in extract_examples(doc, "add")]
    assert got == [("add(1, 2)\n", "3\n"), ("add(\n    2, 2)\n", "4\n"), ("(add(3, 4)) == (7)\n", "True\n"),
                   ("(add(1, 1)) == (2)\n", "True\n"), ("print('x')\n", "x\n")]
    assert extract_examples("No examples here.", "add") == []
    # `>>> add(1, 1) == 2` without an output line means True; a recurrence is not an example.
    got = [(e.source, e.want) for e in extract_examples(">>> add(1, 1) == 2\n\nadd(n) == add(n - 1) + 1\n", "add")]
    assert got == [("add(1, 1) == 2\n", "True\n")]


def test_generated_text_is_cut_at_the_end_of_the_function():
    raw = "    y = x + 1\n    return y\n\ndef other():\n    pass\n"
    assert _cut(raw, 0) == ("    y = x + 1\n    return y\n", True)
    assert _cut("    return 1\n```\nExplanation", 0) == ("    return 1", True)
    assert _cut("    s = '''\nnot the end\n'''\n    return s\nprint(1)\n", 0)[0].endswith("return s")
    assert _cut("    return [\n", 0) == ("    return [\n", False)  # still growing
    assert _cut("x = 1\n", 0) == ("", True)  # nothing indented: no body


def test_reindent_to_the_files_style():
    assert _reindent("    if x:\n        return 1\n    return 2\n", "\t") == ["\tif x:", "\t\treturn 1", "\treturn 2"]
    assert _reindent("\tif x:\n\t\treturn 1\n", "        ") == ["        if x:", "            return 1"]
    body = _reindent("  a = (\n1)\n  return a\n", "    ")
    assert body == ["    a = (", "1)", "    return a"]  # a continuation line stays as written
    ast.parse("def f():\n" + "\n".join(body) + "\n")


def _cand(i: int, passed: int | None, lp: float) -> Candidate:
    v = Verdict(passed, 3) if passed is not None else None
    return Candidate(i, i > 0, "", "", lp, [], 1, 0.0, v)


def test_ranking_prefers_examples_passed_then_likelihood():
    cands = [_cand(0, 1, -0.1), _cand(1, 3, -0.9), _cand(2, 3, -0.5), _cand(3, 0, -0.01)]
    assert [c.index for c in sorted(cands, key=Candidate.rank_key)] == [2, 1, 0, 3]
    unchecked = [_cand(0, None, -0.3), _cand(1, None, -0.2)]
    assert min(unchecked, key=Candidate.rank_key).index == 1


def test_review_regressions_in_stub_detection():
    # A comment after the docstring and no stub statement: an empty range after the comment.
    text = 'def f():\n    """doc"""  # comment\n\nx = 1\n'
    (s,) = all_stubs(text)
    assert s.edit_start == s.edit_end == text.index("\n\nx")
    # A form feed (or U+2028) elsewhere must not shift rows: a function with a body is no stub.
    assert all_stubs('x = 1\n\x0c\ndef f():\n    """doc"""\n    return 42\n') == []
    assert [s.name for s in all_stubs('s = "a\u2028b"\n\ndef g():\n    """doc"""\n')] == ["g"]
    # A one-line stub on the last line of a CRLF file writes CRLF.
    assert all_stubs('import os\r\n\r\ndef f(): """doc"""')[0].newline == "\r\n"
    # In a large file, a decorated function is found from its decorator and from its def.
    big = "x = 1\n" * 40_000 + "@dec\ndef f(x):\n    '''Doc.'''\n\n\ndef g():\n    pass\n"
    for at in (big.index("@dec") + 1, big.index("def f"), big.index("Doc")):
        s = find_stub(big, at)
        assert s is not None and big[s.start:].startswith("@dec") and big[s.edit_start:s.edit_end] == ""


def test_review_regressions_in_examples():
    exc = extract_examples(">>> f(-1)\nTraceback (most recent call last):\n  ...\nValueError: negative\n", "f")
    assert exc[0].exc_msg == "ValueError: negative\n"
    assert extract_examples(">>> f(3)  # doctest: +SKIP\n[9]\n", "f") == []
    assert [e.source for e in extract_examples("add(1, 2) == 3  # the simple case\n", "add")] == ["(add(1, 2)) == (3)\n"]
    # One malformed block no longer hides the others.
    assert [e.source for e in extract_examples(">>> f(1)\n1\n\n>>>f(2)\n2\n\n>>> f(3)\n3\n", "f")] == ["f(1)\n", "f(3)\n"]


def test_one_line_stub_body_takes_the_files_indentation_unit():
    # A tab inside a string says nothing about the file's indentation.
    assert all_stubs('S = """\n\tx\n"""\n\nclass A:\n    def f(self): """doc"""\n')[0].body_indent == " " * 8
    assert all_stubs('def g(): """doc"""\n\ndef h():\n  return 1\n')[0].body_indent == "  "
    assert all_stubs('class A:\n\tdef f(self): """doc"""\n')[0].body_indent == "\t\t"
