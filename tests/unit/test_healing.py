"""Token healing: which prompt tokens to drop, the constraint on the first generated tokens,
and a greedy decode that honours it on the tiny real model (a thin masked loop here: the
runtime's own `constraint=` support is the lead's runtime rewrite)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tandem.completion import healing
from tandem.completion.healing import Healing, PrefixConstraint, VocabTable, backoff

# A hand-made vocabulary: id -> bytes (None: a special token).
PIECES = [None, b" ", b" S", b" Se", b" Session", b" Set", b"e", b"ss", b"ssion", b"x", b":", b"\xff", b"\xff\xfe",
          b"session"]


@pytest.fixture
def table() -> VocabTable:
    return VocabTable(list(PIECES))


def ids_of(*pieces: bytes) -> list[int]:
    return [PIECES.index(p) for p in pieces]


def spelled(table: VocabTable, ids) -> bytes:
    return b"".join(table.token_bytes[int(i)] for i in ids)


def test_tokens_starting_with_bytes_are_one_sorted_run(table):
    assert sorted(spelled(table, [i]) for i in table.starting_with(b" Se")) == [b" Se", b" Session", b" Set"]
    assert set(table.starting_with(b"\xff")) == set(ids_of(b"\xff", b"\xff\xfe"))  # no successor of 0xff
    assert table.extends(b" Se") and table.extends(b" ") and not table.extends(b" Session")
    assert not table.extends(b"zz")


def test_backoff_drops_a_token_the_text_could_still_extend(table):
    assert backoff(table, ids_of(b"session", b":", b" Se")) == Healing(1, " Se")
    assert backoff(table, ids_of(b"session", b":", b" Session")) == healing.NO_HEALING


def test_backoff_takes_the_longest_tail_some_token_extends(table):
    # ` S` + `e`: ` Se` starts ` Session`, so both tokens go.
    assert backoff(table, ids_of(b"x", b" S", b"e")) == Healing(2, " Se")


def test_backoff_never_crosses_a_special_token(table):
    assert backoff(table, [0, *ids_of(b" S")]) == Healing(1, " S")
    assert backoff(table, [0]) == healing.NO_HEALING
    assert backoff(table, []) == healing.NO_HEALING


def test_constraint_allows_tokens_that_write_the_dropped_text(table):
    c = PrefixConstraint(table, b" Se")
    first = {spelled(table, [i]) for i in c.allowed([])}
    assert first == {b" Se", b" Session", b" Set"}  # all of it, and maybe on: never ` S` + `e`
    assert c.allowed(ids_of(b" Session")) is None  # written: free from here on
    assert c.allowed(ids_of(b" Session", b"x")) is None


def test_constraint_falls_back_to_parts_when_no_token_writes_the_rest(table):
    c = PrefixConstraint(table, b" Seex")  # after ` Se`, no token starts with `ex`: write `e`
    assert {spelled(table, [i]) for i in c.allowed(ids_of(b" Se"))} == {b"e"}
    assert {spelled(table, [i]) for i in c.allowed(ids_of(b" Se", b"e"))} == {b"x"}
    assert c.allowed(ids_of(b" Se", b"e", b"x")) is None


def test_constraint_gives_up_when_the_loop_did_not_honour_it(table):
    c = PrefixConstraint(table, b" Se")
    assert c.allowed(ids_of(b"x")) is None
    assert PrefixConstraint.for_healing(table, healing.NO_HEALING) is None


# -- the tiny model's real tokenizer -----------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_model):
    from tandem.model.loaded import load_model

    return load_model(str(tiny_model), "cpu")


PARTIAL = ["    return fibon", "def fact", "        result *= ", "class Sta", "    for word in text.sp"]


@pytest.mark.parametrize("text", PARTIAL)
def test_healing_on_the_tiny_tokenizer_keeps_the_text(tiny, text):
    ids, heal = healing.heal_text(tiny.codec, text)
    assert heal.drop >= 1  # each ends inside a word or on a space some token goes on from
    kept = ids[:len(ids) - heal.drop]
    assert tiny.codec.decode(kept) + heal.text == text
    table = healing.vocab_table(tiny.codec)
    allowed = PrefixConstraint(table, heal.required).allowed([])
    assert len(allowed) > 0
    for i in allowed:
        assert table.token_bytes[int(i)].startswith(heal.required)


def test_vocab_table_is_built_once_per_tokenizer(tiny):
    assert healing.vocab_table(tiny.codec) is healing.vocab_table(tiny.codec)
    table = healing.vocab_table(tiny.codec)
    # Special tokens (FIM markers, end of text) never spell text, so they are never allowed.
    assert table.token_bytes[tiny.fim.middle] is None and all(table.token_bytes[i] is None for i in tiny.stop_ids)


def masked_greedy(lm, prompt: list[int], constraint, max_new: int, stop_ids) -> list[int]:
    """Today's model, decoded greedily with the constraint's mask applied before each pick
    (full forward per step: the tiny model makes that cheap)."""
    ids: list[int] = []
    for _ in range(max_new):
        last = lm.forward_logits(prompt + ids)[-1].astype(np.float64)
        allowed = constraint.allowed(ids) if constraint is not None else None
        if allowed is not None:
            masked = np.full_like(last, -np.inf)
            masked[allowed] = last[allowed]
            last = masked
        tok = int(last.argmax())
        if tok in stop_ids:
            break
        ids.append(tok)
    return ids


def test_healed_decode_writes_the_dropped_text_then_continues_the_word(tiny):
    from tandem.completion.prompt import build_fim_prompt

    prefix = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibon"
    suffix = "\n\n\ndef factorial(n):\n    result = 1\n"
    p = build_fim_prompt(tiny.codec, tiny.fim, prefix, suffix, 256, 0.7)
    end = 1 + p.prefix_tokens
    table = healing.vocab_table(tiny.codec)
    heal = backoff(table, p.ids[1:end])
    assert heal.drop >= 1 and prefix.endswith(heal.text)
    ids = masked_greedy(tiny.lm, p.ids[:end - heal.drop] + p.ids[end:], PrefixConstraint.for_healing(table, heal),
                        12, tiny.stop_ids)
    text = tiny.codec.decode(ids)
    assert text.startswith(heal.text)  # the mask was honoured
    line = (prefix + text[len(heal.text):]).split("\n")[3]
    assert line.startswith("    return fibonacci("), line


class ConstrainedLM:
    """Today's runtime plus the `constraint=` parameter the new decode loop will accept."""
    supports_constraint = True

    def __init__(self, lm):
        self.lm, self.calls = lm, []

    def generate(self, prompt, *, max_new_tokens, stop_ids, cancel=None, stop_check=None, constraint=None,
                 slot="completion"):
        from tandem.model.runtime import Generation

        self.calls.append((list(prompt), constraint))
        ids = []
        for tok in masked_greedy(self.lm, list(prompt), constraint, max_new_tokens, stop_ids):
            ids.append(tok)
            if stop_check is not None and stop_check(ids):
                break
        return Generation(ids, [0.0] * len(ids), "stop_text", len(prompt), 0, 0.0, 0.0)


def test_engine_heals_when_the_runtime_supports_constraints(tiny):
    from tandem.completion.engine import CompletionEngine
    from tandem.settings import Settings

    text = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibon\n\n\ndef factorial(n):\n    pass\n"
    offset = text.index("fibon\n") + len("fibon")
    shim = ConstrainedLM(tiny.lm)
    result = CompletionEngine(dataclasses.replace(tiny, lm=shim)).complete(text, offset, Settings())
    prompt, constraint = shim.calls[0]
    assert constraint is not None and constraint.required == b" fibon"
    assert prompt[-1] == tiny.fim.middle and len(prompt) == result.prompt_tokens
    assert result is not None and result.text.startswith("acci(")
    assert result.token_skip >= len(constraint.required)  # the rewritten part is not shown again


class PlainLM:
    """A runtime whose decode loop has no `constraint=` (no `supports_constraint`)."""

    def __init__(self, lm):
        self.lm, self.seen = lm, []

    def generate(self, prompt, **kw):
        self.seen.append((list(prompt), kw))
        kw.pop("constraint", None)
        return self.lm.generate(prompt, **kw)


def test_engine_does_not_heal_without_runtime_support(tiny):
    from tandem.completion.engine import CompletionEngine
    from tandem.completion.prompt import build_fim_prompt
    from tandem.settings import Settings

    plain = PlainLM(tiny.lm)
    text = "def fact\n"
    CompletionEngine(dataclasses.replace(tiny, lm=plain)).complete(text, len("def fact"), Settings())
    (prompt, kw), = plain.seen
    assert "constraint" not in kw
    full = build_fim_prompt(tiny.codec, tiny.fim, "def fact", "\n", Settings().contextTokens, Settings().prefixShare)
    assert prompt == full.ids  # nothing dropped


def test_healing_can_be_switched_off_for_the_evaluation(tiny, monkeypatch):
    from tandem.completion.engine import CompletionEngine
    from tandem.settings import Settings

    monkeypatch.setenv("TANDEM_EVAL_RULES_OFF", "heal")
    shim = ConstrainedLM(tiny.lm)
    CompletionEngine(dataclasses.replace(tiny, lm=shim)).complete("def fact\n", len("def fact"), Settings())
    assert shim.calls[0][1] is None
