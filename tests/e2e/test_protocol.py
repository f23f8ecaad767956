"""The protocol layer under hostile and careless clients (issue 13, items 6-9), over real stdio.

Every test drives the real server process with raw bytes (tests/e2e/rawlsp.py): broken
params, broken framing, lifecycle misuse, and the client leaving while the model loads.
Each ends by checking that the server still answers (or exited as the spec says).
"""
from __future__ import annotations

import json
import random
import time

import pytest

from .rawlsp import RawServer

pytestmark = pytest.mark.timeout(120)

URI = "file:///tmp/tandem-test/protocol.py"
INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, NOT_INITIALIZED = -32602, -32600, -32700, -32002


@pytest.fixture
def server(tmp_path):
    """A server with no model (its load fails at once with a clear message): the protocol
    layer alone."""
    home = tmp_path / "home"
    home.mkdir()
    with RawServer(home=home) as s:
        s.initialize()
        s.open(URI, "def add(a, b):\n    return a + b\n")
        yield s


def inline_params(position) -> dict:
    return {"textDocument": {"uri": URI}, "position": position, "context": {"triggerKind": 2}}


BAD_PARAMS = {
    "line as a string": inline_params({"line": "1", "character": 4}),
    "position as a string": inline_params("1:4"),
    "negative line": inline_params({"line": -1, "character": 0}),
    "line 10^30": inline_params({"line": 10**30, "character": 0}),
    "character as a float": inline_params({"line": 1, "character": 1.5}),
    "line as a boolean": inline_params({"line": True, "character": 0}),
    "position missing": {"textDocument": {"uri": URI}, "context": {"triggerKind": 2}},
    "params missing": None,
    "params a list": [1, 2],
}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_invalid_params_get_an_invalid_params_error_and_no_popup(server, case):
    r = server.call("textDocument/inlineCompletion", BAD_PARAMS[case])
    assert r["error"]["code"] == INVALID_PARAMS, r
    assert "textDocument/inlineCompletion" in r["error"]["message"]
    assert "$.params" in r["error"]["message"]  # says where
    r = server.call("textDocument/hover", {"textDocument": {"uri": URI}, "position": {"line": -5, "character": 0}})
    assert r["error"]["code"] == INVALID_PARAMS and "position" in r["error"]["message"]
    assert server.alive()
    assert not [m for m in server.show_messages() if "Error in server" in m]


def test_invalid_params_in_a_notification_are_logged_not_shown(server):
    server.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": 2},
                                             "contentChanges": [{"range": "everything", "text": "x"}]})
    server.notify("textDocument/didOpen", {"textDocument": "nope"})
    server.notify("textDocument/didChange", {"textDocument": {"uri": "file:///never-opened.py", "version": 2},
                                             "contentChanges": [{"text": "x"}]})  # a KeyError inside pygls
    assert server.alive()
    assert not [m for m in server.show_messages() if "Error in server" in m]
    server.wait_for(lambda: any("Invalid params for textDocument/didChange" in m and "content_changes[0].range" in m
                                for m in server.log_messages()), what="the log line, with the method and where")


def test_well_typed_positions_out_of_range_are_clamped(server):
    for line, ch in [(2**31 - 1, 0), (0, 2**31 - 1), (1, 10**6), (2**31 - 1, 2**31 - 1)]:
        r = server.call("textDocument/inlineCompletion", inline_params({"line": line, "character": ch}))
        assert "result" in r and r["result"]["items"] == [], r
        r = server.call("textDocument/hover", {"textDocument": {"uri": URI}, "position": {"line": line, "character": ch}})
        assert "result" in r, r
    r = server.call("tandem/documentState", {"textDocument": {"uri": URI}})
    assert r["result"]["text"] == "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize("editor", ["visual-studio-code", "neovim", "emacs"])
def test_real_editors_capabilities_are_read_strictly_without_error(editor):
    """Strict integers must not refuse a real editor's initialize (booleans stay booleans)."""
    from lsprotocol import types
    from pygls.protocol import default_converter
    from pytest_lsp import client_capabilities

    from tandem.server import create_server

    raw = default_converter().unstructure(client_capabilities(editor))
    msg = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"processId": 1, "capabilities": raw}}
    params = create_server().protocol._converter.structure(msg, types.InitializeRequest).params
    assert params.capabilities.window is None or params.capabilities.window.work_done_progress in (True, False, None)


def test_an_initialize_with_quirky_capabilities_is_read_leniently(tmp_path):
    caps = {"textDocument": {"foldingRange": {"rangeLimit": "5000"}}}  # a string for an integer
    with RawServer(home=tmp_path) as s:
        s.initialize(caps)  # answered with a result, not -32602: the session goes on
        assert s.alive()


# -- framing -------------------------------------------------------------------------------
def _req(msg_id: int, method: str = "tandem/ping") -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": {}}).encode()


def _assert_answers(server, msg_id: int) -> None:
    r = server.response(msg_id)
    assert r["error"]["code"] == -32601, r  # MethodNotFound: the request was read and answered


def test_content_length_too_small_is_answered_and_the_next_message_read(server):
    body = _req(900)
    server.write(b"Content-Length: %d\r\n\r\n" % (len(body) - 10) + body + server.frame(_req(901)))
    r = server.response(900)
    assert r["error"]["code"] == PARSE_ERROR and "Content-Length" in r["error"]["message"]
    _assert_answers(server, 901)
    assert server.alive()


@pytest.mark.parametrize("extra", [1, 10, 19, 25, 40, 60])  # the next header before, across, after the declared end
def test_content_length_too_large_recovers_both_messages(server, extra):
    body = _req(910)
    server.write(b"Content-Length: %d\r\n\r\n" % (len(body) + extra) + body + server.frame(_req(911)))
    _assert_answers(server, 910)
    _assert_answers(server, 911)
    assert server.alive()


@pytest.mark.parametrize("header", [b"", b"Content-Length: abc\r\n", b"Content-Length: -5\r\n",
                                    b"Content-Length: 1e3\r\n", b"Content-Length:\r\n",
                                    b"Content-Type: application/vscode-jsonrpc\r\n",
                                    b"Content-Length: 99999999999999999999999999999999\r\n"])
def test_bad_or_missing_content_length(server, header):
    server.write(header + b"\r\n" + _req(920) + server.frame(_req(921)))
    r = server.response(920)  # the broken message's id is read from its start: no stuck request
    assert r["error"]["code"] == INVALID_REQUEST and "Content-Length" in r["error"]["message"]
    _assert_answers(server, 921)
    assert server.alive()


def test_garbage_then_a_valid_message(server):
    rng = random.Random(13)
    garbage = bytes(rng.randrange(256) for _ in range(4096))
    server.write(garbage + server.frame(_req(930)))
    _assert_answers(server, 930)
    server.write(b"\r\n\r\n\x00\xff" * 1000 + server.frame(_req(931)))
    _assert_answers(server, 931)
    assert server.alive()


def test_content_length_2_to_the_40_neither_allocates_nor_goes_deaf(server):
    import psutil

    rss = psutil.Process(server.proc.pid).memory_info().rss
    body = _req(940)
    server.write(b"Content-Length: %d\r\n\r\n" % 2**40 + body + server.frame(_req(941)))
    r = server.response(940)
    assert r["error"]["code"] == INVALID_REQUEST and "MiB" in r["error"]["message"]
    _assert_answers(server, 941)
    assert server.alive()
    assert server.proc.poll() is None
    assert psutil.Process(server.proc.pid).memory_info().rss < rss + 50 * 2**20


def test_a_large_truthful_message_over_the_cap_is_skipped(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with RawServer(home=home, env={"TANDEM_MAX_MESSAGE_BYTES": str(2**20)}) as s:
        s.initialize()
        text = "x = 1\n" * 300_000  # 1.8 MB, over the 1 MiB limit set above
        s.open(URI, text)
        assert s.alive()
        r = s.call("tandem/documentState", {"textDocument": {"uri": URI}})
        assert r["result"] is None  # dropped whole, not half-read
        s.open(URI, "small = 1\n")
        assert s.call("tandem/documentState", {"textDocument": {"uri": URI}})["result"]["text"] == "small = 1\n"


def test_invalid_json_and_non_objects(server):
    server.write(server.frame(b'{"jsonrpc": "2.0", "id": 950, "method": '))
    r = server.response(950)
    assert r["error"]["code"] == PARSE_ERROR
    server.write(server.frame(b'{"jsonrpc": "2.0", "id":0226, "method": "tandem/ping"}') + server.frame(_req(952)))
    _assert_answers(server, 952)  # an id that only looks like a number broke the reader once
    server.null_responses.clear()
    server.write(server.frame(b"[1, 2, 3]") + server.frame(b'"hello"') + server.frame(b"\xff\xfe"))
    server.write(server.frame(b'{"jsonrpc": "1.0", "id": 951, "method": "tandem/ping"}'))
    assert server.response(951)["error"]["code"] == INVALID_REQUEST
    server.write(server.frame(b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "tandem/ping"}'))
    assert server.alive()
    # JSON-RPC: what has no readable id is answered with a null id.
    codes = [r["error"]["code"] for r in server.null_responses]
    assert codes == [INVALID_REQUEST, INVALID_REQUEST, PARSE_ERROR, INVALID_REQUEST], server.null_responses


def test_content_length_too_large_on_the_last_message_is_read_after_a_pause(server):
    body = _req(970)
    server.write(b"Content-Length: %d\r\n\r\n" % (len(body) + 500) + body)
    _assert_answers(server, 970)  # not left waiting for 500 bytes that never come
    assert server.alive()


def test_one_message_split_across_many_writes(server):
    data = server.frame(_req(960))
    for i in range(len(data)):
        server.write(data[i:i + 1])
    _assert_answers(server, 960)


# -- lifecycle ----------------------------------------------------------------------------
def test_exit_without_shutdown_exits_1(tmp_path):
    with RawServer(home=tmp_path) as s:
        s.initialize()
        s.notify("exit")
        assert s.wait_exit(10) == 1


def test_shutdown_then_exit_exits_0_and_requests_after_shutdown_are_refused(tmp_path):
    with RawServer(home=tmp_path) as s:
        s.initialize()
        assert s.call("shutdown")["result"] is None
        r = s.call("textDocument/hover", {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}})
        assert r["error"]["code"] == INVALID_REQUEST and "shut" in r["error"]["message"]
        s.notify("exit")
        assert s.wait_exit(10) == 0


def test_shutdown_while_handlers_are_pending_is_answered(tmp_path):
    """`initialized` still waits for the client's settings (never sent) when shutdown comes:
    cancelling it must not break the shutdown answer (a dict changed size during iteration)."""
    with RawServer(home=tmp_path) as s:
        s.answer_server_requests = False
        s.initialize({"workspace": {"configuration": True}})
        s.wait_for(lambda: any(r["method"] == "workspace/configuration" for r in s.server_requests),
                   what="the settings request")
        r = s.call("shutdown")
        assert r.get("result", "missing") is None, r
        s.notify("exit")
        assert s.wait_exit(10) == 0


def test_requests_before_initialize_are_refused(tmp_path):
    with RawServer(home=tmp_path) as s:
        r = s.call("textDocument/hover", {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}})
        assert r["error"]["code"] == NOT_INITIALIZED
        s.initialize()
        assert s.alive()
        assert s.call("initialize", {"processId": None, "rootUri": None, "capabilities": {}})["error"]["code"] == INVALID_REQUEST


def test_client_closing_stdin_ends_the_server(tmp_path):
    with RawServer(home=tmp_path) as s:
        s.initialize()
        s.proc.stdin.close()
        assert s.wait_exit(10) == 1  # no shutdown came first


@pytest.mark.parametrize("how", ["exit", "close stdin", "close all pipes"])
def test_leaving_while_the_model_loads_exits_promptly_and_quietly(tmp_path, how):
    with RawServer(home=tmp_path, env={"TANDEM_DEBUG_DELAYS": "load=3000"}) as s:
        s.initialize({"window": {"workDoneProgress": True}})
        time.sleep(0.5)  # the load has started
        start = time.monotonic()
        if how == "exit":
            s.notify("exit")
        elif how == "close stdin":
            s.proc.stdin.close()
        else:
            s.proc.stdin.close()
            s.proc.stdout.close()
        code = s.wait_exit(10)
        assert time.monotonic() - start < 2.0  # not after the 3 s load
        assert code == 1
        time.sleep(0.2)
        assert b"closed file" not in s.stderr and b"Traceback" not in s.stderr
        assert s.stderr_bytes < 20_000


def test_cancellation_is_answered_with_request_cancelled(tmp_path):
    """An unanswerable request (the server asks the client, which never replies)...: here
    the model's load is slowed and a request waits on nothing, so cancel a long request."""
    with RawServer(home=tmp_path) as s:
        s.initialize()
        s.open(URI, "x = 1\n")
        # workspace/executeCommand on a command that is not registered is answered at once;
        # cancellation of an already-answered request must not break anything either.
        rid = s.request("tandem/ping", {})
        s.notify("$/cancelRequest", {"id": rid})
        assert s.response(rid)["error"]["code"] in (-32601, -32800)
        assert s.alive()


# -- text sync over stdio ---------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-8"])
def test_2000_random_edits_over_stdio_stay_in_sync(tmp_path, encoding):
    """Emoji, CJK, ZWJ sequences, combining marks, CRLF, lone CR, U+2028 and friends, ranges one
    past line ends and past the document: the server's copy equals the client's after each
    batch (a reference model of the client, tests/lsp_reference.py)."""
    from tests.lsp_reference import apply_ref, random_edit, random_text

    rng = random.Random(f"stdio-{encoding}")
    with RawServer(home=tmp_path) as s:
        result = s.initialize({"general": {"positionEncodings": [encoding]}})
        assert result["result"]["capabilities"].get("positionEncoding", "utf-16") == encoding
        text = random_text(rng, 40)
        s.open(URI, text)
        for batch in range(4):
            for v in range(500):
                a, b, new = random_edit(rng, text, encoding)
                text = apply_ref(text, a, b, new, encoding)
                s.notify("textDocument/didChange", {
                    "textDocument": {"uri": URI, "version": batch * 500 + v + 2},
                    "contentChanges": [{"range": {"start": {"line": a[0], "character": a[1]},
                                                  "end": {"line": b[0], "character": b[1]}}, "text": new}]})
            state = s.call("tandem/documentState", {"textDocument": {"uri": URI}})["result"]
            assert state["text"] == text, f"diverged in batch {batch}"
            assert state["version"] == batch * 500 + 501


def test_notifications_leave_nothing_behind():
    """pygls kept a future per notification for ever (10,000 edits: 10,000 futures): in-process."""
    import asyncio

    from tandem.server import create_server

    server = create_server()
    proto = server.protocol

    class Sink:
        closed = False

        def write(self, data):
            pass

        def close(self):
            pass

    proto.set_writer(Sink())

    async def run():
        proto.handle_raw({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                          "params": {"processId": None, "capabilities": {}}})
        await asyncio.sleep(0.1)
        proto.handle_raw({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": URI, "languageId": "python", "version": 1, "text": "x"}}})
        for i in range(1000):
            proto.handle_raw({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                "textDocument": {"uri": URI, "version": i + 2},
                "contentChanges": [{"range": {"start": {"line": 0, "character": 0},
                                              "end": {"line": 0, "character": 0}}, "text": "y"}]}})
        await asyncio.sleep(0.2)
        assert proto.workspace.get_text_document(URI).source == "y" * 1000 + "x"
        assert len(proto._request_futures) < 5

    asyncio.run(run())


def test_frame_parser_gives_the_same_events_however_the_input_is_chunked():
    """The reader's state machine, in-process: broken and valid frames, fed whole, byte by
    byte and in random chunks, give the same messages and errors in the same order."""
    from tandem.protocol import FrameParser, FramingError

    def frame(body: bytes) -> bytes:
        return b"Content-Length: %d\r\n\r\n" % len(body) + body

    body = _req(1)
    stream = b"".join([
        frame(_req(2)),
        b"Content-Length: %d\r\n\r\n" % (len(body) - 7) + body,  # too small
        frame(_req(3)),
        b"Content-Length: %d\r\n\r\n" % (len(body) + 30) + body,  # too large
        frame(_req(4)),
        b"Content-Length: abc\r\n\r\n" + _req(5),  # not a number
        b"\x00\xff garbage \r\n\r\n" * 50,
        frame(_req(6)),
        b"Content-Length: %d\r\n\r\n" % 2**40 + _req(7),  # over the limit
        b"Content-Type: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body,  # two headers
        frame(b'{"jsonrpc": "2.0", "id": 8, "method": '),  # not JSON
        frame(_req(9)),
    ])

    def run(chunks) -> list:
        parser, out = FrameParser(max_bytes=2**20), []
        for c in chunks:
            out += parser.feed(c)
        out += parser.eof()
        return [(e.code, e.id) if isinstance(e, FramingError) else e["id"] for e in out]

    whole = run([stream])
    assert [e for e in whole if isinstance(e, int)] == [2, 3, 1, 4, 6, 1, 9]
    assert (-32700, 1) in whole and (-32600, 5) in whole and (-32600, 7) in whole and (-32700, 8) in whole
    assert run([stream[i:i + 1] for i in range(len(stream))]) == whole
    rng = random.Random(5)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), 30))
        assert run([stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]) == whole
