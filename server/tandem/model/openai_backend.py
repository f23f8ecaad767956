"""A backend that asks an OpenAI-compatible server (vLLM, llama.cpp's server, TGI) to generate.

For teams: one GPU server runs the model, every editor's Tandem talks to it over HTTP. Tandem
stays the same above the seam (backend.py): it builds token-id prompts with the tokenizer of a
local model bundle, and this backend turns `generate(prompt_ids, ...)` into a streamed
`POST {endpoint}/v1/completions`.

Decisions, each for a reason:
- **Everything goes through `/v1/completions`**, chat prompts included: callers give token ids
  already rendered with the model's own chat template (generate/function.py starts the
  assistant's answer with the signature and docstring, which the chat endpoint cannot express
  portably). One endpoint, one code path, the same prompts as the local runtime.
- **The prompt is sent as token ids** (vLLM and llama.cpp's `llama-server` accept an array of
  ids), so Tandem's prompt budget in tokens is exact and the FIM tokens are the ids Tandem
  chose. A server that refuses ids (llama-cpp-python's server: its request type is text only)
  answers 400/422 once; the backend then sends the prompt as text with the special tokens
  written out (which those servers parse as special tokens) and remembers that.
- **The tokenizer is the local bundle's**: `tandem.modelPath`'s when set, else the default
  model's (Qwen2.5-Coder 0.5B, 1.5B and 7B share one tokenizer). Only its tokenizer.json,
  manifest (FIM and stop ids) and chat template are read, not the weights. At load the backend
  asks the server to tokenize a probe text (`/tokenize`, `/extras/tokenize`) where it can; a
  different answer means the server's model has another tokenizer: the user is told (the
  completions would be nonsense), and told when the server offers no way to check.
- **Generated token ids** come from vLLM exactly (`return_tokens_as_token_ids`); otherwise the
  streamed text is tokenized locally. Per-token log-probabilities are used only when the
  server returns one per token of that tokenization; else they are left empty, which the
  hover shows as "unknown" (never invented).
- **Cancellation** is closing the stream: the cancel flag is checked for every chunk, and a
  watcher closes the response when the flag is set while the server is silent (a slow
  prefill), so nothing waits for a read timeout. `stop_check` ends the stream the same way.
- **Failures** (connection, timeout, HTTP errors, malformed JSON, a stream cut midway) raise
  BackendError with a message that names the endpoint and the HTTP status, never the key.
  429/5xx/connection errors before the first token are retried (bounded, with backoff). After
  a connection failure the backend fails fast (no network call per keystroke) and checks the
  endpoint's health (`GET /v1/models`) at most every HEALTH_RETRY_S when asked to generate:
  the first success serves again.
- **Privacy**: nothing is sent unless the user set `tandem.endpoint`. The API key (from the
  environment variable named by `tandem.apiKeyEnv`, which the VS Code extension fills from its
  secret storage) goes only in the Authorization header; messages are scrubbed of it. Proxy
  environment variables and .netrc are ignored (trust_env off): requests go where the setting
  says. TLS certificates are verified (SSL_CERT_FILE, when set, names the CA bundle).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import random
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from .backend import BackendError, Cancelled, Constraint, Generation, Sampling

log = logging.getLogger(__name__)
# httpx logs every request at INFO (one line per keystroke) and httpcore every socket event at
# DEBUG; Tandem's own messages say what matters, once.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.INFO)

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # between two chunks of a stream (a cold prefill on a busy server)
RETRIES = 2  # after the first try, for 429, 5xx and connection errors before any token
BACKOFF_S = 0.3  # doubled per retry, with jitter; a Retry-After up to MAX_RETRY_AFTER_S is honoured
MAX_RETRY_AFTER_S = 3.0
POLL_S = 0.02  # how often a waiting request looks at its cancel flag
HEALTH_RETRY_S = 5.0  # after a connection failure, how often a request may check the endpoint again
PROBE_TEXT = "def tandem_probe(values):\n    return {v: len(v) for v in values if v}  # ok\n"


def normalize_endpoint(url: str) -> str:
    """The base URL without a trailing `/` or `/v1`; ValueError with a message when unusable."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"tandem.endpoint must be an http:// or https:// URL, got {display_url(url)!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def display_url(url: str) -> str:
    """The URL without any user:password part, for messages and provenance."""
    try:
        p = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))


class _Stop(Exception):
    pass


class OpenAIBackend:
    """The Backend protocol over an OpenAI-compatible `/v1/completions` endpoint."""

    device = "remote"
    supports_constraint = False  # token healing needs a per-step mask the HTTP API cannot take

    def __init__(self, endpoint: str, model: str, codec, *, api_key: str | None = None,
                 special_texts: dict[int, str] | None = None, render_text: Callable[[list[int]], str] | None = None,
                 transport=None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S,
                 retries: int = RETRIES, backoff_s: float = BACKOFF_S, health_retry_s: float = HEALTH_RETRY_S):
        import httpx

        self.endpoint = normalize_endpoint(endpoint)
        self.shown = display_url(self.endpoint)
        self.model = model
        self.codec = codec
        self._key = api_key or None
        self.special_texts = dict(special_texts or {})
        # The prompt as text with special tokens written out, for servers that take no ids.
        self.render_text = render_text or codec.decode
        self.retries, self.backoff_s, self.health_retry_s = retries, backoff_s, health_retry_s
        headers = {"Accept": "application/json, text/event-stream", "User-Agent": "tandem"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        verify: bool | ssl.SSLContext = True
        if (ca := os.environ.get("SSL_CERT_FILE")) and Path(ca).is_file():
            verify = ssl.create_default_context(cafile=ca)
        self._timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=10.0, pool=connect_timeout)
        self._client = httpx.Client(base_url=self.endpoint, headers=headers, timeout=self._timeout,
                                    verify=verify, trust_env=False, follow_redirects=False, transport=transport)
        self._httpx = httpx
        self.ids_prompt = True  # until the server refuses a prompt of token ids
        self.want_logprobs = True  # until the server refuses to give them (llama-cpp-python without --logits_all)
        self._probed = False
        self.healthy = True
        self.last_error: str | None = None
        self._last_health = 0.0
        self._lock = threading.Lock()  # one request at a time through this backend (the service is serial)

    # -- messages -------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        text = str(text)
        if self._key and self._key in text:
            text = text.replace(self._key, "***")
        return text[:300]

    def _error(self, what: str) -> BackendError:
        msg = self._scrub(f"the endpoint {self.shown} {what}")
        self.last_error = msg
        return BackendError(msg)

    def _http_error(self, status: int, body: str) -> BackendError:
        detail = ""
        try:
            j = json.loads(body)
            e = j.get("error", j) if isinstance(j, dict) else j
            detail = e.get("message") if isinstance(e, dict) else str(e)
            detail = detail or (j.get("detail") if isinstance(j, dict) else "")
        except Exception:
            detail = body.strip().splitlines()[0] if body.strip() else ""
        detail = f": {self._scrub(str(detail))[:200]}" if detail else ""
        if status in (401, 403):
            hint = (" (the API key was refused: set it with \"Tandem: Set API Key\" or in the environment "
                    "variable named by tandem.apiKeyEnv)" if self._key else
                    " (it needs an API key: set it with \"Tandem: Set API Key\" or in the environment variable "
                    "named by tandem.apiKeyEnv)")
            return self._error(f"answered HTTP {status}{hint}")
        if status == 404:
            return self._error(f"answered HTTP 404 for model {self.model!r}{detail} (check tandem.apiModel "
                               "and tandem.endpoint)")
        return self._error(f"answered HTTP {status}{detail}")

    # -- health ---------------------------------------------------------------------------
    def models(self, timeout: float = 5.0) -> list[str]:
        """The model names the server lists (GET /v1/models); BackendError when it cannot."""
        httpx = self._httpx
        try:
            r = self._client.get("/v1/models", timeout=timeout)
        except httpx.HTTPError as e:
            raise self._error(f"is unreachable ({type(e).__name__}: {self._scrub(str(e)) or 'no answer'})") from None
        if r.status_code != 200:
            raise self._http_error(r.status_code, r.text)
        try:
            return [str(m["id"]) for m in r.json().get("data", []) if isinstance(m, dict) and "id" in m]
        except Exception:
            raise self._error("answered /v1/models with malformed JSON") from None

    def check_health(self) -> bool:
        self._last_health = time.monotonic()
        try:
            self.models(timeout=min(3.0, self._timeout.connect or 3.0))
        except BackendError as e:
            self.healthy = False
            log.info("health check failed: %s", e)
            return False
        if not self.healthy:
            log.info("the endpoint %s answers again", self.shown)
        self.healthy, self.last_error = True, None
        return True

    def probe_logprobs(self) -> bool:
        """Ask for one token with logprobs, not streamed: False (and stop asking for them) when
        the server refuses them. A streamed refusal can only cut the stream (llama-cpp-python
        raises inside its generator after the 200), which says nothing about why. Asked once."""
        self._probed = True
        try:
            r = self._client.post("/v1/completions", timeout=30.0, json={
                "model": self.model, "prompt": "x", "max_tokens": 1, "logprobs": 1, "temperature": 0.0})
        except self._httpx.HTTPError:
            return self.want_logprobs
        if r.status_code != 200 and _refuses_logprobs(r.text):
            self._no_logprobs()
        return self.want_logprobs

    def _no_logprobs(self) -> None:
        log.warning("%s gives no per-token log-probabilities; the hover's confidence will be unknown for "
                    "what it writes", self.shown)
        self.want_logprobs = False

    def tokenizer_check(self) -> str | None:
        """None when the server tokenizes the probe text as the local tokenizer does, else a
        message (a different tokenizer, or no way to check)."""
        want = self.codec.encode(PROBE_TEXT)
        body = {"content": PROBE_TEXT, "input": PROBE_TEXT, "prompt": PROBE_TEXT, "model": self.model,
                "add_special": False, "add_special_tokens": False}
        for path in ("/tokenize", "/extras/tokenize"):
            try:
                r = self._client.post(path, json=body, timeout=5.0)
            except self._httpx.HTTPError:
                continue
            if r.status_code != 200:
                continue
            try:
                got = [int(t) for t in r.json()["tokens"]]
            except Exception:
                continue
            if got == want:
                return None
            return (f"The model served at {self.shown} tokenizes text differently from the local tokenizer "
                    f"(probe: {len(got)} tokens there, {len(want)} here), so completions would be wrong. Point "
                    "tandem.modelPath at a model built from the same checkpoint as the served one.")
        return (f"Could not check that {self.shown} uses the same tokenizer as the local model (the server offers "
                "no tokenize endpoint); completions assume it does.")

    # -- generation -------------------------------------------------------------------------
    def generate(self, prompt: list[int], *, max_new_tokens: int, stop_ids: set[int],
                 cancel: threading.Event | None = None, stop_check: Callable[[list[int]], bool] | None = None,
                 sampling: Sampling | None = None, constraint: Constraint | None = None,
                 slot: str = "completion") -> Generation:
        cancel = cancel or threading.Event()
        with self._lock:
            if not self.healthy:
                if time.monotonic() - self._last_health < self.health_retry_s or not self.check_health():
                    raise BackendError(self.last_error or f"the endpoint {self.shown} is unreachable")
            attempt = 0
            while True:
                if cancel.is_set():
                    raise Cancelled()
                try:
                    return self._stream(prompt, max_new_tokens, stop_ids, cancel, stop_check, sampling)
                except _Resend:
                    continue  # the same request as text: not a failure
                except _Retry as r:
                    if attempt == self.retries:
                        if r.connection:
                            self.healthy = False
                            self._last_health = time.monotonic()
                        raise r.error from None
                    wait = r.after if r.after is not None else self.backoff_s * (2 ** attempt)
                    wait = min(MAX_RETRY_AFTER_S, wait) * (0.8 + 0.4 * random.random())
                    log.info("%s; retrying in %.2f s (%d of %d)", r.error, wait, attempt + 1, self.retries)
                    if cancel.wait(wait):
                        raise Cancelled() from None
                    attempt += 1

    def _payload(self, prompt: list[int], max_new_tokens: int, stop_ids: set[int], sampling: Sampling | None) -> dict:
        body: dict = {
            "model": self.model, "max_tokens": int(max_new_tokens), "stream": True, "echo": False,
            "logprobs": 1 if self.want_logprobs else None,
            "temperature": 0.0 if sampling is None else float(sampling.temperature),
            "top_p": 1.0 if sampling is None else float(sampling.top_p),
            "n": 1,
            # vLLM: generated tokens come back as "token_id:N", so ids are exact; others ignore it.
            "return_tokens_as_token_ids": True,
            # Ignored by some servers (they stop at the model's end-of-generation tokens anyway);
            # the text is cut at them here too.
            "stop": sorted({t for i in stop_ids if (t := self.special_texts.get(i))}) or None,
        }
        if sampling is not None:
            body["seed"] = int(sampling.seed)
        else:
            body["top_k"] = 1  # greedy on servers that sample at temperature 0 by default (llama.cpp)
        if self.ids_prompt:
            body["prompt"] = list(prompt)
        else:
            body["prompt"] = self.render_text(prompt)
        return {k: v for k, v in body.items() if v is not None}

    def _stream(self, prompt, max_new_tokens, stop_ids, cancel, stop_check, sampling) -> Generation:
        """One streamed request. The HTTP exchange runs on a helper thread that hands lines over
        a queue, so this thread notices the cancel flag within POLL_S even while the server is
        silent (headers not sent yet, a long prefill); stopping early shuts the socket down,
        which the server sees as the client going away."""
        httpx = self._httpx
        t0 = time.perf_counter()
        body = self._payload(prompt, max_new_tokens, stop_ids, sampling)
        q: queue.Queue = queue.Queue()
        abort = threading.Event()
        held: dict = {}
        threading.Thread(target=self._produce, args=(body, q, abort, held), daemon=True,
                         name="tandem-http").start()
        text, server_ids, server_lps, reason = "", [], [], "max_tokens"
        exact = True  # every token came as "token_id:N"
        t_first = None
        ids: list[int] = []
        finished = False
        try:
            while True:
                if cancel.is_set():
                    raise Cancelled(list(ids))
                try:
                    item = q.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                kind = item[0]
                if kind == "status":
                    status, err, headers = item[1], item[2], item[3]
                    # 400/422; llama-cpp-python's server answers its validation errors with 500.
                    if status in (400, 422, 500) and self.want_logprobs and _refuses_logprobs(err):
                        self._no_logprobs()
                        raise _Resend()
                    if status in (400, 422, 500) and self.ids_prompt and _refuses_ids(err):
                        log.info("%s takes no token-id prompts; sending text with special tokens", self.shown)
                        self.ids_prompt = False
                        raise _Resend()
                    if status == 429 or status >= 500:
                        raise _Retry(self._http_error(status, err), after=_retry_after(headers))
                    raise self._http_error(status, err)
                if kind == "exc":
                    raise self._transport_error(item[1], t_first is not None)
                if kind == "eof":  # the stream ended without [DONE] or a finish reason: cut midway
                    if t_first is None and self.want_logprobs and not self._probed and not self.probe_logprobs():
                        raise _Resend()  # it was the logprobs (asked once per backend)
                    self._probed = True
                    raise self._error("closed the stream before the completion ended")
                if kind == "open":
                    continue
                line = item[1].strip()
                if not line or line.startswith(":"):
                    continue  # blank separators and SSE comments (keep-alives)
                if line.startswith("error:") or line.startswith("event: error"):
                    raise self._error(f"sent an error in the stream: {line[:200]}")
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    finished = True
                    break
                try:
                    chunk = json.loads(data)
                    if isinstance(chunk, dict) and "error" in chunk:
                        err = chunk["error"]
                        raise self._error("sent an error in the stream: "
                                          f"{(err.get('message') if isinstance(err, dict) else err)}")
                    choice = chunk["choices"][0]
                    piece = choice.get("text") or ""
                    finish = choice.get("finish_reason")
                    lp = choice.get("logprobs") or {}
                    toks = lp.get("tokens") or []
                    lps = lp.get("token_logprobs") or []
                    if not isinstance(piece, str):
                        raise TypeError("text")
                except BackendError:
                    raise
                except Exception:
                    raise self._error("sent malformed JSON in its stream") from None
                if t_first is None:
                    t_first = time.perf_counter()
                text += piece
                for k, tok in enumerate(toks):
                    tid = _token_id(tok)
                    if tid is None:
                        exact = False
                    else:
                        server_ids.append(tid)
                    v = lps[k] if k < len(lps) else None
                    server_lps.append(v if isinstance(v, (int, float)) else None)
                cut = self._cut_special(text)
                if cut is not None:
                    text, reason = cut, "stop_token"
                    break
                ids = self._ids(text, server_ids, exact, stop_ids)
                if stop_check is not None and ids and stop_check(ids):
                    reason = "stop_text"
                    break
                if finish:
                    reason = "max_tokens" if finish == "length" else "stop_token"
                    finished = True
                    break
        finally:
            abort.set()
            if not finished:  # stopped early: close the connection now, the server stops generating
                _shutdown(held.get("response"))
        ids = self._ids(text, server_ids, exact, stop_ids)[:max_new_tokens]
        # Log-probabilities only where there is one per token we report, all given.
        logprobs: list[float] = []
        if len(server_lps) >= len(ids) and all(v is not None for v in server_lps[:len(ids)]) and \
                (exact or len(server_lps) == len(ids)):
            logprobs = [float(v) for v in server_lps[:len(ids)]]
        self.healthy, self.last_error = True, None
        t2 = time.perf_counter()
        t_first = t_first or t2
        return Generation(ids, logprobs, reason, len(prompt), 0, t_first - t0, t2 - t_first,
                          timings={"total_s": t2 - t0, "remote": True, "exact_ids": exact and bool(server_ids)})

    def _produce(self, body: dict, q: "queue.Queue", abort: threading.Event, held: dict) -> None:
        """The HTTP side of `_stream`, on its own thread: lines into `q` until the end or `abort`."""
        try:
            with self._client.stream("POST", "/v1/completions", json=body) as r:
                held["response"] = r
                if r.status_code != 200:
                    q.put(("status", r.status_code, r.read().decode("utf-8", "replace"), r.headers))
                    return
                q.put(("open",))
                for line in r.iter_lines():
                    if abort.is_set():
                        return
                    q.put(("line", line))
                q.put(("eof",))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer (which may be gone)
            if not abort.is_set():
                q.put(("exc", e))

    def _transport_error(self, e: BaseException, started: bool) -> Exception:
        httpx = self._httpx
        if isinstance(e, httpx.TimeoutException):
            if not started:
                return _Retry(self._error(f"did not answer in time ({type(e).__name__})"))
            return self._error(f"stopped sending mid-stream ({type(e).__name__})")
        if isinstance(e, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                          httpx.CloseError, httpx.ProxyError)):
            if not started:
                return _Retry(self._error(f"is unreachable ({type(e).__name__}: {self._scrub(str(e)) or 'no answer'})"),
                              connection=isinstance(e, httpx.ConnectError))
            return self._error(f"broke the stream midway ({type(e).__name__})")
        return self._error(f"failed ({type(e).__name__})")

    def _ids(self, text: str, server_ids: list[int], exact: bool, stop_ids: set[int]) -> list[int]:
        if exact and server_ids:
            out = []
            for t in server_ids:
                if t in stop_ids:
                    break
                out.append(t)
            return out
        return self.codec.encode(text) if text else []

    def _cut_special(self, text: str) -> str | None:
        """Text up to the first special token written out in it (a server that prints them)."""
        first = None
        for t in self.special_texts.values():
            i = text.find(t)
            if i >= 0 and (first is None or i < first):
                first = i
        return None if first is None else text[:first]

    # -- the rest of the protocol -----------------------------------------------------------
    def forward_logits(self, ids: list[int]):
        raise BackendError("a remote endpoint does not give logits for parity checks")

    def clear_cache(self) -> None:
        pass  # the server owns its caches

    def close(self) -> None:
        self._client.close()


class _Resend(Exception):
    """Send the same request again (as text: the server refused a prompt of token ids)."""


class _Retry(Exception):
    def __init__(self, error: BackendError, after: float | None = None, connection: bool = False):
        super().__init__(str(error))
        self.error, self.after, self.connection = error, after, connection


def _shutdown(response) -> None:
    """Shut the response's socket down (which wakes a thread blocked reading it), then close it."""
    if response is None:
        return
    try:
        sock = response.extensions["network_stream"].get_extra_info("socket")
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:
        pass


def _retry_after(headers) -> float | None:
    try:
        return max(0.0, float(headers.get("retry-after")))
    except (TypeError, ValueError):
        return None


def _refuses_ids(body: str) -> bool:
    """A 400/422 about the prompt's type (llama-cpp-python: `prompt` must be a string)."""
    b = body.lower()
    return "prompt" in b and any(w in b for w in ("valid string", "string_type", "str type", "must be a string",
                                                  "should be a string", "not a valid"))


def _refuses_logprobs(body: str) -> bool:
    """An error about logprobs themselves (llama-cpp-python: "logprobs is not supported for
    models created with logits_all=False"; a server capping them: "max logprobs")."""
    b = body.lower()
    return "logprobs" in b and any(w in b for w in ("not supported", "logits_all", "max_logprobs", "exceed"))


def _token_id(tok) -> int | None:
    if isinstance(tok, str) and tok.startswith("token_id:"):
        try:
            return int(tok[9:])
        except ValueError:
            return None
    return None


# -- loading ----------------------------------------------------------------------------------
def tokenizer_files(path: str | None, size: str = "auto"):
    """The model directory whose tokenizer, manifest (FIM and stop ids) and chat template the
    remote backend uses: `path` (tandem.modelPath) when set, else the default model of `size`.
    Only those small files are read; the weights need not be there."""
    from .loaded import default_model_for
    from .loader import BUILD_HINT, BUNDLE_NAME, MANIFEST_NAME, ModelError, ModelFiles, _read_json, default_model_path

    root = Path(path).expanduser() if path else Path(default_model_for(size, "cpu") or default_model_path())
    if not root.is_dir():
        raise ModelError(f"The OpenAI-compatible backend uses the tokenizer of a local model, and {root} is not one. "
                         "Set tandem.modelPath to a model built for the served checkpoint, or build the default "
                         f"model. {BUILD_HINT}")
    candidates = [root]
    if (root / BUNDLE_NAME).exists():
        variants = (_read_json(root / BUNDLE_NAME, "Model bundle").get("variants") or {})
        candidates = [root / v for v in [variants.get("cpu"), *variants.values()] if v] + \
            sorted(d for d in root.iterdir() if d.is_dir())
    for d in candidates:
        if (d / MANIFEST_NAME).is_file() and (d / "tokenizer.json").is_file():
            return ModelFiles(d, _read_json(d / MANIFEST_NAME, "Model manifest"))
    raise ModelError(f"No tokenizer.json with a {MANIFEST_NAME} under {root}. {BUILD_HINT}")


def load_remote(path: str | None, size: str, endpoint: str, api_model: str, api_key: str | None, *,
                transport=None, check: bool = True):
    """A LoadedModel whose generation runs at `endpoint`. ModelError for what the user must fix
    (no endpoint, no local tokenizer); an unreachable endpoint is not one: the model loads, the
    note says so, and requests fail fast until the endpoint answers."""
    from dataclasses import replace

    from tokenizers import Tokenizer

    from .chat import ChatTemplate, ChatTemplateError
    from .loaded import LoadedModel, TextCodec, special_ids
    from .loader import ModelError

    if not (endpoint or "").strip():
        raise ModelError("tandem.backend is \"openai\" but tandem.endpoint is empty: set it to the server's URL "
                         "(e.g. http://gpu-server:8000). Nothing is sent anywhere until it is set.")
    try:
        base = normalize_endpoint(endpoint)
    except ValueError as e:
        raise ModelError(str(e)) from None
    files = tokenizer_files(path, size)
    m = files.manifest
    fim, stop_ids = special_ids(files)
    try:
        raw = Tokenizer.from_file(str(files.directory / "tokenizer.json"))
    except Exception as e:
        raise ModelError(f"The tokenizer in {files.directory} cannot be read ({e}).") from None
    codec = TextCodec(raw)
    specials = {i: t for i in stop_ids | {fim.prefix, fim.suffix, fim.middle} if (t := raw.id_to_token(i))}
    lm = OpenAIBackend(base, api_model or "", codec, api_key=api_key, transport=transport,
                       special_texts={i: t for i, t in specials.items() if i in stop_ids},
                       render_text=lambda ids: raw.decode(ids, skip_special_tokens=False))
    notes = []
    if check:
        if lm.check_health():
            names = lm.models()
            if not api_model and names:
                lm.model = names[0]
            elif names and api_model not in names:
                notes.append(f"{lm.shown} lists the models {', '.join(names[:5])}, not {api_model!r}; requests name "
                             f"{api_model!r} (servers with one model usually accept any name).")
            if (problem := lm.tokenizer_check()) is not None:
                notes.append(problem)
            lm.probe_logprobs()
        else:
            notes.append(f"{lm.last_error}; completions resume as soon as it answers.")
    try:
        chat = ChatTemplate.from_dir(files.directory)
    except ChatTemplateError:
        chat = None
    name = (lm.model.rsplit("/", 1)[-1] if lm.model else "") or m.get("name") or "remote model"
    files = replace(files, manifest={**m, "name": name, "variant": "remote", "precision": f"served at {lm.shown}",
                                     "files": {}})
    log.info("serving through %s (model %s, tokenizer from %s)", lm.shown, name, files.directory)
    return LoadedModel(files, lm, codec, fim, stop_ids, " ".join(notes) or None, chat)
