"""Provenance core: regions through edits, acceptance, persistence, confidence, rendering."""
from __future__ import annotations

import json
import time

import pytest

from tandem.provenance.confidence import spans_of_ids, summarize
from tandem.provenance.regions import Edit, adjust, diff_edit, locate
from tandem.provenance.render import region_markdown, sources_text
from tandem.provenance.store import Generated, ProvenanceStore, Region
from tandem.text import UTF8

URI = "file:///w/a.py"
MODEL = {"model": "m", "variant": "cpu-int8", "precision": "int8", "device": "cpu", "path": "/m"}


def gen(text: str, start: int, uri: str = URI, **kw) -> Generated:
    return Generated(uri=uri, start=start, text=text, kind=kw.pop("kind", "inline"), model=MODEL,
                     created=kw.pop("created", time.time()), prompt_sources=[{"uri": uri, "lines": [0, 1]}], **kw)


# -- regions.adjust ----------------------------------------------------------------------
REGION = (10, 20)
CUR = "0123456789"


@pytest.mark.parametrize("edit, want", [
    (Edit(0, 0, "xx"), (12, 22)),        # insertion before: moves
    (Edit(2, 5, ""), (7, 17)),           # deletion before
    (Edit(10, 10, "x"), (11, 21)),       # insertion at its start is not Tandem's text
    (Edit(20, 20, "x"), (10, 20)),       # insertion at its end neither
    (Edit(25, 30, "abc"), (10, 20)),     # after: unchanged
    (Edit(12, 14, "xyz"), (10, 21)),     # inside: grows or shrinks with the edit
    (Edit(5, 12, "ab"), (7, 15)),        # across its start: keeps the rest, after the new text
    (Edit(18, 25, "ab"), (10, 18)),      # across its end: keeps what is before the edit
    (Edit(8, 22, "zz"), None),           # covers it: gone
    (Edit(10, 20, ""), None),            # deleted exactly
    (Edit(8, 22, "<<0123456789>>"), (10, 20)),  # rewritten around it, its text intact: found again
])
def test_adjust(edit, want):
    assert adjust(*REGION, CUR, edit) == want


def test_locate_prefers_the_nearest_occurrence_within_the_window():
    text = "x = 1\n" * 3 + "y\n" + "x = 1\n"
    assert locate(text, "x = 1", 20) == 20
    assert locate(text, "x = 1", 13) == 12
    assert locate(text, "x = 1", 0, window=2) == 0
    assert locate(text, "nope", 0) is None
    assert locate("a" * 100 + "needle", "needle", 0, window=10) is None


@pytest.mark.parametrize("old, new", [("abc", "abc"), ("abcdef", "abXYef"), ("", "new"), ("gone", ""),
                                      ("aaaa", "aaaaa"), ("x" * 10000 + "1" + "y" * 9000, "x" * 10000 + "22" + "y" * 9000)])
def test_diff_edit_turns_old_into_new(old, new):
    e = diff_edit(old, new)
    if old == new:
        assert e is None
    else:
        assert old[:e.start] + e.new + old[e.end:] == new
        assert len(e.new) <= abs(len(new) - len(old)) + 2


# -- acceptance ----------------------------------------------------------------------------
def test_accept_finds_the_text_where_it_was_offered_even_if_it_moved():
    s = ProvenanceStore()
    gid = s.offer(gen("return a + b", 19))
    doc = "# added meanwhile\ndef add(a, b):\n    return a + b\n"
    r = s.accept(gid, doc)
    assert r is not None and doc[r.start:r.end] == "return a + b"
    assert s.region_at(URI, r.start + 3) is r
    assert s.region_at(URI, 0) is None
    assert s.accept(gid, doc) is None  # an id is accepted once


def test_only_the_generated_part_of_an_item_is_claimed():
    s = ProvenanceStore()
    # The item also carried the "))" the user had typed after the cursor.
    gid = s.offer(gen("value, high))", 35, extra={"own_chars": len("value, high")}))
    doc = "def clamp(value, low, high):\n    return max(low, min(value, high))\n"
    r = s.accept(gid, doc)
    assert doc[r.start:r.end] == "value, high"


def test_an_accept_that_overtakes_its_change_waits_for_it():
    s = ProvenanceStore()
    before = "def add(a, b):\n    \n"
    gid = s.offer(gen("return a + b", 19))
    assert s.accept(gid, before) is None  # the insertion has not arrived yet
    after = "def add(a, b):\n    return a + b\n"
    assert s.changed(URI, [((1, 4, 1, 4), "return a + b")], after) is True
    (r,) = s.regions(URI)
    assert after[r.start:r.end] == "return a + b" and not r.changed


def test_unknown_and_expired_offers():
    s = ProvenanceStore(max_pending=3)
    ids = [s.offer(gen(f"x{i}", 0)) for i in range(5)]
    assert s.pending(ids[0]) is None and s.pending(ids[1]) is None  # bounded: oldest dropped
    assert s.pending(ids[4]) is not None
    assert s.accept("nope", "x") is None


# -- following edits ------------------------------------------------------------------------
def accepted(doc: str, text: str, start: int) -> tuple[ProvenanceStore, Region]:
    s = ProvenanceStore()
    r = s.accept(s.offer(gen(text, start)), doc)
    assert r is not None
    return s, r


def test_changes_move_mark_and_drop_regions():
    doc = "def add(a, b):\n    return a + b\n"
    s, r = accepted(doc, "return a + b", 19)
    doc2 = "import os\n" + doc
    assert s.changed(URI, [((0, 0, 0, 0), "import os\n")], doc2)
    assert doc2[r.start:r.end] == "return a + b" and not r.changed
    doc3 = doc2.replace("a + b", "a - b")
    s.changed(URI, [((2, 13, 2, 14), "-")], doc3)
    assert r.changed and doc3[r.start:r.end] == "return a - b"
    s.changed(URI, [((2, 13, 2, 14), "+")], doc2)  # undo: as generated again
    assert not r.changed
    assert s.changed(URI, [((2, 0, 3, 0), "")], "import os\ndef add(a, b):\n") is True
    assert s.regions(URI) == []


def test_several_changes_in_one_notification_apply_in_order_in_the_negotiated_units():
    doc = "x = '😀'\nreturn a + b\n"
    s = ProvenanceStore()
    r = s.accept(s.offer(gen("return a + b", doc.index("return"))), doc)
    # UTF-8: the emoji is 4 bytes. First insert before it on line 0, then edit line 1.
    new = "x = 'é😀'\nreturn a + b  # ok\n"
    changes = [((0, 5, 0, 5), "é"), ((1, 12, 1, 12), "  # ok")]
    s.changed(URI, changes, new, UTF8)
    assert new[r.start:r.end] == "return a + b" and not r.changed


def test_a_whole_document_change_is_diffed():
    doc = "def add(a, b):\n    return a + b\n"
    s, r = accepted(doc, "return a + b", 19)
    new = "# header\n" + doc.replace("a + b", "a * b")
    s.changed(URI, [(None, new)], new)
    assert r.changed and new[r.start:r.end] == "return a * b"


def test_losing_track_resyncs_by_text():
    doc = "def add(a, b):\n    return a + b\n"
    s, r = accepted(doc, "return a + b", 19)
    new = "\n\n" + doc  # the change list does not explain this text: find the regions again
    s.changed(URI, [((0, 0, 0, 0), "#")], new)
    assert new[r.start:r.end] == "return a + b"


# -- persistence ---------------------------------------------------------------------------
def test_state_survives_a_restart_and_follows_outside_edits(tmp_path):
    doc = "def add(a, b):\n    return a + b\n"
    s = ProvenanceStore(tmp_path)
    s.bind("file:///w")
    r = s.accept(s.offer(gen("return a + b", 19, tokens=[(0, 6, -0.1)], verification=None)), doc)
    s.set_explanation(r.id, {"text": "Adds.", "style": "chat"})
    assert s.save()
    path = next((tmp_path / "state" / "provenance").glob("*.json"))
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, no leftovers

    same = ProvenanceStore(tmp_path)
    same.bind("file:///w")
    same.opened(URI, doc)
    (r2,) = same.regions(URI)
    assert (r2.start, r2.end, r2.text, r2.tokens, r2.explanation) == (r.start, r.end, r.text, [(0, 6, -0.1)],
                                                                      {"text": "Adds.", "style": "chat"})

    moved = ProvenanceStore(tmp_path)
    moved.bind("file:///w")
    text = "import os\n\n" + doc
    moved.opened(URI, text)
    (r3,) = moved.regions(URI)
    assert text[r3.start:r3.end] == "return a + b" and not r3.changed

    gone = ProvenanceStore(tmp_path)
    gone.bind("file:///w")
    gone.opened(URI, "def add(a, b):\n    return b + a\n")
    assert gone.regions(URI) == []

    other = ProvenanceStore(tmp_path)
    other.bind("file:///elsewhere")  # another workspace has its own file
    other.opened(URI, doc)
    assert other.regions(URI) == []


def test_a_closed_document_keeps_its_regions_under_its_last_content(tmp_path):
    doc = "def add(a, b):\n    return a + b\n"
    s = ProvenanceStore(tmp_path)
    s.bind(None)
    r = s.accept(s.offer(gen("return a + b", 19)), doc)
    edited = doc.replace("a + b", "a + 1 + b")
    s.changed(URI, [((1, 14, 1, 14), " 1 +")], edited)
    s.closed(URI)
    s.save()
    again = ProvenanceStore(tmp_path)
    again.bind(None)
    again.opened(URI, edited)
    (r2,) = again.regions(URI)
    assert edited[r2.start:r2.end] == "return a + 1 + b" and r2.changed and r2.text == r.text


def test_a_corrupt_state_file_is_set_aside(tmp_path):
    s = ProvenanceStore(tmp_path)
    s.bind("file:///w")
    s.path.parent.mkdir(parents=True)
    s.path.write_text("{not json")
    fresh = ProvenanceStore(tmp_path)
    fresh.bind("file:///w")
    assert fresh.regions(URI) == []
    assert s.path.with_suffix(".corrupt").exists()


def test_bounded_oldest_first(tmp_path):
    s = ProvenanceStore(tmp_path, max_regions=3)
    s.bind("file:///w")
    doc = "".join(f"line{i}\n" for i in range(6))
    for i in range(6):
        s.accept(s.offer(gen(f"line{i}", doc.index(f"line{i}"))), doc)
        time.sleep(0.001)
    assert [doc[r.start:r.end] for r in s.regions(URI)] == ["line3", "line4", "line5"]
    # The file has a byte bound too: the oldest go until it fits.
    s.max_file_bytes = 2500
    s.save()
    data = json.loads(s.path.read_text())
    assert len(s.path.read_bytes()) <= 2500
    kept = [r["text"] for r in data["files"][URI]["regions"]]
    assert kept and kept == [t for t in ["line3", "line4", "line5"] if t in kept] and "line5" in kept


# -- confidence ------------------------------------------------------------------------------
class CharCodec:
    """One token per character: spans are easy to predict."""

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))


def token_spans(codec, text, logprobs, lead=""):
    """Spans for `text` as if the model had generated `lead + text` token by token."""
    return spans_of_ids(codec, codec.encode(lead + text), logprobs, skip=len(lead), limit=len(text))


def test_token_spans_skip_the_dropped_indentation_and_clip():
    lps = [-0.01] * 4 + [-0.1, -2.0, -0.3]  # 4 indentation tokens, then "a+b"
    spans = token_spans(CharCodec(), "a+b", lps, lead="    ")
    assert spans == [(0, 1, -0.1), (1, 2, -2.0), (2, 3, -0.3)]
    assert token_spans(CharCodec(), "abc)", [-0.1, -0.2, -0.3]) == [(0, 1, -0.1), (1, 2, -0.2), (2, 3, -0.3)]
    assert token_spans(CharCodec(), "", [-1.0]) == []


def test_token_spans_with_a_real_tokenizer_cover_the_text(tiny_model):
    from tandem.model.loaded import load_model

    m = load_model(str(tiny_model), "cpu")
    text = "for i in range(2, n + 1):\n        result *= i"
    n = len(m.codec.encode(text))
    spans = token_spans(m.codec, text, [-0.5] * n)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a < b for a, b, _ in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))


def test_summary_levels_and_least_confident_spans():
    import math

    text = "return total / count"
    sure = [(0, 6, math.log(0.99)), (6, 12, math.log(0.95)), (12, 14, math.log(0.3)),
            (14, 20, math.log(0.45))]
    s = summarize(sure, text)
    assert s.level in ("medium", "low", "high") and s.tokens == 4
    assert abs(s.min_p - 0.3) < 1e-9
    assert [(a, b) for a, b, _ in s.low] == [(12, 20)]  # neighbours joined
    assert summarize([(0, 1, math.log(0.99))] * 5).level == "high"
    assert summarize([(0, 1, math.log(0.2))] * 5).level == "low"
    assert summarize([]).level == "unknown"


def test_region_markdown_states_everything():
    import math

    r = Region(id="r1", uri=URI, start=19, end=31, text="return a + b", kind="function", model=MODEL,
               created=0.0, accepted=1.0, prompt_sources=[{"uri": URI, "lines": [0, 4]},
                                                          {"uri": "file:///w/b.py", "lines": [2, 2]}],
               tokens=[(0, 6, math.log(0.9)), (6, 8, math.log(0.2)), (8, 12, math.log(0.9))],
               verification={"passed": 3, "total": 3, "summary": "3/3 examples pass"})
    md = region_markdown(r, explanation=None, status="Tandem is writing the explanation.",
                         line_of=lambda off: 1)
    assert "function generated from its docstring" in md
    assert "_Tandem is writing the explanation._" in md
    assert "Least sure of: ` a` (20%, line 2)" in md
    assert "**Verification:** ✅ 3/3 examples pass" in md
    assert "*Model* m · int8 · cpu" in md
    assert "this file lines 1–5, b.py line 3" in md
    assert sources_text([], URI) == "nothing recorded"


@pytest.mark.parametrize("old, new", [
    ("a\nb\nc\nd\n", "x\na\nb\nC\nd\n"), ("def f():\n    return 1\n", "# h\n\ndef f():\n    return 2\n"),
    ("same", "same"), ("one line", "one line!"), ("a\n" * 50, "b\n" + "a\n" * 49 + "c\n")])
def test_diff_edits_apply_from_last_to_first(old, new):
    from tandem.provenance.regions import diff_edits

    text = old
    edits = diff_edits(old, new)
    assert all(edits[i].end <= edits[i + 1].start for i in range(len(edits) - 1))
    for e in reversed(edits):
        text = text[:e.start] + e.new + text[e.end:]
    assert text == new


def test_state_files_of_many_workspaces_are_bounded(tmp_path, monkeypatch):
    import tandem.provenance.store as store_mod

    monkeypatch.setattr(store_mod, "MAX_WORKSPACES", 3)
    for i in range(5):
        s = ProvenanceStore(tmp_path)
        s.bind(f"file:///w{i}")
        s.accept(s.offer(gen("x = 1", 0, verification={"odd": {1, 2}})), "x = 1\n")  # not JSON: saved as text
        assert s.save()
        time.sleep(0.01)
    files = list((tmp_path / "state" / "provenance").glob("*.json"))
    assert len(files) == 3
