"""The explainer's scheduling on the one inference thread, and what its prompts hold.

A fake language model with the same contract as CausalLM.generate (greedy, checks the cancel
flag between steps, raises Cancelled) answers a fixed sequence of words, so interrupted and
resumed explanations can be compared with ones written in one go.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tandem.completion.prompt import FimIds, build_fim_prompt
from tandem.model.backend import Cancelled, Generation
from tandem.provenance.explain import (Explainer, ModelUnavailable, Request, chat_messages, clean_plain,
                                       plain_prompt, request_for)

STOP = 0
FIRST = 100


class Codec:
    def encode(self, text):
        return [ord(c) % 90 + 1 for c in text]  # below FIRST: never answer tokens

    def decode(self, ids):
        return " ".join(f"w{i - FIRST}" for i in ids if i >= FIRST)


class FakeLM:
    """Answers words w0 .. w{length-1} then stops; `step_s` per token."""

    def __init__(self, length: int, step_s: float = 0.0):
        self.length, self.step_s = length, step_s
        self.calls: list[tuple[int, int]] = []  # (prompt length, max_new_tokens)
        self.cancelled = 0
        self.busy = threading.Lock()
        self.overlap = False

    def generate(self, prompt, *, max_new_tokens, stop_ids, cancel=None, stop_check=None, slot="completion"):
        if not self.busy.acquire(blocking=False):
            self.overlap = True
            self.busy.acquire()
        try:
            self.calls.append((len(prompt), max_new_tokens))
            ids, reason = [], "max_tokens"
            last = prompt[-1]
            for step in range(max_new_tokens):
                tok = last + 1 if last >= FIRST else FIRST
                if tok == FIRST + self.length:
                    reason = "stop_token"
                    break
                ids.append(tok)
                last = tok
                if stop_check is not None and stop_check(ids):
                    reason = "stop_text"
                    break
                if step == max_new_tokens - 1:
                    break
                time.sleep(self.step_s)
                if cancel is not None and cancel.is_set():
                    self.cancelled += 1
                    raise Cancelled()
            return Generation(ids, [0.0] * len(ids), reason, len(prompt), 0, 0.0, 0.0)
        finally:
            self.busy.release()


class FakeModel:
    def __init__(self, lm, chat=True):
        self.lm, self.codec, self.chat = lm, Codec(), chat
        self.fim = FimIds(91, 92, 93)
        self.stop_ids = {STOP}

    def encode_chat(self, messages, assistant_prefix=""):
        return [1, 2, 3] if self.chat else None

    def describe(self):
        return {"model": "fake", "precision": "fp32", "device": "cpu"}


def fixed(model):
    return lambda: model


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


REQ = Request("x = 1\n", name="a.py")


@pytest.fixture
def pool():
    ex = ThreadPoolExecutor(1)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


async def test_written_in_slices_of_a_few_tokens(pool):
    lm = FakeLM(20)
    ex = Explainer(fixed(FakeModel(lm)), pool, idle_s=0, slice_tokens=8)
    e = await ex.wait(ex.explain("k", REQ, background=False), 10)
    assert e.text == words(20) and e.tokens == 20 and e.style == "chat"
    assert [n for _, n in lm.calls] == [8, 8, 8]  # the thread is free between slices
    assert [p for p, _ in lm.calls] == [3, 11, 19]  # each slice continues the last one
    assert ex.cached("k") is e


async def test_a_completion_request_interrupts_background_work_which_resumes_unchanged(pool):
    lm = FakeLM(30, step_s=0.02)
    ex = Explainer(fixed(FakeModel(lm)), pool, idle_s=0.15, slice_tokens=8)
    job = ex.explain("k", REQ, background=True)
    await asyncio.sleep(0.05)
    assert lm.calls, "an idle server starts background work at once"
    ex.note_activity()  # a completion request arrives
    await asyncio.sleep(0.02)
    n = len(lm.calls)
    await asyncio.sleep(0.1)  # the user is still typing: nothing runs
    assert len(lm.calls) == n and lm.cancelled == 1
    e = await ex.wait(job, 10)
    assert e.text == words(30)  # the words written before the interruption were kept
    assert not lm.overlap


async def test_background_work_waits_for_idle(pool):
    lm = FakeLM(5)
    ex = Explainer(fixed(FakeModel(lm)), pool, idle_s=0.3)
    ex.note_activity()
    job = ex.explain("k", REQ, background=True)
    await asyncio.sleep(0.15)
    assert lm.calls == []
    e = await asyncio.wait_for(asyncio.shield(job.future), 5)
    assert e.text == words(5)


async def test_a_waiting_request_goes_first_even_while_typing(pool):
    lm = FakeLM(40, step_s=0.01)
    ex = Explainer(fixed(FakeModel(lm)), pool, idle_s=0.0, slice_tokens=4)
    background = ex.explain("bg", REQ, background=True)
    await asyncio.sleep(0.03)
    ex.idle_s = 10.0  # from now on the user counts as typing all the time
    ex.note_activity()
    e = await ex.wait(ex.explain("fg", Request("y = 2\n"), background=False), 10)
    assert e.text == words(40)
    assert not background.done  # waits for idle
    assert not lm.overlap


async def test_a_cancelled_request_stops_its_generation(pool):
    lm = FakeLM(100, step_s=0.05)
    ex = Explainer(fixed(FakeModel(lm)), pool, idle_s=0)
    job = ex.explain("k", REQ, background=False)
    waiter = asyncio.ensure_future(ex.wait(job, 30))
    await asyncio.sleep(0.12)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.15)
    assert lm.cancelled == 1 and job.future.cancelled()
    assert ex.job("k") is None and ex.cached("k") is None


async def test_a_timed_out_wait_leaves_the_job_running(pool):
    lm = FakeLM(12, step_s=0.02)
    ex = Explainer(fixed(FakeModel(lm)), pool, idle_s=0)
    job = ex.explain("k", REQ, background=True)
    assert await ex.wait(job, 0.05) is None
    assert (await ex.wait(job, 10)).text == words(12)


async def test_completion_form_when_there_is_no_chat_template_or_no_chat_answer(pool):
    ex = Explainer(fixed(FakeModel(FakeLM(3), chat=False)), pool, idle_s=0)
    e = await ex.wait(ex.explain("k", REQ, background=False), 10)
    assert e.style == "plain" and e.fallback == "no chat template"
    assert e.text == "It w0 w1 w2"

    ex = Explainer(fixed(FakeModel(FakeLM(0))), pool, idle_s=0)
    e = await ex.wait(ex.explain("k", REQ, background=False), 10)
    assert e.text == "" and e.style == "none"  # said so, not made up


async def test_no_model_says_so(pool):
    ex = Explainer(lambda: None, pool, idle_s=0)
    with pytest.raises(ModelUnavailable):
        await ex.wait(ex.explain("k", REQ, background=False), 5)


# -- prompts ----------------------------------------------------------------------------
def test_request_for_takes_whole_lines_of_context_and_records_them():
    text = "".join(f"line {i}\n" for i in range(40))
    start = text.index("line 30")
    end = text.index("line 32")
    req = request_for(text, start, end, "file:///w/a.py", "a.py")
    assert req.code == "line 30\nline 31\n"
    assert req.before == "".join(f"line {i}\n" for i in range(10, 30))
    assert req.after == "".join(f"line {i}\n" for i in range(32, 37))
    assert req.sources == [{"uri": "file:///w/a.py", "lines": [10, 36]}]
    mid = request_for(text, start + 2, start + 4, "u", "a.py")  # mid-line: the rest of the line too
    assert mid.before.endswith("line 29\nli") and mid.after.startswith(" 30\nline 31\n")


def test_prompts_show_the_code_and_ask_plainly():
    req = Request("return a + b", before="def add(a, b):\n    ", after="\n", name="m.py")
    user = chat_messages(req)[1]["content"]
    assert "```python\ndef add(a, b):\n    return a + b\n\n```" in user
    assert "Explain what this part does:\n```python\nreturn a + b\n```" in user
    assert plain_prompt(req).endswith("return a + b\n\n# What the code above does:\n# It")
    assert plain_prompt(Request("x", name="m.lua")).endswith("-- It")
    assert clean_plain(" adds two numbers.\n# Then returns.\n\ndef more():", "#") == "It adds two numbers. Then returns."


def test_the_engine_reports_what_its_prompt_covered_and_its_tokens(tiny_model):
    """Provenance records the prompt's lines and the token confidence from the engine's own
    prompt and tokens: the span is exactly build_fim_prompt's cut of the whole text."""
    from tandem.completion.engine import CompletionEngine
    from tandem.model.loaded import load_model
    from tandem.provenance.confidence import spans_of_ids
    from tandem.settings import Settings

    m = load_model(str(tiny_model), "cpu")
    text = "".join(f"def f{i}(a, b):\n    return a + b\n\n\n" for i in range(300)) + "def add(a, b):\n    \n"
    offset = len(text) - 1
    for budget in (64, 300):
        settings = Settings(contextTokens=budget)
        result = CompletionEngine(m).complete(text, offset, settings)
        full = build_fim_prompt(m.codec, m.fim, text[:offset - 4], text[offset:], budget, settings.prefixShare)
        assert (result.prompt_start, result.prompt_end) == (full.prefix_start, offset + full.suffix_end)
        assert text.count("\n", 0, result.prompt_start) % 16 == 0  # an aligned line, as the builder cuts
        spans = spans_of_ids(m.codec, result.token_ids, result.logprobs, skip=result.token_skip,
                             limit=len(result.text))
        assert spans and spans[0][0] == 0 and "".join(result.text[a:b] for a, b, _ in spans) == result.text

