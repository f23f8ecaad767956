"""A small OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on purpose.

Only for the faults a real engine (tests/llama_server.py) cannot be made to produce: 401/403,
429, malformed JSON, a stream cut midway, a slow or silent endpoint, a server that refuses
token-id prompts. Real sockets, real HTTP/1.1 and SSE framing; scripted per test.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Script:
    """What the server does. `replies` is consumed one per completion request (the last one
    repeats); each is a dict: status, pieces (text chunks), delay_first, delay_each, logprobs
    (True: one per char; "ids": vLLM's token_id:N strings; False: none), cut_after (close the
    connection after that many chunks), malformed (bad JSON after that many chunks), headers,
    body (a non-200 body), refuse_ids (422 when the prompt is a list), finish."""

    def __init__(self, *replies: dict):
        self.replies = list(replies) or [{}]
        self.requests: list[dict] = []  # bodies of /v1/completions requests
        self.headers: list[dict] = []
        self.disconnects = 0  # streams the client closed before the end
        self.chunks_sent: list[int] = []
        self.models = ["tiny"]
        self.tokenize: list[int] | None = None  # answer of /tokenize; None: 404


def make_handler(script: Script):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _json(self, status: int, obj, headers: dict | None = None) -> None:
            data = json.dumps(obj).encode() if not isinstance(obj, (bytes, str)) else \
                (obj.encode() if isinstance(obj, str) else obj)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in script.models]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            if self.path == "/tokenize":
                if script.tokenize is None:
                    return self._json(404, {"error": "no"})
                return self._json(200, {"tokens": script.tokenize})
            if self.path != "/v1/completions":
                return self._json(404, {"error": {"message": "not found"}})
            script.requests.append(body)
            script.headers.append({k.lower(): v for k, v in self.headers.items()})
            r = script.replies[min(len(script.requests) - 1, len(script.replies) - 1)]
            if r.get("refuse_logprobs") and body.get("logprobs"):  # llama-cpp-python without --logits_all
                return self._json(500, {"error": {"message": "logprobs is not supported for models created with "
                                                             "logits_all=False"}})
            if r.get("refuse_ids") and isinstance(body.get("prompt"), list):
                return self._json(422, {"detail": [{"loc": ["body", "prompt"], "msg": "Input should be a valid string",
                                                    "type": "string_type"}]})
            status = r.get("status", 200)
            if status != 200:
                return self._json(status, r.get("body", {"error": {"message": f"status {status}"}}), r.get("headers"))
            time.sleep(r.get("delay_first", 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            pieces = r.get("pieces", ["hello", " world"])
            sent = 0
            try:
                for i, piece in enumerate(pieces):
                    if i and r.get("delay_each"):
                        time.sleep(r["delay_each"])
                    if r.get("cut_after") is not None and i >= r["cut_after"]:
                        self.wfile.flush()
                        self.connection.shutdown(2)  # the connection drops midway
                        return
                    if r.get("malformed") is not None and i >= r["malformed"]:
                        self.wfile.write(b'data: {"choices": [{"text": "x",\n\n')
                        self.wfile.flush()
                        return
                    lp = r.get("logprobs", True)
                    logprobs = None
                    if lp == "ids":
                        logprobs = {"tokens": [f"token_id:{ord(c)}" for c in piece],
                                    "token_logprobs": [-0.1] * len(piece)}
                    elif lp:
                        logprobs = {"tokens": list(piece), "token_logprobs": [-0.25] * len(piece)}
                    last = i == len(pieces) - 1
                    chunk = {"id": "c", "object": "text_completion", "model": body.get("model"),
                             "choices": [{"index": 0, "text": piece, "logprobs": logprobs,
                                          "finish_reason": r.get("finish", "stop") if last else None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    sent += 1
                if not r.get("no_done"):
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                script.disconnects += 1
            finally:
                script.chunks_sent.append(sent)

    return Handler


class FakeServer:
    def __init__(self, script: Script, port: int = 0):
        self.script = script
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(script))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
