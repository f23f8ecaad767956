"""Benchmark: inline-completion latency through the LSP, and decode speed against
transformers + torch `generate` on the same checkpoint and prompts, side by side.

    .venv/bin/python tests/benchmarks/bench_inline.py [--model DIR] [--runs N] [--build-time]

Prints p50/p95 latency (cold: a new place each time; repeated: the same place again;
typing: one character more each time, which reuses the KV cache; Enter: a new line after a
finished one, asked at the end of that line first), decode tokens/s for
ONNX and torch and their ratio, end-to-end latency ratio, and the server's resident memory.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import tandem  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(name, xs):
    return f"{name:<34} n={len(xs):<3} p50={pct(xs, 50):8.0f} ms  p95={pct(xs, 95):8.0f} ms"


def sample_places(n: int):
    """Cursor places in real code (~1k-token prompts): stdlib modules, each cut at a function body
    (multi-line) or after `return ` (single-line)."""
    import textwrap, json as js, argparse as ap, inspect as ins, statistics as st, shutil  # noqa: E401
    places = []
    for mod in (textwrap, js.encoder, ap, ins, st, shutil):
        src = Path(mod.__file__).read_text()
        lines = src.split("\n")
        for i, line in enumerate(lines[200:], start=200):
            s = line.strip()
            if s.startswith("def ") and s.endswith(":") and len(places) < 2 * n:
                indent = " " * (len(line) - len(line.lstrip()) + 4)
                prefix = "\n".join(lines[:i + 1]) + "\n" + indent
                # Empty body: drop the original body so the block is really empty.
                k = i + 1
                while k < len(lines) and (not lines[k].strip() or lines[k].startswith(indent)):
                    k += 1
                suffix = "\n\n" + "\n".join(lines[k:])
                places.append(("multi", mod.__name__, prefix, suffix))
            elif s.startswith("return ") and len(s) > 12 and sum(p[0] == "single" for p in places) < n:
                col = line.index("return ") + len("return ")
                prefix = "\n".join(lines[:i]) + "\n" + line[:col]
                suffix = "\n" + "\n".join(lines[i + 1:])
                places.append(("single", mod.__name__, prefix, suffix))
        if sum(p[0] == "multi" for p in places) >= n and sum(p[0] == "single" for p in places) >= n:
            break
    single = [p for p in places if p[0] == "single"][:n]
    multi = [p for p in places if p[0] == "multi"][:n]
    return single, multi


async def lsp_latency(model: str | None, runs: int, settings: dict):
    single, multi = sample_places(runs)
    out = {}
    async with tandem(settings={**({"modelPath": model} if model else {}), **settings}) as s:
        await s.wait_for_state("ready", timeout=300)
        pid = s.client._server.pid
        rss = psutil.Process(pid).memory_info().rss
        for kind, places in (("single-line", single), ("multi-line", multi)):
            cold, repeat = [], []
            for i, (_, name, prefix, suffix) in enumerate(places):
                uri = f"file:///bench/{kind}-{i}.py"
                text = prefix + suffix
                s.open(uri, text)
                line = prefix.count("\n")
                col = len(prefix) - prefix.rfind("\n") - 1
                t0 = time.perf_counter()
                await s.complete(uri, line, col, timeout=300)
                cold.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await s.complete(uri, line, col, timeout=300)
                repeat.append((time.perf_counter() - t0) * 1000)
            out[kind] = {"cold": cold, "repeat": repeat}
        # Typing: one character more each time at a fresh place (KV-cache reuse, no result cache).
        _, name, prefix, suffix = single[0]
        typing = []
        for j, ch in enumerate("value_x"):
            prefix = prefix + ch
            uri = "file:///bench/typing.py"
            s.open(uri, prefix + suffix)
            t0 = time.perf_counter()
            await s.complete(uri, prefix.count("\n"), len(prefix) - prefix.rfind("\n") - 1, timeout=300)
            if j:  # the first one is cold
                typing.append((time.perf_counter() - t0) * 1000)
        out["typing"] = typing
        # Enter: the user finishes a line and presses Enter (a new line, its indentation); the
        # editor asks at the end of the finished line first, then on the new line (timed).
        enter = []
        for i, (_, name, prefix, suffix) in enumerate(single):
            head = prefix[:prefix.rfind("\n")]  # up to the end of the line above the `return` line
            line_text = prefix[prefix.rfind("\n") + 1:]
            indent = line_text[:len(line_text) - len(line_text.lstrip())]
            uri = f"file:///bench/enter-{i}.py"
            s.open(uri, head + suffix)
            row, col = head.count("\n"), len(head) - head.rfind("\n") - 1
            await s.complete(uri, row, col, timeout=300)
            s.change(uri, (row, col), (row, col), "\n" + indent)
            t0 = time.perf_counter()
            await s.complete(uri, row + 1, len(indent), timeout=300)
            enter.append((time.perf_counter() - t0) * 1000)
        out["enter"] = enter
        rss_loaded = max(rss, psutil.Process(pid).memory_info().rss)
        status = await s.command("tandem.status")
    out["rss_mb"] = rss_loaded / 2**20
    out["status"] = status
    return out, single, multi


def sample_stubs(n: int) -> list[tuple[str, str, int]]:
    """Functions of stdlib modules with a docstring, their body after it replaced by `...`:
    (name, the module's text, the def line). Places for "Generate function from docstring"."""
    import ast
    import shutil, textwrap, json.encoder as je, argparse as ap, inspect as ins  # noqa: E401
    stubs = []
    for mod in (textwrap, shutil, je, ap, ins):
        src = Path(mod.__file__).read_text()
        lines = src.split("\n")
        for node in ast.parse(src).body:
            if (isinstance(node, ast.FunctionDef) and ast.get_docstring(node) and len(node.body) > 1
                    and node.lineno > 40 and len(stubs) < n):
                doc_end = node.body[0].end_lineno
                indent = " " * node.body[0].col_offset
                text = "\n".join(lines[:doc_end] + [indent + "..."] + lines[node.end_lineno:])
                stubs.append((f"{mod.__name__}.{node.name}", text, node.lineno - 1))
                break  # one per module, then the next module
    return stubs


async def rest_latency(model: str | None, places, rests: list[float], warm: bool) -> dict:
    """The first keystroke at a new place after the cursor rested there: in a file the user has
    edited, the cursor moves to a place (the editor asks for code actions there, as VS Code
    does on every move), rests `rest` seconds, one character is typed and the editor asks for a
    completion (timed). `warm`: the server's tandem.warmAtCursor. One server per arm, so no
    arm finds another's results in the cache; every place is new to the server."""
    out: dict = {}

    def after(prefix: str) -> tuple[int, int]:
        """The cursor at the end of `prefix`, in the document edited with a line on top."""
        return prefix.count("\n") + 1, len(prefix) - prefix.rfind("\n") - 1

    async with tandem(settings={**({"modelPath": model} if model else {}), "warmAtCursor": warm}) as s:
        await s.wait_for_state("ready", timeout=300)
        for r, rest in enumerate(rests):
            out[rest] = []
            for i, (_, name, prefix, suffix) in enumerate(places):
                uri = f"file:///bench/rest-{r}-{i}.py"
                s.open(uri, prefix + suffix)
                s.change(uri, (0, 0), (0, 0), "# \n")  # the user works in this file
                line, col = after(prefix)
                await s.code_actions(uri, line, col, timeout=30)  # the cursor moved there
                await asyncio.sleep(rest)
                s.change(uri, (line, col), (line, col), "s")
                t0 = time.perf_counter()
                await s.complete(uri, line, col + 1, timeout=300)
                out[rest].append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(max(rests) + 3)  # nothing of this rest's places still running
        # Looking elsewhere and coming back: the user types at a place (a completion), moves to
        # another edited file and rests 3 s there (long enough to warm it), comes back and
        # types the next character at once (timed): the KV cache, not the result cache, answers.
        out["back"] = []
        for i, (_, name, prefix, suffix) in enumerate(places):
            here, there = f"file:///bench/back-{i}.py", f"file:///bench/there-{i}.py"
            other = places[(i + 1) % len(places)]
            for uri, (_, _, p, sfx) in ((here, places[i]), (there, other)):
                s.open(uri, p + sfx)
                s.change(uri, (0, 0), (0, 0), "# \n")
            line, col = after(prefix)
            s.change(here, (line, col), (line, col), "s")
            await s.complete(here, line, col + 1, timeout=300)
            await s.code_actions(there, *after(other[2]), timeout=30)
            await asyncio.sleep(3.0)
            await s.code_actions(here, line, col + 1, timeout=30)
            # A character the shown suggestion did not start with (else the result cache answers).
            s.change(here, (line, col + 1), (line, col + 1), "Q")
            t0 = time.perf_counter()
            await s.complete(here, line, col + 2, timeout=300)
            out["back"].append((time.perf_counter() - t0) * 1000)
        # "Generate function from docstring" after the cursor rested 4 s on the stub's def line
        # (in an edited file): the action's prompt is what gets warmed there.
        out["function"] = []
        for i, (name, text, line) in enumerate(sample_stubs(len(places))):
            uri = f"file:///bench/stub-{i}.py"
            s.open(uri, text)
            s.change(uri, (0, 0), (0, 0), "# \n")
            actions = await s.code_actions(uri, line + 1, 4, timeout=30)
            action = next((a for a in actions if a.title == "Generate function from docstring"), None)
            if action is None:
                continue
            await asyncio.sleep(4.0)
            t0 = time.perf_counter()
            await asyncio.wait_for(s.client.code_action_resolve_async(action), 300)
            out["function"].append((time.perf_counter() - t0) * 1000)
        out["rss_mb"] = psutil.Process(s.client._server.pid).memory_info().rss / 2**20
    return out


def decode_speed(model_dir: Path, places, new_tokens: int):
    """ONNX (the server's own loop) vs torch generate: same checkpoint, same FIM prompts."""
    import torch
    from transformers import AutoModelForCausalLM

    from tandem.completion.prompt import build_fim_prompt
    from tandem.model.loaded import load_model

    loaded = load_model(str(model_dir), "cpu")
    hf = loaded.files.directory.parent / "hf"
    tm = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    rows = []
    for _, name, prefix, suffix in places:
        p = build_fim_prompt(loaded.codec, loaded.fim, prefix, suffix, 1536, 0.7)
        loaded.lm.clear_cache()
        t0 = time.perf_counter()
        g = loaded.lm.generate(p.ids, max_new_tokens=new_tokens, stop_ids=set())
        onnx_total = time.perf_counter() - t0
        onnx_tps = (len(g.ids) - 1) / g.decode_s
        ids = torch.tensor([p.ids])
        with torch.no_grad():
            t0 = time.perf_counter()
            tm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=0)
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = tm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
            torch_total = time.perf_counter() - t0
        torch_tps = (out.shape[1] - ids.shape[1] - 1) / max(torch_total - t_first, 1e-9)
        rows.append({"prompt_tokens": len(p.ids), "onnx_prefill_ms": g.prefill_s * 1e3, "onnx_tps": onnx_tps,
                     "onnx_total_s": onnx_total, "torch_prefill_ms": t_first * 1e3, "torch_tps": torch_tps,
                     "torch_total_s": torch_total})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="model bundle (default: the built default model)")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--build-time", action="store_true", help="also time a full model build into a fresh home")
    ap.add_argument("--lsp-only", action="store_true", help="skip the decode comparison with torch")
    ap.add_argument("--rest", default="", metavar="S,S,...",
                    help="only the first keystroke after the cursor rested S seconds, warmAtCursor on and off")
    a = ap.parse_args()
    from tandem.model.loader import default_model_path
    model_dir = Path(a.model) if a.model else default_model_path()
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; model {model_dir}; "
          f"load average {os.getloadavg()[0]:.2f}")

    if a.rest:
        rests = [float(x) for x in a.rest.split(",")]
        single, _ = sample_places(a.runs)
        on = asyncio.run(rest_latency(a.model, single, rests, True))
        off = asyncio.run(rest_latency(a.model, single, rests, False))

        def both(name: str, key) -> None:
            print(summary(f"{name}, warmAtCursor off", off[key]))
            print(summary(f"{name}, warmAtCursor on", on[key]) + f"  (p50 x{pct(on[key], 50) / pct(off[key], 50):.2f})")

        print("\nFirst keystroke at a new place after the cursor rested there (edited file; client send -> response):")
        for rest in rests:
            both(f"rested {rest:g} s", rest)
        print("Typed at a place, rested 3 s in another edited file, came back and typed at once:")
        both("back", "back")
        print('"Generate function from docstring" after the cursor rested 4 s on the stub (stdlib functions):')
        both("function", "function")
        print(f"server resident memory at the end: off {off['rss_mb']:.0f} MiB, on {on['rss_mb']:.0f} MiB")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        return

    lat, single, multi = asyncio.run(lsp_latency(a.model, a.runs, {}))
    print(f"server: {lat['status'].get('message') if isinstance(lat['status'], dict) else lat['status']}")
    print("\nInline completion latency through the LSP (client send -> response):")
    for kind in ("single-line", "multi-line"):
        print(summary(f"{kind} cold (new place)", lat[kind]["cold"]))
        print(summary(f"{kind} repeated (same place)", lat[kind]["repeat"]))
    print(summary("typing (+1 char, KV reuse)", lat["typing"]))
    print(summary("Enter (new line, KV reuse)", lat["enter"]))
    print(f"\nserver resident memory with the model loaded: {lat['rss_mb']:.0f} MiB")

    if a.lsp_only:
        return
    rows = decode_speed(model_dir, single[:3] + multi[:3], a.new_tokens)
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    print(f"\nDecode, {a.new_tokens} new tokens, same checkpoint and FIM prompts "
          f"(median of {len(rows)}, prompts {min(r['prompt_tokens'] for r in rows)}-{max(r['prompt_tokens'] for r in rows)} tokens):")
    print(f"  ONNX (server loop)  prefill {med('onnx_prefill_ms'):7.0f} ms  decode {med('onnx_tps'):6.1f} tok/s  total {med('onnx_total_s'):6.2f} s")
    print(f"  torch generate      prefill {med('torch_prefill_ms'):7.0f} ms  decode {med('torch_tps'):6.1f} tok/s  total {med('torch_total_s'):6.2f} s")
    print(f"  ratio ONNX/torch: decode speed x{med('onnx_tps') / med('torch_tps'):.2f}, "
          f"end-to-end time x{med('torch_total_s') / med('onnx_total_s'):.2f} faster")

    if a.build_time:
        with tempfile.TemporaryDirectory() as home:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tandem_models.build", "--home", home], check=True)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tandem_models.build", "--home", home], check=True)
            again = time.perf_counter() - t0
        print(f"\nmodel build from scratch: {first:.0f} s; rerun with nothing changed: {again:.1f} s")


if __name__ == "__main__":
    main()
