"""The OpenAI-compatible backend against a local HTTP server that misbehaves on purpose
(tests/fake_openai.py): real sockets, real SSE. Every wait is bounded."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from tandem.model.backend import BackendError, Cancelled, Sampling
from tandem.model.openai_backend import OpenAIBackend, display_url, normalize_endpoint
from tests.fake_openai import FakeServer, Script, free_port

KEY = "sk-test-SECRET-0123456789"


class CharCodec:
    """One token per character: ids are code points (enough to check alignment exactly)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


def backend(url: str, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("read_timeout", 5.0)
    kw.setdefault("connect_timeout", 1.0)
    return OpenAIBackend(url, "tiny", CharCodec(), api_key=KEY, special_texts={0: "<|endoftext|>"}, **kw)


def gen(lm: OpenAIBackend, **kw):
    kw.setdefault("max_new_tokens", 32)
    kw.setdefault("stop_ids", {0})
    return lm.generate([1, 2, 3], **kw)


def test_streams_text_ids_and_logprobs_with_the_prompt_as_token_ids():
    script = Script({"pieces": ["def", " f(", "x):"]})
    with FakeServer(script) as srv:
        g = gen(backend(srv.url + "/v1/"))
    assert g.ids == [ord(c) for c in "def f(x):"]
    assert g.logprobs == [-0.25] * len("def f(x):")
    assert g.stop_reason == "stop_token"
    body, headers = script.requests[0], script.headers[0]
    assert body["prompt"] == [1, 2, 3] and body["stream"] is True and body["temperature"] == 0.0
    assert body["model"] == "tiny" and body["max_tokens"] == 32 and body["stop"] == ["<|endoftext|>"]
    assert headers["authorization"] == f"Bearer {KEY}"


def test_sampling_is_passed_on():
    script = Script({"pieces": ["a"]})
    with FakeServer(script) as srv:
        gen(backend(srv.url), sampling=Sampling(temperature=0.8, top_p=0.9, seed=7))
    body = script.requests[0]
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.8, 0.9, 7) and "top_k" not in body


def test_vllm_token_ids_are_taken_exactly():
    script = Script({"pieces": ["ab", "c"], "logprobs": "ids"})
    with FakeServer(script) as srv:
        g = gen(backend(srv.url))
    assert g.ids == [97, 98, 99] and g.logprobs == [-0.1] * 3 and g.timings["exact_ids"]


def test_without_logprobs_they_are_unknown_not_invented():
    script = Script({"pieces": ["x = 1"], "logprobs": False})
    with FakeServer(script) as srv:
        g = gen(backend(srv.url))
    assert g.ids == [ord(c) for c in "x = 1"] and g.logprobs == []


def test_stop_check_closes_the_stream_early():
    script = Script({"pieces": [str(i % 10) for i in range(60)], "delay_each": 0.03})
    with FakeServer(script) as srv:
        t0 = time.perf_counter()
        g = gen(backend(srv.url), stop_check=lambda ids: len(ids) >= 3)
        took = time.perf_counter() - t0
        deadline = time.monotonic() + 5
        while not script.chunks_sent and time.monotonic() < deadline:
            time.sleep(0.02)
    assert g.ids == [ord("0"), ord("1"), ord("2")] and g.stop_reason == "stop_text"
    assert took < 1.0, took  # not the 1.8 s the whole stream takes
    assert script.chunks_sent and script.chunks_sent[0] < 60 and script.disconnects == 1


def test_cancel_while_the_server_is_silent_returns_at_once():
    script = Script({"pieces": ["late"], "delay_first": 8})
    cancel = threading.Event()
    with FakeServer(script) as srv:
        lm = backend(srv.url, read_timeout=30)
        threading.Timer(0.2, cancel.set).start()
        t0 = time.perf_counter()
        with pytest.raises(Cancelled):
            gen(lm, cancel=cancel)
        assert time.perf_counter() - t0 < 1.5


def test_cancel_flag_checked_per_chunk():
    script = Script({"pieces": ["a"] * 100, "delay_each": 0.02})
    cancel = threading.Event()
    seen = []

    def check(ids):
        seen.append(len(ids))
        if len(ids) == 5:
            cancel.set()
        return False

    with FakeServer(script) as srv:
        with pytest.raises(Cancelled):
            gen(backend(srv.url), cancel=cancel, stop_check=check, max_new_tokens=200)
    assert max(seen) <= 6


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_a_clear_error_without_the_key_and_no_retry(status, caplog):
    script = Script({"status": status, "body": {"error": {"message": f"bad key {KEY}"}}})
    with FakeServer(script) as srv, caplog.at_level(logging.DEBUG):
        with pytest.raises(BackendError) as e:
            gen(backend(srv.url))
    msg = str(e.value)
    assert f"HTTP {status}" in msg and "API key" in msg and KEY not in msg
    assert len(script.requests) == 1
    assert KEY not in caplog.text


def test_429_and_5xx_are_retried_with_backoff_then_succeed():
    script = Script({"status": 429, "headers": {"Retry-After": "0"}}, {"status": 503}, {"pieces": ["ok"]})
    with FakeServer(script) as srv:
        g = gen(backend(srv.url))
    assert g.ids == [ord("o"), ord("k")] and len(script.requests) == 3


def test_retries_are_bounded():
    script = Script({"status": 500})
    with FakeServer(script) as srv:
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match="HTTP 500"):
            gen(backend(srv.url, retries=2))
        assert time.perf_counter() - t0 < 3
    assert len(script.requests) == 3


def test_wrong_model_name_says_so():
    script = Script({"status": 404, "body": {"error": {"message": "The model `nope` does not exist."}}})
    with FakeServer(script) as srv:
        with pytest.raises(BackendError, match="404.*tandem.apiModel"):
            gen(backend(srv.url))


def test_malformed_json_is_an_error_not_garbage():
    script = Script({"pieces": ["good", "bad"], "malformed": 1})
    with FakeServer(script) as srv:
        with pytest.raises(BackendError, match="malformed JSON"):
            gen(backend(srv.url))


def test_a_stream_cut_midway_is_an_error_not_a_partial_completion():
    script = Script({"pieces": ["par", "tial", "never"], "cut_after": 2})
    with FakeServer(script) as srv:
        with pytest.raises(BackendError, match="stream"):
            gen(backend(srv.url))


def test_a_server_that_refuses_token_ids_gets_text_with_special_tokens():
    script = Script({"pieces": ["ok"], "refuse_ids": True})
    with FakeServer(script) as srv:
        lm = OpenAIBackend(srv.url, "tiny", CharCodec(), render_text=lambda ids: "<|fim_prefix|>" + "".join(map(str, ids)))
        g = gen(lm)
        assert g.ids == [ord("o"), ord("k")] and not lm.ids_prompt
        gen(lm)  # remembered: no second refusal
    assert [type(r["prompt"]).__name__ for r in script.requests] == ["list", "str", "str"]
    assert script.requests[1]["prompt"] == "<|fim_prefix|>123"


def test_a_slow_endpoint_times_out_with_a_message():
    script = Script({"pieces": ["late"], "delay_first": 3})
    with FakeServer(script) as srv:
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match="did not answer in time"):
            gen(backend(srv.url, read_timeout=0.3, retries=1))
        assert time.perf_counter() - t0 < 2.5


def test_endpoint_down_fails_fast_then_recovers_when_it_comes_back():
    port = free_port()
    lm = backend(f"http://127.0.0.1:{port}", retries=1, health_retry_s=0.3)
    with pytest.raises(BackendError, match="unreachable") as e:
        gen(lm)
    assert KEY not in str(e.value) and not lm.healthy
    t0 = time.perf_counter()
    with pytest.raises(BackendError):
        gen(lm)  # within health_retry_s: no network attempt at all
    assert time.perf_counter() - t0 < 0.05
    with FakeServer(Script({"pieces": ["back"]}), port=port):
        deadline = time.monotonic() + 5
        while True:
            try:
                g = gen(lm)
                break
            except BackendError:
                assert time.monotonic() < deadline, "did not recover"
                time.sleep(0.1)
    assert g.ids == [ord(c) for c in "back"] and lm.healthy


def test_urls():
    assert normalize_endpoint("http://h:8000/v1/") == "http://h:8000"
    assert normalize_endpoint(" https://h/api ") == "https://h/api"
    with pytest.raises(ValueError):
        normalize_endpoint("ftp://h")
    with pytest.raises(ValueError):
        normalize_endpoint("localhost:8000")
    assert display_url("https://user:pw@h:9/v1") == "https://h:9/v1"


def test_no_proxy_from_the_environment(monkeypatch):
    """trust_env is off: HTTP(S)_PROXY does not divert requests to the endpoint."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would fail every request
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with FakeServer(Script({"pieces": ["direct"]})) as srv:
        assert gen(backend(srv.url)).ids == [ord(c) for c in "direct"]


def test_load_remote_reads_only_the_local_tokenizer_and_checks_the_server(tiny_model, tmp_path):
    import shutil

    from tandem.model.openai_backend import load_remote

    # A model directory with the tokenizer, manifest and template but no weights at all.
    variant = next(p for p in tiny_model.iterdir() if (p / "tandem-model.json").exists())
    only = tmp_path / "tokenizer-only"
    only.mkdir()
    for name in ("tandem-model.json", "tokenizer.json", "chat_template.jinja"):
        shutil.copy(variant / name, only / name)
    script = Script({"pieces": ["x"]})
    with FakeServer(script) as srv:
        m = load_remote(str(only), "auto", srv.url, "", KEY)
        assert m.device == "remote" and m.lm.model == "tiny" and m.chat is not None
        assert "could not check" in m.note.lower()  # no tokenize endpoint here: said, not assumed silently
        script.tokenize = m.codec.encode("something else")
        m2 = load_remote(str(only), "auto", srv.url, "tiny", KEY)
        assert "tokenizes text differently" in m2.note
        from tandem.model.openai_backend import PROBE_TEXT
        script.tokenize = m.codec.encode(PROBE_TEXT)
        assert load_remote(str(only), "auto", srv.url, "tiny", KEY).note is None
        assert "tandem-tiny-test" not in m.describe()["model"] and "served at" in m.describe()["precision"]


def test_load_remote_refuses_without_an_endpoint_or_a_tokenizer(tmp_path):
    from tandem.model.loader import ModelError
    from tandem.model.openai_backend import load_remote

    with pytest.raises(ModelError, match="endpoint is empty"):
        load_remote(None, "auto", "", "", None)
    with pytest.raises(ModelError, match="tokenizer of a local model"):
        load_remote(str(tmp_path / "nowhere"), "auto", "http://127.0.0.1:9", "", None)


def test_load_remote_with_the_endpoint_down_still_loads_and_says_so(tiny_model):
    from tandem.model.openai_backend import load_remote

    m = load_remote(str(tiny_model), "auto", f"http://127.0.0.1:{free_port()}", "m", KEY)
    assert "unreachable" in m.note and KEY not in m.note and not m.lm.healthy


def test_a_server_that_refuses_logprobs_is_asked_without_them_and_confidence_is_unknown(caplog):
    script = Script({"pieces": ["ok"], "refuse_logprobs": True, "logprobs": False})
    with FakeServer(script) as srv, caplog.at_level(logging.WARNING):
        lm = backend(srv.url)
        g = gen(lm)
        gen(lm)
    assert g.ids == [ord("o"), ord("k")] and g.logprobs == [] and not lm.want_logprobs
    assert [("logprobs" in r) for r in script.requests] == [True, False, False]  # refused once, remembered
    assert sum("log-probabilities" in m for m in caplog.messages) == 1
