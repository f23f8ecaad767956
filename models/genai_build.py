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


def _build_stamp(out_dir: Path, variant: str, hf_digest: str) -> tuple[Stamp, list[str]]:
    precision, ep = GENAI_VARIANTS[variant]
    options = ["prune_lm_head=true", "hf_token=false"]  # prune: logits for the last position only
    if precision in ("int8", "int4"):
        options.append(f"block_size={QUANT_BLOCK_SIZE}")
    return Stamp(out_dir / ".genai.json", {"hf": hf_digest, "precision": precision, "ep": ep,
                                           "builder": BUILDER_VERSION, "options": options, "v": 2}), options


def built_from(out_dir: Path, variant: str, hf_digest: str) -> bool:
    """Whether `out_dir` holds `variant` built by this builder from the checkpoint `hf_digest`."""
    return variant in GENAI_VARIANTS and (out_dir / "genai_config.json").exists() and \
        _build_stamp(out_dir, variant, hf_digest)[0].fresh()


def build_genai(hf_dir: Path, out_dir: Path, variant: str, hf_digest: str) -> Path:
    """Build one serving variant with the builder; skipped when the checkpoint is unchanged."""
    precision, ep = GENAI_VARIANTS[variant]
    stamp, options = _build_stamp(out_dir, variant, hf_digest)
    if (out_dir / "genai_config.json").exists() and stamp.fresh():
        log(f"{out_dir.name} up to date")
        if ep == "cpu" and add_logits_tail(out_dir):  # a variant built before the output existed
            log(f"{out_dir.name}: added the last positions' logits for speculative decoding")
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
        if ep == "cpu":
            # Speculative decoding checks drafted tokens in one pass (README, "Serving speed";
            # measured on 2 CPU cores). Not on CUDA yet: not measured on a GPU.
            add_logits_tail(tmp)
        # Swap in whole: a killed build never leaves a half-built variant where the server looks.
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        stamp.write()
    return out_dir


def add_logits_tail(variant_dir: Path, positions: int | None = None) -> bool:
    """Give a pruned builder graph a second output, `logits_tail`: the logits of the last
    `positions` positions of each pass, so that a decode loop can check several drafted tokens
    in one forward pass (tandem/model/backend.py, speculative decoding). The lm_head runs once,
    on those positions; `logits` (last position only, which onnxruntime-genai reads) is sliced
    from it, so a one-token decode step costs what it did, and a prefill pass computes
    `positions` rows of the lm_head instead of one. Idempotent; rewrites only `model.onnx` (the
    weights file is untouched), atomically. Returns whether the graph changed: a graph whose
    lm_head is not pruned the way the builder prunes it is left as it is (the model then
    decodes one token per pass, as it did before), with a note, not a failed build."""
    import onnx
    from onnx import TensorProto, helper
    from tandem.model.genai import TAIL_OUTPUT, TAIL_POSITIONS

    positions = positions or TAIL_POSITIONS
    path = variant_dir / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    if any(o.name == TAIL_OUTPUT for o in graph.output):
        return False
    producers = {out: node for node in graph.node for out in node.output}
    head = producers.get("logits")
    unsqueeze = producers.get(head.input[0]) if head is not None else None
    gather = producers.get(unsqueeze.input[0]) if unsqueeze is not None else None
    if head is None or unsqueeze is None or gather is None or unsqueeze.op_type != "Unsqueeze" \
            or gather.op_type != "Gather":
        log(f"{variant_dir.name}: the lm_head is not pruned the way onnxruntime-genai's builder {BUILDER_VERSION} "
            f"prunes it (Gather -1, Unsqueeze), so no {TAIL_OUTPUT} output: this model decodes without drafts")
        return False
    hidden = gather.input[0]
    consts = [
        helper.make_tensor("/lm_head/tail/starts", TensorProto.INT64, [1], [-positions]),
        helper.make_tensor("/lm_head/tail/last", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("/lm_head/tail/ends", TensorProto.INT64, [1], [2 ** 62]),
        helper.make_tensor("/lm_head/tail/axes", TensorProto.INT64, [1], [1]),
    ]
    graph.initializer.extend(consts)
    head.input[0] = "/lm_head/tail/hidden"
    head.output[0] = TAIL_OUTPUT
    nodes = [n for n in graph.node if n is not gather and n is not unsqueeze]
    at = nodes.index(head)
    nodes.insert(at, helper.make_node("Slice", [hidden, "/lm_head/tail/starts", "/lm_head/tail/ends",
                                                "/lm_head/tail/axes"], ["/lm_head/tail/hidden"],
                                      name="/lm_head/tail/Slice"))
    nodes.insert(at + 2, helper.make_node("Slice", [TAIL_OUTPUT, "/lm_head/tail/last", "/lm_head/tail/ends",
                                                    "/lm_head/tail/axes"], ["logits"], name="/lm_head/last/Slice"))
    del graph.node[:]
    graph.node.extend(nodes)
    logits = next(o for o in graph.output if o.name == "logits")
    tail = graph.output.add()
    tail.CopyFrom(logits)
    tail.name = TAIL_OUTPUT
    tail.type.tensor_type.shape.dim[1].ClearField("dim_value")
    tail.type.tensor_type.shape.dim[1].dim_param = "tail_length"
    tmp = path.with_name(f".tmp-{path.name}")
    # The graph only: its initializers stay in model.onnx.data. (onnx's checker does not know
    # onnxruntime's contrib operators; the parity check that follows a build runs the graph.)
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return True
