"""Benchmark: Tandem's serving engine against its peers, side by side, on one machine.

    .venv/bin/python tests/benchmarks/bench_engine.py [--model DIR] [--device cpu|cuda]
        [--prompt-tokens 1024] [--new-tokens 32] [--repeats 5]

Same weights, same prompt, greedy, medians of --repeats (each engine run interleaved with
the others, so a busy machine slows them alike):

- tandem: the server's backend (tandem.model) and decode loop, as the editor features use it;
  a cold cache each time, then "one more token" (a prompt one token longer, KV reused).
- tandem-nodraft: the same without speculative decoding (drafts looked up in the prompt),
  so its share is visible; its decode ms/token is the graph's step plus the loop's.
- genai-native: onnxruntime-genai's own loop (`generate_next_token`, token chosen on the
  device) over the same graph: what the runtime can do without Tandem's Python loop.
- tandem-optimum: the older backend (raw onnxruntime session, optimum-onnx export), when the
  bundle has an `onnx-fp32`/`cpu-int8` optimum variant (`--optimum DIR`).
- torch: transformers `generate` on the Hugging Face checkpoint (fp16 on CUDA, fp32 on CPU).

- llama.cpp (CPU): llama-cpp-python on the GGUF the model was built from (its own Q4_K_M
  weights), in its own venv (`make llama-server`), through tests/benchmarks/llama_worker.py.

Prints time to first token, decode ms/token, prompt+N total, and each peer's ratio to Tandem.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "server"))
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def real_prompt(tokenizer_json: Path | None, n: int, vocab: int) -> list[int]:
    """`n` tokens of real Python (the standard library's source), or in-vocabulary ids."""
    if tokenizer_json and tokenizer_json.exists():
        from tokenizers import Tokenizer
        import argparse as a, inspect, shutil, textwrap  # noqa: E401
        tok = Tokenizer.from_file(str(tokenizer_json))
        text = "".join(Path(m.__file__).read_text() for m in (a, inspect, shutil, textwrap))
        ids = tok.encode(text, add_special_tokens=False).ids
        if len(ids) >= n and max(ids[:n]) < vocab:
            return ids[:n]
    return [int(x) for x in np.random.default_rng(0).integers(100, min(vocab, 30000), n)]


def sync(device: str):
    if device == "cuda":
        try:
            import torch
            torch.cuda.synchronize()
        except Exception:
            pass


class Tandem:
    name = "tandem"

    def __init__(self, variant: Path, device: str):
        from tandem.model.genai import GenaiLM, is_genai_model
        from tandem.model.runtime import CausalLM
        if is_genai_model(variant):
            self.lm = GenaiLM(variant, device)
        else:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
            self.lm = CausalLM(variant / "model.onnx", providers)
        self.device = self.lm.device

    def cold(self, prompt: list[int]) -> None:
        """A cache that shares nothing useful with `prompt` (its first token only), in a slot
        that exists already, as a server's does: the generator's buffer is not allocated
        inside the timing (genai-native allocates its generator outside it too)."""
        self.lm.generate(prompt[:1], max_new_tokens=1, stop_ids=set())

    def run(self, prompt: list[int], new: int) -> dict:
        self.cold(prompt)
        t0 = time.perf_counter()
        g = self.lm.generate(prompt, max_new_tokens=1, stop_ids=set())
        ttft = time.perf_counter() - t0
        self.cold(prompt)
        t0 = time.perf_counter()
        g = self.lm.generate(prompt, max_new_tokens=new, stop_ids=set())
        total = time.perf_counter() - t0
        # One more token of prompt (what typing one character usually adds): KV reused.
        t0 = time.perf_counter()
        self.lm.generate(prompt + [g.ids[0]], max_new_tokens=new, stop_ids=set())
        more = time.perf_counter() - t0
        return {"ttft": ttft, "total": total, "decode_per_token": g.decode_s / max(len(g.ids) - 1, 1),
                "one_more": more}


class GenaiNative:
    name = "genai-native"

    def __init__(self, variant: Path, device: str):
        import onnxruntime_genai as og
        from tandem.model.backend import default_threads
        from tandem.model.genai import runtime_config
        self.og = og
        # The configuration Tandem serves with (CUDA graphs; on a CPU the same threads).
        self.model = og.Model(runtime_config(variant, device, default_threads()))

    def run(self, prompt: list[int], new: int) -> dict:
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt) + new + 8, do_sample=False)
        gen = og.Generator(self.model, params)
        t0 = time.perf_counter()
        gen.append_tokens(np.asarray(prompt, dtype=np.int32))
        gen.generate_next_token()
        gen.get_next_tokens()
        ttft = time.perf_counter() - t0
        for _ in range(new - 1):
            gen.generate_next_token()
        gen.get_next_tokens()
        total = time.perf_counter() - t0
        # One more token of prompt, reusing the cache (rewind, append two tokens).
        gen.rewind_to(len(prompt))
        t1 = time.perf_counter()
        gen.append_tokens(np.asarray([prompt[-1]], dtype=np.int32))
        for _ in range(new):
            gen.generate_next_token()
        gen.get_next_tokens()
        more = time.perf_counter() - t1
        del gen
        return {"ttft": ttft, "total": total, "decode_per_token": (total - ttft) / (new - 1), "one_more": more}

    def decode(self, prompt: list[int], k: int) -> tuple[float, int]:
        """Seconds to decode k tokens after the first, prefill left out (bench_drafts.py), and
        the tokens decoded (fewer if an end-of-text token came first)."""
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt) + k + 8, do_sample=False)
        gen = og.Generator(self.model, params)
        gen.append_tokens(np.asarray(prompt, dtype=np.int32))  # prefill: not timed
        t0 = time.perf_counter()
        gen.generate_next_token()  # the first token, from the prefill's logits
        n = 0
        while n < k and not gen.is_done():
            gen.generate_next_token()
            n += 1
        gen.get_next_tokens()
        return time.perf_counter() - t0, n


class Torch:
    name = "torch"

    def __init__(self, hf: Path, device: str):
        import torch
        from transformers import AutoModelForCausalLM
        self.torch, self.device = torch, device
        dtype = torch.float16 if device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(hf, dtype=dtype).to(device).eval()

    def run(self, prompt: list[int], new: int) -> dict:
        torch = self.torch
        ids = torch.tensor([prompt], device=self.device)
        kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
        with torch.no_grad():
            sync(self.device)
            t0 = time.perf_counter()
            self.model.generate(ids, max_new_tokens=1, **kw)
            sync(self.device)
            ttft = time.perf_counter() - t0
            t0 = time.perf_counter()
            self.model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
            sync(self.device)
            total = time.perf_counter() - t0
        return {"ttft": ttft, "total": total, "decode_per_token": (total - ttft) / (new - 1), "one_more": None}


class LlamaCpp:
    """llama.cpp through llama-cpp-python, in its own venv (.venv-llama), on a GGUF of the same
    model (the default model's own Q4_K_M): a worker process answering one request a line."""
    name = "llama.cpp"

    def __init__(self, gguf: Path, python: Path, *worker_args: str):
        import subprocess
        self.proc = subprocess.Popen([str(python), str(Path(__file__).with_name("llama_worker.py")), "--gguf", str(gguf),
                                      *worker_args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if not json.loads(self.proc.stdout.readline() or "{}").get("ready"):
            raise RuntimeError("llama.cpp worker did not start")

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def run(self, prompt: list[int], new: int) -> dict:
        return self.ask({"ids": prompt, "new": new})

    def decode(self, prompt: list[int], k: int) -> tuple[float, int]:
        """Seconds to decode k tokens after the first, prefill left out (bench_drafts.py)."""
        r = self.ask({"ids": prompt, "decode": k})
        return r["decode_s"], r["tokens"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="bundle or variant dir (default: the built default model)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--hf", type=Path, help="Hugging Face checkpoint for torch (default: the bundle's hf/)")
    ap.add_argument("--optimum", type=Path, help="an optimum-onnx variant dir to compare (the older backend)")
    ap.add_argument("--gguf", type=Path, help="GGUF for llama.cpp (default: the bundle's own, when `make "
                                              "llama-server` has built .venv-llama)")
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma-separated engines to leave out")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)

    from tandem.model.loader import default_model_path, resolve_model
    root = a.model or default_model_path()
    variant = root if (root / "tandem-model.json").exists() and not (root / "tandem-bundle.json").exists() \
        else resolve_model(root, a.device).directory
    hf = a.hf or (variant.parent / "hf")
    manifest = json.loads((variant / "tandem-model.json").read_text()) if (variant / "tandem-model.json").exists() else {}
    vocab = int((manifest.get("architecture") or {}).get("vocab_size") or 151936)
    prompt = real_prompt(variant / "tokenizer.json", a.prompt_tokens, vocab)
    skip = set(filter(None, a.skip.split(",")))

    engines = [Tandem(variant, a.device)]
    if engines[0].lm.draft_tokens and "tandem-nodraft" not in skip:
        e = Tandem(variant, a.device)  # the same loop without drafts from the prompt
        e.name, e.lm.draft_tokens = "tandem-nodraft", 0
        engines.append(e)
    if "genai-native" not in skip and (variant / "genai_config.json").exists():
        engines.append(GenaiNative(variant, a.device))
    if a.optimum and "tandem-optimum" not in skip:
        e = Tandem(a.optimum, a.device)
        e.name = "tandem-optimum"
        engines.append(e)
    if "torch" not in skip and (hf / "config.json").exists():
        engines.append(Torch(hf, a.device))

    llama_python = ROOT / ".venv-llama" / "bin" / "python"
    gguf = a.gguf or next(iter(sorted(variant.parent.glob("*.gguf"))), None)
    if "llama.cpp" not in skip and a.device == "cpu" and gguf and llama_python.exists():
        engines.append(LlamaCpp(gguf, llama_python))
    elif a.device == "cpu" and "llama.cpp" not in skip:
        print("llama.cpp: left out (needs `make llama-server` and a GGUF of the model)")

    for e in engines:  # warm-up: kernels, CUDA graph capture, allocator
        e.run(prompt, a.new_tokens)
    runs = {e.name: [] for e in engines}
    for _ in range(a.repeats):
        for e in engines:
            runs[e.name].append(e.run(prompt, a.new_tokens))

    med = {name: {k: (statistics.median(r[k] for r in rs) if rs[0][k] is not None else None)
                  for k in rs[0]} for name, rs in runs.items()}
    machine = machine_line(a.device)
    print(f"\n{machine}\nmodel {variant} ({manifest.get('precision', '?')}), {a.device}; prompt {len(prompt)} tokens "
          f"+ {a.new_tokens} greedy tokens; medians of {a.repeats}")
    print(f"{'engine':<16}{'first token':>14}{'decode/token':>15}{'prompt+N':>12}{'+1 token':>12}   vs tandem (prompt+N)")
    base = med["tandem"]["total"]
    for name, m in med.items():
        more = f"{m['one_more'] * 1e3:9.1f} ms" if m["one_more"] is not None else "        -   "
        print(f"{name:<16}{m['ttft'] * 1e3:11.1f} ms{m['decode_per_token'] * 1e3:12.2f} ms{m['total'] * 1e3:9.1f} ms"
              f"{more}   x{m['total'] / base:.2f}")
    out = {"machine": machine, "model": str(variant), "device": a.device, "prompt_tokens": len(prompt),
           "new_tokens": a.new_tokens, "repeats": a.repeats, "medians": med}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return out


def machine_line(device: str) -> str:
    cpu = f"{os.cpu_count()} CPUs"
    if device == "cuda":
        try:
            import torch
            return f"machine: {torch.cuda.get_device_name(0)}, {cpu}"
        except Exception:
            pass
    return f"machine: {cpu}, no GPU used"


if __name__ == "__main__":
    main()
