"""Serving graphs from onnxruntime-genai's model builder: the variants Tandem serves.

The builder (`python -m onnxruntime_genai.models.builder`, PyPI `onnxruntime-genai`) reads a
Hugging Face checkpoint and writes a graph made for decoding: GroupQueryAttention with the
rotary embedding inside and the KV cache written in place, fused RMSNorm + residual, q/k/v in
one MatMul, and (`prune_lm_head`) logits for the last position only. It also writes
`genai_config.json`, which the runtime (tandem/model/genai.py) reads.

The builder needs transformers 5; the rest of the pipeline (GGUF -> checkpoint with
transformers 4.57, optimum-onnx) cannot share its environment, so the builder runs in its own
virtualenv, `.venv-builder` beside `.venv` (made by `make setup`), as a subprocess.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .common import PipelineError, Stamp, log, step

# variant name -> (builder precision, execution provider)
GENAI_VARIANTS = {
    "cpu-int8": ("int8", "cpu"),
    "cpu-int4": ("int4", "cpu"),
    "cpu-fp32": ("fp32", "cpu"),
    "cuda-fp16": ("fp16", "cuda"),
}
# MatMulNBits block size of the integer CPU variants: one float scale per BLOCK weights, and
# (accuracy level 4) activations quantized to int8 per block of the same size. Chosen by
# measurement (README, "Choosing the CPU variant"): against 32, the builder's default, 128
# reads 8% fewer weight bytes per decoded token and is faster in prefill and decode, with the
# same line-completion exact match on held-out code.
QUANT_BLOCK_SIZE = 128
BUILDER_VERSION = "0.18.0"
REPO = Path(__file__).resolve().parent.parent


def builder_python() -> str:
    """The interpreter that runs the builder: TANDEM_GENAI_BUILDER_PYTHON, else the checkout's
    `.venv-builder`, else this one (if it has transformers 5)."""
    if env := os.environ.get("TANDEM_GENAI_BUILDER_PYTHON"):
        return env
    local = REPO / ".venv-builder" / "bin" / "python"
    if local.exists():
        return str(local)
    try:
        import transformers
        if int(transformers.__version__.split(".")[0]) >= 5:
            return sys.executable
    except ImportError:
        pass
    raise PipelineError("onnxruntime-genai's model builder needs its own environment with transformers 5: "
                        "run `make setup` (it creates .venv-builder), or set TANDEM_GENAI_BUILDER_PYTHON")


def build_genai(hf_dir: Path, out_dir: Path, variant: str, hf_digest: str) -> Path:
    """Build one serving variant with the builder; skipped when the checkpoint is unchanged."""
    precision, ep = GENAI_VARIANTS[variant]
    options = ["prune_lm_head=true", "hf_token=false"]  # prune: logits for the last position only
    if precision in ("int8", "int4"):
        options.append(f"block_size={QUANT_BLOCK_SIZE}")
    stamp = Stamp(out_dir / ".genai.json", {"hf": hf_digest, "precision": precision, "ep": ep,
                                            "builder": BUILDER_VERSION, "options": options, "v": 2})
    if (out_dir / "genai_config.json").exists() and stamp.fresh():
        log(f"{out_dir.name} up to date")
        return out_dir
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [builder_python(), "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(tmp),
           "-p", precision, "-e", ep, "-c", str(tmp / "cache"), "--extra_options", *options]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ORT_DISABLE_TELEMETRY="1",
               PYTHONWARNINGS="ignore")
    with step(f"building {variant} with onnxruntime-genai's model builder ({precision}, {ep})"):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PipelineError(f"the model builder did not finish within an hour ({variant})") from None
        if proc.returncode != 0 or not (tmp / "genai_config.json").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            if "No space left" in tail:
                raise PipelineError(f"the disk filled up while building {variant}; free space under "
                                    f"{out_dir.parent} and run the build again (nothing half-built is kept)")
            raise PipelineError(f"the model builder failed for {variant}:\n{tail}")
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        # Swap in whole: a killed build never leaves a half-built variant where the server looks.
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        stamp.write()
    return out_dir
