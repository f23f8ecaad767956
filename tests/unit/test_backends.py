"""The two inference backends behind the seam (tandem/model/backend.py), on the tiny real model:
onnxruntime-genai over the builder's graph (the default) and a raw onnxruntime session over
the optimum export. Same weights, so they must agree; and the serving behaviour the editor
features rely on (KV reuse, cache slots, cancellation, sampling, constraints) must hold."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from tandem.model import genai
from tandem.model.backend import BackendError, Cancelled, Sampling
from tandem.model.genai import GenaiLM
from tandem.model.loaded import TextCodec, load_model
from tandem.model.runtime import CausalLM

PROMPTS = ["def add(a, b):\n    ", "class Stack:\n    def __init__(self):\n        ", "import os\n\ndef "]


@pytest.fixture(scope="module")
def tiny(tiny_model: Path):
    manifest = json.loads((tiny_model / "cpu-fp32" / "tandem-model.json").read_text())
    from tokenizers import Tokenizer
    codec = TextCodec(Tokenizer.from_file(str(tiny_model / "cpu-fp32" / "tokenizer.json")))
    fim = manifest["tokenizer"]["fim_ids"]
    stop = set(manifest["tokenizer"]["stop_ids"])

    def fim_prompt(prefix: str, suffix: str = "") -> list[int]:
        return [fim["prefix"], *codec.encode(prefix), fim["suffix"], *codec.encode(suffix), fim["middle"]]
    return tiny_model, fim_prompt, stop


def test_genai_graph_agrees_with_the_optimum_export(tiny):
    bundle, fim_prompt, stop = tiny
    g = GenaiLM(bundle / "cpu-fp32", "cpu")
    o = CausalLM(bundle / "onnx-fp32" / "model.onnx", ["CPUExecutionProvider"])
    for text in PROMPTS:
        ids = fim_prompt(text)
        last_g = g.forward_logits(ids)
        last_o = o.forward_logits(ids)[-1:]
        assert last_g.shape == last_o.shape  # the builder's graph computes the last position only
        assert np.abs(last_g - last_o).max() < 1e-3
        a = g.generate(ids, max_new_tokens=24, stop_ids=stop)
        b = o.generate(ids, max_new_tokens=24, stop_ids=stop)
        assert a.ids == b.ids and a.ids, text
        assert np.allclose(a.logprobs, b.logprobs, atol=1e-3)


def test_default_bundle_serves_with_genai(tiny_model: Path):
    model = load_model(str(tiny_model), "cpu")
    assert isinstance(model.lm, GenaiLM) and model.device == "cpu"
    ids = [model.fim.prefix, *model.codec.encode("def add(a, b):\n    "), model.fim.suffix, model.fim.middle]
    gen = model.lm.generate(ids, max_new_tokens=12, stop_ids=model.stop_ids)
    assert model.codec.decode(gen.ids).startswith("return a + b")


def test_kv_reuse_between_requests_gives_the_same_tokens(tiny):
    bundle, fim_prompt, stop = tiny
    warm, cold = GenaiLM(bundle / "cpu-int8", "cpu"), GenaiLM(bundle / "cpu-int8", "cpu")
    first = fim_prompt("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        ")
    warm.generate(first, max_new_tokens=8, stop_ids=stop)
    # One more typed character: the prompt shares everything up to the cursor.
    second = fim_prompt("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        s")
    a = warm.generate(second, max_new_tokens=16, stop_ids=stop)
    b = cold.generate(second, max_new_tokens=16, stop_ids=stop)
    assert a.reused_tokens > len(second) // 2 and b.reused_tokens == 0
    assert a.ids == b.ids
    # A prompt that diverges early rewinds the cache and still decodes correctly.
    third = fim_prompt("import os\n\ndef ")
    assert warm.generate(third, max_new_tokens=16, stop_ids=stop).ids == cold.generate(
        third, max_new_tokens=16, stop_ids=stop).ids


def test_cache_slots_do_not_evict_each_other(tiny):
    bundle, fim_prompt, stop = tiny
    lm = GenaiLM(bundle / "cpu-int8", "cpu")
    completion = fim_prompt("def add(a, b):\n    ")
    lm.generate(completion, max_new_tokens=4, stop_ids=stop, slot="completion")
    lm.generate(fim_prompt("import os\n\ndef "), max_new_tokens=4, stop_ids=stop, slot="explain")
    again = lm.generate(completion, max_new_tokens=4, stop_ids=stop, slot="completion")
    assert again.reused_tokens == len(completion) - 1  # only the last prompt token is re-run


@pytest.mark.parametrize("backend", ["genai", "optimum"])
def test_cancel_stops_within_one_step(tiny, backend):
    bundle, fim_prompt, stop = tiny
    lm = GenaiLM(bundle / "cpu-int8", "cpu") if backend == "genai" else CausalLM(
        bundle / "onnx-fp32" / "model.onnx", ["CPUExecutionProvider"])
    cancel = threading.Event()
    seen = []

    def stop_check(ids):  # the editor cancels while the third token is being produced
        seen.append(len(ids))
        if len(ids) == 3:
            cancel.set()
        return False
    with pytest.raises(Cancelled):
        lm.generate(fim_prompt("import os\n\ndef "), max_new_tokens=50, stop_ids=set(), cancel=cancel,
                    stop_check=stop_check)
    assert seen == [1, 2, 3]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):  # before the prefill's first pass
        lm.generate(fim_prompt("x = 1\n"), max_new_tokens=5, stop_ids=set(), cancel=cancel)
    # The backend still serves after a cancel, from a cache it can trust.
    ok = lm.generate(fim_prompt("def add(a, b):\n    "), max_new_tokens=6, stop_ids=stop)
    assert ok.ids


def test_seeded_sampling_repeats_and_logprobs_are_the_models(tiny):
    bundle, fim_prompt, stop = tiny
    lm = GenaiLM(bundle / "cpu-int8", "cpu")
    ids = fim_prompt("import os\n\ndef ")
    s = Sampling(temperature=1.5, top_p=1.0, seed=7)
    a = lm.generate(ids, max_new_tokens=12, stop_ids=set(), sampling=s)
    b = lm.generate(ids, max_new_tokens=12, stop_ids=set(), sampling=s)
    assert a.ids == b.ids and len(a.ids) == 12
    assert all(lp <= 0 for lp in a.logprobs) and len(a.logprobs) == len(a.ids)


def test_constraint_restricts_the_next_tokens(tiny):
    bundle, fim_prompt, stop = tiny
    lm = GenaiLM(bundle / "cpu-int8", "cpu")
    ids = fim_prompt("def add(a, b):\n    ")
    free = lm.generate(ids, max_new_tokens=3, stop_ids=stop)

    class FirstTwo:  # force two tokens the model would not choose, then let it go
        forced = [t for t in range(20, 40) if t not in free.ids][:2]

        def allowed(self, generated):
            return np.array([self.forced[len(generated)]]) if len(generated) < 2 else None
    got = lm.generate(ids, max_new_tokens=4, stop_ids=stop, constraint=FirstTwo())
    assert got.ids[:2] == FirstTwo.forced


def test_slot_grows_for_long_prompts_and_refuses_past_the_context(tiny, monkeypatch):
    bundle, fim_prompt, stop = tiny
    monkeypatch.setitem(genai.DEFAULT_MAX_LENGTH, "cpu", 64)
    lm = GenaiLM(bundle / "cpu-int8", "cpu", context_length=2048)
    short = fim_prompt("x = 1\n")
    lm.generate(short, max_new_tokens=4, stop_ids=stop)
    assert lm._slots["completion"].max_length == 64
    long = fim_prompt("x = 1\n" * 60)
    assert lm.generate(long, max_new_tokens=4, stop_ids=stop).prompt_tokens == len(long)
    assert lm._slots["completion"].max_length >= len(long) + 4
    with pytest.raises(ValueError, match="context"):
        lm.generate(fim_prompt("x = 1\n" * 600), max_new_tokens=4, stop_ids=stop)


def test_a_runtime_failure_is_a_backend_error(tiny):
    bundle, fim_prompt, stop = tiny
    lm = GenaiLM(bundle / "cpu-int8", "cpu")
    ids = fim_prompt("def add(a, b):\n    ")
    want = GenaiLM(bundle / "cpu-int8", "cpu").generate(ids, max_new_tokens=6, stop_ids=stop).ids
    lm.generate(ids[:5], max_new_tokens=2, stop_ids=stop)  # something in the cache first
    with pytest.raises(BackendError):
        lm.generate(ids[:5] + [10**6], max_new_tokens=2, stop_ids=stop)  # a token outside the vocabulary
    # The next request gets a cache it can trust: the same tokens as a fresh backend.
    assert lm.generate(ids, max_new_tokens=6, stop_ids=stop).ids == want


def test_model_size_chooses_the_default_model(tmp_path, monkeypatch):
    from tandem.model.loaded import default_model_for
    from tandem.settings import parse_settings
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))
    assert default_model_for("auto", "cpu") is None  # the built-in default, 0.5B
    assert default_model_for("auto", "cuda") is None  # the 1.5B is not built here
    big = tmp_path / "models" / "qwen2.5-coder-1.5b-instruct"
    (big / "cuda-fp16").mkdir(parents=True)
    (big / "cuda-fp16" / "tandem-model.json").write_text("{}")
    (big / "tandem-bundle.json").write_text('{"variants": {"cuda": "cuda-fp16"}}')
    assert default_model_for("auto", "cuda") == str(big)
    assert default_model_for("auto", "cpu") is None  # GPU-only: a CPU keeps the 0.5B
    assert default_model_for("0.5b", "cuda").endswith("qwen2.5-coder-0.5b-instruct")
    s, errors = parse_settings({"modelSize": "7b"})
    assert s.modelSize == "auto" and "modelSize" in errors[0]
    assert parse_settings({"modelSize": "1.5b"})[0].restart_needed(parse_settings({})[0])


def test_physical_cores_counts_the_cores_this_process_may_use():
    import os
    from tandem.model.backend import physical_cores
    n = physical_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))


# -- speculative decoding with drafts from the prompt ---------------------------------------
REPEATING = "def f(x):\n    return x + 1\n\n\ndef g(x):\n    return x + 1\n\n\ndef h(x):\n    return x + 1\n\n\ndef "


def test_prompt_lookup_proposes_what_followed_the_last_ngram():
    from tandem.model.lookup import PromptLookup
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 1, 2], limit=4)
    assert lookup.propose([], room=10) == [3, 4, 5, 9]  # (1, 2) occurred at the start
    assert lookup.propose([3], room=10) == [4, 5, 9, 1]  # now (1, 2, 3): the longer match
    assert lookup.propose([3], room=2) == [4, 5]  # never past the tokens still to generate
    assert lookup.propose([3, 7], room=10) == []  # (3, 7) and (2, 3, 7) never occurred
    assert lookup.propose([3, 7, 1, 2], room=10) == [3, 7, 1, 2]  # the most recent occurrence wins
    assert PromptLookup([5, 6], limit=4).propose([], room=4) == []
    # Adaptive length: a miss shrinks the next draft to one more than what was kept; a draft
    # kept whole lets the next grow by two, up to the limit + 3.
    lookup = PromptLookup(list(range(1, 30)) + [1, 2], limit=4)
    assert len(lookup.propose([], room=50)) == 4
    lookup.outcome(4, 0)
    assert lookup.propose([], room=50) == [3]
    lookup.outcome(1, 1)
    lookup.outcome(3, 3)
    lookup.outcome(5, 5)
    assert lookup.propose([], room=50) == list(range(3, 10))
    # What the cache held before (e.g. the answer shown before Enter) is searched first.
    lookup = PromptLookup([1, 2, 3, 4, 1, 2], limit=4, prior=[9, 1, 2, 7, 8])
    assert lookup.propose([], room=10) == [7, 8]
    assert lookup.propose([7], room=10) == [8]  # (2, 7) only occurs there
    assert PromptLookup([1, 2, 3, 4, 1, 2], limit=4, prior=[5, 1, 2]).propose([], room=10) == [3, 4, 1, 2]


def _pair(directory: Path):
    """The same graph with drafting on and off."""
    on, off = GenaiLM(directory, "cpu"), GenaiLM(directory, "cpu")
    off.draft_tokens = 0
    assert on.draft_tokens > 0  # the pipeline gave the graph its logits_tail output
    return on, off


def test_the_logits_tail_output_is_every_positions_logits(tiny):
    bundle, fim_prompt, stop = tiny
    from tandem_models.genai_build import add_logits_tail
    assert not add_logits_tail(bundle / "cpu-fp32")  # already there: the build added it once
    lm = GenaiLM(bundle / "cpu-fp32", "cpu")
    ref = CausalLM(bundle / "onnx-fp32" / "model.onnx", ["CPUExecutionProvider"])
    ids = fim_prompt(REPEATING)
    slot = lm._slot("completion", len(ids) + 8)
    lm._append(slot, ids[:-6], False)
    rows = lm._verify(slot, ids[-6:])  # six positions in one pass
    assert rows.shape == (6, ref.forward_logits(ids).shape[-1])
    assert np.abs(rows - ref.forward_logits(ids)[-6:]).max() < 1e-3
    lm._drop(slot, 4)
    assert slot.generator.token_count() == len(slot.ids) == len(ids) - 4
    assert np.abs(lm._verify(slot, ids[-4:])[-1] - rows[-1]).max() < 1e-4  # the cache forgot them


def test_teacher_forced_scores_match_the_models_own_answer_and_the_reference(tiny):
    """GenaiLM.score (the held-out loss through the served graph): on the model's own greedy
    answer every position's first choice is that answer's token and its log-probability is the
    one generation reported; against the optimum export's logits, every position agrees,
    across several passes of the logits_tail's width."""
    bundle, fim_prompt, stop = tiny
    lm = GenaiLM(bundle / "cpu-fp32", "cpu")
    ref = CausalLM(bundle / "onnx-fp32" / "model.onnx", ["CPUExecutionProvider"])
    for text in (REPEATING, *PROMPTS):
        ids = fim_prompt(text)
        g = lm.generate(ids, max_new_tokens=40, stop_ids=set())
        logprobs, picks = lm.score(ids + g.ids, len(ids))
        assert picks == g.ids and len(g.ids) > genai.TAIL_POSITIONS
        assert np.allclose(logprobs, g.logprobs, atol=1e-3)
    ids = fim_prompt(REPEATING) + g.ids
    logits = ref.forward_logits(ids)
    top = logits.max(-1, keepdims=True)
    want = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    logprobs, picks = lm.score(ids, 1)
    assert np.abs(np.array(logprobs) - want[np.arange(len(ids) - 1), ids[1:]]).max() < 1e-3
    assert picks == list(want[:-1].argmax(-1))
    with pytest.raises(ValueError):
        lm.score(ids, len(ids))
    off = GenaiLM(bundle / "cpu-fp32", "cpu")
    off.draft_tokens = 0  # drafting off does not take the output away
    assert off.score(ids, len(ids) - 3)[1] == picks[-3:]
    # In a cache slot: what it holds of the ids is reused (the last completion's prompt), the
    # figures are the same, and the slot's cache matches its ids afterwards.
    prompt = fim_prompt(REPEATING)
    g = lm.generate(prompt, max_new_tokens=6, stop_ids=set())
    slot = lm._slots["completion"]
    again = lm.score(prompt + g.ids, len(prompt), slot="completion")
    assert again[1] == g.ids and np.allclose(again[0], g.logprobs, atol=1e-3)
    assert slot.generator.token_count() == len(slot.ids) == len(prompt) + len(g.ids) - 1


@pytest.mark.parametrize("variant", ["cpu-fp32", "cpu-int8"])
def test_drafts_from_the_prompt_save_passes_and_keep_the_answer(tiny, variant):
    bundle, fim_prompt, stop = tiny
    on, off = _pair(bundle / variant)
    for text in (REPEATING, *PROMPTS):
        ids = fim_prompt(text)
        a = on.generate(ids, max_new_tokens=24, stop_ids=stop)
        b = off.generate(ids, max_new_tokens=24, stop_ids=stop)
        assert a.ids == b.ids, text
        assert np.allclose(a.logprobs, b.logprobs, atol=0.05 if variant == "cpu-int8" else 1e-3)
        slot = on._slots["completion"]
        assert slot.generator.token_count() == len(slot.ids)  # rejected drafts left the cache
        assert "drafted" not in b.timings
    a = on.generate(fim_prompt(REPEATING), max_new_tokens=24, stop_ids=stop)
    assert a.timings["draft_accepted"] > 0 and a.timings["decode_passes"] < len(a.ids)


def test_sampling_and_constraints_pick_the_same_tokens_with_drafts(tiny):
    bundle, fim_prompt, stop = tiny
    on, off = _pair(bundle / "cpu-fp32")
    ids = fim_prompt(REPEATING)
    s = Sampling(temperature=0.7, top_p=0.95, seed=3)
    assert on.generate(ids, max_new_tokens=20, stop_ids=set(), sampling=s).ids == \
        off.generate(ids, max_new_tokens=20, stop_ids=set(), sampling=s).ids
    free = off.generate(ids, max_new_tokens=8, stop_ids=set()).ids

    class Swerve:  # a token the model would not choose at step 3: a pending draft is wrong there
        forced = next(t for t in range(20, 60) if t != free[3])

        def allowed(self, generated):
            return np.array([self.forced]) if len(generated) == 3 else None
    a = on.generate(ids, max_new_tokens=12, stop_ids=set(), constraint=Swerve())
    b = off.generate(ids, max_new_tokens=12, stop_ids=set(), constraint=Swerve())
    assert a.ids == b.ids and a.ids[3] == Swerve.forced
    assert a.timings["drafted"] > a.timings["draft_accepted"]  # a draft was dropped
    slot = on._slots["completion"]
    assert slot.generator.token_count() == len(slot.ids)


def test_the_optimum_backend_drafts_too(tiny):
    bundle, fim_prompt, stop = tiny
    path = bundle / "onnx-fp32" / "model.onnx"
    on, off = CausalLM(path, ["CPUExecutionProvider"]), CausalLM(path, ["CPUExecutionProvider"])
    off.draft_tokens = 0
    ids = fim_prompt(REPEATING)
    a = on.generate(ids, max_new_tokens=24, stop_ids=stop)
    b = off.generate(ids, max_new_tokens=24, stop_ids=stop)
    assert a.ids == b.ids and np.allclose(a.logprobs, b.logprobs, atol=1e-3)
    assert a.timings["draft_accepted"] > 0 and "drafted" not in b.timings


def test_a_graph_pruned_some_other_way_is_left_as_it_is(tmp_path):
    """The drafts' extra output is an optimisation: a graph it does not recognise still builds."""
    import onnx
    from onnx import TensorProto, helper
    from tandem_models.genai_build import add_logits_tail
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["hidden", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 8], [0.0] * 32)])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    before = (tmp_path / "model.onnx").read_bytes()
    assert not add_logits_tail(tmp_path)
    assert (tmp_path / "model.onnx").read_bytes() == before
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("variant", ["cpu-int8", "cpu-fp32"])
def test_warming_computes_the_prompt_and_leaves_a_cache_that_holds_it_alone(tiny_model, variant):
    """CompletionEngine.warm (the cursor resting somewhere): the prompt a completion there would
    send is computed without generating; the completion after one typed character reuses all
    of it before the cursor, with the answer a cold engine gives. Warming where the cache already
    holds the prompt (the last completion asked there) changes nothing, so the answer stays in
    the cache to draft from after Enter. A warm elsewhere goes to the other completion slot:
    typing again where the last completion was still finds that prompt."""
    from tandem.completion.engine import CompletionEngine
    from tandem.settings import Settings

    def engine():
        m = load_model(str(tiny_model / variant), "cpu")
        return CompletionEngine(m), m.lm

    (warmed, lm), (cold, _) = engine(), engine()
    corpus = (Path(__file__).resolve().parents[2] / "models" / "data" / "tiny_corpus.py").read_text()
    text = corpus + "\n\ndef double(n):\n    return "
    settings = Settings()
    computed = warmed.warm(text + "\n", len(text), settings)
    assert computed > 200
    typed = text + "n"
    a = warmed.complete(typed + "\n", len(typed), settings)
    b = cold.complete(typed + "\n", len(typed), settings)
    assert a.reused_tokens >= a.prompt_tokens - 8 and b.reused_tokens == 0
    assert (a.text, a.token_ids) == (b.text, b.token_ids)
    here = warmed.last_slot
    slot_ids = list(lm._slots[here].ids)
    assert warmed.warm(typed + "\n", len(typed), settings) == 0
    assert lm._slots[here].ids == slot_ids  # the answer is still there after its prompt
    # The cursor rests somewhere else (another file's prompt), then the user types here again.
    other = "def greet(name):\n    return f\"Hello, {name}!\"\n\n\ndef shout(name):\n    return "
    assert warmed.warm(other + "\n", len(other), settings) > 20
    assert lm._slots[here].ids == slot_ids  # the warm went to the other slot
    again = typed + " * 2 +"
    c = warmed.complete(again + "\n", len(again), settings)
    assert c.reused_tokens >= a.prompt_tokens - 8 and warmed.last_slot == here
