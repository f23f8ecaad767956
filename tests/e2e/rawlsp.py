"""A raw-bytes LSP client for protocol tests: the real server process over stdio, with bytes
written exactly as given (broken framing included) and every read bounded by a timeout.

pytest-lsp's client cannot send malformed frames, so the framing and lifecycle tests (and
tests/benchmarks/bench_reliability.py) use this instead.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

TIMEOUT = float(os.environ.get("RAWLSP_TIMEOUT", "20"))


class RawServer:
    def __init__(self, env: dict | None = None, home: Path | None = None, args: tuple[str, ...] = ()):
        full_env = {**os.environ, **(env or {})}
        if home is not None:
            full_env["TANDEM_HOME"] = str(home)
        self.proc = subprocess.Popen([sys.executable, "-m", "tandem", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
        self.messages: queue.Queue = queue.Queue()
        self.notifications: list[dict] = []
        self.responses: dict = {}
        self.server_requests: list[dict] = []
        self.null_responses: list[dict] = []  # errors about messages whose id could not be read
        self._cond = threading.Condition()
        self.stderr = bytearray()
        self.stderr_bytes = 0  # all of it, even past what is kept
        self.stdout_garbage = bytearray()  # bytes on stdout that were not a frame
        self._next_id = 0
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    # -- reading ------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        out = self.proc.stdout
        while True:
            header = b""
            while not header.endswith(b"\r\n\r\n"):
                c = out.read(1)
                if not c:
                    return
                header += c
            length = None
            for line in header.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length is None:
                self.stdout_garbage += header
                continue
            body = out.read(length)
            try:
                msg = json.loads(body)
            except ValueError:
                self.stdout_garbage += body
                continue
            with self._cond:
                if "method" in msg and "id" in msg:  # a request from the server: answer it
                    self._answer_server_request(msg)
                elif "method" in msg:
                    self.notifications.append(msg)
                elif msg.get("id") is None:
                    self.null_responses.append(msg)
                else:
                    self.responses[msg.get("id")] = msg
                self._cond.notify_all()

    answer_server_requests = True

    def _answer_server_request(self, msg: dict) -> None:
        self.server_requests.append(msg)
        if not self.answer_server_requests:
            return
        result = [None] * len(msg.get("params", {}).get("items", [])) if msg["method"] == "workspace/configuration" else None
        try:
            self.send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
        except OSError:
            pass

    def _read_stderr(self) -> None:
        while True:
            chunk = self.proc.stderr.read1(65536) if hasattr(self.proc.stderr, "read1") else self.proc.stderr.read(65536)
            if not chunk:
                return
            self.stderr_bytes += len(chunk)
            if len(self.stderr) < 1 << 20:
                self.stderr += chunk

    # -- writing ------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    @staticmethod
    def frame(body: bytes) -> bytes:
        return b"Content-Length: %d\r\n\r\n" % len(body) + body

    def send(self, msg: dict) -> None:
        self.write(self.frame(json.dumps(msg).encode("utf-8")))

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def request(self, method: str, params=None, msg_id=None, send=True) -> int:
        msg_id = self.new_id() if msg_id is None else msg_id
        msg = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            msg["params"] = params
        if send:
            self.send(msg)
        return msg_id

    def notify(self, method: str, params=None) -> None:
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    def response(self, msg_id, timeout: float = TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self.responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no response to id {msg_id!r} within {timeout}s; stderr tail: "
                                         f"{bytes(self.stderr[-2000:]).decode('utf-8', 'replace')}")
                self._cond.wait(left)
            return self.responses.pop(msg_id)

    def call(self, method: str, params=None, timeout: float = TIMEOUT) -> dict:
        return self.response(self.request(method, params), timeout)

    def no_response(self, msg_id, wait: float = 1.0) -> bool:
        time.sleep(wait)
        with self._cond:
            return msg_id not in self.responses

    def show_messages(self) -> list[str]:
        with self._cond:
            return [n["params"]["message"] for n in self.notifications if n["method"] == "window/showMessage"]

    def wait_for(self, predicate, timeout: float = TIMEOUT, what: str = "a condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.02)

    def log_messages(self) -> list[str]:
        with self._cond:
            return [n["params"]["message"] for n in self.notifications if n["method"] == "window/logMessage"]

    # -- session ------------------------------------------------------------------------
    def initialize(self, capabilities: dict | None = None, timeout: float = TIMEOUT, settings: dict | None = None) -> dict:
        caps = capabilities if capabilities is not None else {}
        params = {"processId": os.getpid(), "rootUri": None, "capabilities": caps}
        if settings is not None:
            params["initializationOptions"] = {"tandem": settings}
        result = self.call("initialize", params, timeout)
        assert "result" in result, result
        self.notify("initialized", {})
        return result

    def state(self) -> str | None:
        with self._cond:
            states = [n["params"].get("state") for n in self.notifications if n["method"] == "tandem/status"]
        return states[-1] if states else None

    def wait_for_state(self, state: str, timeout: float = 60) -> None:
        self.wait_for(lambda: self.state() == state, timeout, f"status {state!r} (last: {self.state()!r})")

    def open(self, uri: str, text: str, version: int = 1) -> None:
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                              "version": version, "text": text}})

    def alive(self, timeout: float = TIMEOUT) -> bool:
        """Does the server still answer a request (an unknown method: MethodNotFound)?"""
        r = self.call("tandem/ping", {}, timeout)
        return r.get("error", {}).get("code") == -32601

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
