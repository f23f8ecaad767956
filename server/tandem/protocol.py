"""The protocol layer: framing, message validation and the lifecycle over stdio, replacing
pygls's stdio loop (pygls.io_.run_async) and tightening its LanguageServerProtocol.

What it guarantees (issue 13):
- Every request gets a response. Params that do not fit the method's LSP type (a position as
  a string, a negative line, a line over 2^31-1, missing params) get -32602 InvalidParams
  naming the method and the JSON path; a body that is not JSON gets -32700 (with the request's
  id when its start names one); a request before `initialize` -32002; after `shutdown`
  -32600. Nothing of this is shown to the user as a pop-up: it is logged.
- Framing errors never leave the server deaf: a Content-Length that is missing, not a
  number, negative or over the limit, a header of garbage, or a body that does not parse
  makes the reader look for the next `Content-Length: <digits>` header and carry on. A valid
  JSON body can never contain one (a raw CR or LF cannot appear inside a JSON string), so this
  never cuts a real message. When the broken message's id can be read from its first bytes
  it gets an error response, so no request is left waiting.
- Messages are capped at MAX_MESSAGE_BYTES (64 MiB; TANDEM_MAX_MESSAGE_BYTES overrides):
  VS Code does not sync documents over 50 MB to language servers, and JSON-escaped source of
  that size fits; anything larger is a bug or hostile. An oversized body is skipped as it
  streams by, never allocated.
- `exit` ends the process at once with 0 after `shutdown` and 1 without (the spec), as does
  the client closing stdin; nothing waits for a model still loading or a decode in flight,
  and a closed stdout is never written to again (no error loop on stderr).
- stdout belongs to the protocol: stray prints and child processes write to stderr.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
from typing import Any, Callable

import cattrs
from cattrs.errors import BaseValidationError
from lsprotocol import types
from pygls.exceptions import FeatureRequestError
from pygls.protocol import LanguageServerProtocol, default_converter
from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCRequestMessage

from .documents import TandemWorkspace

log = logging.getLogger(__name__)

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
SERVER_NOT_INITIALIZED = -32002

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 8192
SNIFF_BYTES = 4096
IDLE_S = 0.5  # a pause inside a body this long: check whether Content-Length was too large
IDLE_PARSE_LIMIT = 1 << 20
READ_CHUNK = 1 << 16


def max_message_bytes() -> int:
    try:
        return max(1024, int(os.environ.get("TANDEM_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)))
    except ValueError:
        return DEFAULT_MAX_MESSAGE_BYTES


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


# -- framing -----------------------------------------------------------------------------------
# The next header to resynchronise on: complete up to its line end, digits only.
NEXT_HEADER = re.compile(rb"content-length[ \t]*:[ \t]*\d{1,30}[ \t]*\r?\n", re.I)
HEADER_END = re.compile(rb"\r?\n\r?\n")
HEADER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+[ \t]*:[^\r\n]*")
TOKEN_START = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]")
# A request's id when it comes before its params (as every client writes it): answerable
# even when the rest of the message cannot be read.
SNIFF_ID = re.compile(rb'\A\s*\{(?:\s*"(?:jsonrpc|method)"\s*:\s*"[^"\\]{0,200}"\s*,)*'
                      rb'\s*"id"\s*:\s*(-?(?:0|[1-9]\d{0,17})|"[^"\\]{0,200}")\s*[,}]')
WHITESPACE = b" \t\r\n"
KEEP_TAIL = 64  # bytes kept while skipping, so a header split across two reads is still found


def sniff_id(prefix: bytes):
    m = SNIFF_ID.match(prefix)
    if m is None:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError:  # "0226", or bytes that are not UTF-8
        return None


class FramingError:
    """A broken message: answered with `code` when its id is known, logged in any case."""

    def __init__(self, code: int, message: str, msg_id=None):
        self.code, self.message, self.id = code, message, msg_id

    def __repr__(self):
        return f"FramingError({self.code}, {self.message!r}, id={self.id!r})"


class FrameParser:
    """Bytes in, events out: parsed JSON messages, FramingErrors, and counts of skipped bytes.

    States: "header" (reading a header block), "body" (reading Content-Length bytes) and
    "skip" (after a broken header: dropping bytes, sniffing the broken message's id, until
    the next valid header)."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes or max_message_bytes()
        self.buf = bytearray()
        self.state = "header"
        self.length = 0
        self.pending: FramingError | None = None  # the error of the message being skipped
        self.skip_from = 0
        self.scanned = 0  # body bytes already searched for a header
        self.idle_tried = False
        self.sniff = bytearray()
        self.skipped = 0  # garbage bytes dropped (statistics)
        self.errors = 0

    def feed(self, data: bytes) -> list:
        self.buf += data
        self.idle_tried = False
        events: list = []
        while self._step(events):
            pass
        return events

    def waiting_for_body(self) -> bool:
        return self.state == "body" and bool(self.buf) and not self.idle_tried

    def idle(self) -> list:
        """The input paused inside a body. If what came is a whole JSON message, Content-Length
        was too large (a valid body's prefix is never a complete message with more to come):
        take it now rather than leave its request waiting for bytes that will not come."""
        self.idle_tried = True
        if self.state != "body" or not self.buf or len(self.buf) > IDLE_PARSE_LIMIT:
            return []
        try:
            message = json.loads(bytes(self.buf))
        except (ValueError, RecursionError):
            return []
        log.warning("a message came %d bytes short of its Content-Length (%d) and the input paused; "
                    "read as it is", self.length - len(self.buf), self.length)
        self.buf.clear()
        self.state = "header"
        return [message]

    def eof(self) -> list:
        events: list = []
        if self.state == "skip" and self.pending is not None:
            events.append(self.pending)
        elif self.state == "body" and self.buf and (early := self.idle()):
            events.extend(early)
        elif self.state == "body" and self.buf:
            events.append(FramingError(PARSE_ERROR, f"the input ended {self.length - len(self.buf)} bytes "
                                       f"short of a message's Content-Length ({self.length})"))
        elif self.buf.strip(WHITESPACE):
            events.append(FramingError(INVALID_REQUEST, f"the input ended inside a header ({len(self.buf)} bytes)"))
        self.buf.clear()
        return events

    # one step of the state machine; False when more input is needed
    def _step(self, events: list) -> bool:
        if self.state == "body":
            buf, upto = self.buf, min(len(self.buf), self.length)
            if upto > self.scanned:
                # A header inside the body proves Content-Length too large: cut there now
                # rather than wait for bytes that belong to later messages.
                m = NEXT_HEADER.search(buf, max(0, self.scanned - KEEP_TAIL), upto)
                if m is not None:
                    body = bytes(buf[:m.start()])
                    del buf[:m.start()]
                    self.state = "header"
                    self._body(body, events, declared=self.length)
                    return True
                self.scanned = upto
            if len(buf) < self.length:
                return False
            body = bytes(self.buf[:self.length])
            del self.buf[:self.length]
            self.state = "header"
            self._body(body, events)
            return True
        if self.state == "skip":
            return self._skip(events)
        return self._header(events)

    def _header(self, events: list) -> bool:
        buf = self.buf
        i = 0
        while i < len(buf) and buf[i] in WHITESPACE:  # stray line breaks between messages
            i += 1
        if i:
            del buf[:i]
        if not buf:
            return False
        if not TOKEN_START.match(buf):
            return self._garbage(events)
        end = HEADER_END.search(buf, 0, MAX_HEADER_BYTES + 4)
        complete = bytes(buf[:end.start()] if end else buf[:buf.rfind(b"\n") + 1])
        for line in complete.splitlines():
            if not HEADER_LINE.fullmatch(line):
                return self._garbage(events)
            if NEXT_HEADER.search(line + b"\n", 1):  # "junk: ...Content-Length: 5": resync there
                return self._garbage(events)
        if end is None:
            if len(buf) > MAX_HEADER_BYTES:
                return self._garbage(events)
            return False
        headers = {}
        for line in complete.splitlines():
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        del buf[:end.end()]
        raw = headers.get(b"content-length")
        if raw is None:
            return self._start_skip(FramingError(INVALID_REQUEST, "a message header without Content-Length "
                                                 "(the message was skipped)"))
        if not raw.isdigit():
            shown = raw[:40].decode("ascii", "replace")
            return self._start_skip(FramingError(INVALID_REQUEST, f"Content-Length must be a number of bytes, "
                                                 f"got {shown!r} (the message was skipped)"))
        length = int(raw)
        if length > self.max_bytes:
            return self._start_skip(FramingError(INVALID_REQUEST, f"a message of {length:,} bytes is over the "
                                                 f"{_mib(self.max_bytes)} limit (Content-Length; the message "
                                                 "was skipped)"))
        self.state, self.length, self.scanned, self.idle_tried = "body", length, 0, False
        return True

    def _garbage(self, events: list) -> bool:
        """Bytes where a header should start: drop them up to the next valid header (when they
        are a message without its header, its id is still read and answered)."""
        self._start_skip(FramingError(INVALID_REQUEST, "input that is not a message header was skipped "
                                      "up to the next Content-Length header"))
        self.skip_from = 1  # not the header that was just refused
        return True

    def _start_skip(self, error: FramingError | None) -> bool:
        if error is not None:
            self.errors += 1
        self.state, self.pending, self.skip_from = "skip", error, 0
        self.sniff.clear()
        return True

    def _skip(self, events: list) -> bool:
        buf = self.buf
        m = NEXT_HEADER.search(buf, self.skip_from)
        drop = m.start() if m else max(self.skip_from, len(buf) - KEEP_TAIL)
        self.skip_from = 0
        if self.pending is not None:
            room = SNIFF_BYTES - len(self.sniff)
            msg_id = sniff_id(bytes(self.sniff) + bytes(buf[:min(room, m.start() if m else len(buf))]))
            self.sniff += buf[:min(drop, room)]
            if msg_id is not None or m is not None or len(self.sniff) >= SNIFF_BYTES:
                self.pending.id = msg_id
                events.append(self.pending)
                self.pending = None
        self.skipped += drop
        del buf[:drop]
        if m is None:
            return False
        if self.pending is not None:
            events.append(self.pending)
            self.pending = None
        self.state = "header"
        return True

    def _body(self, body: bytes, events: list, declared: int | None = None) -> None:
        try:
            events.append(json.loads(body))
            if declared is not None:
                log.warning("a Content-Length was %d bytes too large; the next message was recovered",
                            declared - len(body))
            return
        except (ValueError, RecursionError) as e:
            error = e
        # Not JSON. If the next message's header is inside, Content-Length was too large:
        # read what comes before it as this message and put the rest back. (The header may
        # run past the declared end: look at the bytes already read after it too.)
        m = NEXT_HEADER.search(body + bytes(self.buf[:KEEP_TAIL]))
        if m is not None and m.start() < len(body):
            self.buf[:0] = body[m.start():]
            head = body[:m.start()]
            try:
                events.append(json.loads(head))
                log.warning("a Content-Length was %d bytes too large; the next message was recovered",
                            len(body) - len(head))
                return
            except (ValueError, RecursionError) as e:
                error = e
                body = head
        self.errors += 1
        events.append(FramingError(PARSE_ERROR, f"Parse error: the body of {len(body):,} bytes is not a JSON "
                                   f"message ({str(error)[:120]}); is its Content-Length right?",
                                   sniff_id(body[:SNIFF_BYTES])))


# -- validation --------------------------------------------------------------------------------
def _strict_int(value, _type):
    """JSON integers only: lsprotocol's converter would read "3", 1.5 and true as 3, 1 and 1."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise TypeError(f"expected an integer, got {json.dumps(value)[:40]}")


def _lenient_bool(value, _type):
    """As lsprotocol reads booleans (cattrs would route them through the int hook: bool is an int)."""
    return value if type(value) is bool else bool(value)


def _format_leaf(exc: BaseException, type_) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ValueError) and "should be in range" in str(exc):
        return str(exc)  # lsprotocol's uinteger bounds, e.g. "Position.line should be in range [0:2147483647], but was -1."
    if isinstance(exc, TypeError) and str(exc).startswith("expected an integer"):
        return f"invalid value, {exc}"
    name = getattr(type_, "__name__", None) or str(type_)
    return f"invalid value for type, expected {name}"


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, BaseValidationError):
        parts = cattrs.transform_error(exc, path="$", format_exception=_format_leaf)
        return "; ".join(parts[:5]) + (f" (and {len(parts) - 5} more)" if len(parts) > 5 else "")
    return f"{type(exc).__name__}: {exc}"[:300]


def _valid_id(value) -> bool:
    return (type(value) is int and -2**63 <= value < 2**63) or isinstance(value, str)


# -- the protocol ------------------------------------------------------------------------------
class TandemProtocol(LanguageServerProtocol):
    """pygls's LanguageServerProtocol with the guarantees above. Messages come in through
    `handle_raw` (a parsed JSON value) from `serve_stdio`."""

    def __init__(self, server, converter):
        converter.register_structure_hook(int, _strict_int)
        converter.register_structure_hook(bool, _lenient_bool)
        super().__init__(server, converter)
        self._initialize_seen = False
        self.exit_hooks: list[Callable[[], Any]] = []
        self.on_exit: Callable[[int], None] = _exit_process

    # pygls builds a plain Workspace inside its initialize handler; ours has LSP-exact documents.
    @property
    def _workspace(self):
        return self.__dict__.get("_tandem_workspace")

    @_workspace.setter
    def _workspace(self, ws):
        if ws is not None and not isinstance(ws, TandemWorkspace):
            ws = TandemWorkspace.replacing(ws)
        self.__dict__["_tandem_workspace"] = ws

    @property
    def transport_open(self) -> bool:
        return self.writer is not None and not getattr(self.writer, "closed", False)

    def _execute_handler(self, msg_id, handler, callback, args=None, kwargs=None):
        """pygls keeps the future of every notification (didChange, ...) in _request_futures
        forever (only a request's answer removes its entry): drop each one when it is done."""
        def done(future, callback=callback):
            if self._request_futures.get(msg_id) is future:
                del self._request_futures[msg_id]
            callback(future)

        super()._execute_handler(msg_id, handler, done, args, kwargs)

    # -- sending ----------------------------------------------------------------------------
    def send_error(self, msg_id, code: int, message: str) -> None:
        self._send_response(msg_id, error=types.ResponseError(code=code, message=message))

    def _send_data(self, data: Any):
        if not self.transport_open:
            return  # the client is gone: nothing to write to, nothing to log in a loop
        super()._send_data(data)

    # -- receiving ---------------------------------------------------------------------------
    def handle_raw(self, data: Any) -> None:
        if isinstance(data, FramingError):
            self._framing_error(data)
            return
        if not isinstance(data, dict):
            kind = "a batch (an array)" if isinstance(data, list) else type(data).__name__
            self._invalid(None, f"Invalid request: a message must be a JSON object, got {kind}")
            return
        has_id, msg_id = "id" in data, data.get("id")
        if has_id and not _valid_id(msg_id) and not (msg_id is None and "method" not in data):
            self._invalid(None, f"Invalid request: the id must be a number or a string, got {json.dumps(msg_id)[:40]}")
            return
        if data.get("jsonrpc") != "2.0":
            self._invalid(msg_id if "method" in data else None, 'Invalid request: "jsonrpc" must be "2.0"')
            return
        if "method" not in data:
            self._response(data)
            return
        method = data["method"]
        if not isinstance(method, str):
            self._invalid(msg_id if has_id else None, "Invalid request: the method must be a string")
            return
        message_type = self.get_message_type(method)
        if message_type is None:
            message_type = JsonRPCRequestMessage if has_id else JsonRPCNotification
            data = {**data, "params": data.get("params")}
        try:
            message = self._converter.structure(data, message_type)
        except Exception as e:
            text = f"Invalid params for {method}: {describe_error(e)}"
            message = None
            if method == types.INITIALIZE:  # a quirk in the capabilities must not cost the session
                try:
                    message = default_converter().structure(data, message_type)
                    log.warning("%s (read leniently)", text)
                except Exception:
                    message = None
            if message is None:
                if has_id:
                    self.send_error(msg_id, INVALID_PARAMS, text)
                log.warning("%s%s", text, "" if has_id else " (a notification: ignored)")
                return
        self.handle_message(message)

    def _invalid(self, msg_id, text: str) -> None:
        log.warning("%s", text)
        self.send_error(msg_id, INVALID_REQUEST, text)  # JSON-RPC: a null id when it is unreadable

    def _framing_error(self, error: FramingError) -> None:
        log.warning("malformed input: %s%s", error.message, f" (id {error.id!r})" if error.id is not None else "")
        if error.id is not None and _valid_id(error.id):
            self.send_error(error.id, error.code, error.message)
        elif error.code == PARSE_ERROR:  # JSON-RPC: a parse error is answered, with a null id
            self._send_response(None, error=types.ResponseError(code=PARSE_ERROR, message=error.message))

    def _response(self, data: dict) -> None:
        try:
            message = self.structure_message(data)
        except Exception as e:
            log.warning("ignored a malformed response from the client: %s", describe_error(e))
            return
        self.handle_message(message)

    def handle_message(self, message) -> None:
        method = getattr(message, "method", None)
        is_request = method is not None and getattr(message, "id", None) is not None
        if method == types.EXIT:
            super().handle_message(message)
            return
        if self._shutdown:
            if is_request:
                self.send_error(message.id, INVALID_REQUEST,
                                f"{method}: the server is shutting down (shutdown was received); only exit is accepted")
            return
        if method == types.INITIALIZE:
            if self._initialize_seen:
                self.send_error(message.id, INVALID_REQUEST, "initialize may only be sent once")
                return
            self._initialize_seen = True
        elif method is not None and not self._initialize_seen:
            if is_request:
                self.send_error(message.id, SERVER_NOT_INITIALIZED,
                                f"{method}: the server is not initialized yet (send initialize first)")
            return  # notifications before initialize are dropped (the spec)
        super().handle_message(message)

    # -- the end -----------------------------------------------------------------------------
    def lsp_shutdown(self, *args):
        """pygls's, iterating over a copy: cancelling a future runs its callbacks, which now
        remove it from _request_futures."""
        if (user_handler := self.fm.features.get(types.SHUTDOWN)) is not None:
            yield user_handler, args, None
        current_id = self.msg_id
        for msg_id, future in list(self._request_futures.items()):
            if msg_id != current_id and not future.done():
                future.cancel()
        self._shutdown = True
        return None

    lsp_shutdown.method_name = types.SHUTDOWN  # type: ignore[attr-defined]

    def lsp_exit(self, *args):
        if (user_handler := self.fm.features.get(types.EXIT)) is not None:
            try:
                user_handler(*args)
            except Exception:
                log.exception("the exit handler failed")
        code = 0 if self._shutdown else 1
        log.info("exit (%s shutdown): ending with code %d", "after" if self._shutdown else "without", code)
        self.on_exit(code)

    lsp_exit.method_name = types.EXIT  # type: ignore[attr-defined]

    def run_exit_hooks(self) -> None:
        for hook in self.exit_hooks:
            try:
                hook()
            except Exception:
                log.exception("an exit hook failed")


def report_server_error(server, error: Exception, source) -> None:
    """pygls shows every error outside a request as an "Error in server: ..." pop-up; Tandem
    logs them (the editor's log) and keeps pop-ups for what the user can act on."""
    if source is FeatureRequestError:
        return  # already in the request's error response
    log.error("%s: %s", getattr(source, "__name__", source), error)


# -- stdio ---------------------------------------------------------------------------------------
class StdoutWriter:
    """Writes frames to the protocol's stdout; after the first failure (the client closed the
    pipe) it is closed for good and says so once."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False
        self.on_broken: Callable[[], None] | None = None

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.closed:
                return
            try:
                self._stream.write(data)
                self._stream.flush()
                return
            except (OSError, ValueError) as e:  # BrokenPipeError, or "I/O operation on closed file"
                self.closed = True
                error = e
        log.warning("the client closed the connection (%s); stopping", type(error).__name__)
        if self.on_broken is not None:
            self.on_broken()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            try:
                self._stream.flush()
            except (OSError, ValueError):
                pass


class _ChunkReader:
    """os.read on a daemon thread (a thread pool's worker blocked in read would hold up the
    interpreter's exit; a buffered sys.stdin would too)."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop):
        self._fd, self._loop = fd, loop
        self._requests: list = []
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="tandem-stdin", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._requests:
                    self._wake.wait()
                fut = self._requests.pop(0)
            try:
                data = os.read(self._fd, READ_CHUNK)
            except OSError:
                data = b""
            try:
                self._loop.call_soon_threadsafe(lambda f=fut, d=data: f.done() or f.set_result(d))
            except RuntimeError:
                return  # the loop is closed
            if not data:
                return

    async def read(self) -> bytes:
        fut = self._loop.create_future()
        with self._wake:
            self._requests.append(fut)
            self._wake.notify()
        return await fut


def _exit_process(code: int) -> None:
    """Leave now: the model may still be loading or decoding on a worker thread, and joining it
    (as the interpreter's normal exit does) could take minutes."""
    proto = _current_protocol
    if proto is not None:
        proto.run_exit_hooks()
        if proto.writer is not None:
            proto.writer.close()
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)


_current_protocol: TandemProtocol | None = None


def protect_stdout():
    """The protocol gets its own copy of stdout; fd 1 and sys.stdout then point at stderr, so a
    stray print, a C library or a child process can never write into the protocol stream."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


async def _serve(server, fd: int) -> int:
    global _current_protocol
    proto: TandemProtocol = server.protocol
    _current_protocol = proto
    loop = asyncio.get_running_loop()
    parser = FrameParser()
    reader = _ChunkReader(fd, loop)
    writer = proto.writer
    if isinstance(writer, StdoutWriter):
        writer.on_broken = lambda: loop.call_soon_threadsafe(
            proto.on_exit, 0 if proto._shutdown else 1)
    pending = None
    while True:
        if pending is None:
            pending = asyncio.ensure_future(reader.read())
        if parser.waiting_for_body():
            done, _ = await asyncio.wait({pending}, timeout=IDLE_S)
            if not done:
                for event in parser.idle():
                    proto.handle_raw(event)
                continue
        chunk = await pending
        pending = None
        try:
            events = parser.feed(chunk) if chunk else parser.eof()
        except Exception:  # a bug in the parser must not end the session: start afresh,
            log.exception("reading the input failed; resynchronising")  # on the next header
            rest, parser, events = bytes(parser.buf[1:]), FrameParser(), []
            try:
                parser.state = "skip"
                events = parser.feed(rest)
            except Exception:
                parser, events = FrameParser(), []
        for event in events:
            try:
                proto.handle_raw(event)
            except SystemExit:
                raise
            except Exception:
                log.exception("handling a message failed")
        if not chunk:
            break
    code = 0 if proto._shutdown else 1
    log.info("the client closed stdin (%s shutdown); ending with code %d",
             "after" if proto._shutdown else "without", code)
    proto.on_exit(code)  # from here: asyncio.run's end would wait for the executors' threads
    return code


def serve_stdio(server, stdin_fd: int = 0, stdout=None) -> None:
    """Serve LSP over stdio until `exit` or the end of stdin; never returns."""
    proto: TandemProtocol = server.protocol
    proto.set_writer(StdoutWriter(stdout if stdout is not None else protect_stdout()))
    code = 1
    try:
        code = asyncio.run(_serve(server, stdin_fd))
    except (KeyboardInterrupt, SystemExit) as e:
        code = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1
    except Exception:
        log.exception("the server's main loop failed")
    proto.on_exit(code)
