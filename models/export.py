"""Export a Hugging Face causal LM to ONNX with a KV cache, then make the per-device variants.

- `onnx-fp32`: optimum-onnx's `text-generation-with-past` export, the reference.
- `cpu-int8` / `cpu-int4`: weight-only quantization of every MatMul with onnxruntime's
  MatMulNBits quantizer (block-wise, symmetric; accuracy_level 4 lets the CPU kernel run
  the products in int8). Which one the CPU uses is recorded in the bundle; see README for
  the measurements behind the choice.
- `cuda-fp16`: the fp32 graph converted to float16 by onnxruntime's converter, for CUDA.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .common import (BUNDLE_NAME, FIM_TOKENS, MANIFEST_NAME, STOP_TOKENS, PipelineError,
                     Stamp, file_hashes, log, read_json, step, tool_versions, variant_files, write_json)

VARIANTS = {
    "onnx-fp32": {"precision": "fp32", "device": "cpu"},
    "cpu-int8": {"precision": "int8 weight-only", "device": "cpu", "bits": 8},
    "cpu-int4": {"precision": "int4 weight-only", "device": "cpu", "bits": 4},
    "cuda-fp16": {"precision": "fp16", "device": "cuda"},
    "cpu-fp32": {"precision": "fp32", "device": "cpu"},
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")


def export_fp32(hf_dir: Path, out_dir: Path) -> Path:
    """optimum-onnx export with past key values; skipped when the checkpoint is unchanged."""
    from optimum.exporters.onnx import main_export

    stamp = Stamp(out_dir / ".export.json", {"hf": _dir_digest(hf_dir), "v": 1})
    if (out_dir / "model.onnx").exists() and stamp.fresh():
        log(f"ONNX export up to date: {out_dir}")
        return out_dir
    if out_dir.exists():
        shutil.rmtree(out_dir)
    with step(f"exporting {hf_dir.name} to ONNX (fp32, KV cache)"):
        main_export(str(hf_dir), output=str(out_dir), task="text-generation-with-past",
                    device="cpu", do_validation=False, no_post_process=False)
        stamp.write()
    return out_dir


def quantize_weight_only(fp32_dir: Path, out_dir: Path, bits: int, block_size: int = 32) -> Path:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    stamp = Stamp(out_dir / ".quantize.json", {"src": onnx_digest(fp32_dir),
                                               "bits": bits, "block": block_size, "v": 1})
    if (out_dir / "model.onnx").exists() and stamp.fresh():
        log(f"{out_dir.name} up to date")
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with step(f"quantizing MatMul weights to int{bits} -> {out_dir.name}"):
        model = onnx.load(str(fp32_dir / "model.onnx"))
        logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # one line per node otherwise
        quant = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True,
                                     accuracy_level=4)
        quant.process()
        _save(quant.model.model, out_dir)
        stamp.write()
    return out_dir


def convert_fp16(fp32_dir: Path, out_dir: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    stamp = Stamp(out_dir / ".fp16.json", {"src": onnx_digest(fp32_dir), "v": 1})
    if (out_dir / "model.onnx").exists() and stamp.fresh():
        log(f"{out_dir.name} up to date")
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with step(f"converting to float16 -> {out_dir.name}"):
        model = onnx.load(str(fp32_dir / "model.onnx"))
        # keep_io_types: logits and the KV cache stay float32 at the boundary, so the
        # serving loop feeds every variant the same way.
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
        _save(model, out_dir)
        stamp.write()
    return out_dir


def _save(model, out_dir: Path) -> None:
    import onnx

    for f in out_dir.glob("model.onnx*"):
        f.unlink()
    big = model.ByteSize() > 1_500_000_000 if hasattr(model, "ByteSize") else True
    onnx.save_model(model, str(out_dir / "model.onnx"), save_as_external_data=big,
                    all_tensors_to_one_file=True, location="model.onnx_data")


def write_variant_manifest(variant_dir: Path, name: str, hf_dir: Path, source: dict,
                           parity: dict | None = None) -> dict:
    """Copy the tokenizer beside the ONNX graph and describe the variant in a manifest."""
    from tokenizers import Tokenizer

    for f in TOKENIZER_FILES:
        if (hf_dir / f).exists():
            shutil.copy2(hf_dir / f, variant_dir / f)
    config = read_json(hf_dir / "config.json") or {}
    tok = Tokenizer.from_file(str(variant_dir / "tokenizer.json"))
    special = {key: tok.token_to_id(text) for key, text in FIM_TOKENS.items()}
    if None in special.values():
        raise PipelineError(f"tokenizer in {hf_dir} lacks FIM tokens {FIM_TOKENS}: it cannot fill in the middle")
    stop_ids = sorted({i for t in STOP_TOKENS if (i := tok.token_to_id(t)) is not None})
    # Every file of the variant (graph, external weights, tokenizer, configs) with its size and
    # sha256: the server refuses a file that does not match. Hashing also leaves the loader's
    # verified-stamp beside the files, so the first load after a build does not hash again.
    names = variant_files(variant_dir)
    hashes = file_hashes(variant_dir, names)
    files = {n: {"size": (variant_dir / n).stat().st_size, "sha256": hashes[n]} for n in names}
    manifest = {
        "format": "tandem-model/1",
        "name": source.get("name", hf_dir.parent.name),
        "variant": name,
        "precision": describe_precision(variant_dir, VARIANTS[name]["precision"]),
        "device": VARIANTS[name]["device"],
        "source": source,
        "architecture": {k: config.get(k) for k in (
            "model_type", "num_hidden_layers", "hidden_size", "num_attention_heads",
            "num_key_value_heads", "vocab_size", "tie_word_embeddings")},
        "context_length": config.get("max_position_embeddings"),
        "tokenizer": {"file": "tokenizer.json", "fim": FIM_TOKENS, "fim_ids": special,
                      "stop_ids": stop_ids, "chat_template": (variant_dir / "chat_template.jinja").exists()
                      or "chat_template" in (read_json(hf_dir / "tokenizer_config.json") or {})},
        "files": files,
        "tools": tool_versions(),
        "parity": parity,
    }
    write_json(variant_dir / MANIFEST_NAME, manifest)
    return manifest


def describe_precision(variant_dir: Path, base: str) -> str:
    """The variant's precision as its graph has it: the MatMulNBits bits, block size and
    accuracy level are read from the graph (not assumed), e.g. "int8 weight-only (MatMulNBits,
    block 128, int8 activations)"."""
    import onnx

    try:
        graph = onnx.load(str(variant_dir / "model.onnx"), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - a label only; the parity check judges the graph
        return base
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            acts = ", int8 activations" if attrs.get("accuracy_level") == 4 else ""
            return f"{base} (MatMulNBits, block {attrs.get('block_size')}{acts})"
    return base


def write_bundle(model_dir: Path, name: str, variants: dict[str, str], notes: str = "") -> None:
    """The bundle says which variant each device uses; the server reads only this."""
    write_json(model_dir / BUNDLE_NAME, {"format": "tandem-bundle/1", "name": name,
                                         "variants": variants, "notes": notes})


def _dir_digest(d: Path) -> str:
    """Cheap identity of a checkpoint dir: names, sizes and mtimes of its files."""
    parts = [f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in sorted(d.iterdir()) if f.is_file()]
    return "|".join(parts)


def onnx_digest(vdir: Path) -> str:
    """Identity of an exported graph: its model.onnx* files' names, sizes and mtimes
    (not the manifest or tokenizer files written beside it later)."""
    return "|".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in sorted(vdir.glob("model.onnx*")))
