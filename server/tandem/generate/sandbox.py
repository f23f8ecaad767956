"""Run a candidate's docstring examples in a separate, confined Python process.

The examples come from files the user opened, which may be anyone's repository: the child
is treated as hostile. What the sandbox guarantees (Linux; each checked with a real child
and real attack code in tests/unit/test_sandbox.py):
- a separate process (`python -I -B`: no user site, no PYTHON* variables, no script folder
  on `sys.path`), in its own session, killed with its whole group at the wall-clock limit;
- the document's folder is appended to `sys.path` after the standard library and
  site-packages, and only once the harness is imported and every layer below is in force;
- CPU time, address space, size of any file written, open files: kernel rlimits;
- a fresh temporary working directory (also HOME and TMPDIR), deleted afterwards;
- kernel layers (confine.py), each recorded in `Verdict.isolation` when in force:
  `network` (a new, empty network namespace), `filesystem` (a private mount namespace,
  every mount read-only except the working directory), `landlock` (reads only beneath the
  interpreter's own paths, system libraries, the workspace and the working directory;
  writes only in the working directory; TCP, signals out and abstract sockets refused),
  `caps` (every capability dropped, no_new_privs: root is no one special), `seccomp` (no
  process creation or exec, no signal/ptrace/prlimit/memory access to other processes,
  no namespaces or mounts, no sockets, no io_uring; threads still work);
- an audit hook that refuses the same with a clear message, also where the kernel allows
  none of the layers (it is not a security boundary by itself);
- a result channel the checked code cannot forge: the expected output never enters the
  child; the parent sends one example at a time with a fresh random nonce, takes the first
  reply that carries it, and compares the output itself; lines without it are ignored.
- everything the child says that reaches the user (failures, setup errors, the crash line)
  is bounded and scrubbed (`scrub`), and output is not echoed at all where reads were not
  confined by Landlock.
What it cannot promise: code in the checked file runs in the same process as the examples,
so it can always make them print what they expect (e.g. by reading the docstring); the
verdict says what the candidate did together with the file's own code, never more.
"""
from __future__ import annotations

import ast
import doctest
import json
import os
import re
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .examples import Example

CHILD = Path(__file__).with_name("sandbox_child.py")
LAYERS = ("network", "pid", "filesystem", "read-only", "landlock", "caps", "seccomp")  # what the child may report
MAX_GOT = 64 * 1024  # longer output fails the example (the child cuts it at MAX_GOT + 1)
MAX_LINE = 1 << 20  # a longer line on the channel is dropped unread
MAX_TOTAL = 32 << 20  # more than this from the child ends the check


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0
    cpu_s: int = 5
    memory_mb: int = 2048
    file_mb: int = 16


@dataclass
class Verdict:
    passed: int
    total: int
    failures: list[str] = field(default_factory=list)  # "example -> what happened", first few
    setup_errors: list[str] = field(default_factory=list)
    timed_out: bool = False
    isolation: str = "unknown"
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        if not self.total:
            return "no examples to check"
        s = f"{self.passed}/{self.total} examples pass"
        return s + (" (timed out)" if self.timed_out else "")


def run_examples(setup: list[dict], examples: list[Example], *, limits: Limits = Limits(),
                 cancel: threading.Event | None = None, paths: list[str] = (),
                 namespaces: bool = True, audit_hook: bool = True) -> Verdict:
    """Execute `setup` statements ({"code", "what", "fatal"}) then `examples` in a sandbox.
    `paths`: the workspace (the document's folder), importable and readable, never written.
    `namespaces=False` leaves out every kernel layer and `audit_hook=False` the hook: for
    tests that show what each one holds alone."""
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="tandem-check-"))
    work = tmp / "work"
    work.mkdir()
    nonce, setup_nonce = secrets.token_hex(16), secrets.token_hex(16)
    sys_path, read = _workspace(paths, tmp)
    job = {"setup": setup, "work": str(work), "paths": sys_path, "read": read,
           "home": str(Path.home()), "memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s, "file_mb": limits.file_mb,
           "kernel": namespaces, "audit_hook": audit_hook, "nonce": nonce, "setup_nonce": setup_nonce}
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work)}
    v = Verdict(0, len(examples))
    proc = None
    try:
        with open(tmp / "stderr.txt", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-B", str(CHILD)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=err, cwd=work, env=env,
                                    start_new_session=True)
            chan = _Channel(proc, time.monotonic() + limits.wall_s, cancel)
            _drive(chan, job, examples, v)
            v.timed_out = chan.timed_out
            if chan.stopped and len(v.failures) < 5 and chan.current is not None:
                why = ("did not finish within the time limit" if chan.timed_out else "the check was cancelled"
                       if chan.cancelled else "the check wrote more than it may" if chan.flooded else
                       f"the check process ended with code {_wait(proc)}" + _last_line(tmp / "stderr.txt"))
                v.failures.append(scrub(f"{examples[chan.current].describe()}: {why}", 360))
    finally:
        if proc is not None:
            _close(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    v.seconds = time.perf_counter() - t0
    return v


def _drive(chan: "_Channel", job: dict, examples: list[Example], v: Verdict) -> None:
    """The protocol: job -> layers (before any user code ran) -> setup errors -> one
    example at a time, each with its own nonce."""
    if not chan.send(job):
        chan.current = 0 if examples else None
        return
    rec = chan.next_record(job["nonce"])
    if rec is None:
        chan.current = 0 if examples else None
        return
    layers = rec.get("layers")
    layers = [x for x in LAYERS if isinstance(layers, list) and x in layers]
    v.isolation = "+".join(layers) or "none"
    show = "landlock" in layers  # reads confined: what it prints cannot be a file it was denied
    rec = chan.next_record(job["setup_nonce"])
    if rec is None:
        chan.current = 0 if examples else None
        return
    errors = rec.get("setup_errors")
    v.setup_errors = [scrub(e, 360) for e in errors[:20] if isinstance(e, str)] if isinstance(errors, list) else []
    if rec.get("fatal"):
        if examples:
            v.failures.append(scrub(f"{examples[0].describe()}: not run: the function did not load", 360))
        return
    for i, ex in enumerate(examples):
        chan.current = i
        n = secrets.token_hex(16)
        if not chan.send({"nonce": n, "source": ex.source}):
            return
        rec = chan.next_record(n)
        if rec is None:
            return
        got, exc = rec.get("got"), rec.get("exc")
        if not isinstance(got, str) or not (exc is None or isinstance(exc, str)):
            ok, shown = False, "a malformed reply"
        else:
            ok, shown = _judge(ex, got, exc, show)
        if ok:
            v.passed += 1
        elif len(v.failures) < 5:
            v.failures.append(scrub(f"{ex.describe()}: got {shown}", 360))
    chan.current = None


class _Checker(doctest.OutputChecker):
    """doctest's comparison, then equal values: `["a"]` in a docstring matches `['a']`."""

    def check_output(self, want, got, optionflags):
        if super().check_output(want, got, optionflags):
            return True
        if len(want) > 10_000 or len(got) > 10_000:
            return False
        try:
            a, b = ast.literal_eval(want.strip()), ast.literal_eval(got.strip())
        except Exception:  # noqa: BLE001  (SyntaxError, ValueError, RecursionError, MemoryError...)
            return False
        return type(a) is type(b) and a == b  # `True` is not `1`, `2.0` is not `2`


_CHECKER = _Checker()


def _judge(ex: Example, got: str, exc: str | None, show: bool) -> tuple[bool, str]:
    """doctest's verdict for one example, computed here, out of the checked code's reach.
    Returns (passed, what to show when it did not)."""
    flags = doctest.NORMALIZE_WHITESPACE
    for k, on in ex.options:
        flags = flags | k if on else flags & ~k
    if len(got) > MAX_GOT or (exc is not None and len(exc) > MAX_GOT):
        return False, "more output than an example may print"
    if exc is None:
        ok = _CHECKER.check_output(ex.want, got, flags)
        return ok, scrub(got.strip(), 200) if show else "other output (not shown: reads are not confined here)"
    if ex.exc_msg is not None:
        ok = _CHECKER.check_output(ex.exc_msg, exc, flags)
        if not ok and flags & doctest.IGNORE_EXCEPTION_DETAIL:
            ok = _CHECKER.check_output(doctest._strip_exception_details(ex.exc_msg),
                                       doctest._strip_exception_details(exc), flags)
        if ok:
            return True, ""
    exc = exc.strip()
    return False, scrub(exc, 200) if show else exc.split(":", 1)[0][:80]


def _workspace(paths, tmp: Path) -> tuple[list[str], list[str]]:
    """(folders for the child's `sys.path`, what Landlock lets it read) for the workspace:
    each folder's whole tree, except a folder too broad to open (the root, the home folder or
    above it). Of such a folder, only the Python modules directly in it are copied into the
    check's own temporary tree (regular files, never symlinks, at most 200 and 4 MiB), so a
    script opened from $HOME still imports its siblings and $HOME stays closed."""
    home = os.path.realpath(Path.home())
    sys_path: list[str] = []
    read: list[str] = []
    for n, p in enumerate(paths):
        r = os.path.realpath(p)
        if not os.path.isdir(r):
            continue
        if r != "/" and home != r and not home.startswith(r.rstrip("/") + "/"):
            sys_path.append(r)
            read.append(r)
            continue
        copy = tmp / f"modules{n}"
        copy.mkdir()
        budget = 4 << 20
        try:
            names = sorted(os.listdir(r))[:5000]
        except OSError:
            names = []
        copied = 0
        for name in names:
            if not name.endswith(".py") or copied >= 200:
                continue
            src = os.path.join(r, name)
            try:
                fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # a symlink (O_NOFOLLOW), unreadable...
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_size > budget:
                    continue
                with os.fdopen(os.dup(fd), "rb") as f:
                    data = f.read(budget + 1)
            finally:
                os.close(fd)
            budget -= len(data)
            (copy / name).write_bytes(data)
            copied += 1
        sys_path.append(str(copy))
        read.append(str(copy))
    return sys_path, read


class _Channel:
    """The parent's side of the child's stdin/stdout, with the deadline and cancel flag
    checked every 50 ms. `next_record(nonce)` returns the first JSON record carrying
    `nonce`, ignoring everything else; None once the child is gone, too slow or too loud."""

    def __init__(self, proc: subprocess.Popen, deadline: float, cancel: threading.Event | None) -> None:
        self.proc, self.deadline, self.cancel = proc, deadline, cancel
        self.rfd, self.wfd = proc.stdout.fileno(), proc.stdin.fileno()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        self.buf, self.skipping, self.total = b"", False, 0
        self.timed_out = self.cancelled = self.flooded = self.stopped = False
        self.current: int | None = None

    def _wait(self, fd: int, write: bool) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = self.stopped = True
            return False
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = self.stopped = True
            return False
        select.select([] if write else [fd], [fd] if write else [], [], min(0.05, left))
        return True

    def send(self, rec: dict) -> bool:
        data = (json.dumps(rec) + "\n").encode()
        while data:
            try:
                data = data[os.write(self.wfd, data):]
                continue
            except BlockingIOError:
                pass
            except (BrokenPipeError, OSError):
                self.stopped = True
                return False
            if not self._wait(self.wfd, True):
                return False
        return True

    def next_record(self, nonce: str) -> dict | None:
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if self.skipping:
                    self.skipping = False
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("nonce") == nonce:
                    return rec
            if len(self.buf) > MAX_LINE:
                self.buf, self.skipping = b"", True
            try:
                chunk = os.read(self.rfd, 1 << 16)
            except BlockingIOError:
                if not self._wait(self.rfd, False):
                    return None
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.stopped = True
                return None
            self.total += len(chunk)
            if self.total > MAX_TOTAL:
                self.flooded = self.stopped = True
                return None
            self.buf += chunk


def _wait(proc: subprocess.Popen) -> int | None:
    try:
        return proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return None


def _close(proc: subprocess.Popen) -> None:
    """Kill the child's whole group (the verdict is complete: nothing it does now counts)."""
    for f in (proc.stdin, proc.stdout):
        try:
            f.close()
        except OSError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 2000))
            tail = f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f": {tail.splitlines()[-1]}" if tail else ""


# --- scrubbing: what a check prints, before anyone sees or stores it -------------------------

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_KEY_BLOCK = re.compile(r"-----BEGIN[^\n]{0,60}?-----.*?(?:-----END[^\n]{0,60}?-----|\Z)", re.S)
_KEY_TAIL = re.compile(r"(?:^[A-Za-z0-9+/=]{8,}[ \t]*\r?\n)*[A-Za-z0-9+/=]*-----END[^\n]{0,60}?KEY-----",
                       re.M)  # the end of a key whose start was cut off
_TOKEN = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_\w{20,}"
                    r"|\bsk-[A-Za-z0-9_-]{16,}|\bxox[abprs]-[A-Za-z0-9-]{10,}|\bglpat-[A-Za-z0-9_-]{16,}"
                    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_ASSIGN = re.compile(r"(?i)(?:\b|_)(passw(?:or)?d|secret|token|api_?key|access_?key|private_?key|credentials?)"
                     r"(['\"]?\s*[:=]\s*['\"]?)[^\s'\",]+")
_HASH = re.compile(r"\$(?:1|2[abxy]?|5|6|7|y|gy)\$[^\s:'\"]+")
_LONG = re.compile(r"[A-Za-z0-9+/=_-]{48,}")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]")


def scrub(text, limit: int = 240) -> str:
    """One line of at most `limit` characters that is safe to show in a pop-up or store on
    disk: terminal escapes and control characters gone (newlines written as \\n), private
    key blocks, well-known token shapes, `password=...` values, password hashes and long
    unbroken tokens replaced by a note."""
    text = str(text)[:16_384]
    text = _KEY_BLOCK.sub("[private key removed]", text)
    if "KEY-----" in text:
        text = _KEY_TAIL.sub("[private key removed]", text)
    text = _TOKEN.sub("[token removed]", text)
    text = _ASSIGN.sub(lambda m: m[1] + m[2] + "[removed]", text)
    text = _HASH.sub("[hash removed]", text)
    text = _LONG.sub("[long token removed]", text)
    text = _ANSI.sub("", text)
    text = text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r").replace("\t", " ")
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[:max(0, limit - 1)] + "…"
