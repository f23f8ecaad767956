"""`tandem learn` on real repositories: what a learning run buys, measured on this machine.

For each pinned repository (a PyPI sdist first released after the default model's training
data, so the base model cannot have seen it; downloaded at benchmark time only, pinned by
version and sha256, cached under ~/.cache/tandem/bench-learn/; nothing is vendored):
  - genai-prices 0.2.3 (MIT, Pydantic; first release on PyPI 2025-07-11)
  - pydantic-evals 2.62.0 (MIT, Pydantic; first release on PyPI 2025-03-31; 29 .py files)
the sdist is extracted afresh into ~/.cache/tandem/bench-learn/src/ (the workspace), and

    tandem learn WORKSPACE --model-path PRIVATE_COPY --no-promote --json [LEARN ARGS...]

runs as a subprocess (one at a time: on 2 cores two runs would measure each other), with a
timeout (SIGTERM, which learn treats as a cancel, then SIGKILL). The table is read from the
run's report.json; peak memory is both the learn process's own (report.json, ru_maxrss) and
the sampled sum of the resident memory of its whole process group (every 0.5 s; pages two
processes share count twice). They differ: the serving-variant build runs onnxruntime-genai's
builder as a second process while learn still holds its model, and ru_maxrss sees learn only.

The private copy: learn writes only under <bundle>/versions/ (its lock, its hidden .run-*
folder, the kept version), rewrites tandem-bundle.json (with a rename) only when promoting,
and loading a variant writes only its verification stamp (.tandem-verified.json, also with a
rename). No file of the bundle is ever written in place. So the copy is made of hard links
(`cp -al`, seconds and no extra disk for the 6 GB bundle) to every top-level entry of the
user's bundle except versions/, which the copy gets empty (plus hard links to the active
version's variant, if a tuned version is being served), and real copies of the small top-level
files (tandem-bundle.json). A rename inside the copy replaces the copy's directory entry, never
the shared file, and --no-promote is passed anyway. One side effect on the real bundle: adding
hard links changes the files' ctime, which is part of the key of the loader's verification
stamp, so the server's next load of the real bundle hashes its files once more (a few seconds;
never wrong). The copy (and the version the run kept in it) is deleted after each run; its
report.json/report.md are kept in ~/.cache/tandem/bench-learn/results/.

    .venv/bin/python tests/benchmarks/bench_learn.py                      # both, 10-minute budget
    .venv/bin/python tests/benchmarks/bench_learn.py --repos pydantic-evals --lr 1e-3
    .venv/bin/python tests/benchmarks/bench_learn.py --budget-minutes 5 --json out.json

Arguments the script does not know are passed to `tandem learn` (e.g. --lr, --layers,
--seq-len, --rank, --context-share).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tandem.model.loader import BUNDLE_NAME, default_model_path, tandem_home  # noqa: E402
from sdist import fetch_sdist  # noqa: E402  (tests/benchmarks/sdist.py)


@dataclass(frozen=True)
class Repo:
    name: str
    version: str
    sha256: str
    filename: str
    first_release: str  # on PyPI, from https://pypi.org/pypi/NAME/json (checked 2026-11-30)
    licence: str


REPOS = {r.name: r for r in (
    Repo("genai-prices", "0.2.3", "cdee9b0b2e44b1323c477ebe3c84e44ddbcdd1a3feb0ebce5bb2af1bc667d900",
         "genai_prices-0.2.3.tar.gz", "2025-07-11", "MIT"),
    Repo("pydantic-evals", "2.62.0", "f6d44de440ce0ad0d25962dc839c851ea8a4055affe0a8201bea22ca65ba8c48",
         "pydantic_evals-2.62.0.tar.gz", "2025-03-31", "MIT"),
)}


def cache_dir() -> Path:
    return tandem_home() / "bench-learn"


def workspace(repo: Repo) -> Path:
    """The sdist extracted afresh (nothing a previous run left in it counts)."""
    archive = fetch_sdist(repo.name, repo.version, repo.sha256, cache_dir() / "sdist", repo.filename)
    dest = cache_dir() / "src" / f"{repo.name}-{repo.version}"
    shutil.rmtree(dest, ignore_errors=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(archive) as t:
        t.extractall(tmp, filter="data")
    tops = list(tmp.iterdir())
    os.replace(tops[0] if len(tops) == 1 and tops[0].is_dir() else tmp, dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def private_bundle(real: Path, dest: Path) -> Path:
    """A copy of the bundle `real` that a learning run cannot change `real` through (see the
    module docstring): hard links, an empty versions/, real copies of small top-level files."""
    if not (real / BUNDLE_NAME).is_file():
        raise SystemExit(f"{real} is not a model bundle (no {BUNDLE_NAME}); build the default model first")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name == "versions" or (entry.name.startswith(".") and entry.is_dir()):
            continue
        if entry.is_dir():
            subprocess.run(["cp", "-al", str(entry), str(dest / entry.name)], check=True, timeout=300)
        elif entry.stat().st_size < (1 << 20):
            shutil.copy2(entry, dest / entry.name)
        else:
            os.link(entry, dest / entry.name)
    (dest / "versions").mkdir()
    bundle = json.loads((real / BUNDLE_NAME).read_text())
    for rel in (bundle.get("variants") or {}).values():  # a tuned version being served
        parts = Path(rel).parts
        if parts and parts[0] == "versions" and (real / rel).is_dir():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(real / rel), str(dest / rel)], check=True, timeout=300)
    return dest


def group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in the group, summed (MiB)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            with open(f"/proc/{d}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total / 2**20


def run_learn(repo: Repo, ws: Path, bundle: Path, budget_min: float, extra: list[str], timeout_s: float,
              log: Path) -> dict:
    cmd = [str(Path(sys.executable).with_name("tandem")), "learn", str(ws), "--model-path", str(bundle),
           "--no-promote", "--json", "--budget-minutes", f"{budget_min:g}", *extra]
    if not Path(cmd[0]).exists():
        cmd[:2] = [sys.executable, "-m", "tandem_models.learn"]
    print(f"[{repo.name}] {' '.join(cmd)}", file=sys.stderr, flush=True)
    load0 = os.getloadavg()
    t0 = time.monotonic()
    events: list[dict] = []
    peak = [0.0]
    with open(log, "w") as errf:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True, start_new_session=True,
                             cwd=str(ROOT))
        stop = threading.Event()

        def sample():
            while not stop.wait(0.5):
                peak[0] = max(peak[0], group_rss_mib(p.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def read():
            for line in p.stdout:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                events.append(ev)
                if ev.get("event") in ("phase", "done", "error", "cancelled"):
                    msg = ev.get("message") or ev.get("decision") or ""
                    print(f"[{repo.name}] {time.monotonic() - t0:6.0f}s {ev['event']}: {msg}", file=sys.stderr,
                          flush=True)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        timed_out = False
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            print(f"[{repo.name}] over {timeout_s:.0f}s: cancelling", file=sys.stderr, flush=True)
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=60)
        stop.set()
        sampler.join(timeout=5)
        reader.join(timeout=30)
    wall = time.monotonic() - t0
    done = next((e for e in events if e.get("event") == "done"), None)
    result = {"repo": f"{repo.name} {repo.version}", "rc": p.returncode, "timed_out": timed_out,
              "wall_s": round(wall, 1), "group_peak_rss_mib": round(peak[0], 1),
              "load_start": [round(x, 2) for x in load0], "load_end": [round(x, 2) for x in os.getloadavg()],
              "command": cmd, "log": str(log)}
    if done is None:
        err = next((e for e in events if e.get("event") in ("error", "cancelled")), {})
        result["error"] = err.get("message") or f"no result (exit {p.returncode}); see {log}"
        return result
    vdir = Path(done["report"]).parent
    report = json.loads((vdir / "report.json").read_text())
    keep = cache_dir() / "results" / f"{repo.name}-{repo.version}-{report['version']}"
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.md", "report.png"):
        if (vdir / name).exists():
            shutil.copy2(vdir / name, keep / name)
    result.update(report=report, kept=str(keep))
    return result


def row(r: dict) -> str:
    if "report" not in r:
        return f"| {r['repo']} | failed: {r.get('error')} |"
    rep, b, a, tr = r["report"], r["report"]["before"], r["report"]["after"], r["report"]["training"]
    d = rep["data"]
    return (f"| {r['repo']} | {d['train_files']} / {d['heldout_files']} | {b['sites']} "
            f"| {b['exact_match']:.1f} -> {a['exact_match']:.1f} ({rep['lines_gained']}/{rep['lines_lost']}) "
            f"| {b['edit_similarity']:.1f} -> {a['edit_similarity']:.1f} "
            f"| {b['latency_ms_p50'] / 1000:.2f} -> {a['latency_ms_p50'] / 1000:.2f} "
            f"| {len(rep['loss'])} | {tr['tokens']:,} | {tr['tokens_per_s']:.0f} | {tr['train_s']:.0f} "
            f"| {rep['seconds_total']:.0f} | {rep['peak_rss_mib'] / 1024:.1f} / {r['group_peak_rss_mib'] / 1024:.1f} |")


HEADER = ("| repository | files train / held-out | held-out lines | exact match % before -> after (gained/lost) "
          "| edit similarity % before -> after | latency p50 s before -> after | steps | tokens | tokens/s "
          "| training s | whole run s | peak GiB (learn / process group) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem = 0.0
    return {"cores": os.cpu_count(), "cpu": model, "memory_gib": round(mem, 1), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Unknown arguments are passed to `tandem learn`.")
    ap.add_argument("--repos", default=",".join(REPOS), help=f"comma-separated, of: {', '.join(REPOS)}")
    ap.add_argument("--budget-minutes", type=float, default=10.0, help="each run's budget (learn's own)")
    ap.add_argument("--timeout-minutes", type=float, default=0.0,
                    help="kill a run after this long (default: twice the budget plus 5 minutes)")
    ap.add_argument("--model-path", default="", help="the bundle to copy (default: the default model)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a, extra = ap.parse_known_args(argv)
    names = [n.strip() for n in a.repos.split(",") if n.strip()]
    unknown = [n for n in names if n not in REPOS]
    if unknown:
        ap.error(f"unknown repositories {unknown}; known: {', '.join(REPOS)}")
    real = Path(a.model_path).expanduser() if a.model_path else default_model_path()
    timeout_s = 60 * (a.timeout_minutes or 2 * a.budget_minutes + 5)
    mach = machine()
    uptime0 = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    print(f"machine: {mach['cores']} cores, {mach['cpu']}, {mach['memory_gib']} GiB; {uptime0}", file=sys.stderr)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (cache_dir() / "logs").mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        repo = REPOS[name]
        ws = workspace(repo)
        scratch = cache_dir() / "bundle" / real.name
        try:
            bundle = private_bundle(real, scratch)
            results.append(run_learn(repo, ws, bundle, a.budget_minutes, extra, timeout_s,
                                     cache_dir() / "logs" / f"{name}-{stamp}.log"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    uptime1 = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    print(f"\n`tandem learn --budget-minutes {a.budget_minutes:g} {' '.join(extra)}`".rstrip() + "; machine: "
          f"{mach['cores']} cores ({mach['cpu']}), {mach['memory_gib']} GiB; {mach['platform']}")
    print(f"load at start: {uptime0.split('load average:')[-1].strip()}; "
          f"at end: {uptime1.split('load average:')[-1].strip()}\n")
    print(HEADER)
    for r in results:
        print(row(r))
    for r in results:
        print(f"\n{r['repo']}: exit {r['rc']}, benchmark wall {r['wall_s']} s, load (1/5/15 min) "
              f"{r['load_start']} -> {r['load_end']}" + (f"; report kept in {r['kept']}" if "kept" in r else ""))
        if "report" in r:
            rep = r["report"]
            tr = rep["training"]
            print(f"  {rep['decision']}; {tr.get('threads')} torch thread(s), {tr.get('step_s')} s a step, "
                  f"{tr.get('examples')} examples of {tr.get('tokens_per_example')} tokens "
                  f"({tr.get('context_tokens_per_example')} context), final loss {tr.get('final_loss', 0):.3f}; "
                  f"curve {tr.get('curve')}")
    if a.json:
        a.json.write_text(json.dumps({"machine": mach, "uptime_start": uptime0, "uptime_end": uptime1,
                                      "budget_minutes": a.budget_minutes, "learn_args": extra,
                                      "results": results}, indent=2) + "\n")
    return 0 if all("report" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
