"""Pressing Enter: what keeping the context block (ContextService.prompt_head) buys and costs.

The user has written line L and presses Enter; the editor asks for line L+1. Before: the
document without line L+1, the cursor at the end of line L (a completion there fills the
runtime's KV cache, as the one the user just accepted or typed past would have). After: line
L+1 replaced by its indentation, the cursor after it; the expected completion is line L+1's code.
Lines L are bench_repo_context.py's cut-site lines (tomlkit, click, jinja2 sdists, pinned),
where the next line is code.

Arms per site (`--arms`, default fresh,kept), each with a fresh context service and the
engine's result cache cleared, run one after the other on the same model:
  - fresh:  the block gathered again for the new line (the behaviour before `prompt_head` kept it);
  - kept:   the server's `prompt_head` (keeps the block gathered at line L);
  - kept-noprior: kept, with drafts looked up in the prompt only, not also in what the KV cache
            held before (the line L request's answer: tandem/model/lookup.py PRIOR);
  - kept-nodraft: kept, one token per forward pass (no drafts).
Paired gains and losses compare the second arm with the first.
Scored on the Enter completion: exact match and edit similarity of line L+1, its latency
(gathering included), prompt tokens computed (not reused from the KV cache).

    .venv/bin/python tests/benchmarks/bench_enter.py [--cases 90] [--json out.json]
    .venv/bin/python tests/benchmarks/bench_enter.py --cases 240 --per-file 12 --seed 12   # other sites
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_repo_context import (PACKAGES, fetch, machine, path_to_uri, pick, service_for, sign_test,  # noqa: E402
                                sites)
from tandem.completion.engine import CompletionEngine  # noqa: E402
from tandem.learn.evaluate import edit_similarity  # noqa: E402
from tandem.settings import Settings  # noqa: E402


def enter_case(site: dict) -> dict | None:
    """Before/after texts and offsets for Enter at the end of the site's line, or None when the
    next line is not code."""
    text = Path(site["path"]).read_text("utf-8")
    end = site["line_end"]  # the end of line L (its newline)
    nxt_end = text.find("\n", end + 1)
    if end >= len(text) or nxt_end < 0:
        return None
    nxt = text[end + 1:nxt_end]
    code = nxt.strip()
    if not code or code.startswith(("#", '"', "'")) or len(code) < 4:
        return None
    indent = nxt[:len(nxt) - len(nxt.lstrip())]
    before = text[:end] + text[nxt_end:]
    after = text[:end] + "\n" + indent + text[nxt_end:]
    return {"before": (before, end), "after": (after, end + 1 + len(indent)), "target": code}


def run_arm(engine, svc, settings, site, case, keep: bool) -> dict:
    uri = path_to_uri(site["path"])
    svc.sticky_lines = svc.sticky_lines if keep else 0
    budget = int(settings.contextTokens * settings.contextShare)
    engine._cache.clear()
    out = {}
    for phase in ("before", "after"):
        doc, off = case[phase]
        t0 = time.perf_counter()
        block = svc.prompt_head(engine.model.codec, uri, doc, off, settings.contextSources, budget)
        r = engine.complete(doc, off, settings, context=block)
        ms = (time.perf_counter() - t0) * 1000
        out[phase] = {"ms": ms, "text": (r.text if r else "").split("\n", 1)[0].strip(),
                      "prompt_tokens": r.prompt_tokens if r else 0, "reused": r.reused_tokens if r else 0,
                      "block_ids": hash(block.ids) if block else 0}
    out["block_kept"] = out["before"]["block_ids"] == out["after"]["block_ids"]
    out["exact"] = out["after"]["text"] == case["target"]
    out["es"] = edit_similarity(out["after"]["text"], case["target"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=90, help="cut sites drawn (those whose next line is code run)")
    ap.add_argument("--seed", type=int, default=None, help="draw other sites (bench_repo_context's SEED by default)")
    ap.add_argument("--per-file", type=int, default=None, help="sites drawn per file at most (default: its PER_FILE)")
    ap.add_argument("--json", type=str, default="")
    ap.add_argument("--arms", default="fresh,kept", help="two or more of fresh, kept, kept-noprior, kept-nodraft")
    args = ap.parse_args()
    arms = args.arms.split(",")
    from tandem.model import lookup
    import bench_repo_context

    if args.seed is not None:
        bench_repo_context.SEED = args.seed
    if args.per_file is not None:
        bench_repo_context.PER_FILE = args.per_file
    from tandem.model.loaded import load_model

    chosen, roots = [], {}
    for name, version, sha, pkg, _lic in PACKAGES:
        roots[name] = fetch(name, version, sha)
        ss = sites(roots[name], pkg)
        for s in ss:
            s["package"] = name
        chosen += pick(ss, args.cases // len(PACKAGES))
    model = load_model(None, "cpu")
    engine = CompletionEngine(model)
    settings = Settings()
    rows, t_start = [], time.time()
    for i, site in enumerate(chosen):
        case = enter_case(site)
        if case is None:
            continue
        row = {k: site[k] for k in ("package", "file", "line")} | {"target": case["target"]}
        for arm in arms:
            svc = service_for(roots[site["package"]], path_to_uri(site["path"]), case["before"][0])
            drafts, lookup.PRIOR = model.lm.draft_tokens, arm != "kept-noprior"
            model.lm.draft_tokens = 0 if arm == "kept-nodraft" else drafts
            try:
                row[arm] = run_arm(engine, svc, settings, site, case, arm != "fresh")
            finally:
                model.lm.draft_tokens, lookup.PRIOR = drafts, True
                svc.shutdown()
        rows.append(row)
        print(f"[{i + 1}/{len(chosen)}] {site['file']}:{site['line'] + 2} {case['target']!r}", file=sys.stderr)
        for arm in arms:
            a = row[arm]["after"]
            print(f"    {arm:<13} {a['text']!r} {a['ms']:.0f} ms, {a['prompt_tokens'] - a['reused']} computed"
                  f"{'' if row[arm]['block_kept'] else ' (block changed)'}", file=sys.stderr, flush=True)
    summary = {"sites": len(rows), "machine": machine(), "model": model.describe(),
               "minutes": round((time.time() - t_start) / 60, 1)}
    for arm in arms:
        a = [r[arm] for r in rows]
        summary[arm] = {
            "exact_match": round(100 * sum(x["exact"] for x in a) / max(1, len(a)), 1),
            "edit_similarity": round(100 * statistics.mean(x["es"] for x in a), 1) if a else 0,
            "p50_ms": round(statistics.median(x["after"]["ms"] for x in a)) if a else 0,
            "mean_ms": round(statistics.mean(x["after"]["ms"] for x in a)) if a else 0,
            "p90_ms": round(sorted(x["after"]["ms"] for x in a)[int(0.9 * (len(a) - 1))]) if a else 0,
            "mean_computed_tokens": round(statistics.mean(x["after"]["prompt_tokens"] - x["after"]["reused"]
                                                          for x in a)) if a else 0,
            "block_kept": sum(x["block_kept"] for x in a)}
    first, second = arms[0], arms[1]
    gained = sum(r[second]["exact"] and not r[first]["exact"] for r in rows)
    lost = sum(r[first]["exact"] and not r[second]["exact"] for r in rows)
    changed = [r for r in rows if not r[first]["block_kept"]]
    summary["paired"] = {"arms": [first, second], "gained": gained, "lost": lost,
                         "sign_test_p": sign_test(gained, lost),
                         "sites_where_the_first_arm_changed_the_block": len(changed),
                         "p50_ms_there": {arm: round(statistics.median(r[arm]["after"]["ms"] for r in changed))
                                          for arm in (first, second)} if changed else {}}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
