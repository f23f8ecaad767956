"""Context from other files, through the real server over stdio with the tiny real model.

The tiny model cannot be expected to use another file's definition (it was trained on
fill-in-the-middle over single files), so these tests assert on what went into the prompt:
the `tandem/context` debug request, and the provenance of the accepted completion (the hover
names every file and line range its prompt was built from). Whether the default model makes
use of it is measured by tests/benchmarks/bench_repo_context.py.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from lsprotocol import types

from .harness import TIMEOUT, tandem
from .test_hover import accept_completion, hover

SHAPES = '''"""Shapes."""
import math


class Circle:
    """A circle of a given radius."""

    def __init__(self, radius: float):
        self.radius = radius

    def area(self) -> float:
        """The area."""
        return math.pi * self.radius ** 2
'''
MAIN = "from shapes import Circle\n\n\ndef add(a, b):\n    \n"


async def context_at(s, uri: str, line: int, character: int, timeout: float = TIMEOUT):
    fut = s.client.protocol.send_request("tandem/context", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character}})
    return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)


def field(obj, name):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name)


async def test_two_file_workspace_puts_the_other_files_definition_in_the_prompt(tiny_model, tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "shapes.py").write_text(SHAPES)
    (ws / "main.py").write_text(MAIN)
    uri = (ws / "main.py").as_uri()
    async with tandem(settings={"modelPath": str(tiny_model)}, env={"TANDEM_HOME": str(tmp_path / "home")},
                      root=ws) as s:
        await s.wait_for_state("ready")
        s.open(uri, MAIN)
        ctx = await context_at(s, uri, 4, 4)
        pieces = [(field(p, "path"), field(p, "what"), list(field(p, "lines"))) for p in field(ctx, "pieces")]
        assert pieces == [("shapes.py", "definition of Circle", [4, 12])]
        prompt = field(ctx, "prompt")
        assert prompt.startswith("<|repo_name|>ws\n<|file_sep|>shapes.py\nclass Circle:\n")
        assert "    def area(self) -> float:\n        \"\"\"The area.\"\"\"\n        ...\n" in prompt
        assert prompt.endswith("<|file_sep|>main.py\n")
        assert "math.pi" not in prompt  # signatures, not bodies
        # The completion's own provenance names shapes.py's lines: its prompt held them.
        _text, _item = await accept_completion(s, uri, MAIN, 4, 4)
        h = await hover(s, uri, 4, 6)
        md = h.contents.value
        assert "from this file lines 1–5, shapes.py lines 5–13" in md, md
        # Switched off: no context, and the prompt is the plain FIM one again.
        await s.set_settings({"modelPath": str(tiny_model), "contextSources": []})
        await s.wait_for(lambda: True, 1)
        for _ in range(50):
            ctx = await context_at(s, uri, 4, 4)
            if not field(ctx, "pieces"):
                break
            await asyncio.sleep(0.1)
        assert field(ctx, "pieces") == [] and field(ctx, "prompt") == ""


def hostile_workspace(root: Path, files: int) -> None:
    """Many files, a 50 MB module, circular imports, a symlink loop, FIFOs and directories
    named like modules, a dangling link, non-UTF-8 and binary modules."""
    for i in range(files):
        d = root / f"pkg{i // 1000}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
            (d / "__init__.py").write_text("")
        (d / f"m{i % 1000}.py").write_text(f"def f{i}(x):\n    return x + {i}\n")
    with open(root / "huge.py", "wb") as f:  # 50 MB
        line = b"VALUE = 1  # padding padding padding padding padding padding padding\n"
        for _ in range(50 * 1024 * 1024 // len(line) + 1):
            f.write(line)
    (root / "a.py").write_text("from b import B\n\nclass A:\n    pass\n")
    (root / "b.py").write_text("from a import A\n\nclass B(A):\n    pass\n")
    os.symlink(root, root / "pkg0" / "loop")
    os.symlink(root / "nowhere", root / "dangling.py")
    os.mkfifo(root / "fifo.py")
    (root / "folder.py").mkdir()
    (root / "latin.py").write_bytes("NAME = 'caf\xe9'\n\ndef latin_fn(x):\n    return x\n".encode("latin-1"))
    (root / "binary.py").write_bytes(b"\0\1\2def nope():\n")


MAIN_HOSTILE = ("from a import A\nfrom b import B\nfrom huge import VALUE\nfrom fifo import X\nfrom folder import Y\n"
                "from dangling import Z\nfrom latin import latin_fn\nfrom binary import nope\n"
                "from pkg99.m999 import f99999\n\n\ndef add(a, b):\n    \n")


async def test_hostile_workspace_does_not_stall_or_crash_the_completion_path(tiny_model, tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    t0 = time.perf_counter()
    hostile_workspace(ws, 100_000)
    print(f"\nmade the workspace in {time.perf_counter() - t0:.1f} s")
    uri = (ws / "main.py").as_uri()
    (ws / "main.py").write_text(MAIN_HOSTILE)
    async with tandem(settings={"modelPath": str(tiny_model)}, env={"TANDEM_HOME": str(tmp_path / "home")},
                      root=ws) as s:
        await s.wait_for_state("ready")
        s.open(uri, MAIN_HOSTILE)
        line = MAIN_HOSTILE.count("\n") - 1
        # While the index is still being built, completions are served on time.
        times = []
        for _ in range(3):
            t = time.perf_counter()
            result = await s.complete(uri, line, 4, timeout=30)
            times.append(time.perf_counter() - t)
            assert isinstance(result.items, list)
        print("completion round trips (s):", [round(x, 3) for x in times])
        assert max(times) < 5.0
        # Once the index is built: the definitions that can be read are found, the rest skipped.
        deadline = time.monotonic() + 120
        whats: set = set()
        while time.monotonic() < deadline:
            ctx = await context_at(s, uri, line, 4)
            whats = {field(p, "what") for p in field(ctx, "pieces")}
            if "definition of f99999" in whats:
                break
            await asyncio.sleep(1.0)
        assert {"definition of A", "definition of B", "definition of latin_fn", "definition of f99999"} <= whats, whats
        assert not whats & {"definition of VALUE", "definition of X", "definition of Y", "definition of Z",
                            "definition of nope"}
        latin = next(p for p in field(ctx, "pieces") if field(p, "what") == "definition of latin_fn")
        assert field(latin, "text") == "def latin_fn(x):\n    ..."
        result = await s.complete(uri, line, 4, timeout=30)
        assert isinstance(result.items, list)
        assert not any("Traceback" in m for m in s.logs())
        assert not s.messages(types.MessageType.Error)
