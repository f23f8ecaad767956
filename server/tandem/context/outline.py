"""What a Python module offers to the files that import it, and what a file imports.

`outline(text)` parses a module with tree-sitter (error-tolerant: a file with a syntax error
elsewhere still gives its other definitions) and returns its top-level definitions as short
stubs: function signatures, class headers with their method signatures, docstrings cut to
their first line, and constants. Each keeps the lines it came from, for provenance.

`imports(text)` reads the import statements of the file being edited. Plain Python, no pygls.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

DOC_CHARS = 160  # a docstring's first line, at most
CONST_CHARS = 160  # a constant's whole statement, at most
METHODS_PER_CLASS = 12
CALLED_DUNDERS = ("__init__", "__new__", "__call__")  # the dunder methods a caller's code shows
MAX_PARSE_BYTES = 1_000_000  # larger modules are not outlined

_local = threading.local()


def _parser():
    p = getattr(_local, "parser", None)
    if p is None:  # a tree-sitter Parser is not thread-safe: one per thread
        import tree_sitter as ts
        import tree_sitter_python as tsp

        p = _local.parser = ts.Parser(ts.Language(tsp.language()))
    return p


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str  # "function" | "class" | "constant" | "import"
    text: str  # the stub as shown to the model (column 0)
    first: int  # 0-based lines of the original, inclusive
    last: int
    source: str = ""  # for kind "import": the module it comes from (re-exports)


@dataclass(frozen=True)
class Import:
    module: str  # dotted, with leading dots for relative imports ("" for `from . import x`)
    names: tuple[str, ...]  # imported names; () for `import module`
    alias: str = ""  # `import a.b as c`: "c"; `import a.b`: "a.b"


def outline(text: str) -> dict[str, Definition]:
    """Top-level definitions of a module by name, in file order."""
    data = text.encode("utf-8", "replace")
    if len(data) > MAX_PARSE_BYTES:
        return {}
    tree = _parser().parse(data)
    out: dict[str, Definition] = {}
    for node in tree.root_node.named_children:
        try:
            for d in _definitions(node, data):
                out.setdefault(d.name, d)
        except Exception:  # one odd node must not lose the rest
            continue
    return out


def _s(data: bytes, node) -> str:
    return data[node.start_byte:node.end_byte].decode("utf-8", "replace")


def _definitions(node, data: bytes):
    t = node.type
    if t == "decorated_definition":
        inner = node.child_by_field_name("definition")
        if inner is not None:
            for d in _definitions(inner, data):
                yield Definition(d.name, d.kind, _decorators(node, data) + d.text, node.start_point[0], d.last)
        return
    if t == "function_definition":
        name = node.child_by_field_name("name")
        if name is not None:
            yield Definition(_s(data, name), "function", _function_stub(node, data, ""),
                             node.start_point[0], node.end_point[0])
        return
    if t == "class_definition":
        name = node.child_by_field_name("name")
        if name is not None:
            yield Definition(_s(data, name), "class", _class_stub(node, data),
                             node.start_point[0], node.end_point[0])
        return
    if t == "expression_statement" and node.named_child_count == 1:
        a = node.named_children[0]
        if a.type == "assignment":
            left = a.child_by_field_name("left")
            if left is not None and left.type == "identifier":
                s = _s(data, node)
                if len(s) > CONST_CHARS or "\n" in s:
                    s = s.split("\n", 1)[0][:CONST_CHARS] + " ..."
                yield Definition(_s(data, left), "constant", s, node.start_point[0], node.end_point[0])
        return
    if t == "import_from_statement":  # re-exports (package __init__ files)
        mod = node.child_by_field_name("module_name")
        if mod is None:
            return
        for n in node.children_by_field_name("name"):
            if n.type == "aliased_import":
                real, alias = n.child_by_field_name("name"), n.child_by_field_name("alias")
                if real is not None and alias is not None:
                    yield Definition(_s(data, alias), "import", _s(data, real), node.start_point[0],
                                     node.end_point[0], _s(data, mod))
            else:
                yield Definition(_s(data, n), "import", _s(data, n), node.start_point[0], node.end_point[0],
                                 _s(data, mod))


def _decorators(node, data: bytes) -> str:
    return "".join(_s(data, c) + "\n" for c in node.named_children if c.type == "decorator")


def _header(node, data: bytes) -> str:
    """From the start of `node` to the ':' that opens its body (signature or class line)."""
    body = node.child_by_field_name("body")
    end = body.start_byte if body is not None else node.end_byte
    head = data[node.start_byte:end].decode("utf-8", "replace").rstrip()
    return head if head.endswith(":") else head.rstrip(":") + ":"


def _docstring(body, data: bytes) -> str:
    if body is None or not body.named_children:
        return ""
    first = body.named_children[0]
    if first.type == "expression_statement" and first.named_child_count == 1 \
            and first.named_children[0].type in ("string", "concatenated_string"):
        raw = _s(data, first)
        inner = raw.strip()
        for q in ('"""', "'''", '"', "'"):
            k = inner.find(q)
            if k >= 0 and k <= 3:
                inner = inner[k + len(q):]
                break
        line = inner.strip().split("\n", 1)[0].strip().rstrip("\"'").strip()
        if len(line) > DOC_CHARS:
            line = line[:DOC_CHARS].rstrip() + "..."
        return f'"""{line}"""' if line else ""
    return ""


def _function_stub(node, data: bytes, indent: str) -> str:
    head = _dedent_continuation(_header(node, data), node.start_point[1])
    doc = _docstring(node.child_by_field_name("body"), data)
    lines = [indent + head]
    if doc:
        lines.append(indent + "    " + doc)
    lines.append(indent + "    ...")
    return "\n".join(lines)


def _class_stub(node, data: bytes) -> str:
    body = node.child_by_field_name("body")
    lines = [_header(node, data)]
    doc = _docstring(body, data)
    if doc:
        lines.append("    " + doc)
    methods = 0
    for child in (body.named_children if body is not None else []):
        inner = child.child_by_field_name("definition") if child.type == "decorated_definition" else child
        if inner is None:
            continue
        if inner.type == "function_definition" and methods < METHODS_PER_CLASS:
            name = inner.child_by_field_name("name")
            n = _s(data, name) if name is not None else ""
            if n.startswith("_") and n not in CALLED_DUNDERS:
                continue  # private helpers and operators (`__eq__`): not what callers write
            deco = ""
            if child.type == "decorated_definition":
                deco = "".join("    " + _s(data, c) + "\n" for c in child.named_children if c.type == "decorator")
            lines.append(deco + _function_stub(inner, data, "    "))
            methods += 1
        elif inner.type == "expression_statement" and inner.named_child_count == 1 \
                and inner.named_children[0].type == "assignment":
            s = _s(data, inner).split("\n", 1)[0]
            lines.append("    " + (s if len(s) <= CONST_CHARS else s[:CONST_CHARS] + " ..."))
    if len(lines) == 1:
        lines.append("    ...")
    return "\n".join(lines)


def _dedent_continuation(head: str, col: int) -> str:
    """A signature's continuation lines lose the indentation of the def itself."""
    if "\n" not in head or col == 0:
        return head
    first, *rest = head.split("\n")
    return "\n".join([first] + [ln[col:] if ln[:col].isspace() else ln.lstrip() for ln in rest])


# -- the importing file --------------------------------------------------------------------
_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]*(?:\\\n[^\n#;]*)*)",
                   re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.MULTILINE)
MAX_IMPORT_SCAN = 400_000  # characters of the file searched for imports


def import_lines_key(text: str) -> str:
    """The file's import statements as one string: the part of the file that decides which
    definitions are relevant (cheap; used as a cache key)."""
    head = text[:MAX_IMPORT_SCAN]
    return "\n".join(m.group(0) for m in _FROM.finditer(head)) + "\n" + \
        "\n".join(m.group(0) for m in _IMPORT.finditer(head))


def imports(text: str) -> list[Import]:
    """The file's imports in file order (top-level and nested alike)."""
    head = text[:MAX_IMPORT_SCAN]
    found: list[tuple[int, Import]] = []
    for m in _FROM.finditer(head):
        names = []
        for part in m.group(2).strip("() \t\\\n").replace("\\\n", " ").split(","):
            part = part.strip().split("#", 1)[0].strip()
            if not part or part == "*":
                continue
            names.append(part.split()[0])  # the real name (`A as B` imports A)
        if names and m.group(1) != "__future__":
            found.append((m.start(), Import(m.group(1), tuple(names))))
    for m in _IMPORT.finditer(head):
        for part in m.group(1).split(","):
            bits = part.split()
            if not bits:
                continue
            if len(bits) == 3 and bits[1] == "as":
                found.append((m.start(), Import(bits[0], (), bits[2])))
            elif len(bits) == 1:
                found.append((m.start(), Import(bits[0], (), bits[0])))
    found.sort(key=lambda x: x[0])
    return [i for _, i in found]


_ATTR = re.compile(r"\b([A-Za-z_][\w.]*)\.([A-Za-z_]\w*)")


def attributes_used(text: str, alias: str) -> list[str]:
    """Names used as `alias.NAME` in `text`, in order of first use."""
    seen: dict[str, None] = {}
    for m in _ATTR.finditer(text[:MAX_IMPORT_SCAN]):
        if m.group(1) == alias:
            seen.setdefault(m.group(2), None)
    return list(seen)
