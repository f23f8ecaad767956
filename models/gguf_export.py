"""Export a Hugging Face checkpoint to GGUF, for serving it with llama.cpp's server.

A team can serve Tandem's model from one machine with llama.cpp (or vLLM, which reads the
Hugging Face checkpoint directly); the test-suite serves the tiny test model this way to run
the end-to-end tests against a real engine (tests/llama_server.py).

The converter is llama.cpp's own `convert_hf_to_gguf.py` (with its `conversion/` package and
its matching `gguf-py`), taken from the llama-cpp-python sdist on PyPI, pinned, fetched once
with `pip download --no-binary` into <tandem home>/downloads and unpacked (only those files)
into <tandem home>/tools. It runs in this interpreter (it needs torch, transformers and numpy,
which the `models` extra installs).

One adjustment: the converter recognises a BPE pre-tokenizer by hashing how the tokenizer
splits a probe text, which only works for tokenizers it knows. A tokenizer trained here (the
tiny model's) has Qwen2's pre-tokenizer regex but its own vocabulary, so when the hash is
unknown and the tokenizer.json's split pattern is exactly Qwen2's, the pre-tokenizer is
declared "qwen2" (what llama.cpp then applies at run time is that same regex).

Outputs are cached: a GGUF whose recorded inputs (file names, sizes, sha256; converter
version; output type) are unchanged is not rebuilt.

Usage: python -m tandem_models.gguf_export --source HF_DIR --out FILE.gguf [--outtype f32]
       python -m tandem_models.gguf_export --tiny      (the tiny test model; prints the path)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from .common import log, tandem_home

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist that carries the converter (and that tests serve with)
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")

# Run inside the converter's process: the pre-tokenizer fallback described above, then its main().
_RUNNER = r"""
import json, runpy, sys
from pathlib import Path
tool, hf = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(tool))
sys.argv = [str(tool / "convert_hf_to_gguf.py")] + sys.argv[3:]
import conversion.base as base
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        pre = json.loads((hf / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
        parts = pre.get("pretokenizers", [pre])
        pattern = next((p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"), None)
        if pattern == QWEN2_SPLIT:
            return "qwen2"
        raise
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
try:
    import sentencepiece  # noqa: F401
except ImportError:
    # Qwen2's converter imports sentencepiece before it looks for tokenizer.model (and then
    # falls back to the BPE tokenizer.json): a stand-in keeps it from failing on the import.
    import types
    sys.modules["sentencepiece"] = types.SimpleNamespace(SentencePieceProcessor=None)
runpy.run_path(str(tool / "convert_hf_to_gguf.py"), run_name="__main__")
"""


def _sdist(home: Path) -> Path:
    downloads = home / "downloads"
    path = downloads / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if path.exists():
        return path
    downloads.mkdir(parents=True, exist_ok=True)
    log(f"fetching the llama-cpp-python {LLAMA_CPP_PYTHON} sdist (for llama.cpp's GGUF converter)")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-binary", ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(downloads)],
                   check=True)
    if not path.exists():
        raise RuntimeError(f"pip download did not produce {path}")
    return path


def converter(home: Path | None = None) -> Path:
    """The directory holding llama.cpp's converter, unpacked once from the pinned sdist."""
    home = Path(home or tandem_home())
    tool = home / "tools" / f"llama.cpp-convert-{LLAMA_CPP_PYTHON}"
    if (tool / ".complete").exists():
        return tool
    sdist = _sdist(home)
    tmp = tool.with_name(tool.name + f".tmp-{os.getpid()}")
    with tarfile.open(sdist) as tar:
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        for m in tar.getmembers():
            if not m.name.startswith(prefix) or not (m.isfile() or m.isdir()):
                continue
            rel = m.name[len(prefix):]
            if not any(rel == x or rel.startswith(x) for x in MEMBERS):
                continue
            target = tmp / rel
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(m).read())
    (tmp / ".complete").write_text(LLAMA_CPP_PYTHON)
    tool.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(tool)
    except OSError:  # another process unpacked it meanwhile
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return tool


def _inputs_digest(hf_dir: Path, outtype: str) -> str:
    h = hashlib.sha256(f"{LLAMA_CPP_PYTHON}\0{outtype}\0{QWEN2_SPLIT}\0".encode())
    h.update(Path(__file__).read_bytes())
    for f in sorted(p for p in hf_dir.iterdir() if p.is_file()):
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def export_gguf(hf_dir: Path, out: Path, outtype: str = "f32", home: Path | None = None) -> Path:
    """Write `out` (a GGUF) from the checkpoint in `hf_dir`; skipped when its inputs are unchanged."""
    hf_dir, out = Path(hf_dir), Path(out)
    stamp = out.with_name(out.name + ".json")
    digest = _inputs_digest(hf_dir, outtype)
    try:
        if out.exists() and json.loads(stamp.read_text()).get("inputs") == digest:
            return out
    except (OSError, ValueError):
        pass
    tool = converter(home)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    t0 = time.perf_counter()
    code = _RUNNER.replace("QWEN2_SPLIT", repr(QWEN2_SPLIT))
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # the converter's own gguf-py, matched to it
    r = subprocess.run([sys.executable, "-c", code, str(tool), str(hf_dir), str(hf_dir), "--outfile", str(tmp),
                        "--outtype", outtype], env=env, capture_output=True, text=True)
    if r.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"convert_hf_to_gguf failed ({r.returncode}):\n{r.stderr[-3000:]}")
    tmp.rename(out)
    stamp.write_text(json.dumps({"inputs": digest, "source": str(hf_dir), "outtype": outtype,
                                 "converter": f"llama-cpp-python {LLAMA_CPP_PYTHON} convert_hf_to_gguf.py",
                                 "seconds": round(time.perf_counter() - t0, 2)}, indent=1))
    log(f"GGUF written in {time.perf_counter() - t0:.1f}s: {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def tiny_gguf(home: Path | None = None) -> Path:
    """The tiny test model as an f32 GGUF (built, with the tiny model itself, when needed)."""
    from .tiny import build_tiny_model

    bundle = build_tiny_model(home)
    return export_gguf(bundle / "hf", Path(home or tandem_home()) / "test-models" / "gguf" / f"{bundle.name}-f32.gguf",
                       "f32", home)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, help="a Hugging Face checkpoint directory")
    ap.add_argument("--out", type=Path, help="the GGUF file to write")
    ap.add_argument("--outtype", default="f32", choices=["f32", "f16", "bf16", "q8_0"])
    ap.add_argument("--tiny", action="store_true", help="export the tiny test model")
    a = ap.parse_args(argv)
    if a.tiny:
        print(tiny_gguf())
        return 0
    if not (a.source and a.out):
        ap.error("--source and --out are required (or --tiny)")
    print(export_gguf(a.source, a.out, a.outtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
