"""Serving speed of the default model's architecture on a GPU, without its weights.

    python tests/benchmarks/gpu_bench.py --out DIR [--sizes 0.5b,1.5b] [--dry-run]

For a machine where the weights cannot be had (a lent GPU with no network): makes a
Qwen2.5-Coder-shaped checkpoint with random weights (latency does not depend on their values;
quality and parity do, and are checked on the real weights elsewhere), builds Tandem's
cuda-fp16 serving variant with the project's own pipeline step (models/genai_build.py), and
measures, on the same GPU and prompt:
- the engine (tests/benchmarks/bench_engine.py): Tandem's backend, onnxruntime-genai's
  native loop, transformers + torch `generate` fp16;
- inline completion through the LSP (tests/benchmarks/bench_inline.py's client): single-line
  and multi-line p50/p95, typing one more character;
- GPU memory the server holds;
- fp16 against fp32 on these random weights (max |Δlogit| of the last position).
`--dry-run` does all of it on the CPU with a tiny config, to check the script itself.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(ROOT))

QWEN_CODER = {  # the Qwen2.5-Coder instruct configs (hidden/layers/heads as published)
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, tie_word_embeddings=False),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, tie_word_embeddings=False),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=384, tie_word_embeddings=False),
}


def log(msg: str) -> None:
    print(f"[gpu_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def random_checkpoint(size: str, tokenizer_dir: Path, out: Path, device: str) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tokenizers import Tokenizer
    vocab = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size()
    vocab = max(vocab, 151936) if size != "tiny" else vocab
    config = Qwen2Config(vocab_size=vocab, max_position_embeddings=32768, rope_theta=1000000.0,
                         rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
                         **QWEN_CODER[size])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.float16 if device == "cuda" else torch.float32)
    model.save_pretrained(out)
    for f in tokenizer_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
            shutil.copy2(f, out / f.name)
    del model
    return out


def build_bundle(hf: Path, bundle: Path, variant: str) -> Path:
    from tandem_models.export import write_bundle, write_variant_manifest
    from tandem_models.genai_build import build_genai

    t0 = time.perf_counter()
    build_genai(hf, bundle / variant, variant, "random")
    log(f"built {variant} in {time.perf_counter() - t0:.1f}s")
    write_variant_manifest(bundle / variant, variant, hf, {"name": bundle.name, "kind": "random weights"})
    device = "cuda" if variant.startswith("cuda") else "cpu"
    write_bundle(bundle, bundle.name, {device: variant}, notes="random weights: for latency only")
    return bundle


def fp16_parity(bundle: Path, hf: Path, variant: str, device: str) -> dict:
    """Last-position logits of the served graph against torch fp32 on the same weights."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from tandem.model.genai import GenaiLM
    lm = GenaiLM(bundle / variant, device)
    ref = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).to(device).eval()
    rng = np.random.default_rng(1)
    diffs, agree = [], []
    for n in (17, 300, 1000):
        ids = [int(x) for x in rng.integers(100, 30000, n)]
        got = lm.forward_logits(ids)[0]
        with torch.no_grad():
            want = ref(torch.tensor([ids], device=device)).logits[0, -1].float().cpu().numpy()
        diffs.append(float(np.abs(got - want).max()))
        agree.append(bool(got.argmax() == want.argmax()))
    lm.close()
    del ref
    return {"max_abs_logit_diff": max(diffs), "argmax_agree": f"{sum(agree)}/{len(agree)}",
            "logit_scale": "random weights: logits are small, differences are relative to them"}


def slots_check(bundle: Path, variant: str, device: str) -> dict:
    """Three cache slots (completion, function, explain) on one model, each decoding in turn
    (with CUDA graphs on a GPU): every slot keeps its prefix and its decode speed."""
    import numpy as np

    from tandem.model.genai import GenaiLM
    lm = GenaiLM(bundle / variant, device)
    rng = np.random.default_rng(2)
    prompts = {slot: [int(x) for x in rng.integers(100, 30000, 600)] for slot in ("completion", "function", "explain")}
    out = {}
    for rnd in range(2):
        for slot, ids in prompts.items():
            g = lm.generate(ids + [7] * rnd, max_new_tokens=32, stop_ids=set(), slot=slot)
            out[f"{slot}_{rnd}"] = {"reused": g.reused_tokens, "prefill_ms": round(g.prefill_s * 1e3, 2),
                                    "decode_ms_per_token": round(g.decode_s * 1e3 / max(len(g.ids) - 1, 1), 3)}
    lm.close()
    return out


def prefill_shapes(bundle: Path, variant: str, device: str) -> dict:
    """Prefill time for prompt lengths seen for the first time and again, with the prompt
    cut into fixed-size chunks or into power-of-two buckets (TANDEM_PREFILL_BUCKETS)."""
    import numpy as np

    from tandem.model.genai import GenaiLM
    rng = np.random.default_rng(3)
    out = {}
    for name, bucketed, options in (("chunks", False, None), ("chunks-no-mem-pattern", False, {"enable_mem_pattern": False}),
                                    ("buckets-warm", True, None)):
        lm = GenaiLM(bundle / variant, device, session_options=options)
        lm.bucketed = bucketed
        if bucketed:
            out[name + "-warm-up-s"] = round(lm.warm_up(), 3)
        rows = []
        for n in (1000, 1000, 1137, 1137, 1291, 1291, 1455, 1455, 777, 777):
            ids = [int(x) for x in rng.integers(100, 30000, n)]
            lm.generate(ids[:1], max_new_tokens=1, stop_ids=set())  # a cold cache in a warm slot
            g = lm.generate(ids, max_new_tokens=1, stop_ids=set())
            rows.append((n, round(g.prefill_s * 1e3, 2)))
        out[name] = rows
        lm.close()
    return out


def gpu_memory_mb(pid: int) -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        return sum(float(line.split(",")[1]) for line in out.splitlines() if line.split(",")[0].strip() == str(pid))
    except Exception:
        return None


async def lsp(bundle: Path, device: str, runs: int, env: dict | None = None) -> dict:
    from tests.benchmarks.bench_inline import pct, sample_places
    from tests.e2e.harness import tandem

    import psutil
    single, multi = sample_places(runs)
    out = {}
    async with tandem(settings={"modelPath": str(bundle), "device": device}, env=env) as s:
        await s.wait_for_state("ready", timeout=600)
        pid = s.client._server.pid
        from tests.e2e.harness import status_field
        for kind, places in (("single", single), ("multi", multi)):
            cold, server = [], []
            for i, (_, _, prefix, suffix) in enumerate(places):
                uri = f"file:///bench/{kind}-{i}.py"
                s.open(uri, prefix + suffix)
                t0 = time.perf_counter()
                await s.complete(uri, prefix.count("\n"), len(prefix) - prefix.rfind("\n") - 1, timeout=120)
                cold.append((time.perf_counter() - t0) * 1000)
                server.append(status_field(s.statuses[-1], "lastLatencyMs"))  # sent before the answer
            out[kind] = {"p50_ms": pct(cold, 50), "p95_ms": pct(cold, 95), "n": len(cold), "all_ms": cold,
                         "server_ms": server}
        _, _, prefix, suffix = single[0]
        typing = []
        for j, ch in enumerate("value_x"):
            prefix += ch
            s.open("file:///bench/typing.py", prefix + suffix)
            t0 = time.perf_counter()
            await s.complete("file:///bench/typing.py", prefix.count("\n"), len(prefix) - prefix.rfind("\n") - 1,
                             timeout=120)
            if j:
                typing.append((time.perf_counter() - t0) * 1000)
        out["typing"] = {"p50_ms": pct(typing, 50), "p95_ms": pct(typing, 95), "n": len(typing)}
        out["server_rss_mb"] = psutil.Process(pid).memory_info().rss / 2**20
        out["server_gpu_mb"] = gpu_memory_mb(pid) if device == "cuda" else None
        out["status"] = s.statuses[-1] if s.statuses else None
    return out


def draft_pass_costs(bundle: Path, variant: str, device: str) -> dict:
    """What drafts from the prompt (README "Drafts from the prompt") would cost on this device:
    the time of a pass of k tokens against a pass of one, on a copy of the graph given the
    `logits_tail` output (the CPU graphs have it; the CUDA graph does not until this is
    measured). Random weights never match a draft, so this measures cost, not gain: on two
    CPU cores a pass of 6 costs 1.7x a pass of 1, and drafts decode held-out completions in
    0.58x the time."""
    import numpy as np

    from tandem.model.genai import TAIL_OUTPUT, GenaiLM
    from tandem_models.genai_build import add_logits_tail
    tail = bundle / f"{variant}-tail"
    shutil.rmtree(tail, ignore_errors=True)
    tail.mkdir()
    for f in (bundle / variant).iterdir():
        (os.link if f.name != "model.onnx" else shutil.copy2)(f, tail / f.name)
    add_logits_tail(tail)
    out = {}
    for name, d in (("as served", bundle / variant), ("tail", tail)):
        lm = GenaiLM(d, device)
        slot = lm._slot("completion", 2048)
        rng = np.random.default_rng(4)
        lm._append(slot, [int(x) for x in rng.integers(100, 30000, 1000)], False)
        times = {}
        for _ in range(5):
            for k in (1, 2, 4, 6, 8, 16):
                t0 = time.perf_counter()
                if name == "tail":
                    rows = lm._verify(slot, [5] * k)
                    assert rows.shape[0] == k, rows.shape
                else:
                    lm._append(slot, [5] * k, True)
                times.setdefault(k, []).append((time.perf_counter() - t0) * 1e3)
                lm._drop(slot, k)
        out[name] = {k: round(float(np.median(v)), 3) for k, v in times.items()}
        if name == "tail":
            out["tail_output"] = TAIL_OUTPUT
        lm.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True, help="a directory with Qwen's tokenizer files")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tandem-gpu-bench"))
    ap.add_argument("--sizes", default="0.5b,1.5b")
    ap.add_argument("--runs", type=int, default=8, help="LSP completions per kind")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--buckets", action="store_true", help="also run the LSP part with fixed-size prefill chunks")
    ap.add_argument("--dry-run", action="store_true", help="tiny config on the CPU: checks the script")
    a = ap.parse_args()
    device, variant = ("cpu", "cpu-fp32") if a.dry_run else ("cuda", "cuda-fp16")
    sizes = ["tiny"] if a.dry_run else a.sizes.split(",")
    a.out.mkdir(parents=True, exist_ok=True)
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    if device == "cuda":
        import onnxruntime as ort
        ort.preload_dlls()
        import onnxruntime_genai as og
        log(f"onnxruntime {ort.__version__} providers {ort.get_available_providers()}; genai {og.__version__} "
            f"cuda {og.is_cuda_available()}")
        log(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip())
    results = {}
    from tests.benchmarks import bench_engine
    for size in sizes:
        r = results[size] = {}
        try:
            work = a.work / size
            shutil.rmtree(work, ignore_errors=True)
            t0 = time.perf_counter()
            hf = random_checkpoint(size, a.tokenizer, work / "hf", device)
            log(f"{size}: random checkpoint in {time.perf_counter() - t0:.1f}s")
            bundle = build_bundle(hf, work, variant)
            r["parity_vs_torch_fp32"] = fp16_parity(bundle, hf, variant, device)
            log(f"{size}: parity {r['parity_vs_torch_fp32']}")
            skip = "torch" if size == "1.5b" else ""
            r["slots"] = slots_check(bundle, variant, device)
            log(f"{size}: slots {r['slots']}")
            try:
                r["draft_pass_ms"] = draft_pass_costs(bundle, variant, device)
            except Exception:
                r["draft_pass_ms"] = {"error": traceback.format_exc()}
            log(f"{size}: pass of k tokens (ms) {r['draft_pass_ms']}")
            r["engine"] = bench_engine.main(["--model", str(bundle), "--device", device, "--hf", str(hf),
                                             "--repeats", str(a.repeats), "--skip", skip])
            r["prefill_shapes"] = prefill_shapes(bundle, variant, device)
            log(f"{size}: prefill shapes {r['prefill_shapes']}")
            r["lsp"] = asyncio.run(lsp(bundle, device, a.runs))
            if a.buckets:  # the same, with prefill cut into fixed-size chunks instead
                r["lsp_chunks"] = asyncio.run(lsp(bundle, device, a.runs, {"TANDEM_PREFILL_BUCKETS": "0"}))
                log(f"{size}: LSP with fixed-size prefill chunks: single p50 {r['lsp_chunks']['single']['p50_ms']:.1f} ms "
                    f"{[round(x) for x in r['lsp_chunks']['single']['all_ms']]}, multi p50 "
                    f"{r['lsp_chunks']['multi']['p50_ms']:.1f} ms, typing p50 {r['lsp_chunks']['typing']['p50_ms']:.1f} ms")
            log(f"{size}: LSP single p50 {r['lsp']['single']['p50_ms']:.1f} ms, multi p50 "
                f"{r['lsp']['multi']['p50_ms']:.1f} ms, typing p50 {r['lsp']['typing']['p50_ms']:.1f} ms, "
                f"GPU {r['lsp']['server_gpu_mb']} MiB, RSS {r['lsp']['server_rss_mb']:.0f} MiB")
        except Exception:
            r["error"] = traceback.format_exc()
            log(f"{size} failed:\n{r['error']}")
        (a.out / "gpu_bench.json").write_text(json.dumps(results, indent=1, default=str))
    print("\nSUMMARY")
    for size, r in results.items():
        e = (r.get("engine") or {}).get("medians") or {}
        for name, m in e.items():
            print(f"{size} {name:<14} ttft {m['ttft'] * 1e3:7.1f} ms  decode {m['decode_per_token'] * 1e3:6.2f} ms/tok"
                  f"  prompt+32 {m['total'] * 1e3:7.1f} ms")
        if "lsp" in r:
            L = r["lsp"]
            print(f"{size} LSP single p50/p95 {L['single']['p50_ms']:.1f}/{L['single']['p95_ms']:.1f} ms, multi "
                  f"{L['multi']['p50_ms']:.1f}/{L['multi']['p95_ms']:.1f} ms, typing {L['typing']['p50_ms']:.1f} ms; "
                  f"GPU {L['server_gpu_mb']} MiB RSS {L['server_rss_mb']:.0f} MiB")
        if "parity_vs_torch_fp32" in r:
            print(f"{size} parity {r['parity_vs_torch_fp32']}")
        if "error" in r:
            print(f"{size} ERROR {r['error'].splitlines()[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
