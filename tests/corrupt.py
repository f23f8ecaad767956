"""Damage a model file in place, as a failing copy or disk would, and undo it (integrity tests)."""
from __future__ import annotations

from pathlib import Path


def flip_byte(path: Path, offset: int | None = None) -> tuple[int, int]:
    """Flip one byte in place (same size); returns (offset, original byte) to restore it."""
    offset = path.stat().st_size // 2 if offset is None else offset
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([old ^ 0xFF]))
    return offset, old


def put_byte(path: Path, offset: int, value: int) -> None:
    """Write one byte back in place: same file, same size."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes([value]))
