"""Inline completions from the tiny real model through the real server, over stdio.

The tiny model was fine-tuned on models/data/tiny_corpus.py until it knows it by heart, so
what it should write at each place is known: the corpus itself.
"""
from __future__ import annotations

import asyncio
import re

import pytest
from lsprotocol import types

from tandem.text import utf16_len

from .harness import apply_inline as apply
from .harness import tandem

URI = "file:///tmp/tandem-test/example.py"


def cursor(src: str) -> tuple[str, int, int]:
    """`src` with a `|` marking the cursor -> text, line, UTF-16 column."""
    i = src.index("|")
    text = src[:i] + src[i + 1:]
    line = text.count("\n", 0, i)
    col = utf16_len(text[text.rfind("\n", 0, i) + 1:i])
    return text, line, col


@pytest.fixture
async def session(tiny_model, backend):
    async with tandem(settings={"modelPath": str(tiny_model), **backend}) as s:
        await s.wait_for_state("ready")
        s.check_backend(backend)
        yield s


async def test_empty_function_body_gets_its_body(session):
    text, line, col = cursor("def add(a, b):\n    |\n")
    session.open(URI, text)
    result = await session.complete(URI, line, col)
    item = result.items[0]
    assert item.insert_text == "return a + b"
    assert (item.range.start.line, item.range.start.character) == (line, col)
    assert item.range.end == item.range.start


async def test_multiline_block_is_written_and_trimmed_at_its_end(session):
    text, line, col = cursor("def factorial(n):\n    |\n\n\ndef greet(name):\n    return f\"Hello, {name}!\"\n")
    session.open(URI, text)
    item = (await session.complete(URI, line, col)).items[0]
    assert "\n" in item.insert_text
    assert apply(text, item).startswith(
        "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result\n")
    assert "def greet" not in item.insert_text  # stopped at the end of the block


async def test_mid_line_completion_fits_the_closing_brackets(session):
    head = "def fibonacci(n):\n    if n < 2:\n        return n\n"
    text, line, col = cursor(head + "    return fibonacci(n - 1) + fibonacci(|)\n")
    session.open(URI, text)
    item = (await session.complete(URI, line, col)).items[0]
    assert "\n" not in item.insert_text
    assert apply(text, item) == head + "    return fibonacci(n - 1) + fibonacci(n - 2)\n"


async def test_range_is_in_utf16_units_after_astral_characters(session):
    text, line, col = cursor("def add(a, b):\n    x = '😀😀'; return |\n")
    session.open(URI, text)
    result = await session.complete(URI, line, col)
    assert result.items, "expected a completion after `return`"
    item = result.items[0]
    assert col == len("    x = '😀😀'; return ") + 2  # each emoji is two UTF-16 units
    assert (item.range.start.line, item.range.start.character) == (line, col)


async def test_incremental_edits_are_followed(session):
    text, line, col = cursor("def subtract(a, b):\n    |\n")
    session.open(URI, text)
    # Rename the function through an incremental change, then ask again.
    session.change(URI, (0, 4), (0, 12), "add")
    item = (await session.complete(URI, 1, 4)).items[0]
    assert item.insert_text == "return a + b"


async def test_cancel_request_stops_the_decode_loop(tiny_model):
    env = {"TANDEM_DEBUG_DELAYS": "step=400"}  # 0.4 s per token: slow enough to cancel midway
    async with tandem(settings={"modelPath": str(tiny_model)}, env=env) as s:
        await s.wait_for_state("ready")
        text, line, col = cursor("def subtract(a, b):\n    |\n")
        s.open(URI, text)
        pending = s.complete_raw(URI, line, col, msg_id="slow-1")
        await asyncio.sleep(0.6)
        s.cancel("slow-1")
        with pytest.raises(Exception, match="(?i)cancel"):
            await asyncio.wait_for(pending, 10)
        await s.wait_for(lambda: any("generation cancelled" in m for m in s.logs()), 10, "cancel log")
        # A forward pass may carry drafted tokens (README "Drafts from the prompt"), so what
        # cancelling bounds is the passes, not the tokens.
        passes = int(re.search(r"cancelled after \d+ new tokens \((\d+) forward passes", next(
            m for m in s.logs() if "generation cancelled" in m)).group(1))
        assert passes <= 1  # cancelled after 0.6 s at 0.4 s a pass: within a pass of it
        # The inference thread is free again: a short completion comes straight back.
        s.open("file:///tmp/tandem-test/b.py", "def add(a, b):\n    ")
        item = (await s.complete("file:///tmp/tandem-test/b.py", 1, 4, timeout=15)).items[0]
        assert item.insert_text == "return a + b"


async def test_newer_request_for_the_same_document_cancels_the_older(tiny_model):
    env = {"TANDEM_DEBUG_DELAYS": "step=400"}
    async with tandem(settings={"modelPath": str(tiny_model)}, env=env) as s:
        await s.wait_for_state("ready")
        text = "def subtract(a, b):\n    \n\ndef add(a, b):\n    \n"
        s.open(URI, text)
        older = asyncio.ensure_future(s.complete(URI, 1, 4))
        await asyncio.sleep(0.6)
        newer = asyncio.ensure_future(s.complete(URI, 4, 4))
        older_result, newer_result = await asyncio.wait_for(asyncio.gather(older, newer), 30)
        assert older_result.items == []  # stale: dropped, not finished
        assert newer_result.items[0].insert_text == "return a + b"
        assert any("generation cancelled" in m for m in s.logs())
