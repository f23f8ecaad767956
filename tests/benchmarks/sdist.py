"""A pinned PyPI sdist for the benchmarks: downloaded once (pip, no dependencies, no build),
its sha256 checked every time. The network is used here only, never by the server."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def fetch_sdist(name: str, version: str, sha256: str, cache: Path, filename: str | None = None) -> Path:
    """The archive `filename` (default NAME-VERSION.tar.gz) in `cache`, downloaded if missing."""
    path = cache / (filename or f"{name}-{version}.tar.gz")
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--disable-pip-version-check", "-q", "-d", str(cache), f"{name}=={version}"],
                       check=True, timeout=600)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{path}: sha256 {digest}, expected {sha256}; delete it and run again")
    return path
