"""How fast tandem/context retrieves, on a generated workspace (10,000 Python files by default).

The workspace: packages of 100 modules, each module defining a class with methods, functions and
constants and importing a few names from other modules (same package and others). Twenty
documents are "open" (recently edited) for the similar-code provider.

Measured (milliseconds, on this machine):
  - index: walking the workspace in the background thread;
  - first request after didOpen: the document was opened (the server then prefetches its
    imported modules' outlines and similar-code windows) and the prefetch has finished, as it
    has by the time a user types in a file just opened; the product's first request;
  - cold retrieval: the first request in a file never opened (its imported modules parsed with
    tree-sitter, similar windows computed), providers run without a deadline;
  - new line: the user moved to another line of the same file (the similar-code query changes,
    the outlines are cached);
  - typing: the same line again (everything cached: what a keystroke costs);
  - rendering the block with the default model's tokenizer (if it is built), else one token per
    character.

    python tests/benchmarks/bench_context.py [--files 10000] [--samples 200]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "server"))

from tandem.context.service import ContextService, path_to_uri  # noqa: E402

MODULE = '''"""Module {p}.m{m}: generated for the benchmark."""
from __future__ import annotations

{imports}

LIMIT_{m} = {m} * 3
NAMES_{m} = ("alpha", "beta", "gamma")


class Record{m}:
    """A record of module {m}."""

    def __init__(self, key: str, value: int = 0):
        self.key = key
        self.value = value

    def update(self, delta: int) -> "Record{m}":
        """Add `delta` to the value."""
        self.value += delta
        return self

    def describe(self) -> str:
        return f"{{self.key}}={{self.value}}"


def load_{m}(path: str, strict: bool = False) -> list[Record{m}]:
    """Read records from `path`."""
    out = []
    with open(path) as handle:
        for line in handle:
            key, _, value = line.partition("=")
            out.append(Record{m}(key.strip(), int(value or 0)))
    return out


def total_{m}(records: list[Record{m}]) -> int:
    return sum(r.value for r in records) + LIMIT_{m}
'''


def make_workspace(root: Path, files: int, rng: random.Random) -> list[Path]:
    paths = []
    packages = max(1, files // 100)
    for i in range(files):
        p, m = i // 100, i % 100
        d = root / f"pkg{p}"
        d.mkdir(exist_ok=True)
        if m == 0:
            (d / "__init__.py").write_text("")
        lines = []
        for _ in range(rng.randint(3, 8)):
            op = rng.randrange(packages) if rng.random() < 0.3 else p
            om = rng.randrange(100)
            if (op, om) == (p, m):
                continue
            name = rng.choice([f"Record{om}", f"load_{om}", f"total_{om}", f"LIMIT_{om}"])
            lines.append(f"from pkg{op}.m{om} import {name}" if op != p else f"from .m{om} import {name}")
        path = d / f"m{m}.py"
        path.write_text(MODULE.format(p=p, m=m, imports="\n".join(lines)))
        paths.append(path)
    (root / ".gitignore").write_text("build/\n*.tmp.py\n")
    return paths


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def stats(name: str, xs: list[float]) -> str:
    return (f"{name:<34} p50 {statistics.median(xs):7.2f}  p95 {pct(xs, 0.95):7.2f}  max {max(xs):7.2f} ms"
            f"  (n={len(xs)})")


def codec():
    try:
        from tokenizers import Tokenizer

        from tandem.model.loaded import TextCodec

        p = Path.home() / ".cache/tandem/models/qwen2.5-coder-0.5b-instruct/cpu-int8/tokenizer.json"
        return TextCodec(Tokenizer.from_file(str(p))), "Qwen2.5-Coder tokenizer"
    except Exception:
        class Chars:
            def encode(self, text):
                return [ord(c) for c in text]

            def token_to_id(self, t):
                return {"<|repo_name|>": 1, "<|file_sep|>": 2}.get(t)
        return Chars(), "one token per character"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = make_workspace(root, args.files, rng)
        print(f"generated {len(paths)} files in {time.perf_counter() - t0:.1f} s")
        svc = ContextService(budget_s=10.0)  # no deadline: measure the providers' own time
        t0 = time.perf_counter()
        svc.bind([str(root)])
        svc.index.ready.wait(600)
        print(f"index: {len(svc.index.files)} files in {(time.perf_counter() - t0) * 1000:.0f} ms "
              f"(background thread)")
        for p in rng.sample(paths, 20):
            svc.opened(path_to_uri(str(p)), p.read_text(), 1)
        tok, tok_name = codec()
        cold, moved, typing, render, opened = [], [], [], [], []
        sample = rng.sample(paths, min(args.samples, len(paths)))
        # As in the server: the document is opened (didOpen prefetches its imports' outlines and
        # the similar-code windows) some time before the first completion request in it.
        for p in rng.sample(paths, min(args.samples, len(paths))):
            text = p.read_text()
            uri = path_to_uri(str(p))
            svc.opened(uri, text, 1)
            svc.settle(5)
            at = text.index("    for line in handle:")
            t = time.perf_counter()
            svc.gather(uri, text, at)
            opened.append((time.perf_counter() - t) * 1000)
            svc.closed(uri)
        for p in sample:
            text = p.read_text()
            uri = path_to_uri(str(p))
            at = text.index("    for line in handle:")
            t = time.perf_counter()
            ctx = svc.gather(uri, text, at)
            cold.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            svc.block(tok, ctx, 460)
            render.append((time.perf_counter() - t) * 1000)
            at2 = text.index("def total_")
            t = time.perf_counter()
            svc.gather(uri, text, at2)
            moved.append((time.perf_counter() - t) * 1000)
            typed = text[:at2] + "def tot" + text[at2:]
            t = time.perf_counter()
            ctx2 = svc.gather(uri, typed, at2 + 7)
            svc.block(tok, ctx2, 460)
            typing.append((time.perf_counter() - t) * 1000)
        print(f"retrieval over {len(sample)} files, 20 open documents, block of 460 tokens ({tok_name}):")
        for name, xs in (("first request after didOpen", opened),
                         ("cold (first request, no didOpen)", cold), ("moved to another line", moved),
                         ("typing on the line (+ block)", typing), ("rendering the block (cold)", render)):
            print("  " + stats(name, xs))
        svc.shutdown()


if __name__ == "__main__":
    main()
