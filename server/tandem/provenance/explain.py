"""Plain-language explanations of code, written by the model on the inference thread.

An explanation is a job, keyed (a region id, or a hash of the selected code). Jobs decode in
slices of a few tokens on the server's single inference thread, so whatever else needs that
thread (an inline completion) waits for a slice at most, and a completion request cuts even
that short (`note_activity` interrupts a background slice within one decode step; what was
written so far is kept and the job resumes from it).

Two kinds of demand:
  - background: a region's explanation is written right after it is accepted, while the user
    is idle (no completion request for `idle_s`), so that hovering it later is instant;
  - foreground: a request (hover, the explain command) waits for it. It runs first, idle or
    not. When the request is cancelled its generation stops within one decode step; a
    background job then pauses until the user is idle again, a foreground-only job ends.

The prompt goes through the model's chat template. A model without one, or one that answers
nothing in chat form (the tiny test model, trained on fill-in-the-middle only), is asked in
completion form instead: the code followed by a comment line that starts the explanation.

Plain Python and asyncio: no pygls.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from ..inference import InferenceService, Priority
from ..model.backend import Cancelled

log = logging.getLogger(__name__)

CHAT_MAX_TOKENS = 160
PLAIN_MAX_TOKENS = 48
SLICE_TOKENS = 8  # decode steps per turn on the inference thread
IDLE_S = 1.0  # background jobs wait this long after the last completion request
POLL_S = 0.03
MAX_CODE_CHARS = 6000
CONTEXT_BEFORE_LINES, CONTEXT_AFTER_LINES = 20, 5
CONTEXT_CHARS = 3000

SYSTEM = ("You are Tandem, a coding assistant inside the programmer's editor. You explain code to the "
          "person who will maintain it: plainly, accurately and briefly.")

COMMENT = {".py": "#", ".sh": "#", ".rb": "#", ".r": "#", ".pl": "#", ".toml": "#", ".yaml": "#", ".yml": "#",
           ".lua": "--", ".sql": "--", ".hs": "--"}
LANGUAGE = {".py": "python", ".js": "javascript", ".ts": "typescript", ".tsx": "tsx", ".jsx": "jsx",
            ".go": "go", ".rs": "rust", ".c": "c", ".h": "c", ".cpp": "cpp", ".cc": "cpp", ".hpp": "cpp",
            ".java": "java", ".kt": "kotlin", ".rb": "ruby", ".sh": "bash", ".lua": "lua", ".php": "php",
            ".cs": "csharp", ".swift": "swift", ".scala": "scala", ".sql": "sql"}


@dataclass
class Request:
    """What to explain: the code, with a little of the document around it."""
    code: str
    before: str = ""  # text just before the code (whole lines)
    after: str = ""  # text just after it
    name: str = ""  # the file's name, for the prompt
    sources: list[dict] = field(default_factory=list)  # [{"uri", "lines": [first, last]}]
    context: str = ""  # definitions from other files it uses (tandem/context), as fenced blocks

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix.lower()

    @property
    def language(self) -> str:
        return LANGUAGE.get(self.suffix, "")

    @property
    def comment(self) -> str:
        return COMMENT.get(self.suffix, "//")


def request_for(text: str, start: int, end: int, uri: str, name: str) -> Request:
    """The code text[start:end] with a few whole lines of context either side; `sources`
    records the lines of `text` (0-based, inclusive) that the prompt shows."""
    end = max(start, min(end, start + MAX_CODE_CHARS))
    code = text[start:end]
    b = text.rfind("\n", 0, start) + 1  # the start of the code's first line
    for _ in range(CONTEXT_BEFORE_LINES):
        if b == 0:
            break
        b = text.rfind("\n", 0, b - 1) + 1
    if start - b > CONTEXT_CHARS:  # long lines: keep the last whole lines within the bound
        b = min(text.find("\n", start - CONTEXT_CHARS) + 1, text.rfind("\n", 0, start) + 1)
    a = end
    for _ in range(CONTEXT_AFTER_LINES + (0 if code.endswith("\n") else 1)):
        nl = text.find("\n", a)
        if nl < 0:
            a = len(text)
            break
        a = nl + 1
    a = min(a, end + CONTEXT_CHARS)
    first = text.count("\n", 0, b)
    last = text.count("\n", 0, a) - (1 if a > b and text[a - 1] == "\n" else 0)
    return Request(code, text[b:start], text[end:a], name, [{"uri": uri, "lines": [first, max(first, last)]}])


def with_context(req: Request, context, max_chars: int = CONTEXT_CHARS) -> Request:
    """`req` with what tandem/context found (a Context) as fenced blocks, its sources added."""
    if context is None or not getattr(context, "pieces", None) or max_chars <= 0:
        return req
    from ..context import as_markdown

    md, sources = as_markdown(context, max_chars, req.language or "")
    if md:
        req.context = md
        req.sources = list(req.sources) + sources
    return req


def chat_messages(req: Request) -> list[dict]:
    lang = req.language
    where = f" in `{req.name}`" if req.name else ""
    others = f"Definitions from other files of the project that it uses:\n{req.context}\n\n" if req.context else ""
    if req.before.strip() or req.after.strip():
        context = (f"Here is the code around it{where}:\n```{lang}\n{req.before}{req.code}{req.after}\n```\n\n"
                   f"Explain what this part does:\n```{lang}\n{req.code}\n```\n")
    else:
        context = f"Explain what this code{where} does:\n```{lang}\n{req.code}\n```\n"
    ask = ("Answer in two to four plain sentences: what it does, what it takes and returns, and anything "
           "surprising or risky. Do not repeat the code.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": others + context + ask}]


def plain_prompt(req: Request) -> str:
    """Completion form: the code, then a comment line that starts the explanation."""
    code = req.before + req.code
    if not code.endswith("\n"):
        code += "\n"
    return f"{code}\n{req.comment} What the code above does:\n{req.comment} It"


def clean_plain(text: str, comment: str) -> str:
    text = text.split("\n\n", 1)[0]
    lines = []
    for line in text.split("\n"):
        s = line.strip()
        if s.startswith(comment):
            s = s[len(comment):].strip()
        lines.append(s)
    body = " ".join(l for l in lines if l).strip()
    return f"It {body}" if body else ""


@dataclass
class Explanation:
    text: str
    style: str  # "chat" or "plain" (completion form)
    model: dict
    ms: float  # from the start of the job to the end, waits included
    compute_ms: float  # time on the inference thread
    tokens: int
    created: float
    sources: list[dict]
    fallback: str = ""  # why the completion form was used: "no chat template" or "empty chat answer"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Explanation | None":
        try:
            return cls(str(d["text"]), str(d.get("style", "chat")), dict(d.get("model") or {}),
                       float(d.get("ms", 0)), float(d.get("compute_ms", 0)), int(d.get("tokens", 0)),
                       float(d.get("created", 0)), list(d.get("sources") or []), str(d.get("fallback", "")))
        except (KeyError, TypeError, ValueError):
            return None


class ModelUnavailable(RuntimeError):
    """No model is loaded (still loading, or it failed)."""


class Job:
    def __init__(self, key: str, request: Request, background: bool, loop: asyncio.AbstractEventLoop):
        self.key = key
        self.request = request
        self.background = background
        self.waiters = 0
        self.future: asyncio.Future = loop.create_future()
        self.cancel = threading.Event()
        self.stopped = False
        self.running = False  # a slice is on the inference thread
        self.task: asyncio.Task | None = None
        self.started = time.perf_counter()
        self.tokens = 0  # generated so far (for the "being written" note)

    @property
    def done(self) -> bool:
        return self.future.done()


class Explainer:
    def __init__(self, get_model, executor, *, idle_s: float = IDLE_S, slice_tokens: int = SLICE_TOKENS,
                 cache_size: int = 128, on_done=None):
        self.get_model = get_model
        # The server's InferenceService (slices run at its EXPLAIN priority and are preempted
        # by anything more urgent), or any Executor (tests).
        self.executor = executor
        self.idle_s = idle_s
        self.slice_tokens = slice_tokens
        self.on_done = on_done  # callable(key, Explanation), e.g. to persist a region's explanation
        self._cache: OrderedDict[str, Explanation] = OrderedDict()
        self._cache_size = cache_size
        self._jobs: dict[str, Job] = {}
        self._last_activity = float("-inf")

    # -- cache --------------------------------------------------------------------------
    def cached(self, key: str) -> Explanation | None:
        e = self._cache.get(key)
        if e is not None:
            self._cache.move_to_end(key)
        return e

    def remember(self, key: str, e: Explanation) -> None:
        self._cache[key] = e
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def job(self, key: str) -> Job | None:
        j = self._jobs.get(key)
        return j if j is not None and not j.done else None

    # -- demand -------------------------------------------------------------------------
    def explain(self, key: str, request: Request, *, background: bool) -> Job:
        """The job for `key`, started if needed (a background request makes a running
        foreground-only job background too, so it completes even if its request goes)."""
        j = self.job(key)
        if j is None:
            j = Job(key, request, background, asyncio.get_running_loop())
            self._jobs[key] = j
            j.task = asyncio.get_running_loop().create_task(self._run(j))
        elif background:
            j.background = True
        return j

    async def wait(self, job: Job, timeout: float | None) -> Explanation | None:
        """Wait for `job` as a foreground request: its Explanation, or None when `timeout`
        passes first (the job goes on). Cancelling the waiter stops the job's generation."""
        job.waiters += 1
        try:
            # asyncio.wait neither cancels the job on a timeout nor mistakes the job's own end
            # (stopped, cancelled) for the cancellation of this waiter.
            done, _ = await asyncio.wait({job.future}, timeout=timeout)
            if not done or job.future.cancelled():
                return None
            return job.future.result()
        except asyncio.CancelledError:
            if not job.future.done() and job.waiters == 1:
                self._release(job)
            raise
        finally:
            job.waiters -= 1

    def _release(self, job: Job) -> None:
        """The last request waiting on `job` went away."""
        self._last_activity = time.monotonic()  # the user moved on: leave the thread to them
        job.cancel.set()
        if not job.background:
            job.stopped = True
            log.info("explanation %s cancelled", job.key)

    def note_activity(self) -> None:
        """A completion request: background work steps aside at once and waits for idle."""
        self._last_activity = time.monotonic()
        for j in self._jobs.values():
            if j.running and j.waiters == 0:
                j.cancel.set()

    def cancel_all(self) -> None:
        for j in list(self._jobs.values()):
            j.stopped = True
            j.cancel.set()

    # -- scheduling ---------------------------------------------------------------------
    def _may_run(self, job: Job) -> bool:
        live = [j for j in self._jobs.values() if not j.done]
        fg = [j for j in live if j.waiters > 0]
        if fg:
            return job is fg[0]
        if time.monotonic() - self._last_activity < self.idle_s:
            return False
        return bool(live) and job is live[0]

    async def _turn(self, job: Job) -> None:
        while not self._may_run(job):
            if job.stopped:
                raise asyncio.CancelledError()
            await asyncio.sleep(POLL_S)

    # -- the job ------------------------------------------------------------------------
    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        compute = 0.0
        try:
            model = None
            fallback = ""
            for style in ("chat", "plain"):
                ids: list[int] = []
                prompt: list[int] | None = None
                limit = CHAT_MAX_TOKENS if style == "chat" else PLAIN_MAX_TOKENS
                while True:
                    await self._turn(job)
                    current = self.get_model()
                    if current is None:
                        raise ModelUnavailable("the model is not loaded")
                    if current is not model or prompt is None:
                        model, ids = current, []
                        prompt = self._prompt(model, job.request, style)
                        if prompt is None:
                            break
                    if job.stopped:
                        raise asyncio.CancelledError()
                    job.cancel = threading.Event()
                    if job.waiters == 0 and time.monotonic() - self._last_activity < self.idle_s:
                        continue  # activity arrived while we waited for the turn
                    # A remote endpoint gets the whole explanation in one streamed request (each
                    # slice would send the prompt again); a preemption closes the stream just the same.
                    step = limit if getattr(model, "device", "cpu") == "remote" else self.slice_tokens
                    n = min(step, limit - len(ids))
                    job.running = True
                    t = time.perf_counter()
                    try:
                        new, reason = await self._on_thread(loop, model, prompt + ids, n, job.cancel, style, ids)
                    except Cancelled as c:
                        ids += c.args[0] if c.args and isinstance(c.args[0], list) else []
                        if job.stopped:
                            raise asyncio.CancelledError() from None
                        continue  # interrupted by a completion request: resume from here
                    finally:
                        job.running = False
                        compute += time.perf_counter() - t
                    ids += new
                    job.tokens = len(ids)
                    if reason != "max_tokens" or len(ids) >= limit:
                        break
                if prompt is None:
                    fallback = "no chat template"
                    continue
                text = model.codec.decode(ids).strip()
                if style == "plain":
                    text = clean_plain(text, job.request.comment)
                if text:
                    result = Explanation(text, style, model.describe(), (time.perf_counter() - job.started) * 1000,
                                         compute * 1000, len(ids), time.time(), job.request.sources,
                                         fallback if style == "plain" else "")
                    break
                log.info("explanation %s: the model wrote nothing in %s form", job.key, style)
                fallback = "empty chat answer"
            else:
                result = Explanation("", "none", model.describe() if model else {},
                                     (time.perf_counter() - job.started) * 1000, compute * 1000, 0, time.time(),
                                     job.request.sources)
            self.remember(job.key, result)
            log.info("explanation %s written in %.0f ms (%.0f ms on the inference thread, %d tokens, %s form)",
                     job.key, result.ms, result.compute_ms, result.tokens, result.style)
            if self.on_done is not None:
                try:
                    self.on_done(job.key, result)
                except Exception:
                    log.exception("explanation callback failed")
            job.future.set_result(result)
        except asyncio.CancelledError:
            job.future.cancel()
        except Exception as e:
            if not isinstance(e, ModelUnavailable):
                log.exception("explanation %s failed", job.key)
            job.future.set_exception(e)
            job.future.exception()  # retrieved: no "never retrieved" warning when nobody waits
        finally:
            if self._jobs.get(job.key) is job:
                del self._jobs[job.key]

    async def _on_thread(self, loop, model, prompt: list[int], n: int, cancel: threading.Event, style: str,
                         before: list[int]):
        args = (model, prompt, n, cancel, style, before)
        if isinstance(self.executor, InferenceService):
            # Resumable: a completion or docstring job arriving sets `cancel`, and the loop in
            # `_run` resumes from the tokens written so far.
            return await self.executor.run(Priority.EXPLAIN, self._slice, *args, cancel=cancel, preemptible=True,
                                           name="explain")
        return await loop.run_in_executor(self.executor, self._slice, *args)

    def _prompt(self, model, req: Request, style: str) -> list[int] | None:
        if style == "chat":
            try:
                return model.encode_chat(chat_messages(req)) or None
            except Exception as e:  # a template that fails to render: use the plain form
                log.warning("chat template failed: %s", e)
                return None
        text = plain_prompt(req)
        fim = getattr(model, "fim", None)
        ids = model.codec.encode(text)
        # Completion form through fill-in-the-middle with an empty suffix: the form every
        # code model here is served in (and the only one the tiny test model knows).
        return [fim.prefix, *ids, fim.suffix, fim.middle] if fim else ids

    def _slice(self, model, prompt: list[int], n: int, cancel: threading.Event, style: str, before: list[int]):
        """One turn on the inference thread: up to `n` tokens. On cancel, raises Cancelled
        carrying the tokens written in this turn."""
        seen: list[list[int]] = [[]]
        codec = model.codec

        def check(ids: list[int]) -> bool:
            seen[0] = ids
            if style == "plain":
                return "\n\n" in codec.decode(before + ids).lstrip("\n")
            return False

        try:
            gen = model.lm.generate(prompt, max_new_tokens=n, stop_ids=model.stop_ids, cancel=cancel,
                                    stop_check=check, slot="explain")
        except Cancelled:
            raise Cancelled(list(seen[0])) from None
        return gen.ids, gen.stop_reason


def code_key(model_label: str, req: Request) -> str:
    h = hashlib.sha256()
    for part in (model_label, req.name, req.before, "\x00", req.code, "\x00", req.after):
        h.update(part.encode("utf-8", "surrogatepass"))
    return "code:" + h.hexdigest()[:24]
