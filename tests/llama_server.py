"""A real llama.cpp server (llama-cpp-python's `llama_cpp.server`) on 127.0.0.1, serving the tiny
test model as a GGUF made by the pipeline (models/gguf_export.py).

The server runs from its own virtualenv, `.venv-llama` (`make llama-server` builds it once:
llama-cpp-python is an sdist that compiles llama.cpp, ~15 min on 2 cores; pip caches the wheel),
or from the interpreter named by TANDEM_LLAMA_PYTHON. When neither is there, or the GGUF cannot
be made, `start` raises Unavailable with the reason, which the fixtures turn into a skip.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Unavailable(RuntimeError):
    pass


def llama_python() -> str:
    """The interpreter that has llama_cpp.server, or Unavailable with what to do."""
    explicit = os.environ.get("TANDEM_LLAMA_PYTHON")
    candidates = [explicit] if explicit else [str(ROOT / ".venv-llama" / "bin" / "python")]
    for py in candidates:
        if py and Path(py).exists():
            r = subprocess.run([py, "-c", "import llama_cpp.server.app"], capture_output=True, text=True, timeout=120)
            if r.returncode == 0:
                return py
            raise Unavailable(f"{py} cannot import llama_cpp.server ({r.stderr.strip().splitlines()[-1:]}); "
                              "run `make llama-server`")
    raise Unavailable("llama-cpp-python's server is not installed (.venv-llama); run `make llama-server` "
                      "(compiles llama.cpp once, ~15 min on 2 cores) or set TANDEM_LLAMA_PYTHON")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(gguf: Path, *, alias: str | None = None, threads: int = 1, n_ctx: int = 2048, timeout: float = 120,
                 logprobs: bool = True):
    """Yield the base URL of a llama.cpp server on a free loopback port; stop it afterwards."""
    py = llama_python()
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"tandem-llama-{port}.log", "w")
    cmd = [py, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
           # Per-token log-probabilities (the hover's confidence) need every position's logits.
           "--logits_all", "true" if logprobs else "false"]
    if alias:
        cmd += ["--model_alias", alias]  # the name /v1/models lists (and Tandem's provenance shows)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY") and not k.endswith("_proxy")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise Unavailable(f"llama_cpp.server exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"llama_cpp.server did not answer within {timeout:.0f}s; see {log.name}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def tiny_gguf() -> Path:
    from tandem_models.gguf_export import tiny_gguf as build

    try:
        return build()
    except Exception as e:  # the converter could not run here: say why
        raise Unavailable(f"could not export the tiny model to GGUF: {str(e)[:500]}") from None


if __name__ == "__main__":  # manual use: serve the tiny model until interrupted
    with llama_server(tiny_gguf()) as u:
        print(u, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.exit(0)
