"""Benchmark: speculative decoding with drafts looked up in the prompt, through the completion
engine, on held-out code.

    make bench-drafts, or
    .venv/bin/python tests/benchmarks/bench_drafts.py [--model default|tiny|DIR] [--cases 100]
        [--configs off,a5] [--peers genai,llama,llama-lookup] [--json OUT]

(the sweep behind the defaults: --cases 60 --configs off,d3,d5,d7,d5-n1,d5-n3,a5)

The cases are eval_lines.py's (apache-superset-core 0.1.0, cut at four kinds of cursor), each
completed by the server's CompletionEngine in-process (the prompt, stop rules and
post-processing the editor gets; no context block) once per configuration, configurations
interleaved case by case in a rotating order. The decode time of each completion is taken
from the backend's own timings: the prompt's prefill is the same for every configuration (and
a later configuration reuses the first one's KV cache), so only decoding is compared.

Configurations: `off` (one forward pass per token), `dN` (drafts of at most N tokens, the
n-gram sizes of tandem/model/lookup.py), `dN-n1` (also single-token matches), `dN-n3` (only
3-token matches), `aN` (adaptive, what the server does with N = 5: N at first, 2 more after a
draft kept whole, up to N + 3; after a miss, one more than the tokens kept); `-np` after any of
them: drafts from the prompt only, not also from what the KV cache held before (lookup.PRIOR).
Each answer is dropped from the cache after it is timed, so what the cache held before is the
previous prompt's end, never an answer to the same prompt: `bench_enter.py` measures what the
last answer is worth as a draft.

Peers (`--peers`), each given the very prompt Tandem's `off` configuration ran for the case and
timed decoding as many tokens after the first as `off` decoded (the same number of forward
passes at one token a pass; prefill left out): `genai`, onnxruntime-genai's own loop
(`generate_next_token`) on the same graph and threads; `llama`, llama.cpp (llama-cpp-python in
.venv-llama, `make llama-server`) on the model's own Q4_K_M GGUF, one token a pass; and
`llama-lookup`, the same with llama-cpp-python's own prompt-lookup decoding
(LlamaPromptLookupDecoding, 2 drafted tokens a pass, the setting its documentation gives for
CPUs).

Prints, per configuration: decode time summed over the cases and its ratio to `off`, tokens,
forward passes, drafted and accepted tokens, and how many completions differ from `off`'s
(rounding in a quantized graph can change a greedy answer; exact match against the original
line is printed too, so a change is seen to cost or not).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import eval_lines  # noqa: E402


class Recorder:
    """The backend, with each Generation kept for the benchmark to read."""

    def __init__(self, lm):
        self.lm = lm
        self.last = None

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def generate(self, prompt, **kw):
        self.prompt = list(prompt)
        self.last = self.lm.generate(prompt, **kw)
        # Forget the answer: the next configuration runs the same prompt, and drafts from what
        # the cache held before (lookup.PRIOR) would find this very answer there.
        slot = getattr(self.lm, "_slots", {}).get(kw.get("slot", "completion"))
        if slot is not None and len(slot.ids) > len(prompt):
            self.lm._drop(slot, len(slot.ids) - len(prompt))
        return self.last


def parse_config(name: str) -> tuple[int, tuple[int, ...] | None, bool, bool]:
    """(draft tokens, n-gram sizes, adaptive, prior) from e.g. `a5`, `d5-n1`, `a5-np`."""
    if name == "off":
        return 0, None, False, False
    head, *flags = name.split("-")
    sizes = {"n1": (3, 2, 1), "n3": (3,)}
    chosen = next((sizes[f] for f in flags if f in sizes), None)
    return int(head[1:]), chosen, head[0] == "a", "np" not in flags


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="tiny, default, or a model directory")
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--configs", default="off,a5", help="off, dN, dN-n1, dN-n3, aN (a5: the default)")
    ap.add_argument("--peers", default="", help="also time genai, llama and/or llama-lookup on the same prompts")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)

    from tandem.completion.engine import CompletionEngine
    from tandem.model import lookup
    from tandem.model.loaded import load_model
    from tandem.settings import Settings

    model_path, _ = eval_lines.resolve(a.model)
    files, _ = eval_lines.read_source(eval_lines.fetch_source(eval_lines.cache_dir()))
    cases = eval_lines.build_cases(files, a.cases)
    m = load_model(str(model_path), "cpu")
    rec = Recorder(m.lm)
    model = dataclasses.replace(m, lm=rec)
    if not getattr(m.lm, "draft_tokens", 0):
        sys.exit(f"{model_path}: this model's graph has no logits_tail output (rebuild it with `make model`)")
    configs = a.configs.split(",")
    if "off" not in configs and a.peers:
        sys.exit("--peers needs the `off` configuration (they decode as many tokens as it does)")
    peers = {name: peer for name in filter(None, a.peers.split(",")) if (peer := make_peer(name, model_path))}
    engines = {c: CompletionEngine(model) for c in configs}  # each its own result cache
    default_sizes = lookup.NGRAM_SIZES
    rows: dict[str, list[dict]] = {c: [] for c in [*configs, *peers]}
    t_start = time.time()
    for i, case in enumerate(cases):
        order = configs[i % len(configs):] + configs[:i % len(configs)]
        for c in order:
            length, sizes, adaptive, prior = parse_config(c)
            m.lm.draft_tokens = length
            lookup.NGRAM_SIZES = sizes or default_sizes
            lookup.ADAPTIVE, lookup.PRIOR = adaptive, prior
            rec.last = None
            comp = engines[c].complete(case.prefix + case.suffix, len(case.prefix), Settings(contextSources=()))
            g = rec.last
            got = eval_lines.completed_line(case, comp.text, comp.replace_chars) if comp else \
                eval_lines.completed_line(case, "")
            rows[c].append({"case": case.id, "kind": case.kind, "text": comp.text if comp else None,
                            "exact": got.strip() == case.target.strip(),
                            "decode_s": g.decode_s if g else 0.0, "tokens": len(g.ids) if g else 0,
                            "passes": g.timings["decode_passes"] if g else 0,
                            "drafted": g.timings.get("drafted", 0) if g else 0,
                            "accepted": g.timings.get("draft_accepted", 0) if g else 0})
            if c == "off":
                for name, peer in peers.items():
                    # Prompt and token count of `off` for this case (0 when it answered from
                    # nothing: no generation ran).
                    decode_s, done = peer(rec.prompt, rows[c][-1]["passes"]) if g else (0.0, 0)
                    rows[name].append({**rows[c][-1], "text": None, "exact": False, "decode_s": decode_s,
                                       "drafted": 0, "accepted": 0, "peer_tokens": done})
        print(f"  case {i + 1}/{len(cases)}", file=sys.stderr, end="\r")
    lookup.NGRAM_SIZES, lookup.ADAPTIVE, lookup.PRIOR = default_sizes, True, True
    minutes = (time.time() - t_start) / 60

    base = rows[configs[0]]
    print(f"\n{len(cases)} cases of eval_lines.py (apache-superset-core 0.1.0), model {model_path}, "
          f"{os.cpu_count()} CPUs, {minutes:.1f} min")
    print(f"{'config':<13}{'decode s':>10}{'x off':>7}{'tokens':>8}{'passes':>8}{'drafted':>9}{'accepted':>10}"
          f"{'ms/token':>10}{'p50 ms':>8}{'differ':>8}{'exact':>7}")
    summary = {}
    for c in [*configs, *peers]:
        r = rows[c]
        dec = sum(x["decode_s"] for x in r)
        toks = sum(x["tokens"] for x in r)
        long = [x["decode_s"] * 1000 for x in r if x["tokens"] > 1]
        s = {"decode_s": dec, "ratio": dec / max(sum(x["decode_s"] for x in base), 1e-9), "tokens": toks,
             "passes": sum(x["passes"] for x in r), "drafted": sum(x["drafted"] for x in r),
             "accepted": sum(x["accepted"] for x in r), "ms_per_token": 1000 * dec / max(toks, 1),
             "decode_p50_ms": statistics.median(long) if long else 0.0,
             "differ": sum(x["text"] != b["text"] for x, b in zip(r, base)) if c in configs else None,
             "exact": sum(x["exact"] for x in r) if c in configs else None}
        summary[c] = s
        tail = f"{s['differ']:8d}{s['exact']:7d}" if c in configs else f"{'-':>8}{'-':>7}"
        print(f"{c:<13}{dec:10.2f}{s['ratio']:7.2f}{toks:8d}{s['passes']:8d}{s['drafted']:9d}{s['accepted']:10d}"
              f"{s['ms_per_token']:10.2f}{s['decode_p50_ms']:8.0f}" + tail)
    for name in peers:
        short = sum(x["passes"] - x["peer_tokens"] for x in rows[name])
        if short:
            print(f"{name}: stopped {short} tokens short of `off` (an end-of-text token it stops at)")
    out = {"model": str(model_path), "cases": len(cases), "summary": summary, "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return out


def make_peer(name: str, model_path: Path):
    """A function (prompt ids, k) -> (seconds to decode k tokens after the first, tokens), or None
    when the peer cannot run here."""
    from tandem.model.loader import resolve_model
    variant = resolve_model(model_path, "cpu").directory
    if name == "genai":
        from bench_engine import GenaiNative
        return GenaiNative(variant, "cpu").decode
    if name in ("llama", "llama-lookup"):
        from bench_engine import LlamaCpp
        python = ROOT / ".venv-llama" / "bin" / "python"
        gguf = next(iter(sorted(variant.parent.glob("*.gguf"))), None)
        if not python.exists() or gguf is None:
            print(f"{name}: left out (needs `make llama-server` and the model's GGUF beside {variant})")
            return None
        return LlamaCpp(gguf, python, *(["--lookup", "2"] if name == "llama-lookup" else [])).decode
    sys.exit(f"--peers: unknown peer {name} (genai, llama, llama-lookup)")


if __name__ == "__main__":
    main()
