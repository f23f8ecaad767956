"""Hover explanations of code Tandem wrote, through the real server over stdio with the tiny
real model: accept a completion the way an editor does (apply the item, then run its
command), then hover it.

The tiny model was trained on fill-in-the-middle only: it answers nothing through its chat
template, so the server asks it in completion form. What it writes there is not English, but
it is deterministic (greedy): `expected_explanation` runs the same explainer on the same
model in this process, and the hover must show exactly that text.
"""
from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lsprotocol import types

from tandem.provenance.explain import Explainer, request_for

from .harness import TIMEOUT, tandem
from .harness import apply_inline as apply

ACCEPT = "tandem.completionAccepted"
SOURCE = "def add(a, b):\n    \n"


async def execute(s, command: str, arguments, timeout: float = TIMEOUT):
    return await asyncio.wait_for(s.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=arguments)), timeout)


async def hover(s, uri: str, line: int, character: int, timeout: float = TIMEOUT):
    return await asyncio.wait_for(s.client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character))), timeout)


def hover_raw(s, uri: str, line: int, character: int, msg_id: str):
    fut = s.client.protocol.send_request(types.TEXT_DOCUMENT_HOVER, types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character)),
        msg_id=msg_id)
    return asyncio.wrap_future(fut)


async def accept_completion(s, uri: str, text: str, line: int, col: int) -> tuple[str, types.InlineCompletionItem]:
    """Ask for a completion, apply it as the editor does, run its command. Returns the text."""
    item = (await s.complete(uri, line, col)).items[0]
    assert item.command is not None and item.command.command == ACCEPT
    r = item.range
    s.change(uri, (r.start.line, r.start.character), (r.end.line, r.end.character), item.insert_text)
    result = await execute(s, item.command.command, item.command.arguments)
    assert result and result.get("region"), f"the server did not remember the accepted text: {result!r}"
    return apply(text, item), item


async def hover_until_explained(s, uri: str, line: int, character: int, timeout: float = 30.0) -> str:
    """Hover until the explanation is there (a first hover may say it is being written)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        h = await hover(s, uri, line, character)
        assert h is not None, "no hover over the accepted completion"
        md = h.contents.value
        if "being written" not in md and "writing the explanation" not in md:
            return md
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the explanation was not written within {timeout}s:\n{md}")
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from tandem.model.loaded import load_model

    return load_model(str(tiny_model), "cpu")


async def expected_explanation(model, text: str, start: int, end: int, uri: str) -> str:
    """What the server's explainer writes for text[start:end], run here on the same model."""
    ex = Explainer(lambda: model, ThreadPoolExecutor(1), idle_s=0)
    req = request_for(text, start, end, uri, Path(uri).name)
    return (await ex.wait(ex.explain("k", req, background=False), 60)).text


@pytest.fixture
def workspace(tmp_path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture
def env(tmp_path) -> dict:
    return {"TANDEM_HOME": str(tmp_path / "home")}


async def test_accepted_completion_hover_shows_explanation_and_provenance(tiny_model, tiny, workspace, env, backend):
    uri = (workspace / "example.py").as_uri()
    async with tandem(settings={"modelPath": str(tiny_model), **backend}, env=env, root=workspace) as s:
        caps = s.initialize_result.capabilities
        assert caps.hover_provider
        assert ACCEPT in caps.execute_command_provider.commands
        assert "tandem.explain" in caps.execute_command_provider.commands
        await s.wait_for_state("ready")
        s.open(uri, SOURCE)
        text, item = await accept_completion(s, uri, SOURCE, 1, 4)
        assert text == "def add(a, b):\n    return a + b\n"
        md = await hover_until_explained(s, uri, 1, 8)
        h = await hover(s, uri, 1, 8)
    start = text.index("return")
    want = await expected_explanation(tiny, text, start, start + len("return a + b"), uri)
    assert want.strip(), "the tiny model wrote nothing: the test would prove nothing"
    print("\n" + md)
    assert md == h.contents.value  # cached: the same answer again
    assert h.contents.kind == types.MarkupKind.Markdown
    # The region Tandem wrote, in the editor's (UTF-16) positions.
    assert (h.range.start.line, h.range.start.character, h.range.end.line, h.range.end.character) == (1, 4, 1, 16)
    assert md.startswith("**Tandem wrote this** · inline completion · accepted ")
    assert want in md  # the model's explanation, exactly
    assert "completion form" in md  # honest about how it was asked (no usable chat template)
    # Provenance: model, precision and device, when, and what went into the prompt.
    assert "*Model* tandem-tiny-test · " in md and (" · remote" if backend else " · cpu") in md
    assert re.search(r"\*Generated\* \d{4}-\d\d-\d\d \d\d:\d\d:\d\d from this file lines 1–2", md), md
    # Confidence from the token log-probabilities recorded at generation.
    m = re.search(r"\*\*Confidence: (high|medium|low)\*\* \(average token probability (\d+)%, lowest (\d+)%, "
                  r"(\d+) tokens\)", md)
    assert m, md
    assert int(m.group(3)) <= int(m.group(2)) <= 100 and int(m.group(4)) >= 3
    assert "Edited since" not in md


async def test_edits_move_mark_and_drop_the_region(tiny_model, workspace, env):
    uri = (workspace / "edit.py").as_uri()
    async with tandem(settings={"modelPath": str(tiny_model)}, env=env, root=workspace) as s:
        await s.wait_for_state("ready")
        s.open(uri, SOURCE)
        await accept_completion(s, uri, SOURCE, 1, 4)
        # An edit above it: the region moves down a line and is not changed.
        s.change(uri, (0, 0), (0, 0), "import os\n")
        assert await hover(s, uri, 1, 8) is None  # line 1 is now `def add`
        h = await hover(s, uri, 2, 8)
        assert h is not None and (h.range.start.line, h.range.end.line) == (2, 2)
        assert "Edited since" not in h.contents.value
        # An edit inside it: the hover says so.
        s.change(uri, (2, 13), (2, 14), "-")  # return a + b -> return a - b
        h = await hover(s, uri, 2, 8)
        assert h is not None
        md = h.contents.value
        assert "⚠️ **Edited since Tandem wrote it**" in md
        assert (h.range.start.character, h.range.end.character) == (4, 16)
        # Typing right after it is not Tandem's text, and is not covered.
        s.change(uri, (2, 16), (2, 16), "  # sum")
        assert await hover(s, uri, 2, 20) is None
        # Deleting the whole line removes the region: nothing to hover any more.
        s.change(uri, (2, 0), (3, 0), "")
        assert await hover(s, uri, 1, 0) is None
        assert await hover(s, uri, 2, 0) is None
        # Undo brings the same text back, but Tandem no longer claims it.
        s.change(uri, (2, 0), (2, 0), "    return a - b  # sum\n")
        assert await hover(s, uri, 2, 8) is None


async def test_hover_outside_generated_code_returns_nothing(tiny_model, workspace, env):
    uri = (workspace / "outside.py").as_uri()
    other = (workspace / "other.py").as_uri()
    async with tandem(settings={"modelPath": str(tiny_model)}, env=env, root=workspace) as s:
        await s.wait_for_state("ready")
        s.open(uri, SOURCE)
        s.open(other, "def add(a, b):\n    return a + b\n")  # the same code, typed by the user
        await accept_completion(s, uri, SOURCE, 1, 4)
        assert await hover(s, uri, 0, 5) is None  # the `def` line the user wrote
        assert await hover(s, uri, 1, 2) is None  # indentation before the completion
        assert await hover(s, other, 1, 8) is None
        assert await hover(s, uri, 1, 8) is not None


async def test_a_restart_keeps_provenance_and_the_explanation(tiny_model, workspace, env, tmp_path):
    uri = (workspace / "restart.py").as_uri()
    async with tandem(settings={"modelPath": str(tiny_model)}, env=env, root=workspace) as s:
        await s.wait_for_state("ready")
        s.open(uri, SOURCE)
        text, _ = await accept_completion(s, uri, SOURCE, 1, 4)
        before = await hover_until_explained(s, uri, 1, 8)
    files = list((tmp_path / "home" / "state" / "provenance").glob("*.json"))
    assert len(files) == 1
    state = json.loads(files[0].read_text())
    assert [r["text"] for r in state["files"][uri]["regions"]] == ["return a + b"]

    async with tandem(settings={"modelPath": str(tiny_model)}, env=env, root=workspace) as s:
        await s.wait_for_state("ready")
        s.open(uri, text)
        h = await hover(s, uri, 1, 8)
        assert h is not None, "the region was forgotten across the restart"
        assert h.contents.value == before  # provenance, confidence and the explanation itself
        assert not any("explanation" in m and "written in" in m for m in s.logs())  # nothing regenerated
        # The same file edited while the server was down (a line added above): found again.
    async with tandem(settings={"modelPath": str(tiny_model)}, env=env, root=workspace) as s:
        await s.wait_for_state("ready")
        s.open(uri, "# a comment\n" + text)
        h = await hover(s, uri, 2, 8)
        assert h is not None and (h.range.start.line, h.range.start.character) == (2, 4)
        assert "Tandem wrote this" in h.contents.value


async def test_cancelled_hover_stops_generation(tiny_model, tiny, workspace, env):
    # 1 s a token: the hover is cancelled while the explanation's first token step is running.
    env = {**env, "TANDEM_DEBUG_DELAYS": "step=1000"}
    uri = (workspace / "cancel.py").as_uri()
    async with tandem(settings={"modelPath": str(tiny_model)}, env=env, root=workspace) as s:
        await s.wait_for_state("ready")
        s.open(uri, SOURCE)
        text, _ = await accept_completion(s, uri, SOURCE, 1, 4)
        n_logs = len(s.logs())
        pending = hover_raw(s, uri, 1, 8, msg_id="hover-1")
        await asyncio.sleep(0.5)
        s.cancel("hover-1")
        with pytest.raises(Exception, match="(?i)cancel"):
            await asyncio.wait_for(pending, 10)
        await s.wait_for(lambda: any("generation cancelled" in m for m in s.logs()[n_logs:]), 10, "cancel log")
        passes = int(re.search(r"cancelled after \d+ new tokens \((\d+) forward passes", next(
            m for m in s.logs()[n_logs:] if "generation cancelled" in m)).group(1))
        assert passes == 0  # cancelled within the step that was running: no pass after the first token
        assert not any("written in" in m for m in s.logs()[n_logs:])
        # Nothing is lost: once the user is idle the explanation resumes from where it stopped
        # and is the same as one written in one go.
        md = await hover_until_explained(s, uri, 1, 8, timeout=60)
    start = text.index("return")
    want = await expected_explanation(tiny, text, start, start + len("return a + b"), uri)
    assert want in md


async def test_explain_command_explains_any_selection(tiny_model, tiny, workspace, env, backend):
    uri = (workspace / "explain.py").as_uri()
    text = "def greet(name):\n    return f\"Hello, {name}!\"\n"
    async with tandem(settings={"modelPath": str(tiny_model), **backend}, env=env, root=workspace) as s:
        await s.wait_for_state("ready")
        s.check_backend(backend)
        s.open(uri, text)
        rng = {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}
        md = await execute(s, "tandem.explain", [{"uri": uri, "range": rng}])
        again = await execute(s, "tandem.explain", [{"uri": uri, "range": rng}])
    want = await expected_explanation(tiny, text, 0, len(text), uri)
    assert isinstance(md, str) and md.startswith("**Tandem: what this code does**")
    assert want.strip() and want in md
    assert "*Model* tandem-tiny-test" in md
    assert again == md


async def test_cancelled_explain_command_stops_generation(tiny_model, workspace, env):
    env = {**env, "TANDEM_DEBUG_DELAYS": "step=1000"}
    uri = (workspace / "explain_cancel.py").as_uri()
    async with tandem(settings={"modelPath": str(tiny_model)}, env=env, root=workspace) as s:
        await s.wait_for_state("ready")
        s.open(uri, "def greet(name):\n    return f\"Hello, {name}!\"\n")
        params = types.ExecuteCommandParams(command="tandem.explain", arguments=[
            {"uri": uri, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 30}}}])
        pending = asyncio.wrap_future(s.client.protocol.send_request(
            types.WORKSPACE_EXECUTE_COMMAND, params, msg_id="explain-1"))
        await asyncio.sleep(0.5)
        s.cancel("explain-1")
        with pytest.raises(Exception, match="(?i)cancel"):
            await asyncio.wait_for(pending, 10)
        await s.wait_for(lambda: any("generation cancelled" in m for m in s.logs()), 10, "cancel log")
        await s.wait_for(lambda: any(re.search(r"explanation code:\w+ cancelled", m) for m in s.logs()), 10,
                         "the job ends")
