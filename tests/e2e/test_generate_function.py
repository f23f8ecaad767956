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

from .harness import TIMEOUT, action_params, tandem

URI = "file:///tmp/tandem-test/funcs.py"
TITLE = "Generate function from docstring"

SQUARE = 'def square(x):\n    """Return x multiplied by itself.\n\n    >>> square(3)\n    9\n    """\n'


def fim_settings(tiny_model: Path, **more) -> dict:
    # The tiny model has a chat template but was only trained on FIM: ask for FIM.
    return {"modelPath": str(tiny_model), "functionPrompt": "fim", **more}


async def actions_at(s, uri: str, line: int, character: int) -> list:
    return [a for a in await s.code_actions(uri, line, character, timeout=TIMEOUT)
            if isinstance(a, types.CodeAction) and a.title.startswith(TITLE)]


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


async def test_resolve_writes_a_verified_body(tiny_model, backend):
    text = SQUARE + "    ...\n"
    async with tandem(settings={**fim_settings(tiny_model), **backend}) as s:
        await s.wait_for_state("ready")
        s.check_backend(backend)
        s.open(URI, text)
        (action,) = await actions_at(s, URI, 0, 5)
        t0 = time.perf_counter()
        resolved = await resolve(s, action)
        print(f"\nresolved in {time.perf_counter() - t0:.2f}s: {resolved.title!r}")
        assert resolved.title == f"{TITLE}: 1/1 examples pass"
        new = apply(text, resolved.edit)
        assert new == SQUARE + "    return x * x\n"
        ast.parse(new)
        assert any("1/1 examples pass" in m and "square" in m for m in s.logs())
        # The edit is versioned: an editor whose document changed since refuses it.
        assert resolved.edit.document_changes[0].text_document.version == s.version


async def test_edit_keeps_tabs_crlf_and_the_rest_of_the_file(tiny_model, backend):
    # Tabs, CRLF, a stub statement with a comment: only the stub body changes.
    head = SQUARE.replace("\n", "\r\n").replace("    ", "\t")
    text = head + "\tpass  # TODO\r\n"
    async with tandem(settings={**fim_settings(tiny_model), **backend}) as s:
        await s.wait_for_state("ready")
        s.check_backend(backend)
        s.open(URI, text)
        (action,) = await actions_at(s, URI, 1, 6)
        resolved = await resolve(s, action)
        assert resolved.edit is not None, s.messages()
        new = apply(text, resolved.edit)
        docstring_end = head.rstrip("\r\n")
        assert new.startswith(docstring_end + "\r\n") and new.endswith("\r\n")
        body = new[len(docstring_end):]
        assert "\n" not in body.replace("\r\n", "")  # every line break is CRLF
        lines = [ln for ln in body.split("\r\n") if ln.strip()]
        assert lines and all(ln.startswith("\t") and not ln.startswith("\t ") for ln in lines), lines
        assert "pass  # TODO" not in new
        ast.parse(new.replace("\r\n", "\n"))
        assert resolved.title == f"{TITLE}: 1/1 examples pass"


SAVE_NOTE = 'def save_note(text):\n    """Save text in /tmp/tandem-note.txt.\n\n    >>> save_note("hi")\n    2\n    """\n'
SPIN = 'def spin(n):\n    """Count n down to zero.\n\n    >>> spin(3)\n    0\n    """\n'


async def test_candidates_that_write_outside_or_hang_are_stopped(tiny_model):
    # The tiny model learnt these two bodies: one writes /tmp/tandem-note.txt, one never ends.
    note = Path("/tmp/tandem-note.txt")
    note.unlink(missing_ok=True)
    settings = fim_settings(tiny_model, verifyTimeoutMs=1500, functionCandidates=2)
    async with tandem(settings=settings) as s:
        await s.wait_for_state("ready")
        s.open(URI, SAVE_NOTE)
        (action,) = await actions_at(s, URI, 0, 5)
        resolved = await resolve(s, action, timeout=60)
        assert resolved.title == f"{TITLE}: 0/1 examples pass", resolved.title
        assert "open(" in apply(SAVE_NOTE, resolved.edit)  # the model's body, offered for review
        assert not note.exists()
        warnings = "\n".join(s.messages(types.MessageType.Warning))
        assert "0/1 examples pass" in warnings and "is not allowed" in warnings, warnings

        uri = URI.replace("funcs", "spin")
        s.open(uri, SPIN)
        (action,) = await actions_at(s, uri, 0, 5)
        t0 = time.perf_counter()
        resolved = await resolve(s, action, timeout=60)
        assert resolved.title == f"{TITLE}: 0/1 examples pass (timed out)", resolved.title
        assert time.perf_counter() - t0 < 30
        assert "while True" in apply(SPIN, resolved.edit, uri)


async def test_cancel_stops_generation(tiny_model):
    env = {"TANDEM_DEBUG_DELAYS": "step=300"}  # a slow model, so there is time to cancel
    async with tandem(settings=fim_settings(tiny_model, maxTokensFunction=400), env=env) as s:
        await s.wait_for_state("ready")
        s.open(URI, SQUARE)
        (action,) = await actions_at(s, URI, 0, 4)
        fut = asyncio.wrap_future(s.client.protocol.send_request(types.CODE_ACTION_RESOLVE, action, msg_id="gen-1"))
        await asyncio.sleep(0.8)
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


async def test_applied_body_is_remembered_and_its_hover_shows_the_verification(tiny_model, backend):
    from .test_hover import execute, hover_until_explained

    text = SQUARE + "    ...\n"
    async with tandem(settings={**fim_settings(tiny_model), **backend}) as s:
        await s.wait_for_state("ready")
        s.check_backend(backend)
        s.open(URI, text)
        (action,) = await actions_at(s, URI, 0, 5)
        resolved = await resolve(s, action)
        # The editor applies the edit, then runs the action's command (LSP order).
        assert resolved.command is not None and resolved.command.command == "tandem.completionAccepted"
        (change,) = resolved.edit.document_changes
        (e,) = change.edits
        s.change(URI, (e.range.start.line, e.range.start.character), (e.range.end.line, e.range.end.character),
                 e.new_text)
        result = await execute(s, resolved.command.command, resolved.command.arguments)
        assert result and result.get("region"), result
        md = await hover_until_explained(s, URI, 6, 8)  # over `return x * x`
        assert "1/1 examples pass" in md, md
        assert "tandem-tiny-test" in md
        assert (await s.client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(0, 2)))) is None


async def test_an_edit_during_generation_is_never_overwritten(tiny_model):
    env = {"TANDEM_DEBUG_DELAYS": "step=150"}  # slow enough to type while it writes
    async with tandem(settings=fim_settings(tiny_model), env=env) as s:
        await s.wait_for_state("ready")
        s.open(URI, SQUARE)
        (action,) = await actions_at(s, URI, 0, 4)
        fut = asyncio.wrap_future(s.client.protocol.send_request(types.CODE_ACTION_RESOLVE, action))
        await asyncio.sleep(0.5)
        s.change(URI, (0, 0), (0, 0), "import os\n")  # the user types above the function
        resolved = await asyncio.wait_for(fut, 60)
        assert resolved.edit is None  # offsets computed on the old text are not sent
        await s.wait_for(lambda: any("changed while Tandem was writing" in m for m in s.messages()), 10,
                         "the message that nothing was applied")
