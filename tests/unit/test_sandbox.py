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
    assert v.passed == 1 and v.isolation in ("network+filesystem", "network", "none")
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
