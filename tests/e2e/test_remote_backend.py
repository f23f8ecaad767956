"""The OpenAI-compatible backend through the real server over stdio, against faults a real engine
cannot be made to produce (tests/fake_openai.py): an endpoint down at start that comes back, a
refused key. Completions degrade to empty, quickly; the key never appears anywhere."""
from __future__ import annotations

import time

from lsprotocol import types

from tests.fake_openai import FakeServer, Script, free_port

from .harness import status_field, tandem

URI = "file:///tmp/tandem-remote/example.py"
TEXT = "def add(a, b):\n    \n"
SECRET = "sk-live-DO-NOT-LEAK-4242"


def everything_said(s) -> str:
    return "\n".join([*s.messages(), *s.logs(), *(str(x) for x in s.statuses)])


async def test_endpoint_down_at_start_degrades_then_recovers(tiny_model):
    port = free_port()
    settings = {"modelPath": str(tiny_model), "backend": "openai", "endpoint": f"http://127.0.0.1:{port}/v1"}
    async with tandem(settings=settings, env={"TANDEM_API_KEY": SECRET}) as s:
        await s.wait_for_state("ready")
        assert any("unreachable" in m for m in s.messages(types.MessageType.Warning)), s.messages()
        s.open(URI, TEXT)
        t0 = time.perf_counter()
        result = await s.complete(URI, 1, 4)
        assert result.items == [] and time.perf_counter() - t0 < 5
        await s.wait_for_state("error", timeout=10)
        assert "unreachable" in status_field(s.statuses[-1], "message")
        # Fails fast while down: no connect attempt per keystroke.
        t0 = time.perf_counter()
        assert (await s.complete(URI, 1, 4)).items == []
        assert time.perf_counter() - t0 < 1.0
        script = Script({"pieces": ["return", " a", " +", " b"]})
        with FakeServer(script, port=port):
            deadline = time.monotonic() + 20
            items = []
            while not items:
                assert time.monotonic() < deadline, "did not recover when the endpoint came back"
                items = (await s.complete(URI, 1, 4)).items
                if not items:
                    time.sleep(0.5)
            assert items[0].insert_text == "return a + b"
            await s.wait_for_state("ready", timeout=10)
        assert script.headers[0]["authorization"] == f"Bearer {SECRET}"
        said = everything_said(s)
    assert SECRET not in said


async def test_refused_key_is_said_once_without_the_key(tiny_model):
    script = Script({"status": 401, "body": {"error": {"message": f"invalid key {SECRET}"}}})
    with FakeServer(script) as srv:
        settings = {"modelPath": str(tiny_model), "backend": "openai", "endpoint": srv.url}
        async with tandem(settings=settings, env={"TANDEM_API_KEY": SECRET}) as s:
            await s.wait_for_state("ready")
            s.open(URI, TEXT)
            for _ in range(3):
                assert (await s.complete(URI, 1, 4)).items == []
            await s.wait_for_state("error", timeout=10)
            warnings = [m for m in s.messages(types.MessageType.Warning) if "401" in m]
            assert len(warnings) == 1 and "API key" in warnings[0], s.messages()
            said = everything_said(s)
    assert SECRET not in said
    assert sum(1 for r in script.requests if r.get("stream")) == 3  # 401 is not retried (plus the load's probe)


async def test_openai_backend_without_an_endpoint_sends_nothing_and_says_why(tiny_model):
    async with tandem(settings={"modelPath": str(tiny_model), "backend": "openai"}) as s:
        await s.wait_for_state("error")
        msg = status_field(s.statuses[-1], "message")
        assert "tandem.endpoint is empty" in msg and "Nothing is sent" in msg


def test_real_llama_server_without_logprobs(tiny_model):
    """llama-cpp-python started without --logits_all refuses logprobs: the backend asks again
    without them, completes, and leaves the confidence unknown instead of inventing it."""
    import pytest

    from tandem.model.openai_backend import load_remote
    from tests.llama_server import Unavailable, llama_server, tiny_gguf

    try:
        server = llama_server(tiny_gguf(), logprobs=False)
        url = server.__enter__()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        m = load_remote(str(tiny_model), "auto", url, "", None)
        ids = [m.fim.prefix, *m.codec.encode("def add(a, b):\n    "), m.fim.suffix, *m.codec.encode("\n"), m.fim.middle]
        g = m.lm.generate(ids, max_new_tokens=16, stop_ids=m.stop_ids)
        assert m.codec.decode(g.ids) == "return a + b" and g.logprobs == [] and not m.lm.want_logprobs
    finally:
        server.__exit__(None, None, None)
