"""Load benchmark: N editor sessions sharing one llama.cpp server (a team on one GPU box, in small).

    .venv/bin/python tests/benchmarks/bench_teams.py [--sessions 4] [--steps 12] [--threads 2]

One llama.cpp server (llama-cpp-python's, `.venv-llama`) on 127.0.0.1 serves the tiny test model
as a GGUF (models/gguf_export.py). N real Tandem servers, each driven by a real LSP client over
stdio (tests/e2e/harness.py) with `tandem.backend: "openai"` pointed at it, type concurrently:
each session types a function of the tiny corpus character by character (didChange per
character) and asks for an inline completion wherever an editor would (after a space, an opening
bracket, a newline and its indentation), as fast as answers come back.

Reports, per request and overall: p50/p95/max latency, throughput (requests/s across sessions),
and the requests that failed (an exception), got stuck (no answer within --request-timeout) or
came back empty. Bounded: --steps requests per session and a --deadline for the whole run.
Not a timed test: run it by hand or with `make bench-teams`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_inline import pct  # noqa: E402
from tests.e2e.harness import tandem  # noqa: E402
from tests.llama_server import llama_server, tiny_gguf  # noqa: E402

CORPUS = ROOT / "models" / "data" / "tiny_corpus.py"


def functions() -> list[tuple[str, str]]:
    """(signature line, body) of each top-level function of the tiny corpus."""
    src = CORPUS.read_text()
    out = []
    for block in src.split("\n\n\n"):
        block = block.strip("\n")
        if block.startswith("def ") and "\n" in block:
            head, body = block.split("\n", 1)
            out.append((head + "\n", body + "\n"))
    return out


def trigger(typed: str) -> bool:
    """Where an editor's request would pass Tandem's prefilter: after a space or an opening
    bracket, or at the indentation of a new line."""
    return bool(typed) and (typed[-1] in " ([{" or typed.endswith("\n    "))


async def session(k: int, settings: dict, steps: int, request_timeout: float, results: list, stop_at: float,
                  home: Path, unique: bool) -> None:
    fns = functions()
    uri = f"file:///bench/team/session{k}.py"
    async with tandem(settings=settings, env={"TANDEM_HOME": str(home / f"s{k}")}) as s:
        await s.wait_for_state("ready", timeout=120)
        done = 0
        i = k  # each session starts on its own function
        while done < steps and time.monotonic() < stop_at:
            head, body = fns[i % len(fns)]
            i += 1
            text = head
            s.open(uri, text)
            for ch in body:
                if done >= steps or time.monotonic() >= stop_at:
                    break
                line = text.count("\n")
                col = len(text) - text.rfind("\n") - 1
                s.change(uri, (line, col), (line, col), ch)
                text += ch
                if not trigger(text):
                    continue
                if unique:
                    # An edit at the top of the file (another line being changed) makes every
                    # request a new prompt: no answer comes from the result cache, each one
                    # reaches the llama.cpp server.
                    s.change(uri, (0, 0), (0, 0), f"# edit {k}-{done}\n")
                    text = f"# edit {k}-{done}\n" + text
                line = text.count("\n")
                col = len(text) - text.rfind("\n") - 1
                t0 = time.perf_counter()
                try:
                    r = await asyncio.wait_for(s.complete(uri, line, col, timeout=request_timeout + 5), request_timeout)
                    outcome = "ok" if r.items else "empty"
                except asyncio.TimeoutError:
                    outcome = "stuck"
                except Exception as e:  # noqa: BLE001 - counted, reported
                    outcome = f"error: {type(e).__name__}: {str(e)[:120]}"
                results.append({"session": k, "ms": (time.perf_counter() - t0) * 1000, "outcome": outcome})
                done += 1


async def run(a) -> dict:
    import tempfile

    gguf = a.gguf or tiny_gguf()
    with llama_server(gguf, alias=gguf.stem, threads=a.threads, n_ctx=a.n_ctx, logprobs=a.logprobs) as url:
        bundle = a.model_path or Path(json.loads(Path(str(gguf) + ".json").read_text())["source"]).parent
        settings = {"modelPath": str(bundle), "backend": "openai", "endpoint": url}
        results: list[dict] = []
        with tempfile.TemporaryDirectory() as home:
            t0 = time.perf_counter()
            stop_at = time.monotonic() + a.deadline
            await asyncio.wait_for(asyncio.gather(*(session(k, settings, a.steps, a.request_timeout, results, stop_at,
                                                            Path(home), a.unique) for k in range(a.sessions))),
                                   a.deadline + 180)
            wall = time.perf_counter() - t0
    ms = [r["ms"] for r in results]
    answered = [r["ms"] for r in results if r["outcome"] in ("ok", "empty")]
    counts: dict[str, int] = {}
    for r in results:
        key = r["outcome"] if not r["outcome"].startswith("error") else "error"
        counts[key] = counts.get(key, 0) + 1
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end",
        "sessions": a.sessions, "requests": len(results), "expected": a.sessions * a.steps,
        "outcomes": counts, "errors": [r["outcome"] for r in results if r["outcome"].startswith("error")][:5],
        "p50_ms": round(pct(answered, 50), 1) if answered else None,
        "p95_ms": round(pct(answered, 95), 1) if answered else None,
        "max_ms": round(max(ms), 1) if ms else None,
        "wall_s": round(wall, 1), "throughput_rps": round(len(answered) / wall, 2) if wall else None,
        "llama_threads": a.threads, "model": gguf.name, "unique_prompts": a.unique, "logprobs": a.logprobs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="N concurrent editor sessions against one llama.cpp server")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--steps", type=int, default=12, help="completion requests per session")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    ap.add_argument("--request-timeout", type=float, default=30.0, help="a request slower than this is 'stuck'")
    ap.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--gguf", type=Path, help="serve this GGUF instead of the tiny model's")
    ap.add_argument("--model-path", type=Path, help="the Tandem model whose tokenizer matches --gguf")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--no-logprobs", dest="logprobs", action="store_false",
                    help="serve without per-token logprobs (llama-cpp-python's --logits_all false: faster)")
    ap.add_argument("--cache-hits", dest="unique", action="store_false",
                    help="let typed-through answers come from Tandem's cache (default: every request is new)")
    a = ap.parse_args()
    out = asyncio.run(run(a))
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    lost = out["expected"] - out["requests"]
    bad = out["outcomes"].get("stuck", 0) + out["outcomes"].get("error", 0)
    return 0 if not bad and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
