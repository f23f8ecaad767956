"""Run a candidate's docstring examples in a separate, confined Python process.

What the sandbox guarantees (Linux; each check is in tests/unit/test_sandbox.py):
- a separate process (`python -I -B`: no user site, no PYTHON* variables), in its own
  process group, killed with the whole group when the wall-clock limit passes;
- CPU time, address space (memory), size of any file written, open files: kernel rlimits;
- a fresh temporary working directory (also HOME and TMPDIR), deleted afterwards;
- no network: a new, empty network namespace, where the kernel allows namespaces;
- no writes outside the working directory: every other mount is read-only in a private
  mount namespace, where the kernel allows it;
- on every kernel, an audit hook in the child refuses opening files for writing outside
  the working directory, deleting, renaming or chmod-ing files outside it, sockets,
  starting processes, signals to other processes, ctypes and changing the limits.
`Verdict.isolation` reports which kernel layers were in force ("network+filesystem" here).
The audit hook alone is not a security boundary against code written to escape it; with the
namespaces, the kernel enforces the network and filesystem rules.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .examples import Example

CHILD = Path(__file__).with_name("sandbox_child.py")


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
                 namespaces: bool = True) -> Verdict:
    """Execute `setup` statements ({"code", "what", "fatal"}) then `examples` in a sandbox."""
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="tandem-check-"))
    work = tmp / "work"
    work.mkdir()
    result = tmp / "result.jsonl"
    result.touch()
    job = {"setup": setup, "examples": [{"source": e.source, "want": e.want, "line": e.line, "exc_msg": e.exc_msg,
                                         "options": [list(o) for o in e.options]} for e in examples],
           "work": str(work), "result": str(result), "paths": list(paths), "memory_mb": limits.memory_mb,
           "cpu_s": limits.cpu_s, "file_mb": limits.file_mb, "namespaces": namespaces}
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work)}
    timed_out = False
    try:
        with open(tmp / "stderr.txt", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-B", str(CHILD)], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=err, cwd=work, env=env,
                                    start_new_session=True)
            try:
                proc.stdin.write(json.dumps(job).encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            deadline = time.monotonic() + limits.wall_s
            while proc.poll() is None:
                if cancel is not None and cancel.is_set() or time.monotonic() > deadline:
                    timed_out = not (cancel is not None and cancel.is_set())
                    _kill_group(proc)
                    break
                time.sleep(0.01)
        lines = _records(result.read_text(errors="replace"))
        stderr_tail = (tmp / "stderr.txt").read_text(errors="replace")[-500:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _verdict(lines, examples, timed_out, proc.returncode, stderr_tail, time.perf_counter() - t0)


def _records(text: str) -> list[dict]:
    """The child's JSON lines; anything else (an example writing to the result file's
    descriptor) is ignored, not an error."""
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _verdict(lines: list[dict], examples: list[Example], timed_out: bool, code: int | None,
             stderr_tail: str, seconds: float) -> Verdict:
    v = Verdict(0, len(examples), timed_out=timed_out, seconds=seconds)
    done = False
    reported: set[int] = set()
    for line in lines:
        if "isolation" in line:
            v.isolation = line["isolation"]
        elif "setup_error" in line:
            v.setup_errors.append(line["setup_error"])
        elif "example" in line:
            i = line["example"]
            reported.add(i)
            if line["ok"]:
                v.passed += 1
            elif len(v.failures) < 5 and 0 <= i < len(examples):
                v.failures.append(f"{examples[i].describe()}: got {line.get('got', '').strip()[:240]}")
        elif line.get("done"):
            done = True
    if not done and len(reported) < len(examples):
        i = len(reported)
        why = ("did not finish within the time limit" if timed_out else
               f"the check process ended with code {code}" + (f": {stderr_tail.strip().splitlines()[-1]}"
                                                             if stderr_tail.strip() else ""))
        if len(v.failures) < 5:
            v.failures.append(f"{examples[i].describe()}: {why}")
    return v
