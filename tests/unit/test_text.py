from tandem.text import offset_at, position_at, utf16_len

TEXT = "a😀b\r\nsecond é line\nlast"


def test_utf16_positions_count_surrogate_pairs():
    assert utf16_len("😀") == 2
    assert offset_at(TEXT, 0, 3) == 2  # after the emoji (2 UTF-16 units) comes 'b'
    assert TEXT[offset_at(TEXT, 0, 3)] == "b"
    assert position_at(TEXT, 2) == (0, 3)


def test_round_trip_every_offset():
    for off in range(len(TEXT) + 1):
        if TEXT[off - 1: off + 1] == "\r\n":
            continue  # between \r and \n is not a position an editor can name
        line, ch = position_at(TEXT, off)
        assert offset_at(TEXT, line, ch) == off


def test_positions_past_the_end_are_clamped():
    assert offset_at(TEXT, 0, 999) == TEXT.index("\r")  # end of line 0, before CRLF
    assert offset_at(TEXT, 99, 0) == len(TEXT)
    assert offset_at("", 5, 5) == 0
    assert position_at(TEXT, 10_000) == (2, 4)


def test_utf8_positions_as_neovim_counts_them():
    text = "s = 'é😀'; x\n"
    # "s = '" is 5 bytes, 'é' 2, '😀' 4: the closing quote is at byte 11, `x` at byte 14.
    assert offset_at(text, 0, 11, "utf-8") == text.index("'", 5)
    assert position_at(text, text.index("x"), "utf-8") == (0, 14)
    assert position_at(text, text.index("x"), "utf-16") == (0, 11)
    assert position_at(text, text.index("x"), "utf-32") == (0, 10)


def test_line_end_stops_before_crlf():
    from tandem.text import line_end
    text = "ab\r\ncd"
    assert line_end(text, 1) == 2 and line_end(text, 4) == 6


def test_line_span_ends_on_the_line_of_the_last_character():
    from tandem.text import line_span

    text = "a\nbc\nd\n"
    assert line_span(text, 0, len(text)) == [0, 2]  # not the empty line after the last break
    assert line_span(text, 2, 4) == [1, 1]
    assert line_span(text, 2, 2) == [1, 1]  # empty: the line of its start


# -- LSP 3.18 line ends (issue 13, item 9) -----------------------------------------------------
import random

import pytest
from lsprotocol import types

from tandem.text import line_end, line_span, split_lines

NOT_LINE_BREAKS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


@pytest.mark.parametrize("ch", NOT_LINE_BREAKS)
def test_only_cr_lf_and_crlf_end_lines(ch):
    text = f"a{ch}b\nc"
    assert offset_at(text, 1, 0) == text.index("c")
    assert position_at(text, text.index("b")) == (0, 2)
    assert position_at(text, len(text)) == (1, 1)
    assert split_lines(text) == [f"a{ch}b", "c"]
    assert line_end(text, 0) == text.index("\n")


def test_a_lone_cr_ends_a_line():
    text = "x = 1\rdef add(a, b):\r\n    "
    assert position_at(text, len(text)) == (2, 4)  # not (1, ...): the cursor's range start
    assert offset_at(text, 1, 0) == text.index("def")
    assert offset_at(text, 0, 99) == text.index("\r")
    assert line_end(text, 0) == 5
    assert line_span(text, 0, len(text)) == [0, 2]
    assert split_lines(text, keepends=True) == ["x = 1\r", "def add(a, b):\r\n", "    "]


@pytest.mark.parametrize("eol", ["\r\n", "\r", "\n"])
def test_a_character_past_the_line_end_is_the_line_end_before_its_terminator(eol):
    text = f"ab{eol}cd"
    for ch in (2, 3, 4, 2**31 - 1):
        assert offset_at(text, 0, ch) == 2
        assert offset_at(text, 0, ch, "utf-8") == 2
    assert offset_at(text, 1, 5) == len(text)
    assert offset_at(text, 2, 0) == len(text) and offset_at(text, 2**31 - 1, 7) == len(text)
    assert position_at(text, 3) == ((0, 2) if eol == "\r\n" else (1, 0))  # between \r and \n: the line end


def test_positions_inside_a_character_mean_its_end():
    text = "😀x"
    assert offset_at(text, 0, 1) == 1  # half a surrogate pair
    assert offset_at(text, 0, 2, "utf-8") == 1  # half of a 4-byte sequence


# -- the document copy, against a reference model of the client -------------------------------
from tests.lsp_reference import PIECES, UNITS, apply_ref, random_edit, random_text, ref_lines, ref_offset  # noqa: E402


def make_workspace(encoding: str):
    from tandem.documents import TandemWorkspace

    return TandemWorkspace(None, types.TextDocumentSyncKind.Incremental, [], encoding)


def change(a, b, new):
    return types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(*a), types.Position(*b)), text=new)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8", "utf-32"])
def test_document_copy_stays_in_sync_with_the_client(encoding):
    rng = random.Random(f"sync-{encoding}")
    ws = make_workspace(encoding)
    uri = "file:///tmp/sync.py"
    for doc_round in range(20):
        text = random_text(rng, rng.randrange(30))
        ws.put_text_document(types.TextDocumentItem(uri=uri, language_id="python", version=0, text=text))
        for v in range(1, 150):
            a, b, new = random_edit(rng, text, encoding)
            text = apply_ref(text, a, b, new, encoding)
            ws.update_text_document(types.VersionedTextDocumentIdentifier(uri=uri, version=v), change(a, b, new))
            assert ws.get_text_document(uri).source == text, (doc_round, v, a, b, new)


def test_offset_helpers_match_the_reference_everywhere():
    rng = random.Random(7)
    for encoding in UNITS:
        for _ in range(200):
            text = random_text(rng, rng.randrange(12))
            lines = ref_lines(text, encoding)
            for line in range(len(lines) + 2):
                for ch in range((lines[line] if line < len(lines) else 0) + 3):
                    assert offset_at(text, line, ch, encoding) == ref_offset(text, line, ch, encoding), (text, line, ch)


def test_crlf_insert_one_past_the_line_end_lands_before_the_crlf():
    ws = make_workspace("utf-16")
    uri = "file:///tmp/crlf.py"
    ws.put_text_document(types.TextDocumentItem(uri=uri, language_id="python", version=0, text="ab\r\ncd\r\n"))
    ws.update_text_document(types.VersionedTextDocumentIdentifier(uri=uri, version=1), change((0, 3), (0, 3), "X"))
    assert ws.get_text_document(uri).source == "abX\r\ncd\r\n"
    ws.update_text_document(types.VersionedTextDocumentIdentifier(uri=uri, version=2), change((1, 2), (1, 9), "Y"))
    assert ws.get_text_document(uri).source == "abX\r\ncdY\r\n"
    doc = ws.get_text_document(uri)
    assert doc.lines == ("abX\r\n", "cdY\r\n")
    assert doc.offset_at_position(types.Position(0, 99)) == 3
    assert doc.text_in_client_range(types.Range(types.Position(0, 0), types.Position(0, 99))) == "abX"
    assert doc.client_position_at_offset(len(doc.source)) == types.Position(2, 0)


def test_the_servers_workspace_is_the_lsp_exact_one():
    """What pygls's initialize builds inside the real server is replaced by TandemWorkspace."""
    from tandem.documents import TandemDocument
    from tandem.server import create_server

    server = create_server()
    proto = server.protocol
    gen = proto.lsp_initialize(types.InitializeParams(capabilities=types.ClientCapabilities()))
    next(gen)  # pygls has built its workspace and yields to Tandem's initialize handler
    proto.workspace.put_text_document(types.TextDocumentItem(uri="file:///a.py", language_id="python",
                                                             version=0, text="a\u2028b\n"))
    doc = proto.workspace.get_text_document("file:///a.py")
    assert isinstance(doc, TandemDocument)
    proto.workspace.update_text_document(types.VersionedTextDocumentIdentifier(uri="file:///a.py", version=1),
                                         change((1, 0), (1, 0), "c"))
    assert doc.source == "a\u2028b\nc"


def test_large_texts_index_lines_the_same_way():
    """Texts over 2 KB take the vectorised path: same line starts and ends as a char walk."""
    from tandem.text import LineIndex

    rng = random.Random(11)
    for _ in range(50):
        text = "".join(rng.choice(["a", "\r", "\n", "\r\n", "é", "😀", "\u2028", "\x85", "\udcff"])
                       for _ in range(rng.randrange(2048, 6000)))
        starts, ends, i = [0], [], 0
        while i < len(text):
            if text[i] in "\r\n":
                ends.append(i)
                i += 2 if text[i:i + 2] == "\r\n" else 1
                starts.append(i)
            else:
                i += 1
        ends.append(len(text))
        idx = LineIndex(text)
        assert list(idx.starts) == starts and list(idx.ends) == ends
        line = rng.randrange(len(starts))
        assert offset_at(text, line, 3, "utf-8") == ref_offset(text, line, 3, "utf-8")
