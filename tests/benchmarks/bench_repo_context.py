"""Repository-level line completion: does context from other files (tandem/context) help?

Built from real packages this project did not write, fetched from PyPI at benchmark time only
(`pip download --no-deps --no-binary :all:`, pinned by version and sha256, cached under
~/.cache/tandem/bench-repos; nothing is vendored):
  - tomlkit 0.13.2 (MIT), the package directory `tomlkit/`
  - click 8.1.7 (BSD-3-Clause), the package directory `src/click/`
  - jinja2 3.1.4 (BSD-3-Clause), the package directory `src/jinja2/`

Cut sites: a line of a package module that uses a name the module imports from another module
of the same package (a class, function or constant defined there). The cursor goes just before
that name; the expected completion is the rest of the line; the document keeps everything
else (the lines below are the FIM suffix). Sites are drawn with a fixed seed, at most
PER_FILE per file.

Each site is completed through the completion engine in-process with the real default model,
once with the context block (all sources; no other documents are open) and once without
(contextShare 0), interleaved so that neither run reuses the other's KV cache. As in the
server, the document is opened first (`didOpen` prefetches its imported modules' outlines and
the benchmark lets that finish, as an editor's user would before typing), so the figures are
those of the warmed product; a provider that still misses the 50 ms deadline is counted
(`skipped`). Each site gets its own context service (no site sees another's documents).
  - cold: the first request at the site (what exact match and edit similarity are scored on);
  - warm: the user then types the first expected character (the engine's result cache is
    cleared, so the model runs again, reusing the KV cache of the shared prompt start).
Latency includes gathering the context.

    python tests/benchmarks/bench_repo_context.py [--cases 90] [--share 0.3] [--json out.json]
        [--none-from earlier.json]   # reuse an earlier run's no-context arm (same sites, same model)

The summary pairs the two arms site by site: sites gained (exact with context only), lost
(exact without context only), and an exact two-sided sign test on those. It also counts the
sites where the context block's token ids stay the same (its KV cache reused) when the user
types at the end of the site's line, and when they press Enter there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "server"))

from tandem.completion.engine import CompletionEngine  # noqa: E402
from tandem.context import outline as O  # noqa: E402
from tandem.context.service import ContextService, path_to_uri  # noqa: E402
from tandem.learn.evaluate import edit_similarity  # noqa: E402
from tandem.settings import Settings  # noqa: E402
from sdist import fetch_sdist  # noqa: E402  (tests/benchmarks/sdist.py)

PACKAGES = [
    # name, version, sha256 of the sdist, folder of the package inside it, licence
    ("tomlkit", "0.13.2", "fff5fe59a87295b278abd31bec92c15d9bc4a06885ab12bcea52c71119392e79", "tomlkit", "MIT"),
    ("click", "8.1.7", "ca9853ad459e787e2192211578cc907e7594e294c7ccc834310722b41b9ca6de", "src/click",
     "BSD-3-Clause"),
    ("jinja2", "3.1.4", "4a3aee7acbbe7303aede8e9648d13b8bf88a429282aa6122a993f0ac800cb369", "src/jinja2",
     "BSD-3-Clause"),
]
CACHE = Path(os.environ.get("TANDEM_BENCH_REPOS", Path.home() / ".cache" / "tandem" / "bench-repos"))
PER_FILE = 6
SEED = 11


def fetch(name: str, version: str, sha: str) -> Path:
    """The unpacked sdist (downloaded once, verified every time)."""
    archive = fetch_sdist(name, version, sha, CACHE)
    out = CACHE / "src" / f"{name}-{version}"
    if not out.exists():
        with tarfile.open(archive) as tf:
            tf.extractall(CACHE / "src", filter="data")
    return out


def sites(root: Path, pkg: str) -> list[dict]:
    """Every cut site of the package (see the module docstring)."""
    svc = ContextService()
    svc.bind([str(root)], start=False)
    idx = svc.index
    pkg_dir = root / pkg
    for p in sorted(pkg_dir.rglob("*.py")):
        idx.add(str(p), bump=False)
    out = []
    for path in sorted(pkg_dir.rglob("*.py")):
        text = path.read_text("utf-8")
        cross: dict[str, str] = {}
        top = pkg.rsplit("/", 1)[-1]
        for imp in O.imports(text):
            if not imp.names or not (imp.module.startswith(".") or imp.module.split(".")[0] == top):
                continue
            target = idx.resolve(imp.module, str(path))
            if target is None or os.path.abspath(target) == os.path.abspath(path):
                continue
            defs = idx.outline_of(target)
            cross.update({n: defs[n].kind for n in imp.names
                          if n in defs and defs[n].kind in ("class", "function", "constant")})
        if not cross:
            continue
        # A function where it is called; a class or constant anywhere; never as an attribute
        # of something else (`self.echo`) or where a method of that name is defined.
        funcs = [re.escape(n) for n, k in cross.items() if k == "function"]
        others = [re.escape(n) for n, k in cross.items() if k != "function"]
        alts = ([r"(?:" + "|".join(sorted(funcs)) + r")(?=\()"] if funcs else []) + \
               ([r"(?:" + "|".join(sorted(others)) + r")\b"] if others else [])
        word = re.compile(r"(?<![\w.])(" + "|".join(alts) + ")")
        offset = 0
        in_doc = False
        for line in text.split("\n"):
            start, offset = offset, offset + len(line) + 1
            s = line.strip()
            if s.count('"""') % 2 == 1:
                in_doc = not in_doc
                continue
            if in_doc or not s or s.startswith(("#", "import ", "from ", "@", "def ", "class ", "async def ")) \
                    or s.startswith(('"', "'")):
                continue
            m = word.search(line)
            if m is None or not line[:m.start()].strip():
                continue  # the name must not start the line (the model would have no hint where it is)
            rest = line[m.start():].rstrip()
            if not 6 <= len(rest) <= 100:
                continue
            out.append({"file": str(path.relative_to(root)), "path": str(path), "line": text.count("\n", 0, start),
                        "cut": start + m.start(), "line_end": start + len(line), "name": m.group(1),
                        "target": rest})
    return out


def pick(all_sites: list[dict], n: int) -> list[dict]:
    rng = random.Random(SEED)
    by_file: dict[str, list[dict]] = {}
    for s in all_sites:
        by_file.setdefault(s["file"], []).append(s)
    pool = []
    for f in sorted(by_file):
        ss = by_file[f]
        pool += rng.sample(ss, min(PER_FILE, len(ss)))
    rng.shuffle(pool)
    return sorted(pool[:n], key=lambda s: (s["file"], s["line"]))


def service_for(root: Path, uri: str, doc: str) -> ContextService:
    """A fresh context service on the package, the document opened and its prefetch finished."""
    svc = ContextService(budget_s=0.05)
    svc.bind([str(root)])
    svc.index.ready.wait(30)
    svc.opened(uri, doc, 1)
    svc.settle(10)
    return svc


def run_site(engine, svc, settings, site, text_at, use_context: bool) -> dict:
    uri = path_to_uri(site["path"])
    doc, cut = text_at
    engine._cache.clear()
    out = {}
    for phase, (d, off) in (("cold", (doc, cut)), ("warm", (doc[:cut] + site["target"][0] + doc[cut:], cut + 1))):
        if phase == "warm":
            engine._cache.clear()  # typed-through results would answer without the model
        t0 = time.perf_counter()
        block = None
        skipped = ()
        if use_context:
            ctx = svc.gather(uri, d, off, settings.contextSources)
            skipped = ctx.skipped
            block = svc.block(engine.model.codec, ctx, int(settings.contextTokens * settings.contextShare))
        r = engine.complete(d, off, settings, context=block)
        ms = (time.perf_counter() - t0) * 1000
        got = (r.text if r else "").split("\n", 1)[0].rstrip()
        if phase == "warm":
            got = site["target"][0] + got
        out[phase] = {"ms": ms, "text": got, "prompt_tokens": r.prompt_tokens if r else 0,
                      "reused": r.reused_tokens if r else 0, "context_tokens": len(block.ids) if block else 0,
                      "sources": len(block.sources) if block else 0, "skipped": list(skipped),
                      "block": block.text if (block and phase == "cold") else ""}
    return out


def block_kept(codec, svc, settings, site, text: str) -> dict:
    """Whether the context block's ids stay the same when, at the end of the site's (whole)
    line, the user types a character, and when they press Enter (a new line, same indent).
    Gathered without a deadline: this asks what the providers find, not whether in time."""
    uri, end = path_to_uri(site["path"]), site["line_end"]
    line = text[text.rfind("\n", 0, end) + 1:end]
    indent = line[:len(line) - len(line.lstrip())]
    budget = int(settings.contextTokens * settings.contextShare)

    def ids(t: str, at: int) -> tuple:
        b = svc.block(codec, svc.gather(uri, t, at, settings.contextSources, budget_s=30.0), budget)
        return b.ids if b else ()

    here = ids(text, end)
    return {"typing": here == ids(text[:end] + "x" + text[end:], end + 1),
            "enter": here == ids(text[:end] + "\n" + indent + text[end:], end + 1 + len(indent))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=90)
    ap.add_argument("--none-from", type=str, default="")
    ap.add_argument("--share", type=float, default=Settings().contextShare)
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args()
    from tandem.model.loaded import load_model

    all_sites = []
    roots = {}
    for name, version, sha, pkg, _lic in PACKAGES:
        root = fetch(name, version, sha)
        roots[name] = root
        ss = sites(root, pkg)
        for s in ss:
            s["package"] = name
        all_sites.append(ss)
        print(f"{name} {version}: {len(ss)} cut sites", file=sys.stderr)
    chosen = []
    per_pkg = args.cases // len(all_sites)
    for ss in all_sites:
        chosen += pick(ss, per_pkg)
    model = load_model(None, "cpu")
    engine = CompletionEngine(model)
    earlier = {}
    if args.none_from:
        for r in json.loads(Path(args.none_from).read_text())["results"]:
            earlier[(r["package"], r["file"], r["line"], r["target"])] = r["none"]
    with_ctx = Settings(contextShare=args.share, contextSources=("imports", "similar", "path"))
    without = Settings(contextShare=0.0)
    results = []
    t_start = time.time()
    for i, site in enumerate(chosen):
        text = Path(site["path"]).read_text("utf-8")
        doc = text[:site["cut"]] + text[site["line_end"]:]
        row = {k: site[k] for k in ("package", "file", "line", "name", "target")}
        svc = service_for(roots[site["package"]], path_to_uri(site["path"]), doc)
        prev = earlier.get((site["package"], site["file"], site["line"], site["target"]))
        if args.none_from and prev is None:
            raise SystemExit(f"{args.none_from} lacks the site {site['file']}:{site['line'] + 1}")
        row["none"] = prev or run_site(engine, svc, without, site, (doc, site["cut"]), False)
        row["context"] = run_site(engine, svc, with_ctx, site, (doc, site["cut"]), True)
        row["context"]["block_kept"] = block_kept(engine.model.codec, svc, with_ctx, site, text)
        svc.shutdown()
        for k in ("none", "context"):
            row[k]["exact"] = row[k]["cold"]["text"] == site["target"]
            row[k]["es"] = edit_similarity(row[k]["cold"]["text"], site["target"])
        results.append(row)
        print(f"[{i + 1}/{len(chosen)}] {site['file']}:{site['line'] + 1} {site['target']!r}\n"
              f"    none    {row['none']['cold']['text']!r} {row['none']['cold']['ms']:.0f} ms\n"
              f"    context {row['context']['cold']['text']!r} {row['context']['cold']['ms']:.0f} ms "
              f"({row['context']['cold']['context_tokens']} context tokens{', skipped ' + ','.join(row['context']['cold']['skipped']) if row['context']['cold']['skipped'] else ''})", file=sys.stderr, flush=True)
    summary = summarize(results)
    summary.update({"cases": len(results), "share": args.share, "none_from": args.none_from,
                    "by_package": {p: summarize([r for r in results if r["package"] == p])["delta"]
                                   for p in roots}, "machine": machine(), "model": model.describe(),
                    "minutes": round((time.time() - t_start) / 60, 1),
                    "packages": [f"{n} {v} ({lic})" for n, v, _s, _p, lic in PACKAGES]})
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "results": results}, indent=1))


def summarize(results: list[dict]) -> dict:
    out = {}
    for k in ("none", "context"):
        rows = [r[k] for r in results]
        out[k] = {
            "exact_match": round(100 * sum(r["exact"] for r in rows) / max(1, len(rows)), 1),
            "edit_similarity": round(100 * statistics.mean(r["es"] for r in rows), 1) if rows else 0,
            "p50_cold_ms": round(statistics.median(r["cold"]["ms"] for r in rows)) if rows else 0,
            "p50_warm_ms": round(statistics.median(r["warm"]["ms"] for r in rows)) if rows else 0,
            "mean_prompt_tokens": round(statistics.mean(r["cold"]["prompt_tokens"] for r in rows)) if rows else 0,
            "mean_context_tokens": round(statistics.mean(r["cold"]["context_tokens"] for r in rows)) if rows else 0,
        }
    n, c = out["none"], out["context"]
    out["delta"] = {"exact_match_points": round(c["exact_match"] - n["exact_match"], 1),
                    "edit_similarity_points": round(c["edit_similarity"] - n["edit_similarity"], 1),
                    "p50_cold_cost_pct": round(100 * (c["p50_cold_ms"] / max(1, n["p50_cold_ms"]) - 1), 1),
                    "p50_warm_cost_pct": round(100 * (c["p50_warm_ms"] / max(1, n["p50_warm_ms"]) - 1), 1)}
    gained = sum(r["context"]["exact"] and not r["none"]["exact"] for r in results)
    lost = sum(r["none"]["exact"] and not r["context"]["exact"] for r in results)
    out["paired"] = {"gained": gained, "lost": lost, "sign_test_p": sign_test(gained, lost),
                     "es_better": sum(r["context"]["es"] > r["none"]["es"] + 1e-9 for r in results),
                     "es_worse": sum(r["context"]["es"] < r["none"]["es"] - 1e-9 for r in results),
                     "context_skipped": sum(bool(r["context"]["cold"].get("skipped")) for r in results),
                     "block_kept_typing": sum(r["context"].get("block_kept", {}).get("typing", False) for r in results),
                     "block_kept_enter": sum(r["context"].get("block_kept", {}).get("enter", False) for r in results),
                     "context_empty": sum(not r["context"]["cold"]["context_tokens"] for r in results)}
    return out


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact sign test: how likely a split at least this uneven is by chance."""
    from math import comb

    n, k = gained + lost, min(gained, lost)
    if n == 0:
        return 1.0
    return round(min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n), 3)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
