"""Find the function stub at the cursor: a def whose body is only a docstring, or a docstring
plus `...`, `pass` or `raise NotImplementedError`.

tree-sitter finds the candidates, because it parses files with syntax errors elsewhere; then
Python's own `ast` checks the function alone, so we never act on a misread.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import accumulate

MAX_PARSE_CHARS = 2_000_000  # larger files: no action (parsing them on every cursor move costs too much)
WINDOW_ABOVE_CHARS = 200_000  # larger files: parse only the top-level statement around the cursor
MAX_DOCSTRING_CHARS = 6_000  # past this the prompt could not hold it: the action says so instead


@dataclass(frozen=True)
class Stub:
    name: str
    qualname: str  # e.g. "Stack.push"
    scope: str  # "module", "class" or "function" (nested: its examples cannot be run)
    docstring: str  # cleaned, as inspect.cleandoc would
    start: int  # first character of the definition (its first decorator, if any)
    doc_end: int  # just after the docstring's closing quotes
    edit_start: int  # the edit replaces text[edit_start:edit_end]
    edit_end: int
    body_indent: str  # indentation of the body's lines, as the file writes it (spaces or tabs)
    newline: str  # "\n" or "\r\n", as the file writes it
    inline_doc: bool  # `def f(): """doc"""` on one line: the docstring moves to its own line
    top_start: int  # the top-level statement that holds the stub (the stub itself, or its class)
    top_end: int

    @property
    def header(self) -> tuple[int, int]:
        """Offsets of the signature and docstring: the part the user wrote."""
        return self.start, self.doc_end


def _parser():
    import tree_sitter as ts
    import tree_sitter_python as tsp

    return ts.Parser(ts.Language(tsp.language()))


@lru_cache(maxsize=1)
def parser():
    return _parser()


def parse(text: str):
    """tree-sitter tree of `text` (bytes are UTF-8; unencodable characters become '?')."""
    return parser().parse(text.encode("utf-8", "replace"))


def find_stub(text: str, offset: int, tree=None) -> Stub | None:
    """The innermost stub whose signature or docstring holds `offset`, or None."""
    if len(text) > MAX_PARSE_CHARS:
        return None
    if len(text) > WINDOW_ABOVE_CHARS and tree is None:
        return _find_in_window(text, offset)
    data = text.encode("utf-8", "replace")
    tree = tree or _tree_of(text, data)
    at = len(text[:offset].encode("utf-8", "replace"))
    node = tree.root_node.descendant_for_byte_range(at, at)
    while node is not None:
        fn = node.child_by_field_name("definition") if node.type == "decorated_definition" else node
        if fn is not None and fn.type == "function_definition":
            stub = _stub_of(text, data, fn)
            if stub is not None and stub.start <= offset <= stub.doc_end:
                return stub
        node = node.parent
    return None


_TOP_LEVEL_START = re.compile(r"^(?:(?:async[ \t]+def|def|class)[ \t(]|@)", re.M)


def _find_in_window(text: str, offset: int) -> Stub | None:
    """In a large file (code actions are asked for on every cursor move) parse only from the
    top-level def/class/decorator before the cursor to the next one after it."""
    starts = [m.start() for m in _TOP_LEVEL_START.finditer(text, max(0, offset - 100_000), offset + 1)]
    if not starts:
        return None
    start = starts[-1]
    while start > 0 and text[text.rfind("\n", 0, start - 1) + 1:start].startswith("@"):
        start = text.rfind("\n", 0, start - 1) + 1  # decorators belong to the definition
    nxt = _TOP_LEVEL_START.search(text, offset + 1)
    if text.startswith("@", text.rfind("\n", 0, offset) + 1):  # on a decorator: pass its def
        while nxt and text.startswith("@", nxt.start()):
            nxt = _TOP_LEVEL_START.search(text, nxt.start() + 1)
        nxt = nxt and _TOP_LEVEL_START.search(text, nxt.start() + 1)
    end = nxt.start() if nxt else len(text)
    stub = find_stub(text[start:end], offset - start, tree=parse(text[start:end]))
    if stub is None:
        return None
    shift = {f: getattr(stub, f) + start for f in ("start", "doc_end", "edit_start", "edit_end", "top_start", "top_end")}
    return replace(stub, **shift)


_last_parse: tuple[str, object] | None = None


def _tree_of(text: str, data: bytes):
    """The tree of `text`, reused while the text is unchanged: editors ask for code actions on
    every cursor move, mostly over a document that has not changed since the last one."""
    global _last_parse
    if _last_parse is not None and _last_parse[0] == text:
        return _last_parse[1]
    tree = parser().parse(data)
    _last_parse = (text, tree)
    return tree


def all_stubs(text: str) -> list[Stub]:
    """Every stub in the file (for tests and tools)."""
    if len(text) > MAX_PARSE_CHARS:
        return []
    data = text.encode("utf-8", "replace")
    found = []
    stack = [parser().parse(data).root_node]
    while stack:
        n = stack.pop()
        if n.type == "function_definition" and (s := _stub_of(text, data, n)) is not None:
            found.append(s)
        stack.extend(reversed(n.children))
    return found


def _stub_of(text: str, data: bytes, fn) -> Stub | None:
    body = fn.child_by_field_name("body")
    statements = [c for c in body.named_children if c.type != "comment"] if body is not None else []
    if not statements or statements[0].type != "expression_statement":
        return None
    if statements[0].named_child_count != 1 or statements[0].named_children[0].type != "string":
        return None
    outer = fn.parent if fn.parent is not None and fn.parent.type == "decorated_definition" else fn
    lines = split_lines(text)
    first_row, last_row = outer.start_point.row, fn.end_point.row
    def_line = lines[first_row] if first_row < len(lines) else ""
    def_indent = def_line[:len(def_line) - len(def_line.lstrip(" \t"))]
    # The function alone, its indentation removed, through Python's parser.
    try:
        tree = ast.parse(without_indent(lines[first_row:last_row + 1], def_indent))
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    f = tree.body[0]
    doc = ast.get_docstring(f, clean=True)
    if doc is None or not all(is_stub_statement(s) for s in f.body[1:]):
        return None
    if not doc.strip():
        return None  # an empty docstring says nothing to generate from

    line_starts = list(accumulate((len(x) for x in lines[:last_row + 1]), initial=0))

    def to_offset(lineno: int, byte_col: int) -> int:
        """ast's (line in the snippet, UTF-8 byte column) -> offset in `text`."""
        row = first_row + lineno - 1
        line = lines[row]
        if line.startswith(def_indent):
            byte_col += len(def_indent.encode("utf-8", "replace"))
        return line_starts[row] + len(line.encode("utf-8", "replace")[:byte_col].decode("utf-8", "replace"))

    d = f.body[0]
    start = line_starts[first_row] + len(def_indent)
    doc_start = to_offset(d.lineno, d.col_offset)
    doc_end = to_offset(d.end_lineno, d.end_col_offset)
    edit_end = doc_end
    if len(f.body) > 1:
        last = f.body[-1]
        edit_end = to_offset(last.end_lineno, last.end_col_offset)
        # `pass  # TODO` goes with its comment: the comment was about the stub.
        line_end = text.find("\n", edit_end)
        rest = text[edit_end:len(text) if line_end < 0 else line_end].rstrip("\r")
        if not rest.strip() or rest.lstrip().startswith("#"):
            edit_end += len(rest)
    doc_line = lines[first_row + d.lineno - 1]
    inline_doc = bool(text[line_starts[first_row + d.lineno - 1]:doc_start].strip())  # `def f(): """doc"""`
    if inline_doc:
        body_indent = def_indent + _indent_unit(fn, data, def_indent)
        edit_start = doc_start
        while edit_start > 0 and text[edit_start - 1] in " \t":
            edit_start -= 1
    else:
        body_indent = doc_line[:len(doc_line) - len(doc_line.lstrip(" \t"))]
        edit_start = doc_end  # after a comment that follows the docstring, which stays
        line_end = text.find("\n", doc_end)
        rest = text[doc_end:len(text) if line_end < 0 else line_end].rstrip("\r")
        if rest.lstrip().startswith("#"):
            edit_start += len(rest)
        edit_end = max(edit_end, edit_start)  # nothing after the docstring's comment to replace
    if def_line.endswith("\n"):
        newline = "\r\n" if def_line.endswith("\r\n") else "\n"
    else:  # the file's last line: write the file's own line ending
        newline = "\r\n" if "\r\n" in text else "\n"
    top = outer
    scope = "module"
    qual = [f.name]
    p = outer.parent
    while p is not None and p.type != "module":
        if p.type == "function_definition" and scope == "module":
            scope = "function"
        if p.type == "class_definition":
            if scope == "module":
                scope = "class"
            name = p.child_by_field_name("name")
            qual.insert(0, data[name.start_byte:name.end_byte].decode("utf-8", "replace"))
        top = p
        p = p.parent
    if top.parent is not None and top.parent.type == "decorated_definition":
        top = top.parent
    top_start = len(data[:top.start_byte].decode("utf-8", "replace"))
    top_end = len(data[:top.end_byte].decode("utf-8", "replace"))
    return Stub(f.name, ".".join(qual), scope, doc, start, doc_end, edit_start, edit_end, body_indent,
                newline, inline_doc, top_start, top_end)


def _indent_unit(fn, data: bytes, def_indent: str) -> str:
    """One indentation level as this file writes it: from the def's own indentation and its
    depth, else from the first indented block of code (never from inside a string)."""
    depth, p = 0, fn.parent
    while p is not None:
        depth += p.type in ("function_definition", "class_definition")
        p = p.parent
    if def_indent:
        return "\t" if "\t" in def_indent else " " * max(1, len(def_indent) // max(depth, 1))
    root = fn
    while root.parent is not None:
        root = root.parent
    stack = [root]
    while stack:
        n = stack.pop(0)
        if n.type == "block" and n.start_point.column > 0 and n.start_point.row > n.parent.start_point.row:
            line_start = data.rfind(b"\n", 0, n.start_byte) + 1
            lead = data[line_start:n.start_byte].decode("utf-8", "replace")
            if lead and not lead.strip():
                return lead[:len(lead) - len(_outer_indent(n, data))] or "    "
        stack.extend(n.children)
    return "    "


def _outer_indent(block, data: bytes) -> str:
    """Indentation of the line that opens `block` (its def/class/if line)."""
    start = block.parent.start_byte
    line_start = data.rfind(b"\n", 0, start) + 1
    lead = data[line_start:start].decode("utf-8", "replace")
    return lead if not lead.strip() else ""


def without_indent(lines: list[str], indent: str) -> str:
    """`lines` joined, `indent` taken off each line that starts with it (a docstring's
    continuation lines may be indented less: they are string content, left as they are)."""
    return "".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in lines)


def split_lines(text: str) -> list[str]:
    """Lines ending at "\n" only, ends kept: the rows of tree-sitter and LSP (str.splitlines
    also breaks at form feeds, U+2028 and others, which would shift every row after them)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def is_stub_statement(s: ast.stmt) -> bool:
    """`pass`, `...` or `raise NotImplementedError`: a statement that stands for a body."""
    if isinstance(s, ast.Pass):
        return True
    if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and s.value.value is Ellipsis:
        return True
    if isinstance(s, ast.Raise) and s.exc is not None:
        exc = s.exc.func if isinstance(s.exc, ast.Call) else s.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False
