""""Generate function from docstring", end to end: the real server over stdio, pytest-lsp's
client, the tiny real model (which has memorised models/data/tiny_corpus.py, including
`square`, `is_positive` and `Counter.increment` with their docstrings)."""
from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path

import pytest
from lsprotocol import types

from .harness import TIMEOUT, tandem

URI = "file:///tmp/tandem-test/funcs.py"
TITLE = "Generate function from docstring"

SQUARE = 'def square(x):\n    """Return x multiplied by itself.\n\n    >>> square(3)\n    9\n    """\n'


def fim_settings(tiny_model: Path, **more) -> dict:
    # The tiny model has a chat template but was only trained on FIM: ask for FIM.
    return {"modelPath": str(tiny_model), "functionPrompt": "fim", **more}


def action_params(uri: str, line: int, character: int) -> types.CodeActionParams:
    pos = types.Position(line, character)
    return types.CodeActionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                  range=types.Range(pos, pos), context=types.CodeActionContext(diagnostics=[]))


async def actions_at(s, uri: str, line: int, character: int) -> list:
    result = await asyncio.wait_for(s.client.text_document_code_action_async(
        action_params(uri, line, character)), TIMEOUT)
    return [a for a in (result or []) if isinstance(a, types.CodeAction) and a.title.startswith(TITLE)]


async def resolve(s, action: types.CodeAction, timeout: float = 120) -> types.CodeAction:
    return await asyncio.wait_for(s.client.code_action_resolve_async(action), timeout)


def apply(text: str, edit: types.WorkspaceEdit, uri: str = URI) -> str:
    """Apply the edit the way an editor does (UTF-16 positions; ASCII text here)."""
    if edit.document_changes:
        (change,) = edit.document_changes
        assert change.text_document.uri == uri
        edits = list(change.edits)
    else:
        edits = list(edit.changes[uri])
    (e,) = edits
    lines = text.splitlines(keepends=True)
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln))
    a = starts[e.range.start.line] + e.range.start.character
    b = starts[e.range.end.line] + e.range.end.character
    return text[:a] + e.new_text + text[b:]


async def test_offered_on_stubs_only(tiny_model):
    text = (
        "import math\n"                                              # 0
        "\n"
        "def square(x):\n"                                           # 2
        '    """Return x multiplied by itself."""\n'                # 3
        "\n"
        "def done(x):\n"                                             # 5
        '    """Already written."""\n'                               # 6
        "    return x\n"                                             # 7
        "\n"
        "class Box:\n"                                               # 9
        "    @staticmethod\n"                                        # 10
        "    async def fetch(key):\n"                                # 11
        '        """Fetch the key."""\n'                             # 12
        "        raise NotImplementedError\n"                        # 13
        "\n"
        "def empty_doc():\n"                                         # 15
        '    """"""\n'                                               # 16
        "    pass\n"                                                 # 17
        "\n"
        "broken = (\n"                                               # 19  a syntax error elsewhere
        "def later(a):\n"                                            # 20
        '    """Still found: the error above does not hide it."""\n'  # 21
        "    ...\n"                                                  # 22
    )
    async with tandem(settings=fim_settings(tiny_model)) as s:
        await s.wait_for_state("ready")
        s.open(URI, text)
        offered = {(line, ch) for line, ch in [(2, 0), (2, 9), (3, 10), (10, 6), (11, 20), (12, 9), (21, 30)]}
        for line, ch in offered:
            found = await actions_at(s, URI, line, ch)
            assert len(found) == 1, (line, ch, found)
            assert found[0].title == TITLE and found[0].kind == types.CodeActionKind.RefactorRewrite
            assert found[0].edit is None  # computed in resolve, not on every cursor move
        for line, ch in [(0, 3), (5, 4), (7, 6), (9, 3), (13, 10), (16, 5), (15, 4), (19, 2)]:
            assert await actions_at(s, URI, line, ch) == [], (line, ch)
        # A client that asks only for quick fixes does not get it.
        only = action_params(URI, 2, 0)
        only.context.only = [types.CodeActionKind.QuickFix]
        result = await asyncio.wait_for(s.client.text_document_code_action_async(only), TIMEOUT)
        assert not [a for a in result or [] if getattr(a, "title", "").startswith(TITLE)]


async def test_resolve_writes_a_verified_body(tiny_model):
    text = "import math\n\n\n" + SQUARE + "\n\nprint(square(2))\n"
    async with tandem(settings=fim_settings(tiny_model)) as s:
        await s.wait_for_state("ready")
        s.open(URI, text)
        (action,) = await actions_at(s, URI, 3, 5)
        t0 = time.perf_counter()
        resolved = await resolve(s, action)
        print(f"\nresolved in {time.perf_counter() - t0:.2f}s: {resolved.title!r}")
        assert resolved.title == f"{TITLE}: 1/1 examples pass"
        new = apply(text, resolved.edit)
        assert new == text.replace(SQUARE, SQUARE + "    return x * x\n")
        ast.parse(new)
        assert any("1/1 examples pass" in m and "square" in m for m in s.logs())


async def test_edit_keeps_tabs_crlf_and_the_rest_of_the_file(tiny_model):
    # Tabs, CRLF, non-ASCII, a method, a stub statement with a comment: only the stub body changes.
    text = ("# café ☕\r\nclass Counter:\r\n\tdef __init__(self):\r\n\t\tself.count = 0\r\n\r\n"
            '\tdef increment(self):\r\n\t\t"""Add one to the count and return it."""\r\n\t\tpass  # TODO\r\n'
            "\r\nx = 1\r\n")
    async with tandem(settings=fim_settings(tiny_model)) as s:
        await s.wait_for_state("ready")
        s.open(URI, text)
        (action,) = await actions_at(s, URI, 5, 6)
        resolved = await resolve(s, action)
        assert resolved.edit is not None, s.messages()
        new = apply(text, resolved.edit)
        head, tail = text.split("\t\tpass  # TODO\r\n")
        assert new.startswith(head.rstrip("\r\n")) and new.endswith("\r\n" + tail)
        body = new[len(head.rstrip("\r\n")):len(new) - len(tail)]
        assert "\n" not in body.replace("\r\n", "")  # every line break is CRLF
        lines = [ln for ln in body.split("\r\n") if ln.strip()]
        assert lines and all(ln.startswith("\t\t") and not ln.startswith("\t\t ") for ln in lines), lines
        ast.parse(new)
        assert "no examples to check" in resolved.title


async def test_examples_that_hang_or_write_outside_are_stopped(tiny_model, tmp_path):
    outside = tmp_path / "written-by-an-example.txt"
    text = ('def square(x):\n    """Return x multiplied by itself.\n\n    >>> square(3)\n    9\n'
            f"    >>> open({str(outside)!r}, 'w').write('x')\n    1\n"
            "    >>> while True: pass\n    \"\"\"\n")
    settings = fim_settings(tiny_model, verifyTimeoutMs=1500, functionCandidates=2)
    async with tandem(settings=settings) as s:
        await s.wait_for_state("ready")
        s.open(URI, text)
        (action,) = await actions_at(s, URI, 0, 4)
        t0 = time.perf_counter()
        resolved = await resolve(s, action, timeout=60)
        took = time.perf_counter() - t0
        assert resolved.title == f"{TITLE}: 1/3 examples pass (timed out)", resolved.title
        assert not outside.exists()
        assert took < 30
        warnings = s.messages(types.MessageType.Warning)
        assert any("1/3 examples pass" in w and "Review it" in w for w in warnings), warnings
        logs = "\n".join(s.logs())
        assert "not allowed" in logs or "writing" in logs or "1/3" in logs


async def test_cancel_stops_generation(tiny_model):
    env = {"TANDEM_DEBUG_DELAYS": "step=100"}  # a slow model, so there is time to cancel
    async with tandem(settings=fim_settings(tiny_model, maxTokensFunction=400), env=env) as s:
        await s.wait_for_state("ready")
        s.open(URI, SQUARE)
        (action,) = await actions_at(s, URI, 0, 4)
        fut = asyncio.wrap_future(s.client.protocol.send_request(types.CODE_ACTION_RESOLVE, action, msg_id="gen-1"))
        await asyncio.sleep(1.0)
        s.cancel("gen-1")
        with pytest.raises(Exception):
            await asyncio.wait_for(fut, 10)
        await s.wait_for(lambda: any("generation cancelled after" in m for m in s.logs()), 10, "the cancel log")
        # The server is free again at once: another request is answered.
        assert await actions_at(s, URI, 0, 4)


async def test_not_offered_as_ready_while_loading(tiny_model):
    env = {"TANDEM_DEBUG_DELAYS": "load=3000"}
    async with tandem(settings=fim_settings(tiny_model), env=env) as s:
        s.open(URI, SQUARE)
        (action,) = await actions_at(s, URI, 0, 4)
        assert action.disabled is not None and "loading" in action.disabled.reason
        await s.wait_for_state("ready")
        (action,) = await actions_at(s, URI, 0, 4)
        assert action.disabled is None
