"""Line-completion evaluation through the product, against the bare model, on held-out code.

    .venv/bin/python tests/benchmarks/eval_lines.py [--model tiny|default|DIR] [--cases N]
                     [--ablate N] [--bare fp32,served] [--json OUT]

The held-out set: the Python files of apache-superset-core 0.1.0 (Apache-2.0), a package first
released on PyPI in May 2026 (its one version; files dated 2026-03..05), after Qwen2.5-Coder's
training data (2024). Its sdist is downloaded once into the cache by `pip download` (pinned
version and sha256); the network is used only here, never by the server. Cases are cut
deterministically at four kinds of cursor, the rest of the line (or the next line) removed:

- word:   inside an identifier (`session: Se|`)
- punct:  right after punctuation, or after punctuation and a space (`foo(|`, `x = |`)
- indent: after the indentation of a line (the line holds only its indentation)
- eol:    at the end of a finished line; the next line is missing (what comes next)

Each case is scored by the completed line (the target line of the document after accepting
the suggestion) against the original: exact match and edit similarity (1 - Levenshtein /
longer length), and latency. Three ways on the same cases in the same run:

- tandem:  the real server over stdio, `textDocument/inlineCompletion`, default settings
           (1,536-token prompt), the suggestion applied as an editor would;
- bare:    the same model alone: greedy fill-in-the-middle, 512 prefix + 128 suffix tokens,
           no post-processing (decoding only stops once the target line is written), through
           the ONNX session via tandem.model.loaded.load_model; `served` is the variant the
           server loads (int8 on CPU), `fp32` the unquantized export, so quantization's share
           of a loss is known;
- rules:   (--ablate N, the first N cases) the completion engine in-process with each
           post-processing rule switched off in turn (TANDEM_EVAL_RULES_OFF), and token
           healing off and on (through the runtime's `constraint=`, or a masked loop here
           for a runtime without it). Generations are memoized by prompt, so a rule that
           does not change the prompt costs no model call.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import random
import statistics
import sys
import tarfile
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tandem.learn.evaluate import edit_similarity as similarity  # noqa: E402  (1 - Levenshtein / longer)
from sdist import fetch_sdist  # noqa: E402  (tests/benchmarks/sdist.py)

SOURCE = {
    "name": "apache-superset-core", "version": "0.1.0", "license": "Apache-2.0",
    "file": "apache_superset_core-0.1.0.tar.gz",
    "sha256": "72cddac557f212db30f718ef0741a59bc5f5b54559525f9a104d9c925aba18c1",
}
KINDS = ("word", "punct", "indent", "eol")
BARE_PREFIX, BARE_SUFFIX, BARE_MAX_NEW = 512, 128, 48


# -- the held-out set -------------------------------------------------------------------------

def cache_dir() -> Path:
    from tandem.model.loader import tandem_home

    return tandem_home() / "eval" / "lines"


def fetch_source(cache: Path) -> Path:
    """The pinned sdist, downloaded once (pip, no dependencies, no build) and checked."""
    return fetch_sdist(SOURCE["name"], SOURCE["version"], SOURCE["sha256"], cache, SOURCE["file"])


def read_source(sdist: Path) -> tuple[list[tuple[str, str]], str]:
    """(path, text) of each .py file in the sdist, sorted, and its licence text (checked)."""
    files, licence = [], ""
    with tarfile.open(sdist) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if not m.isfile():
                continue
            name = m.name.split("/", 1)[1]
            data = tar.extractfile(m).read().decode("utf-8")
            if name.endswith(".py"):
                files.append((name, data))
            elif name.upper().startswith("LICENSE"):
                licence = data
    if "Apache License" not in licence or "Version 2.0" not in licence:
        raise SystemExit(f"{sdist}: the licence file is not the Apache License 2.0 any more")
    return files, licence


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    file: str
    prefix: str
    suffix: str
    line: int  # the target line's index in prefix + completion + suffix
    target: str  # the original line


def code_lines(text: str) -> set[int]:
    """0-based lines holding code: not blank, not only a comment, not inside a string that
    spans lines (docstrings), and long enough to be worth completing."""
    lines = text.split("\n")
    in_string: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            in_string.update(range(tok.start[0] - 1, tok.end[0]))
    return {i for i, l in enumerate(lines)
            if i not in in_string and len(l.strip()) >= 6 and not l.strip().startswith("#")}


def candidates(path: str, text: str) -> dict[str, list[Case]]:
    lines = text.split("\n")
    code = code_lines(text)
    out: dict[str, list[Case]] = {k: [] for k in KINDS}
    strings = {}  # line -> columns inside string literals (no cursor there: keep to code)
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.STRING and tok.start[0] == tok.end[0]:
            strings.setdefault(tok.start[0] - 1, set()).update(range(tok.start[1] + 1, tok.end[1]))
    for i in sorted(code):
        if i == 0:
            continue
        line = lines[i]
        above, below = "\n".join(lines[:i]) + "\n", "\n" + "\n".join(lines[i + 1:])
        ind = len(line) - len(line.lstrip())
        inside = strings.get(i, set())

        def case(kind, col, prefix=None, suffix=None, target_line=i, target=line):
            out[kind].append(Case(f"{path}:{i + 1}:{col}:{kind}", kind, path,
                                  above + line[:col] if prefix is None else prefix,
                                  below if suffix is None else suffix, target_line, target.rstrip()))

        case("indent", ind)
        end = len(line.rstrip())
        for c in range(ind + 1, end):
            if c in inside:
                continue
            a, b = line[c - 1], line[c]
            if (a.isalnum() or a == "_") and (b.isalnum() or b == "_") and c - 1 not in inside:
                # inside a word: at least two characters typed, at least two to go
                w0 = c
                while w0 > 0 and (line[w0 - 1].isalnum() or line[w0 - 1] == "_"):
                    w0 -= 1
                w1 = c
                while w1 < len(line) and (line[w1].isalnum() or line[w1] == "_"):
                    w1 += 1
                if c - w0 >= 2 and w1 - c >= 2:
                    case("word", c)
            elif a in "([{.,=:+-*/<>%" and not b.isspace() and b not in ")]}":
                case("punct", c)
            elif a == " " and c >= 2 and line[c - 2] in ",=:(" and not b.isspace():
                case("punct", c)
        if i + 1 in code and i + 1 < len(lines):
            nxt = lines[i + 1]
            case("eol", len(line), prefix=above + line,
                 suffix="\n" + "\n".join(lines[i + 2:]), target_line=i + 1, target=nxt)
    return out


def build_cases(files: list[tuple[str, str]], n: int, seed: int = 14) -> list[Case]:
    """n cases, as even as possible over the kinds, sampled deterministically, shuffled so
    that consecutive cases rarely share a file (no accidental KV-cache reuse)."""
    pools: dict[str, list[Case]] = {k: [] for k in KINDS}
    for path, text in files:
        for kind, cs in candidates(path, text).items():
            pools[kind].extend(cs)
    rng = random.Random(seed)
    picked: list[Case] = []
    for j, kind in enumerate(KINDS):
        want = n // len(KINDS) + (1 if j < n % len(KINDS) else 0)
        pool = pools[kind]
        picked.extend(rng.sample(pool, min(want, len(pool))))
    rng.shuffle(picked)
    return picked


# -- scoring ----------------------------------------------------------------------------------

def completed_line(case: Case, inserted: str, replace: int = 0) -> str:
    doc = case.prefix + inserted + case.suffix[replace:]
    lines = doc.split("\n")
    return lines[case.line].rstrip() if case.line < len(lines) else ""


def score(case: Case, got: str, ms: float, shown: bool) -> dict:
    return {"id": case.id, "kind": case.kind, "exact": got == case.target, "sim": similarity(got, case.target),
            "ms": ms, "shown": shown, "got": got, "target": case.target}


# -- the product, over stdio ----------------------------------------------------------------

# Other files' context (issue 11) is off: every case is a cut of one of the same 22 files, so the
# "recently opened files" source would find the target line in another case's copy of its file.
FILE_ONLY = {"contextSources": []}


async def run_tandem(model_dir: Path, cases: list[Case], env: dict | None = None,
                     settings: dict | None = None) -> list[dict]:
    from lsprotocol import types

    from tandem.text import utf16_len
    from tests.e2e.harness import apply_inline, tandem

    rows = []
    async with tandem(settings={"modelPath": str(model_dir), **FILE_ONLY, **(settings or {})}, env=env) as s:
        await s.wait_for_state("ready", timeout=600)
        for k, case in enumerate(cases):
            uri = f"file:///eval/{k}/{case.file}"
            text = case.prefix + case.suffix
            s.open(uri, text)
            line = case.prefix.count("\n")
            col = utf16_len(case.prefix[case.prefix.rfind("\n") + 1:])
            t0 = time.perf_counter()
            result = await s.complete(uri, line, col, timeout=300)
            ms = (time.perf_counter() - t0) * 1000
            if result.items:
                doc = apply_inline(text, result.items[0]).split("\n")
                got = doc[case.line].rstrip() if case.line < len(doc) else ""
            else:
                got = completed_line(case, "")
            rows.append(score(case, got, ms, bool(result.items)))
            s.client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))
    return rows


# -- the bare model ----------------------------------------------------------------------------

def run_bare(model_path: Path, cases: list[Case]) -> list[dict]:
    from tandem.model.loaded import load_model

    m = load_model(str(model_path), "cpu")
    rows = []
    for case in cases:
        pre = m.codec.encode(case.prefix)[-BARE_PREFIX:]
        suf = m.codec.encode(case.suffix)[:BARE_SUFFIX]
        ids = [m.fim.prefix, *pre, m.fim.suffix, *suf, m.fim.middle]
        need = case.line - case.prefix.count("\n") + 1  # line breaks that end the target line

        def done(gen):  # not post-processing: the scored line is finished, nothing more counts
            return m.codec.decode(gen).count("\n") >= need

        m.lm.clear_cache()  # every case cold, like a new place in a file
        t0 = time.perf_counter()
        g = m.lm.generate(ids, max_new_tokens=BARE_MAX_NEW, stop_ids=m.stop_ids, stop_check=done)
        ms = (time.perf_counter() - t0) * 1000
        text = m.codec.decode(g.ids)
        rows.append(score(case, completed_line(case, text), ms, bool(text)))
    return rows


# -- the rules, in-process ----------------------------------------------------------------------

class MemoLM:
    """The model's own greedy decode (with `constraint=` where the runtime has it; else a
    masked loop here), memoized by (prompt, constraint): configurations that build the same
    prompt replay it instead of calling the model."""
    supports_constraint = True

    def __init__(self, lm):
        self.lm = lm
        self.memo: dict[tuple, tuple[list[int], str]] = {}
        self.calls = 0

    def generate(self, prompt, *, max_new_tokens, stop_ids, cancel=None, stop_check=None, constraint=None, **_):
        try:
            from tandem.model.backend import Generation
        except ImportError:  # before the backend seam
            from tandem.model.runtime import Generation

        key = (tuple(prompt), constraint.required if constraint is not None else None)
        memo = self.memo.get(key)
        replay = self._replay(memo, max_new_tokens, stop_check) if memo else None
        if replay is None:
            memo = self._decode(list(prompt), max_new_tokens, stop_ids, stop_check, constraint)
            if key not in self.memo or len(memo[0]) > len(self.memo[key][0]):
                self.memo[key] = memo
            replay = self._replay(memo, max_new_tokens, stop_check)
        out, reason = replay
        return Generation(out, [0.0] * len(out), reason, len(prompt), 0, 0.0, 0.0)

    @staticmethod
    def _replay(memo, max_new_tokens, stop_check):
        """The call's answer from a stored decode, or None when the stored one is too short."""
        ids, end = memo
        out = []
        for tok in ids[:max_new_tokens]:
            out.append(tok)
            if stop_check is not None and stop_check(out):
                return out, "stop_text"
        if len(out) == max_new_tokens:
            return out, "max_tokens"
        return (out, "stop_token") if end == "stop" else None

    def _decode(self, prompt, max_new_tokens, stop_ids, stop_check, constraint):
        self.calls += 1
        if constraint is not None:
            constraint = type(constraint)(constraint.table, constraint.required)  # fresh state
        extra = {"constraint": constraint} if constraint is not None else {}
        g = self.lm.generate(prompt, max_new_tokens=max_new_tokens, stop_ids=stop_ids,
                             stop_check=stop_check, **extra)
        return g.ids, ("stop" if g.stop_reason == "stop_token" else "open")


def run_rules(model_path: Path, cases: list[Case]) -> dict[str, list[dict]]:
    from tandem.completion.engine import CompletionEngine
    from tandem.model.loaded import load_model
    from tandem.settings import Settings

    m = load_model(str(model_path), "cpu")
    memo = MemoLM(m.lm)
    model = dataclasses.replace(m, lm=memo)
    from tandem.completion.postprocess import RULES
    configs = {"all rules": "", **{f"-{r}": r for r in RULES}}
    out = {}
    old = os.environ.get("TANDEM_EVAL_RULES_OFF")
    try:
        for name, off in configs.items():
            os.environ["TANDEM_EVAL_RULES_OFF"] = off or "none"
            engine = CompletionEngine(model)  # a fresh result cache per configuration
            rows = []
            for case in cases:
                text = case.prefix + case.suffix
                calls = memo.calls
                t0 = time.perf_counter()
                c = engine.complete(text, len(case.prefix), Settings(contextSources=()))
                ms = (time.perf_counter() - t0) * 1000
                got = completed_line(case, c.text, c.replace_chars) if c else completed_line(case, "")
                row = score(case, got, ms if memo.calls > calls else float("nan"), c is not None)
                row["tokens"] = c.generated_tokens if c else 0
                rows.append(row)
            out[name] = rows
            print(f"  rules {name:<10} done ({memo.calls} model calls so far)", file=sys.stderr)
    finally:
        if old is None:
            os.environ.pop("TANDEM_EVAL_RULES_OFF", None)
        else:
            os.environ["TANDEM_EVAL_RULES_OFF"] = old
    return out


# -- report -------------------------------------------------------------------------------------

def table(rows: list[dict]) -> dict[str, tuple[int, float, float, float]]:
    """kind -> (cases, exact %, mean similarity, median ms); 'all' too."""
    out = {}
    for kind in (*KINDS, "all"):
        rs = [r for r in rows if kind == "all" or r["kind"] == kind]
        if not rs:
            continue
        ms = [r["ms"] for r in rs if r["ms"] == r["ms"]]
        out[kind] = (len(rs), 100 * sum(r["exact"] for r in rs) / len(rs),
                     statistics.mean(r["sim"] for r in rs), statistics.median(ms) if ms else float("nan"))
    return out


def print_tables(results: dict[str, list[dict]]) -> None:
    names = list(results)
    print(f"{'cursor':<8} {'n':>4}  " + "  ".join(f"{n + ' EM% / sim / p50 ms':>34}" for n in names))
    tabs = {n: table(r) for n, r in results.items()}
    for kind in (*KINDS, "all"):
        if kind not in tabs[names[0]]:
            continue
        cells = []
        for n in names:
            c, em, sim, ms = tabs[n][kind]
            cells.append(f"{em:16.1f} / {sim:4.2f} / {ms:7.0f}")
        print(f"{kind:<8} {tabs[names[0]][kind][0]:>4}  " + "  ".join(f"{c:>34}" for c in cells))


def resolve(model: str) -> tuple[Path, dict[str, Path]]:
    """The bundle to serve, and the bare variants (served = what the server loads on CPU)."""
    from tandem.model.loader import default_model_path, resolve_model

    if model == "tiny":
        from tandem_models.tiny import build_tiny_model

        root = build_tiny_model()
    elif model == "default":
        root = default_model_path()
    else:
        root = Path(model)
    served = resolve_model(str(root), "cpu").directory
    bare = {"served": served}
    fp32 = root / "onnx-fp32"
    if fp32.is_dir() and (fp32 / "tandem-model.json").exists() and fp32 != served:
        bare["fp32"] = fp32
    return root, bare


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="tiny, default, or a model directory")
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--ablate", type=int, default=None, help="cases for the per-rule runs (default: all; 0: none)")
    ap.add_argument("--bare", default="served,fp32", help="bare-model variants to run (served, fp32; '' for none)")
    ap.add_argument("--no-tandem", action="store_true", help="skip the LSP run")
    ap.add_argument("--json", help="write every case's result here")
    ap.add_argument("--show", type=int, default=0, help="print this many cases with their completions")
    ap.add_argument("--set", action="append", default=[], metavar="SETTING=JSON",
                    help="a server setting for the LSP run, e.g. contextTokens=768 (repeatable)")
    a = ap.parse_args()

    overrides = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected SETTING=VALUE")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    sdist = fetch_source(cache_dir())
    files, _ = read_source(sdist)
    cases = build_cases(files, a.cases)
    root, bare = resolve(a.model)
    kinds = {k: sum(c.kind == k for c in cases) for k in KINDS}
    print(f"held-out set: {SOURCE['name']} {SOURCE['version']} ({SOURCE['license']}), {len(files)} files, "
          f"{len(cases)} cases {kinds}")
    print(f"model: {root}; machine: {os.cpu_count()} CPUs; settings {overrides or 'default'}")
    results: dict[str, list[dict]] = {}
    if not a.no_tandem:
        t0 = time.perf_counter()
        results["tandem"] = asyncio.run(run_tandem(root, cases, settings=overrides))
        print(f"tandem over LSP: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    for name in [b.strip() for b in a.bare.split(",") if b.strip()]:
        if name not in bare:
            print(f"(no {name} variant in {root}: skipped)")
            continue
        t0 = time.perf_counter()
        results[f"bare {name}"] = run_bare(bare[name], cases)
        print(f"bare {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print()
    if results:
        print_tables(results)
    n_ablate = len(cases) if a.ablate is None else a.ablate
    rules = {}
    if n_ablate:
        sub = cases[:n_ablate]
        t0 = time.perf_counter()
        rules = run_rules(bare["served"], sub)
        print(f"rules in-process: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        print(f"\nPost-processing rules, in-process engine on the first {len(sub)} cases "
              "(p50 ms over the runs that called the model):")
        print_tables(rules)
        base = table(rules["all rules"])["all"]
        for name, rows in rules.items():
            t = table(rows)["all"]
            toks = statistics.mean(r["tokens"] for r in rows)
            print(f"  {name:<10} exact {t[1] - base[1]:+5.1f} points, similarity {t[2] - base[2]:+.3f}, "
                  f"{sum(r['shown'] for r in rows)} shown, {toks:.1f} tokens generated on average")
        if "tandem" in results:
            lsp = {r["id"]: r["got"] for r in results["tandem"]}
            same = sum(lsp.get(r["id"]) == r["got"] for r in rules["all rules"])
            print(f"  in-process 'all rules' agrees with the server on {same}/{len(sub)} completed lines")
    for name, rows in results.items():
        for r in rows[:a.show]:
            print(f"[{name}] {r['id']} exact={r['exact']}\n   want {r['target']!r}\n   got  {r['got']!r}")
    if a.json:
        Path(a.json).write_text(json.dumps({"source": SOURCE, "model": str(root), "results": results,
                                            "rules": rules}, indent=1))


if __name__ == "__main__":
    main()
