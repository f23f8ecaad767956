"""Warming the cache where the cursor rests (server/tandem/features/warm.py), through the real
server over stdio with the tiny real model: the editor's code-action request says where the
cursor is; the prompt there is computed before the first keystroke, and the completion that
follows reuses it."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from .harness import tandem

CORPUS = (Path(__file__).resolve().parents[2] / "models" / "data" / "tiny_corpus.py").read_text()
TEXT = CORPUS + "\n\ndef double(n):\n    return \n"


async def status(s) -> dict:
    return await s.command("tandem.status", timeout=10)


async def wait_status(s, predicate, what: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await status(s)
        if predicate(st):
            return st
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def first_keystroke(s, uri: str, rest: bool) -> tuple[int, int]:
    """Open TEXT, edit it once far from the place (the user works in this file), put the cursor
    after the last `return ` (and, with `rest`, leave it there until the server has warmed it),
    then type one character there and ask for a completion."""
    s.open(uri, TEXT)
    s.change(uri, (0, 0), (0, 0), "# edited\n")
    text = "# edited\n" + TEXT
    line, col = text.count("\n", 0, text.rindex("return ")), len("    return ")
    if rest:
        before = (await status(s))["warm"]["warmed"]
        await s.code_actions(uri, line, col, timeout=10)
        await wait_status(s, lambda st: st["warm"]["warmed"] > before, "the warm to finish")
    s.change(uri, (line, col), (line, col), "n")
    await s.complete(uri, line, col + 1, timeout=30)
    last = (await status(s))["lastCompletion"]
    assert not last["cached"]
    return last["promptTokens"], last["reusedTokens"]


async def test_the_first_keystroke_where_the_cursor_rested_reuses_the_warmed_prompt(tiny_model):
    async with tandem(settings={"modelPath": str(tiny_model)}) as s:
        await s.wait_for_state("ready")
        cold_prompt, cold_reused = await first_keystroke(s, "file:///w/cold.py", rest=False)
        warm_prompt, warm_reused = await first_keystroke(s, "file:///w/warm.py", rest=True)
        st = (await status(s))["warm"]
    # (The second document's prompt also carries the first one as context: other open files.)
    assert cold_prompt > 200 and warm_prompt > 200
    assert cold_reused < 10  # nothing of this document was in the cache
    # All but the typed character's line was computed while the cursor rested there.
    assert warm_reused >= warm_prompt - 30, (warm_prompt, warm_reused)
    assert st["warmed"] == 1 and st["tokens"] >= warm_prompt - 30, st


async def test_reading_selecting_and_the_setting_off_warm_nothing(tiny_model):
    async with tandem(settings={"modelPath": str(tiny_model)}) as s:
        await s.wait_for_state("ready")
        s.open("file:///w/read.py", TEXT)  # opened to read, never edited
        await s.code_actions("file:///w/read.py", 3, 4, timeout=10)
        s.open("file:///w/edit.py", TEXT)
        s.change("file:///w/edit.py", (0, 0), (0, 0), "# edited\n")
        await s.code_actions("file:///w/edit.py", 3, 0, end=(5, 0), timeout=10)  # a selection
        await asyncio.sleep(1.0)  # well past the rest the server waits for
        assert (await status(s))["warm"]["warmed"] == 0
        await s.set_settings({"modelPath": str(tiny_model), "warmAtCursor": False})
        await wait_status(s, lambda st: st["settings"]["warmAtCursor"] is False, "the setting")
        await s.code_actions("file:///w/edit.py", 4, 4, timeout=10)
        await asyncio.sleep(1.0)
        assert (await status(s))["warm"] == {"warmed": 0, "tokens": 0, "stepped_aside": 0}
        # And back on: the same place is warmed.
        await s.set_settings({"modelPath": str(tiny_model), "warmAtCursor": True})
        await wait_status(s, lambda st: st["settings"]["warmAtCursor"] is True, "the setting")
        await s.code_actions("file:///w/edit.py", 4, 4, timeout=10)
        await wait_status(s, lambda st: st["warm"]["warmed"] == 1, "the warm")


async def test_on_a_stub_the_docstring_actions_prompt_is_warmed_and_the_action_still_writes_it(tiny_model):
    """On a stub the docstring action is offered for, the prompt warmed is the action's (its own
    cache slot); taking the action then writes the same verified body."""
    stub = 'def square(x):\n    """Return x multiplied by itself.\n\n    >>> square(3)\n    9\n    """\n    ...\n'
    uri = "file:///w/stub.py"
    async with tandem(settings={"modelPath": str(tiny_model), "functionPrompt": "fim"}) as s:
        await s.wait_for_state("ready")
        s.open(uri, stub)  # the tiny model learnt `square` on its own (with more around it, it writes other things)
        s.change(uri, (6, 7), (6, 7), "\n")
        actions = await s.code_actions(uri, 0, 6, timeout=10)
        [action] = [a for a in actions or [] if a.title == "Generate function from docstring"]
        st = await wait_status(s, lambda st: st["warm"]["warmed"] == 1, "the warm")
        assert st["warm"]["tokens"] > 20  # the action's whole FIM prompt (28 tokens)
        assert st["lastCompletion"] is None  # no completion ran: the action's own slot was filled
        resolved = await asyncio.wait_for(s.client.code_action_resolve_async(action), 120)
        assert resolved.title == "Generate function from docstring: 1/1 examples pass"
        [edit] = resolved.edit.changes[uri] if resolved.edit.changes else resolved.edit.document_changes[0].edits
        assert "return x * x" in edit.new_text


async def test_a_project_file_opened_while_editing_is_warmed_a_file_outside_is_not(tiny_model, tmp_path):
    """While the user edits some document, a file of the workspace opened to work in is warmed
    before its first edit; a file outside the workspace (a library opened to read) is not."""
    root = tmp_path / "project"
    root.mkdir()
    async with tandem(settings={"modelPath": str(tiny_model)}, root=root) as s:
        await s.wait_for_state("ready")
        outside = "file:///elsewhere/lib.py"
        s.open(outside, TEXT)
        await s.code_actions(outside, 3, 4, timeout=10)
        await asyncio.sleep(1.0)
        assert (await status(s))["warm"]["warmed"] == 0  # nothing is being edited, and it is not ours
        a, b = (root / "a.py").as_uri(), (root / "b.py").as_uri()
        s.open(a, TEXT)
        s.change(a, (0, 0), (0, 0), "# edited\n")
        s.open(b, TEXT)  # opened, not edited
        await s.code_actions(outside, 4, 4, timeout=10)
        await asyncio.sleep(1.0)
        assert (await status(s))["warm"]["warmed"] == 0  # still not ours, edits elsewhere or not
        await s.code_actions(b, 3, 4, timeout=10)
        await wait_status(s, lambda st: st["warm"]["warmed"] == 1, "the warm of the project file")
