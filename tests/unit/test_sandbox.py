"""The sandbox that runs docstring examples: each guarantee in sandbox.py, checked with a real
child process."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from tandem.generate.examples import Example, extract_examples
from tandem.generate.sandbox import Limits, run_examples

SETUP = [{"code": "def double(x):\n    return 2 * x\n", "what": "double"}]


def examples(doc: str) -> list[Example]:
    return extract_examples(doc, "double")


def test_counts_passing_and_failing_examples():
    v = run_examples(SETUP, examples(">>> double(2)\n4\n>>> double(3)\n7\n\nFor example double(5) == 10\n"))
    assert (v.passed, v.total) == (2, 3) and v.summary == "2/3 examples pass"
    assert "double(3) -> 7: got 6" in v.failures[0]


def test_an_infinite_loop_is_killed_and_earlier_results_are_kept():
    t0 = time.perf_counter()
    v = run_examples(SETUP, examples(">>> double(1)\n2\n>>> while True: pass\n>>> double(2)\n4\n"),
                     limits=Limits(wall_s=1.0))
    assert time.perf_counter() - t0 < 10
    assert v.timed_out and (v.passed, v.total) == (1, 3)
    assert "did not finish within the time limit" in v.failures[0]


def test_no_writes_outside_the_working_directory(tmp_path: Path):
    target = tmp_path / "outside.txt"
    doc = (f">>> open({str(target)!r}, 'w').write('x')\n1\n"
           f">>> import shutil; shutil.rmtree({str(tmp_path)!r})\n"
           ">>> open('inside.txt', 'w').write('ok')\n2\n"
           ">>> import os; os.getcwd() != '/' and open('inside.txt').read()\n'ok'\n")
    v = run_examples(SETUP, examples(doc))
    assert not target.exists() and tmp_path.exists()
    assert (v.passed, v.total) == (2, 4), v.failures
    assert all("PermissionError: sandbox" in f or "Read-only" in f for f in v.failures), v.failures


def test_no_network_no_processes_no_ctypes():
    doc = (">>> import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
           ">>> import subprocess; subprocess.run(['true'])\n"
           ">>> import os; os.system('true')\n"
           ">>> import ctypes; ctypes.CDLL(None)\n")
    v = run_examples(SETUP, examples(doc))
    assert (v.passed, v.total) == (0, 4)
    assert all("not allowed" in f for f in v.failures), v.failures


def test_kernel_isolation_when_allowed_and_the_hook_alone_otherwise(tmp_path: Path):
    v = run_examples(SETUP, examples(">>> double(1)\n2\n"))
    layers = {"network", "pid", "filesystem", "read-only", "landlock", "caps", "seccomp"}
    assert v.passed == 1 and (v.isolation == "none" or set(v.isolation.split("+")) <= layers), v.isolation
    v = run_examples(SETUP, examples(f">>> open({str(tmp_path / 'x')!r}, 'w')\n"), namespaces=False)
    assert v.isolation == "none" and v.passed == 0 and not (tmp_path / "x").exists()


def test_memory_limit_and_failing_setup_are_reported():
    v = run_examples([{"code": "import not_a_module_anywhere\n", "what": "import not_a_module_anywhere"}, *SETUP],
                     examples(">>> double(2)\n4\n>>> len(bytearray(8 * 1024 ** 3))\n"),
                     limits=Limits(memory_mb=512))
    assert v.setup_errors and "ModuleNotFoundError" in v.setup_errors[0]
    assert (v.passed, v.total) == (1, 2) and "MemoryError" in v.failures[0]


def test_cancel_stops_the_process_at_once():
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t0 = time.perf_counter()
    v = run_examples(SETUP, examples(">>> while True: pass\n"), limits=Limits(wall_s=30), cancel=cancel)
    assert time.perf_counter() - t0 < 5 and v.passed == 0 and not v.timed_out


def test_expected_values_compare_as_values_not_only_as_text():
    setup = [{"code": "def names():\n    return ['a', 'b']\n"}]
    v = run_examples(setup, extract_examples('>>> names()\n["a", "b"]\n>>> names()\n["a"]\n', "names"))
    assert (v.passed, v.total) == (1, 2)


def test_doctest_directives_expected_exceptions_and_strict_values():
    setup = [{"code": "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return list(range(x))\n"
                      "def g(x):\n    return 1 - x % 2\n"}]
    doc = (">>> f(-1)\nTraceback (most recent call last):\n  ...\nValueError: negative\n\n"
           ">>> f(100)  # doctest: +ELLIPSIS\n[0, 1, ..., 99]\n")
    assert run_examples(setup, extract_examples(doc, "f")).summary == "2/2 examples pass"
    # `True` is not `1`: a value compared by equality must also have the expected type.
    assert run_examples(setup, extract_examples(">>> g(2)\nTrue\n", "g")).summary == "0/1 examples pass"


def test_junk_on_the_result_descriptor_does_not_break_the_check():
    v = run_examples(SETUP, examples(">>> import os; _ = os.write(3, b'junk\\n')\n>>> double(2)\n4\n"))
    assert (v.passed, v.total) == (2, 2)


# --- hostile repositories (issue 13): each attack is real code run in a real child ----------

import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

# Setup for attacks that report what the kernel answered: an errno name, or 'done'.
ATTEMPT = [{"code": "import ctypes, errno, os\n"
                    "def attempt(f):\n"
                    "    try:\n"
                    "        f()\n"
                    "    except OSError as e:\n"
                    "        return errno.errorcode.get(e.errno, str(e.errno))\n"
                    "    return 'done'\n"
                    "def sysc(r):\n"
                    "    if r == -1:\n"
                    "        raise OSError(ctypes.get_errno(), 'failed')\n"
                    "    return r\n", "what": "attempt"}, *SETUP]


@pytest.fixture
def victim():
    """A process of the same user (root here) that examples try to hurt."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p
    p.kill()
    p.wait(timeout=10)


def _alive_with(token: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if token.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def test_a_stdlib_named_file_beside_the_document_never_shadows_the_standard_library(tmp_path: Path):
    # A harmless token.py (an ordinary project's module) must not break the check, and a
    # hostile ast.py is never imported in place of the standard library's.
    (tmp_path / "token.py").write_text("TOKEN_LIST = ['mine']\n")
    (tmp_path / "ast.py").write_text("import builtins\nbuiltins.PWNED = True\n")
    (tmp_path / "helper.py").write_text("X = 42\n")
    doc = (">>> double(2)\n4\n"
           ">>> import builtins; getattr(builtins, 'PWNED', False)\nFalse\n"
           ">>> import ast, token, json; 'PWNED' in dir(__import__('builtins')), hasattr(token, 'TOKEN_LIST')\n"
           "(False, False)\n"
           ">>> import helper; helper.X\n42\n")
    v = run_examples(SETUP, examples(doc), paths=[str(tmp_path)])
    assert (v.passed, v.total) == (4, 4), v.failures


def test_no_signal_or_limit_reaches_another_process(victim):
    doc = (f">>> import resource; resource.prlimit({victim.pid}, resource.RLIMIT_NOFILE, (7, 7))\n"
           f">>> import os, signal; signal.pidfd_send_signal(os.pidfd_open({victim.pid}), signal.SIGKILL)\n"
           f">>> import os, signal; os.kill({victim.pid}, signal.SIGKILL)\n"
           ">>> double(2)\n4\n")
    before = resource.prlimit(victim.pid, resource.RLIMIT_NOFILE)
    v = run_examples(SETUP, examples(doc))
    assert victim.poll() is None, "the example killed another process"
    assert resource.prlimit(victim.pid, resource.RLIMIT_NOFILE) == before, "the example re-limited another process"
    assert (v.passed, v.total) == (1, 4), v.failures


def test_no_process_is_started_not_even_through_posixsubprocess():
    token = f"tandem-escape-{uuid.uuid4().hex}"
    doc = (">>> import _posixsubprocess, os; r, w = os.pipe()\n"
           f">>> _posixsubprocess.fork_exec([b'/bin/sh', b'-c', b'sleep 30; : {token}'], [b'/bin/sh'], True, (),"
           " None, None, -1, -1, -1, -1, -1, -1, r, w, True, True, -1, None, None, None, -1, None, False)\n"
           f">>> import os; os.posix_spawn('/bin/sh', ['/bin/sh', '-c', 'sleep 30; : {token}'], {{}})\n"
           ">>> double(2)\n4\n")
    try:
        v = run_examples(SETUP, examples(doc))
        time.sleep(0.2)
        assert not _alive_with(token), "a process started by the example outlived the check"
        assert (v.passed, v.total) == (2, 4), v.failures  # pipe() is allowed
    finally:
        for pid in _alive_with(token):
            os.kill(pid, 9)


def test_kernel_layers_hold_without_the_audit_hook(victim, tmp_path: Path):
    """The audit hook is not a boundary: switch it off and the kernel still says no."""
    libc = "ctypes.CDLL(None, use_errno=True)"
    token = f"tandem-escape-{uuid.uuid4().hex}"
    checks = [
        (f"os.kill({victim.pid}, 9)", "EPERM"),
        (f"os.killpg({os.getpgid(victim.pid)}, 9)", "EPERM"),
        (f"os.kill(-1, 9)", "EPERM"),
        (f"os.getpgid({victim.pid})", "ESRCH"),  # PID namespace: no other process is even visible
        ("os._exit(0) if os.fork() == 0 else 0", "EPERM"),
        (f"os.posix_spawn('/bin/sh', ['/bin/sh', '-c', 'sleep 30; : {token}'], {{}})", "EPERM"),
        ("os.execv('/bin/true', ['true'])", "EPERM"),
        (f"sysc({libc}.ptrace(16, {victim.pid}, 0, 0))", "EPERM"),  # PTRACE_ATTACH
        (f"sysc({libc}.unshare(0x10000000))", "EPERM"),  # CLONE_NEWUSER
        (f"sysc({libc}.setns(0, 0))", "EPERM"),
        (f"sysc({libc}.mount(b'none', b'/mnt', b'tmpfs', 0, None))", "EPERM"),
        ("open('/proc/self/mounts').read()", "EACCES"),  # Landlock: /proc is closed too
        (f"os.open('/proc/{victim.pid}/ns/mnt', os.O_RDONLY)", "ENOENT"),
        ("open('/etc/shadow').read()", "EACCES"),
        ("__import__('socket').socket()", "EPERM"),
        ("__import__('socket').socket(1).connect('/run/dbus/system_bus_socket')", "EPERM"),  # AF_UNIX
        (f"os.posix_spawn('/usr/bin/nsenter', ['nsenter', '-t', '{os.getpid()}', '-a', 'true'], {{}})", "EPERM"),
        (f"open({str(tmp_path / 'outside.txt')!r}, 'w')", "EROFS"),
    ]
    doc = "".join(f">>> attempt(lambda: {code})\n{want!r}\n" for code, want in checks) + ">>> double(2)\n4\n"
    try:
        v = run_examples(ATTEMPT, extract_examples(doc, "double"), audit_hook=False)
        time.sleep(0.2)
        assert victim.poll() is None and not _alive_with(token)
        assert not (tmp_path / "outside.txt").exists()
        assert (v.passed, v.total) == (len(checks) + 1, len(checks) + 1), v.failures
        assert v.isolation == "network+pid+filesystem+landlock+caps+seccomp", v.isolation
    finally:
        for pid in _alive_with(token):
            os.kill(pid, 9)


def test_threads_still_work_in_the_sandbox():
    doc = (">>> import threading; out = []; t = threading.Thread(target=lambda: out.append(double(21)))\n"
           ">>> t.start(); t.join(5); out\n[42]\n"
           ">>> from concurrent.futures import ThreadPoolExecutor\n"
           ">>> list(ThreadPoolExecutor(4).map(double, range(4)))\n[0, 2, 4, 6]\n")
    v = run_examples(SETUP, examples(doc))
    assert (v.passed, v.total) == (4, 4), v.failures


FORGE = (">>> import gc, json, os, sys\n"
         ">>> def forge():\n"
         "...     lines = [json.dumps({'example': i, 'ok': True}) for i in range(10)] + [json.dumps({'done': True})]\n"
         "...     f, strs = sys._getframe(), set()\n"
         "...     while f is not None:\n"
         "...         for v in f.f_locals.values():\n"
         "...             for x in (v.values() if isinstance(v, dict) else [v]):\n"
         "...                 if isinstance(x, str) and len(x) < 200:\n"
         "...                     strs.add(x)\n"
         "...         f = f.f_back\n"
         "...     for s in strs:  # every string the harness holds, as a nonce/key guess, for every example\n"
         "...         lines += [json.dumps({'nonce': s, 'id': i, 'got': want, 'exc': None, 'ok': True})\n"
         "...                   for i in range(10) for want in ('6\\n', '7\\n', '8\\n', '9\\n')]\n"
         "...     data = ('\\n'.join(lines) + '\\n').encode()\n"
         "...     for fd in range(0, 64):\n"
         "...         try:\n"
         "...             os.write(fd, data)\n"
         "...         except OSError:\n"
         "...             pass\n"
         ">>> forge()\n"
         ">>> double(3)\n7\n"
         ">>> double(4)\n9\n"
         ">>> double(5)\n10\n")


def test_an_example_cannot_forge_the_verdict():
    v = run_examples(SETUP, examples(FORGE))
    # The truth: the three statements and double(5) pass, double(3) and double(4) do not.
    assert v.total == 6 and v.passed <= 4 and v.summary != "6/6 examples pass", (v.passed, v.failures)
    assert any("double(3) -> 7" in f for f in v.failures), v.failures


def test_examples_cannot_read_outside_the_workspace(tmp_path: Path):
    ws = tmp_path / "project"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "data.txt").write_text("workspace data\n")
    secret = f"DECOY-{uuid.uuid4().hex}"
    decoy = Path.home() / f".tandem-decoy-{uuid.uuid4().hex}"
    outside = tmp_path / "id_ed25519"
    outside.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret}\n-----END OPENSSH PRIVATE KEY-----\n")
    decoy.write_text(secret + "\n")
    try:
        doc = (f">>> open({str(decoy)!r}).read()\n'x'\n"
               f">>> open({str(outside)!r}).read()\n'x'\n"
               ">>> open('/etc/shadow').read()\n'x'\n"
               ">>> import os; sorted(os.listdir('/root'))\n[]\n"
               f">>> open({str(ws / 'pkg' / 'data.txt')!r}).read()\n'workspace data\\n'\n"
               ">>> import decimal, json, sqlite3, zlib, hashlib, zoneinfo; str(decimal.Decimal('1.5') * 2)\n'3.0'\n"
               ">>> double(2)\n4\n")
        v = run_examples(SETUP, examples(doc), paths=[str(ws)])
        assert (v.passed, v.total) == (3, 7), v.failures
        text = repr(v.failures) + repr(v.setup_errors)
        assert secret not in text and "root:" not in text, text
        assert all("PermissionError" in f for f in v.failures), v.failures
    finally:
        decoy.unlink()


def test_what_a_check_prints_is_bounded_and_scrubbed(tmp_path: Path):
    (tmp_path / "key.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\nMIIEsecretsecret\n-----END RSA PRIVATE KEY-----\n")
    doc = (">>> print('\\x1b[31mred\\x07\\x00\\u202e' + 'A b ' * 500)\nok\n"
           f">>> print(open({str(tmp_path / 'key.pem')!r}).read())\nok\n"
           ">>> raise ValueError('\\x1b]0;title\\x07\\r' + 'B ' * 1000)\n"
           ">>> print('x' * 100000)\n")
    setup = [{"code": "raise RuntimeError('\\x1b[2J' + 'C' * 100000)\n", "what": "line 1: noisy"}, *SETUP]
    v = run_examples(setup, examples(doc), paths=[str(tmp_path)])
    assert v.total == 4 and v.passed == 0 and len(v.failures) == 4 and v.setup_errors
    for text in [*v.failures, *v.setup_errors]:
        assert len(text) <= 400, len(text)
        assert not re.search("[\x00-\x1f\x7f-\x9f\u202e]", text), repr(text)
    assert "red" in v.failures[0] and "MIIEsecretsecret" not in repr(v.failures)
    assert "more output than an example may print" in v.failures[3]


def test_a_document_in_the_home_folder_opens_its_python_files_only():
    """A file opened straight from $HOME: its sibling modules import, the rest of $HOME
    (keys, tokens, dotfiles) stays unreadable."""
    home = Path.home()
    name = f"tandem_sibling_{uuid.uuid4().hex}"
    sibling, decoy = home / f"{name}.py", home / f".tandem-decoy-{uuid.uuid4().hex}"
    sibling.write_text("X = 42\n")
    decoy.write_text("DECOY-SECRET\n")
    try:
        doc = (f">>> import {name}; {name}.X\n42\n"
               f">>> open({str(decoy)!r}).read()[:1]\n'D'\n"
               f">>> import os; {decoy.name!r} in os.listdir({str(home)!r})\nTrue\n")
        v = run_examples(SETUP, examples(doc), paths=[str(home)])
        assert (v.passed, v.total) == (1, 3), v.failures
        assert "DECOY-SECRET" not in repr(v.failures) and all("PermissionError" in f for f in v.failures)
    finally:
        sibling.unlink()
        decoy.unlink()


def test_scrub_removes_secrets_escapes_and_bounds_the_text():
    from tandem.generate.sandbox import scrub

    text = ("root:$6$rounds=5000$abcdefgh$0123456789abcdefghij:20228:0:99999:7:::\n"
            "AWS AKIAABCDEFGHIJKLMNOP token ghp_abcdefghijklmnopqrstuvwxyz0123456789 \x1b[31mred\x1b[0m\n"
            "password = hunter2 and API_KEY='s3cr3t-value' \u202egnp.exe\x00\x07 "
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7 ok\n-----END PRIVATE KEY-----\n")
    out = scrub(text, 10_000)
    for secret in ("$6$", "AKIAABCDEFGHIJKLMNOP", "ghp_abc", "hunter2", "s3cr3t", "MIIEvQ", "\x1b", "\u202e", "\x00"):
        assert secret not in out, (secret, out)
    assert "red" in out and "\\n" in out and "\n" not in out
    assert scrub("ab " * 2000, 100) == ("ab " * 33) + "…" and scrub(scrub(text)) == scrub(text)
    assert scrub("x" * 5000) == "[long token removed]"


def test_a_flood_on_the_channel_ends_the_check_and_a_huge_line_is_skipped():
    v = run_examples(SETUP, examples(">>> import os\n>>> for _ in range(100): _ = os.write(3, b'x' * (1 << 20))\n"
                                     ">>> double(2)\n4\n"))
    assert (v.passed, v.total) == (1, 3) and "wrote more than it may" in v.failures[0], v.failures
    v = run_examples(SETUP, examples(">>> import os\n>>> _ = os.write(3, b'{' * (3 << 20) + b'\\n')\n>>> double(2)\n4\n"))
    assert (v.passed, v.total) == (3, 3), v.failures
