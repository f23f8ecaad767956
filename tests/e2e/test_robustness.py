"""Bad input gets a clear message and loses nothing: the server keeps serving."""
from __future__ import annotations

import asyncio

from lsprotocol import types

from .harness import status_field, tandem

URI = "file:///tmp/tandem-test/example.py"


async def test_missing_default_model_says_how_to_build_it(empty_home):
    async with tandem(settings={}) as s:
        await s.wait_for_state("error")
        msg = status_field(s.statuses[-1], "message")
        assert "not built yet" in msg and "make model" in msg
        errors = s.messages(types.MessageType.Error)
        assert len(errors) == 1 and "make model" in errors[0]
        # Completions answer empty, without an error per keystroke.
        s.open(URI, "def f():\n    ")
        for _ in range(3):
            result = await s.complete(URI, 1, 4)
            assert result.items == []
        assert len(s.messages(types.MessageType.Error)) == 1


async def test_model_path_that_does_not_exist(tmp_path):
    async with tandem(settings={"modelPath": str(tmp_path / "nowhere")}) as s:
        await s.wait_for_state("error")
        msg = status_field(s.statuses[-1], "message")
        assert "does not exist" in msg and "tandem.modelPath" in msg


async def test_corrupt_model_then_fixed_setting_recovers(broken_model, tiny_model):
    async with tandem(settings={"modelPath": str(broken_model)}) as s:
        await s.wait_for_state("error")
        msg = status_field(s.statuses[-1], "message")
        assert "corrupt" in msg and "make model" in msg
        s.open(URI, "def add(a, b):\n    ")
        assert (await s.complete(URI, 1, 4)).items == []
        # Pointing the setting at a good model brings completions back without a restart.
        await s.set_settings({"modelPath": str(tiny_model)})
        await s.wait_for_state("ready")
        result = await s.complete(URI, 1, 4)
        assert result.items and result.items[0].insert_text.strip()


async def test_bad_settings_warn_and_fall_back_to_defaults(tiny_model):
    async with tandem(settings={"modelPath": str(tiny_model), "device": "tpu",
                                "maxTokensSingleLine": -1}) as s:
        await s.wait_for_state("ready")
        warnings = s.messages(types.MessageType.Warning)
        assert any("tandem.device" in w and "auto, cuda, cpu" in w for w in warnings)
        assert any("tandem.maxTokensSingleLine" in w for w in warnings)
        status = await asyncio.wait_for(s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="tandem.status")), 10)
        assert status_field(status_field(status, "settings"), "device") == "auto"


async def test_asking_for_cuda_without_a_gpu_runs_on_cpu_and_says_so(tiny_model):
    async with tandem(settings={"modelPath": str(tiny_model), "device": "cuda"}) as s:
        await s.wait_for_state("ready")
        assert status_field(s.statuses[-1], "device") == "cpu"
        assert any("running on the CPU" in w for w in s.messages(types.MessageType.Warning))


async def test_huge_file_odd_unicode_and_positions_past_the_end(tiny_model):
    huge = "".join(f"value_{i} = {i}  # ünïcødé ✓ 😀\n" for i in range(200_000))  # ~7 MB
    async with tandem(settings={"modelPath": str(tiny_model)}) as s:
        await s.wait_for_state("ready")
        s.open(URI, huge + "def add(a, b):\n    ")
        last = huge.count("\n")
        result = await s.complete(URI, last + 1, 4)
        assert isinstance(result.items, list)
        for line, ch in [(10**7, 0), (0, 10**6), (last + 1, 10**6)]:
            result = await s.complete(URI, line, ch)
            assert isinstance(result.items, list)
        # Lone surrogates, NULs and a BOM do not break it either.
        s.open("file:///tmp/tandem-test/odd.py", "\ufeffx = '\x00'\n# \udcff\n    ")
        result = await s.complete("file:///tmp/tandem-test/odd.py", 2, 4)
        assert isinstance(result.items, list)
        # ...and it still completes normally afterwards.
        s.open("file:///tmp/tandem-test/ok.py", "def add(a, b):\n    ")
        assert (await s.complete("file:///tmp/tandem-test/ok.py", 1, 4)).items


async def test_disabled_returns_nothing(tiny_model):
    async with tandem(settings={"modelPath": str(tiny_model), "enable": False}) as s:
        await s.wait_for_state("disabled")
        s.open(URI, "def add(a, b):\n    ")
        assert (await s.complete(URI, 1, 4)).items == []
        await s.set_settings({"modelPath": str(tiny_model), "enable": True})
        await s.wait_for(lambda: s.state == "ready", what="re-enabled")
        assert (await s.complete(URI, 1, 4)).items


# -- issue 13: the protocol layer with a real model -------------------------------------------
async def test_lone_cr_before_the_cursor_gives_the_right_range(tiny_model):
    """LSP counts a lone \\r as a line end: the completion's range starts where the cursor is."""
    from .harness import apply_inline

    text = "x = 1\rdef add(a, b):\r\n    "
    async with tandem(settings={"modelPath": str(tiny_model)}) as s:
        await s.wait_for_state("ready")
        s.open(URI, text)
        result = await s.complete(URI, 2, 4)
        assert result.items
        item = result.items[0]
        assert (item.range.start.line, item.range.start.character) == (2, 4)
        assert apply_inline(text, item).startswith(text)


def test_cancelled_completion_is_answered_request_cancelled(tiny_model, tmp_path):
    """$/cancelRequest on a running completion: answered -32800 at once (raw stdio)."""
    import time

    from .rawlsp import RawServer

    with RawServer(home=tmp_path, env={"TANDEM_DEBUG_DELAYS": "step=300"}) as s:
        s.initialize(settings={"modelPath": str(tiny_model)})
        s.wait_for_state("ready")
        s.open(URI, "def add(a, b):\n    ")
        rid = s.request("textDocument/inlineCompletion", {"textDocument": {"uri": URI},
                                                         "position": {"line": 1, "character": 4},
                                                         "context": {"triggerKind": 1}})
        time.sleep(0.5)
        start = time.monotonic()
        s.notify("$/cancelRequest", {"id": rid})
        r = s.response(rid, 10)
        assert r["error"]["code"] == -32800, r
        assert time.monotonic() - start < 1.0
        assert s.alive()
