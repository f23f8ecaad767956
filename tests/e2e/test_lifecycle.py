"""Start-up: initialize answers at once; the model loads in the background with progress."""
from __future__ import annotations

import time

from lsprotocol import types

from .harness import status_field, tandem

URI = "file:///tmp/tandem-test/example.py"


async def test_capability_is_advertised(tiny_model):
    async with tandem(settings={"modelPath": str(tiny_model)}) as s:
        caps = s.initialize_result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental


async def test_initialize_is_immediate_and_loading_reports_progress(tiny_model):
    t0 = time.monotonic()
    async with tandem(settings={"modelPath": str(tiny_model)},
                      env={"TANDEM_DEBUG_DELAYS": "load=3000"}) as s:
        assert time.monotonic() - t0 < 10  # initialize did not wait for the 3 s load
        assert s.state in (None, "loading")
        # A completion asked for while loading: empty, and one message, not one per keystroke.
        s.open(URI, "def add(a, b):\n    ")
        for _ in range(3):
            assert (await s.complete(URI, 1, 4)).items == []
        not_ready = [m for m in s.messages() if "still loading" in m]
        assert len(not_ready) == 1
        await s.wait_for_state("ready")
        assert status_field(s.statuses[-1], "device") == "cpu"
        kinds = [getattr(v, "kind", None) for reports in s.client.progress_reports.values() for v in reports]
        assert "begin" in kinds and "end" in kinds
        assert (await s.complete(URI, 1, 4)).items


async def test_logs_go_to_the_editor_not_stdout(tiny_model):
    async with tandem(settings={"modelPath": str(tiny_model)}) as s:
        await s.wait_for_state("ready")
        # Had anything been printed to stdout, the JSON-RPC stream would have broken by now.
        assert any("model ready" in m for m in s.logs())


async def test_a_rebuilt_model_is_hot_loaded(tiny_model, tmp_path):
    import asyncio
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    async with tandem(settings={"modelPath": str(model)}) as s:
        await s.wait_for_state("ready")
        s.open(URI, "def add(a, b):\n    ")
        assert (await s.complete(URI, 1, 4)).items
        # The pipeline rewrites the bundle when it rebuilds or fine-tunes the model in place.
        bundle = model / "tandem-bundle.json"
        data = json.loads(bundle.read_text())
        data["notes"] = "rebuilt"
        bundle.write_text(json.dumps(data))
        readies = sum(status_field(x, "state") == "ready" for x in s.statuses)
        await asyncio.sleep(5.5)  # the server looks at most every 5 s, on a request
        await s.complete(URI, 1, 4)
        await s.wait_for(lambda: sum(status_field(x, "state") == "ready" for x in s.statuses) > readies,
                         what="the reloaded model")
        assert any("model on disk changed" in m for m in s.logs())
        assert (await s.complete(URI, 1, 4)).items
