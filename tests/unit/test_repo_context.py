"""tandem/context: the providers (imports, similar, path), the index, the deadline, rendering."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tandem.context import outline as O
from tandem.context import similar as S
from tandem.context.index import WorkspaceIndex, read_source
from tandem.context.service import ContextService, as_markdown, path_to_uri
from tandem.settings import Settings, parse_settings


class CharCodec:
    """One token per character, special tokens by id."""
    SPECIAL = {"<|repo_name|>": 1000, "<|file_sep|>": 1001}

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 999 for c in text]

    def token_to_id(self, token: str):
        return self.SPECIAL.get(token)


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


SHAPES = '''"""Shapes."""
import math

PI2 = 2 * math.pi
_HIDDEN = 1

class Circle(Base):
    """A circle of a given radius.

    More detail that is not shown."""
    kind = "circle"

    def __init__(self, radius: float):
        self.radius = radius

    @property
    def area(self) -> float:
        """The area."""
        return math.pi * self.radius ** 2

    def _helper(self):
        pass

@cache
def scale(shape: "Circle",
          factor: float) -> "Circle":
    return Circle(shape.radius * factor)

def broken(:
    pass

def after_error(x):
    return x
'''


# -- outline ------------------------------------------------------------------------------
def test_outline_gives_signatures_class_headers_docstrings_and_constants():
    defs = O.outline(SHAPES)
    assert defs["PI2"].text == "PI2 = 2 * math.pi" and defs["PI2"].kind == "constant"
    circle = defs["Circle"].text
    assert circle.startswith("class Circle(Base):\n    \"\"\"A circle of a given radius.\"\"\"")
    assert "More detail" not in circle  # first docstring line only
    assert "def __init__(self, radius: float):" in circle and "@property" in circle
    assert "def area(self) -> float:" in circle and '"""The area."""' in circle
    assert "_helper" not in circle and "math.pi * self.radius" not in circle  # no bodies, no private helpers
    assert defs["scale"].text == '@cache\ndef scale(shape: "Circle",\n          factor: float) -> "Circle":\n    ...'
    assert (defs["Circle"].first, defs["Circle"].last) == (6, 21)
    assert "after_error" in defs  # a syntax error elsewhere does not hide the rest


def test_outline_follows_reexports_as_imports():
    defs = O.outline("from .shapes import Circle, scale as grow\n")
    assert defs["Circle"].kind == "import" and defs["Circle"].source == ".shapes"
    assert defs["grow"].text == "scale"


def test_imports_of_the_current_file():
    text = ("from __future__ import annotations\nimport os, pkg.sub as ps\nfrom .util import (\n    a,\n"
            "    b as bee,  # comment\n)\nfrom ..up import c\ndef f():\n    from pkg import d\n")
    got = O.imports(text)
    assert [(i.module, i.names, i.alias) for i in got] == [
        ("os", (), "os"), ("pkg.sub", (), "ps"), (".util", ("a", "b"), ""), ("..up", ("c",), ""),
        ("pkg", ("d",), "")]
    assert O.attributes_used("ps.run(1); ps.stop; x.ps.no", "ps") == ["run", "stop"]


# -- index --------------------------------------------------------------------------------
def test_index_respects_gitignore_and_skips_vendored_and_generated(tmp_path: Path):
    write(tmp_path, ".gitignore", "ignored/\n*.gen.py\n")
    write(tmp_path, "pkg/mod.py", "X = 1\n")
    write(tmp_path, "pkg/sub/.gitignore", "secret.py\n")
    write(tmp_path, "pkg/sub/secret.py", "S = 1\n")
    write(tmp_path, "pkg/sub/ok.py", "K = 1\n")
    write(tmp_path, "ignored/x.py", "")
    write(tmp_path, "a.gen.py", "")
    write(tmp_path, "node_modules/m.py", "")
    write(tmp_path, ".venv/lib/v.py", "")
    write(tmp_path, "env2/pyvenv.cfg", "")
    write(tmp_path, "env2/e.py", "")
    idx = WorkspaceIndex([str(tmp_path)])
    idx.start()
    assert idx.ready.wait(10)
    names = sorted(os.path.relpath(p, tmp_path) for p in idx.files)
    assert names == ["pkg/mod.py", "pkg/sub/ok.py"]
    assert idx.resolve("pkg.mod", str(tmp_path / "main.py")) == str(tmp_path / "pkg/mod.py")
    assert idx.resolve("mod", str(tmp_path / "pkg/other.py")) == str(tmp_path / "pkg/mod.py")  # suffix match
    idx.remove(str(tmp_path / "pkg/mod.py"))
    assert idx.resolve("pkg.mod", str(tmp_path / "main.py")) is None
    idx.add(str(tmp_path / "pkg/mod.py"))
    assert idx.resolve("pkg.mod", str(tmp_path / "main.py")) is not None


def test_index_resolves_to_the_nearest_of_same_named_modules(tmp_path: Path):
    write(tmp_path, "a/util.py", "A = 1\n")
    write(tmp_path, "b/util.py", "B = 1\n")
    idx = WorkspaceIndex([str(tmp_path)])
    idx.start()
    assert idx.ready.wait(10)
    assert idx.resolve("util", str(tmp_path / "b/main.py")) == str(tmp_path / "b/util.py")
    assert idx.resolve("util", str(tmp_path / "a/main.py")) == str(tmp_path / "a/util.py")


def test_index_survives_symlink_loops_and_unreadable_entries(tmp_path: Path):
    write(tmp_path, "pkg/mod.py", "X = 1\n")
    os.symlink(tmp_path, tmp_path / "pkg" / "loop")  # a directory link back to the root
    os.symlink(tmp_path / "missing", tmp_path / "dangling.py")
    (tmp_path / "dir.py").mkdir()
    os.mkfifo(tmp_path / "fifo.py")
    idx = WorkspaceIndex([str(tmp_path)])
    idx.start()
    assert idx.ready.wait(10)
    assert sorted(os.path.relpath(p, tmp_path) for p in idx.files) == ["pkg/mod.py"]
    assert idx.outline_of(str(tmp_path / "fifo.py")) == {}  # a FIFO is never opened (it would block)
    assert idx.outline_of(str(tmp_path / "dir.py")) == {}
    assert idx.outline_of(str(tmp_path / "dangling.py")) == {}


def test_read_source_skips_huge_binary_and_generated_and_replaces_bad_utf8(tmp_path: Path):
    big = tmp_path / "big.py"
    big.write_bytes(b"x = 1\n" * 200_000)
    binary = tmp_path / "bin.py"
    binary.write_bytes(b"X = 1\n\0\0")
    gen = write(tmp_path, "gen.py", "# @generated by a tool\nX = 1\n")
    pb = write(tmp_path, "thing_pb2.py", "X = 1\n")
    latin = tmp_path / "latin.py"
    latin.write_bytes("NAME = 'caf\xe9'\n".encode("latin-1"))
    assert read_source(str(big)) is None and read_source(str(binary)) is None
    assert read_source(str(gen)) is None and read_source(str(pb)) is None
    assert read_source(str(latin)) == "NAME = 'caf\ufffd'\n"
    assert read_source(str(tmp_path / "nope.py")) is None


def test_open_document_text_wins_over_the_disk(tmp_path: Path):
    p = write(tmp_path, "m.py", "OLD = 1\n")
    idx = WorkspaceIndex([str(tmp_path)])
    assert "OLD" in idx.outline_of(str(p))
    idx.set_text(str(p), 3, "NEW = 2\n")
    assert list(idx.outline_of(str(p))) == ["NEW"]
    idx.set_text(str(p), 0, None)
    assert list(idx.outline_of(str(p))) == ["OLD"]


# -- providers ----------------------------------------------------------------------------
def service(root: Path) -> ContextService:
    s = ContextService(budget_s=5.0)
    s.bind([str(root)])
    assert s.index.ready.wait(10)
    return s


def test_imports_provider_finds_definitions_nearest_first_and_follows_reexports(tmp_path: Path):
    write(tmp_path, "pkg/__init__.py", "from .shapes import Circle\n")
    write(tmp_path, "pkg/shapes.py", SHAPES)
    write(tmp_path, "app/helpers.py", "def helper(x: int) -> int:\n    \"\"\"Help.\"\"\"\n    return x\n")
    main = "from pkg import Circle\nfrom pkg.shapes import scale, PI2\nfrom .helpers import helper\nimport os\n\nc = "
    s = service(tmp_path)
    uri = path_to_uri(str(tmp_path / "app/main.py"))
    ctx = s.gather(uri, main, len(main), ("imports", "path"))
    assert ctx.path == "app/main.py" and ctx.repo == tmp_path.name
    whats = [(p.rel, p.what) for p in ctx.pieces]
    assert whats[0] == ("app/helpers.py", "definition of helper")  # same folder first
    assert set(whats[1:]) == {("pkg/shapes.py", "definition of Circle"), ("pkg/shapes.py", "definition of scale"),
                              ("pkg/shapes.py", "definition of PI2")}
    circle = next(p for p in ctx.pieces if p.what.endswith("Circle"))
    assert (circle.first, circle.last) == (6, 21) and circle.uri == path_to_uri(str(tmp_path / "pkg/shapes.py"))


def test_import_module_takes_the_attributes_used(tmp_path: Path):
    write(tmp_path, "tools.py", "def used(a):\n    pass\n\ndef unused(b):\n    pass\n")
    s = service(tmp_path)
    text = "import tools as t\n\nt.used(1)\n"
    ctx = s.gather(path_to_uri(str(tmp_path / "main.py")), text, len(text), ("imports",))
    assert [p.what for p in ctx.pieces] == ["definition of used"]


def test_circular_and_self_imports_do_not_loop(tmp_path: Path):
    write(tmp_path, "a.py", "from b import B\nfrom a import A\nclass A:\n    pass\n")
    write(tmp_path, "b.py", "from a import A\nclass B(A):\n    pass\n")
    write(tmp_path, "pkg/__init__.py", "from .x import Y\n")
    write(tmp_path, "pkg/x.py", "from . import Y\n")  # a re-export cycle
    s = service(tmp_path)
    text = (tmp_path / "a.py").read_text() + "from pkg import Y\n"
    ctx = s.gather(path_to_uri(str(tmp_path / "a.py")), text, len(text), ("imports",))
    assert [p.what for p in ctx.pieces] == ["definition of B"]


def test_similar_provider_picks_the_window_that_shares_identifiers(tmp_path: Path):
    s = ContextService(budget_s=5.0)
    other = "\n".join([f"unrelated_{i} = {i}" for i in range(40)] +
                      ["def load_config(path, encoding):", "    with open(path, encoding=encoding) as handle:",
                       "        return parse_config(handle.read(), strict=True)"] +
                      [f"more_{i} = {i}" for i in range(40)])
    s.opened("file:///w/other.py", other, 1)
    s.opened("file:///w/noise.py", "\n".join(f"x{i} = y{i}" for i in range(100)), 1)
    text = "def reload(path, encoding, strict):\n    with open(path, encoding=encoding) as handle:\n        data = handle.read()\n"
    ctx = s.gather("file:///w/main.py", text + "    ", len(text) + 4, ("similar",))
    assert ctx.pieces and ctx.pieces[0].uri == "file:///w/other.py"
    assert "def load_config(path, encoding):" in ctx.pieces[0].text
    assert ctx.pieces[0].what.startswith("similar code")
    # Typing on the cursor's line does not change the query, hence not the context.
    again = s.gather("file:///w/main.py", text + "    retu", len(text) + 8, ("similar",))
    assert again.key == ctx.key and again.pieces == ctx.pieces


def test_a_slow_provider_is_skipped_not_waited_for_and_serves_the_next_request(tmp_path: Path, monkeypatch):
    write(tmp_path, "m.py", "def f(x):\n    pass\n")
    s = ContextService(budget_s=0.05)
    s.bind([str(tmp_path)])
    assert s.index.ready.wait(10)
    gate = threading.Event()
    real = s.index.outline_of

    def slow(path):
        gate.wait(5)
        return real(path)

    monkeypatch.setattr(s.index, "outline_of", slow)
    text = "from m import f\n"
    uri = path_to_uri(str(tmp_path / "main.py"))
    t0 = time.perf_counter()
    ctx = s.gather(uri, text, len(text), ("imports", "path"))
    assert time.perf_counter() - t0 < 0.5
    assert ctx.skipped == ("imports",) and ctx.pieces == ()
    gate.set()
    deadline = time.time() + 5
    while time.time() < deadline:
        ctx = s.gather(uri, text, len(text), ("imports", "path"))
        if ctx.pieces:
            break
        time.sleep(0.02)
    assert [p.what for p in ctx.pieces] == ["definition of f"] and ctx.skipped == ()


def test_sources_can_be_switched_off(tmp_path: Path):
    write(tmp_path, "m.py", "def f(x):\n    pass\n")
    s = service(tmp_path)
    text = "from m import f\n"
    ctx = s.gather(path_to_uri(str(tmp_path / "main.py")), text, len(text), ())
    assert ctx.pieces == () and ctx.path == ""


# -- rendering ----------------------------------------------------------------------------
def test_block_is_in_the_repository_format_before_the_current_file(tmp_path: Path):
    write(tmp_path, "pkg/shapes.py", SHAPES)
    write(tmp_path, "pkg/util.py", "def helper(x):\n    pass\n")
    s = service(tmp_path)
    text = "from pkg.util import helper\nfrom pkg.shapes import Circle\n\nc = "
    uri = path_to_uri(str(tmp_path / "main.py"))
    codec = CharCodec()
    ctx = s.gather(uri, text, len(text))
    blk = s.block(codec, ctx, 2000)
    assert blk.ids[0] == 1000 and blk.ids.count(1001) == 3  # repo name, two files, the current file
    assert blk.text.startswith(f"<|repo_name|>{tmp_path.name}\n<|file_sep|>pkg/")
    assert blk.text.endswith("<|file_sep|>main.py\n")
    # The file imported first (more relevant) is rendered last, next to the current file.
    assert blk.text.index("pkg/shapes.py") < blk.text.index("pkg/util.py")
    assert {(src["uri"].rsplit("/", 1)[-1], tuple(src["lines"])) for src in blk.sources} == {
        ("util.py", (0, 1)), ("shapes.py", (6, 21))}
    # Stable while the user types; within budget.
    assert s.block(codec, s.gather(uri, text + "Circ", len(text) + 4), 2000).ids == blk.ids
    small = s.block(codec, ctx, 120)
    assert small is not None and len(small.ids) <= 120 and "helper" in small.text and "Circle" not in small.text
    assert s.block(codec, ctx, 10) is None


def test_no_block_without_pieces_or_repository_tokens(tmp_path: Path):
    s = ContextService()
    ctx = s.gather("file:///w/main.py", "x = 1\n", 6)
    assert s.block(CharCodec(), ctx, 1000) is None

    class Plain(CharCodec):
        SPECIAL = {}

    write(tmp_path, "m.py", "def f(x):\n    pass\n")
    s = service(tmp_path)
    ctx = s.gather(path_to_uri(str(tmp_path / "main.py")), "from m import f\n", 16)
    assert ctx.pieces and s.block(Plain(), ctx, 1000) is None


def test_markdown_for_chat_prompts(tmp_path: Path):
    write(tmp_path, "m.py", "def f(x):\n    pass\n")
    s = service(tmp_path)
    ctx = s.gather(path_to_uri(str(tmp_path / "main.py")), "from m import f\n", 16)
    md, sources = as_markdown(ctx, 1000)
    assert md == "# m.py\n```python\ndef f(x):\n    ...\n```" and sources[0]["lines"] == [0, 1]
    assert as_markdown(ctx, 5) == ("", [])


# -- settings -----------------------------------------------------------------------------
def test_context_settings_are_typed_with_bounds():
    s, errors = parse_settings({"contextShare": 0.5, "contextSources": ["imports", "imports"]})
    assert not errors and s.contextShare == 0.5 and s.contextSources == ("imports",)
    s, errors = parse_settings({"contextShare": 2, "contextSources": ["imports", "web"]})
    assert s.contextShare == Settings().contextShare and s.contextSources == Settings().contextSources
    assert len(errors) == 2 and "'web'" in errors[1]
    _s, errors = parse_settings({"contextSources": "imports"})
    assert errors and "list of strings" in errors[0]


# -- the docstring action and explanations use the same context ------------------------------
class FakeModel:
    def __init__(self):
        self.codec = CharCodec()
        from tandem.completion.prompt import FimIds

        self.fim = FimIds(2000, 2001, 2002)
        self.chat = object()
        self.messages = None

    def encode_chat(self, messages, assistant_prefix=""):
        self.messages = messages
        return self.codec.encode(messages[-1]["content"] + assistant_prefix)


STUB_SOURCE = 'from shapes import Circle\n\n\ndef total_area(circles):\n    """Sum of the areas of `circles`."""\n'


@pytest.mark.parametrize("mode", ["chat", "fim"])
def test_docstring_action_prompt_has_the_imported_definitions(tmp_path: Path, mode: str):
    from tandem.generate.function import prepare
    from tandem.generate.stub import find_stub

    write(tmp_path, "shapes.py", SHAPES)
    s = service(tmp_path)
    uri = path_to_uri(str(tmp_path / "main.py"))
    stub = find_stub(STUB_SOURCE, STUB_SOURCE.index("total_area"))
    ctx = s.gather(uri, STUB_SOURCE, stub.doc_end)
    model = FakeModel()
    job = prepare(model, STUB_SOURCE, stub, mode, 1536, 0.7, ctx, 0.3)
    shapes = path_to_uri(str(tmp_path / "shapes.py"))
    assert {"uri": shapes, "lines": [6, 21], "what": "definition of Circle"} in job.prompt_sources
    if mode == "chat":
        user = model.messages[-1]["content"]
        assert "Definitions from other files of the project:\n# shapes.py\n```python\nclass Circle(Base):" in user
    else:
        assert job.prompt_ids[0] == 1000 and 2000 in job.prompt_ids  # repository format, then FIM
        assert job.prompt_ids.index(1001) < job.prompt_ids.index(2000)
    without = prepare(FakeModel(), STUB_SOURCE, stub, mode, 1536, 0.7, None, 0.3)
    assert not any(src.get("uri") == shapes for src in without.prompt_sources)


def test_explanations_get_the_context_and_name_its_sources(tmp_path: Path):
    from tandem.provenance.explain import chat_messages, request_for, with_context

    write(tmp_path, "shapes.py", SHAPES)
    s = service(tmp_path)
    text = "from shapes import Circle\n\nc = Circle(2).area\n"
    uri = path_to_uri(str(tmp_path / "main.py"))
    start = text.index("c = ")
    req = with_context(request_for(text, start, len(text), uri, "main.py"), s.gather(uri, text, start), 3000)
    user = chat_messages(req)[1]["content"]
    assert user.startswith("Definitions from other files of the project that it uses:\n# shapes.py\n```python\n")
    assert [src["what"] for src in req.sources[1:]] == ["definition of Circle"]
    plain = request_for(text, start, len(text), uri, "main.py")
    assert with_context(plain, None).context == "" and "Definitions" not in chat_messages(plain)[1]["content"]


def test_hover_names_every_file_and_line_range_of_the_prompt():
    from tandem.provenance.render import sources_text

    here = "file:///w/main.py"
    sources = [{"uri": here, "lines": [0, 39], "what": "text around the cursor"},
               {"uri": "file:///w/pkg/shapes.py", "lines": [6, 21], "what": "definition of Circle"},
               {"uri": "file:///w/pkg/shapes.py", "lines": [22, 24], "what": "definition of scale"},
               {"uri": "file:///w/pkg/shapes.py", "lines": [40, 40], "what": "definition of PI"},
               {"uri": "file:///w/pkg/__init__.py", "lines": [0, 0], "what": "definition of X"},
               {"uri": "file:///w/other/__init__.py", "lines": [2, 3], "what": "similar code (0.40)"}]
    assert sources_text(sources, here) == ("this file lines 1–40; shapes.py lines 7–25, 41; pkg/__init__.py line 1; "
                                           "other/__init__.py lines 3–4")


def test_engine_puts_the_block_before_the_fim_prompt_and_heals_after_it(tiny_model, monkeypatch):
    from tandem.completion.engine import CompletionEngine
    from tandem.context import ContextBlock
    from tandem.model.loaded import load_model

    model = load_model(str(tiny_model), "cpu")
    seen: list[list[int]] = []
    real = model.lm.generate

    def spy(ids, **kw):
        seen.append(list(ids))
        return real(ids, **kw)

    monkeypatch.setattr(model.lm, "generate", spy)
    engine = CompletionEngine(model)
    text = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a *"
    plain = engine.complete(text, len(text), Settings())
    block = ContextBlock(ids=(7, 40, 41, 8, 50, 51, 52, 8, 60), sources=[], key=("test",))
    engine.complete(text, len(text), Settings(), context=block)
    without, with_block = seen
    assert with_block[:len(block.ids)] == list(block.ids) and with_block[len(block.ids)] == model.fim.prefix
    assert with_block[len(block.ids):] == without  # the same FIM part (healed the same way) after the block
    assert plain is None or plain.prompt_tokens == len(without)
    # The block is part of the result cache's key: another block is another request.
    engine.complete(text, len(text), Settings(), context=ContextBlock(ids=(7, 8), key=("other",)))
    assert len(seen) == 3


def test_file_events_saves_and_closing_keep_the_index_current(tmp_path: Path):
    s = service(tmp_path)
    text = "from newmod import fresh\n"
    main = path_to_uri(str(tmp_path / "main.py"))
    assert s.gather(main, text, len(text), ("imports",)).pieces == ()
    p = write(tmp_path, "pkg/newmod.py", "def fresh(x):\n    pass\n")
    s.files_changed([(path_to_uri(str(p)), 1)])  # created
    text2 = "from pkg.newmod import fresh\n"
    assert [q.what for q in s.gather(main, text2, len(text2), ("imports",)).pieces] == ["definition of fresh"]
    # An open document's unsaved text counts; closing it goes back to the disk.
    s.opened(path_to_uri(str(p)), "def fresh(x, y):\n    pass\n", 2)
    assert "def fresh(x, y):" in s.gather(main, text2, len(text2), ("imports",)).pieces[0].text
    s.closed(path_to_uri(str(p)))
    p.write_text("def fresh(x, y, z):\n    pass\n")
    s.saved(path_to_uri(str(p)))
    assert "def fresh(x, y, z):" in s.gather(main, text2, len(text2), ("imports",)).pieces[0].text
    p.unlink()
    s.files_changed([(path_to_uri(str(p)), 3)])  # deleted
    assert s.gather(main, text2, len(text2), ("imports",)).pieces == ()


def test_imported_names_used_nearest_the_cursor_come_first(tmp_path: Path):
    write(tmp_path, "lib.py", "".join(f"def f{i}(x):\n    pass\n\n" for i in range(6)))
    s = service(tmp_path)
    body = "\n".join(f"line{i} = {i}" for i in range(60))
    text = f"from lib import (\n    f0,\n    f1,\n    f2,\n)\n\nf2(1)\n{body}\nf1(2)\n" + "\n" * 3
    uri = path_to_uri(str(tmp_path / "main.py"))
    near_end = s.gather(uri, text, len(text) - 1, ("imports",))
    assert [p.what[-2:] for p in near_end.pieces] == ["f1", "f2", "f0"]  # f0 is only imported: last
    near_top = s.gather(uri, text, text.index("line0"), ("imports",))
    assert [p.what[-2:] for p in near_top.pieces] == ["f2", "f1", "f0"]
    # The cursor's own line does not count, so typing on it keeps the context (and its key).
    typed = text[:len(text) - 1] + "f0(" + text[len(text) - 1:]
    assert s.gather(uri, typed, len(text) + 2, ("imports",)).key == near_end.key


def test_unreadable_module_gives_nothing(tmp_path: Path, monkeypatch):
    """Running as root, chmod cannot make a file unreadable: the read itself is made to fail."""
    import builtins

    from tandem.context import index as index_module

    p = write(tmp_path, "secret.py", "def hidden(x):\n    pass\n")
    real_open = builtins.open

    def refusing(path, *a, **kw):
        if str(path) == str(p):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(index_module, "open", refusing, raising=False)
    assert read_source(str(p)) is None
    s = service(tmp_path)
    text = "from secret import hidden\n"
    assert s.gather(path_to_uri(str(tmp_path / "main.py")), text, len(text), ("imports",)).pieces == ()


def test_similar_code_from_imported_modules_and_from_the_file_away_from_the_cursor(tmp_path: Path):
    # Nothing else is open: the similar windows come from the workspace modules the file
    # imports and from the current file far above the cursor (what the prompt does not show).
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/items.py", "\n".join(
        [f"filler = {i}" for i in range(30)] +
        ["def make_table(body, trivia, is_super):", "    table = Table(Container(), Trivia(), False, is_super)",
         "    table.append(body, trivia)", "    return table"] + [f"tail = {i}" for i in range(30)]))
    write(tmp_path, "pkg/other.py", "def unrelated(a):\n    return a\n")
    s = service(tmp_path)
    head = ["from pkg.items import make_table", "from pkg.other import unrelated", ""]
    far = ["def early(body, trivia, is_super):", "    result = wrap_method(float.__floordiv__)",
           "    body.append(trivia, is_super)", "    return result"]
    near = [f"pad = {i}" for i in range(150)] + \
        ["def later(body, trivia, is_super):", "    table = Container()", "    table.append(body, trivia)", "    "]
    text = "\n".join(head + far + near)
    uri = path_to_uri(str(tmp_path / "pkg" / "main.py"))
    ctx = s.gather(uri, text, len(text), ("similar",))
    found = {(p.rel, p.first) for p in ctx.pieces}
    assert any(rel == "pkg/items.py" for rel, _ in found)
    assert any("Table(Container(), Trivia(), False, is_super)" in p.text for p in ctx.pieces)
    assert any(p.rel == "pkg/main.py" and "wrap_method(float.__floordiv__)" in p.text for p in ctx.pieces)
    # Windows near the cursor (already in the prompt) are not repeated.
    cursor_line = text.count("\n")
    assert all(p.last < cursor_line - S.SELF_SKIP_ABOVE for p in ctx.pieces if p.rel == "pkg/main.py")
    # Typing on the cursor's line keeps the pieces, hence the block, identical.
    again = s.gather(uri, text + "table.", len(text) + 6, ("similar",))
    assert again.key == ctx.key and again.pieces == ctx.pieces
    codec = CharCodec()
    assert s.block(codec, again, 2000).ids == s.block(codec, ctx, 2000).ids
    # An edit elsewhere in the file changes it.
    edited = text.replace("float.__floordiv__", "float.__mod__")
    assert s.gather(uri, edited, len(edited), ("similar",)).key != ctx.key


def test_pieces_interleave_the_best_similar_window_with_the_nearest_definitions(tmp_path: Path):
    from tandem.context.service import Piece, _interleave

    d = [Piece("u", "d.py", i, i, f"def f{i}(): ...", f"definition of f{i}") for i in range(5)]
    w = [Piece("u", "w.py", i, i, f"w{i}", "similar code (0.5)") for i in range(3)]
    assert _interleave(d, w) == [w[0], d[0], d[1], d[2], w[1], d[3], d[4], w[2]]
    assert _interleave(d, []) == d and _interleave([], w) == w


def test_class_stubs_leave_out_operator_dunders_but_keep_the_constructor():
    text = ("class Money:\n    def __init__(self, amount: int):\n        self.amount = amount\n"
            "    def __eq__(self, other):\n        return True\n    def __repr__(self):\n        return ''\n"
            "    def add(self, other: 'Money') -> 'Money':\n        return self\n")
    stub = O.outline(text)["Money"].text
    assert "def __init__(self, amount: int):" in stub and "def add(" in stub
    assert "__eq__" not in stub and "__repr__" not in stub


def test_prefetch_warms_the_imported_modules_windows(tmp_path: Path):
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/items.py", "\n".join(f"def f{i}(a, b):\n    return a + b" for i in range(20)))
    s = service(tmp_path)
    uri = path_to_uri(str(tmp_path / "pkg" / "main.py"))
    s.opened(uri, "from pkg.items import f1\n\nx = f1(1, 2)\n", 1)
    assert s.settle(10)
    assert str(tmp_path / "pkg" / "items.py") in s.index._windows


def test_similar_code_stays_the_same_on_every_line_of_the_cursors_block(tmp_path: Path):
    # The query ends at the first line of the cursor's 16-line block, so pressing Enter (or
    # moving within the block) keeps the windows, and the block's KV cache is reused.
    s = ContextService(budget_s=5.0)
    other = "\n".join(f"def handler_{i}(request, session, user):\n    return render(request, user, {i})"
                      for i in range(30))
    s.opened("file:///w/other.py", other, 1)
    text = "\n".join(f"def view_{i}(request, session, user):\n    return render(request, session, {i})"
                     for i in range(30))
    lines = text.split("\n")
    at = [sum(len(x) + 1 for x in lines[:n]) for n in (33, 35, 47, 48)]
    got = [s.gather("file:///w/main.py", text, a, ("similar",)) for a in at]
    assert got[0].pieces and got[0].pieces == got[1].pieces == got[2].pieces
    assert got[0].key == got[1].key == got[2].key
    assert S.query_lines(text, at[3], 16) != S.query_lines(text, at[0], 16)  # the next block asks anew


def _enter_workspace(tmp_path: Path):
    """A file whose own windows far below the cursor are what the similar provider finds, and
    the end of the line the user has just written (a service over its workspace)."""
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/other.py", "def unrelated(a):\n    return a\n")
    s = service(tmp_path)
    above = [f"pad = {i}" for i in range(30)] + ["def later(body, trivia, is_super):", "    table = Container()"] + \
        [f"    table.append(body, trivia, is_super, {i})" for i in range(14)] + [f"    x{i} = {i}" for i in range(4)]
    below = [f"gap = {i}" for i in range(75)] + [
        "def after(body, trivia, is_super):", "    result = wrap_method(float.__floordiv__)",
        "    body.append(trivia, is_super)", "    return result"] + [f"tail = {i}" for i in range(40)]
    text = "\n".join(["from pkg.other import unrelated", "", *above, "    table.append(body, trivia)", *below]) + "\n"
    uri = path_to_uri(str(tmp_path / "pkg" / "main.py"))
    at = text.index("    table.append(body, trivia)\n") + len("    table.append(body, trivia)")
    return s, uri, text, at


def test_the_block_stays_while_the_user_writes_new_lines_at_the_cursor(tmp_path: Path):
    # Enter shifts the file's lines below the cursor onto another window grid, so the windows the
    # similar provider finds there change, and with them the block: the whole prompt would be
    # computed again. The block gathered at the line is kept while the user writes below it.
    s, uri, text, at = _enter_workspace(tmp_path)
    codec, src = CharCodec(), ("similar", "path")

    def fresh(t: str, off: int) -> tuple:
        b = s.block(codec, s.gather(uri, t, off, src), 2000)
        return b.ids if b else ()

    def served(t: str, off: int) -> tuple:
        b = s.prompt_head(codec, uri, t, off, src, 2000)
        return b.ids if b else ()

    kept = s.prompt_head(codec, uri, text, at, src, 2000)
    assert kept is not None and "wrap_method" in kept.text

    def typed(lines: list[str]) -> tuple[str, int]:
        ins = "".join("\n    " + x for x in lines)
        return text[:at] + ins + text[at:], at + len(ins)

    enter = typed([""])
    assert fresh(*enter) != kept.ids  # what gathering afresh would do
    assert served(*enter) == kept.ids
    five = typed(["rows = table.rows()", "for row in rows:", "    row.check()", "total = len(rows)", ""])
    assert served(*five) == kept.ids
    # ... and the hover's line numbers of the file's own windows below follow the text.
    own = [src["lines"] for src in kept.sources if src["uri"] == uri]
    moved = [src["lines"] for src in s.prompt_head(codec, uri, *five, src, 2000).sources if src["uri"] == uri]
    assert own and moved == [[a + 5, b + 5] for a, b in own]
    old_lines, new_lines = text.split("\n"), five[0].split("\n")
    assert all(new_lines[a:b + 1] == old_lines[a - 5:b - 4] for a, b in moved)
    # Anything more gathers afresh: an import written, 16 lines, an edit above, the cursor away,
    # another document changed, the document closed.
    for t, off in (typed(["import json", ""]), typed([f"v{i} = {i}" for i in range(17)]),
                   (text.replace("pad = 3\n", "pad = 3\npad = 3.5\n"), at + 10), (text, text.index("pad = 5"))):
        assert served(t, off) == fresh(t, off) != kept.ids
        assert served(text, at) == kept.ids  # gathered there again
    s.opened(path_to_uri(str(tmp_path / "pkg" / "other.py")), "def unrelated(a):\n    return a + 1\n", 2)
    assert served(*enter) == fresh(*enter) != kept.ids
    s.prompt_head(codec, uri, text, at, src, 2000)
    s.closed(uri)
    assert served(*enter) == fresh(*enter)
    s.prompt_head(codec, uri, text, at, src, 2000)
    assert s.prompt_head(codec, uri, *enter, src, 2000, keep=False).ids == fresh(*enter)  # on a GPU
    s.sticky_lines = 0
    s.prompt_head(codec, uri, text, at, src, 2000)
    assert served(*enter) == fresh(*enter)


@pytest.mark.parametrize("device, env, kept", [("cpu", None, True), ("cuda", None, False), ("remote", None, False),
                                               ("cpu", "0", False), ("cuda", "1", True)])
def test_the_server_keeps_the_block_on_a_cpu_only(tmp_path: Path, monkeypatch, device, env, kept):
    # The completion path's own call (features.context.block_for): on a CPU a changed block costs
    # a whole prefill, on a GPU a few milliseconds. TANDEM_CONTEXT_KEEP overrides (benchmarks).
    import asyncio
    from types import SimpleNamespace

    from tandem.features.context import block_for

    if env is None:
        monkeypatch.delenv("TANDEM_CONTEXT_KEEP", raising=False)
    else:
        monkeypatch.setenv("TANDEM_CONTEXT_KEEP", env)
    s, uri, text, at = _enter_workspace(tmp_path)
    ls = SimpleNamespace(settings=Settings(contextSources=("similar", "path")), context=s)
    model = SimpleNamespace(codec=CharCodec(), device=device)
    first = asyncio.run(block_for(ls, model, uri, text, at))
    enter = text[:at] + "\n    " + text[at:]
    after = asyncio.run(block_for(ls, model, uri, enter, at + 5))
    fresh = s.block(model.codec, s.gather(uri, enter, at + 5, ("similar", "path")),
                    int(ls.settings.contextTokens * ls.settings.contextShare))
    assert first is not None and fresh is not None and fresh.ids != first.ids
    assert after.ids == (first.ids if kept else fresh.ids)
