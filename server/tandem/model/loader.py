"""Find and check a built model on disk, and pick the variant for a device.

A model path is either a bundle (a directory with tandem-bundle.json naming one variant per
device) or a single variant directory (model.onnx, tokenizer.json, tandem-model.json).
Every failure is a ModelError whose message says what is wrong and the command that fixes it.

Integrity: the build records the size and sha256 of every file of a variant in its manifest
("files"). Loading compares sizes (cheap, catches truncated copies) and then the sha256 of each
file, hashed once per version of the file: the hashes are kept in a verified-stamp with each
file's size, mtime_ns, ctime_ns, inode and device (beside the model, or under TANDEM_HOME when
the model's directory is read-only), so later loads only stat the files. Any write to a file
changes its ctime (which user space cannot set back), so a changed file is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .ortenv import disable_telemetry

# Every model load passes through this module before a runtime (onnxruntime or
# onnxruntime-genai, both imported lazily) is loaded: switch the runtime's telemetry off first.
disable_telemetry()

BUNDLE_NAME = "tandem-bundle.json"
MANIFEST_NAME = "tandem-model.json"
VERIFIED_NAME = ".tandem-verified.json"  # sha256 of each file, valid while its stat is unchanged
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
BUILD_HINT = "Build it with `make model` (or `tandem-models build`) in the Tandem checkout."


class ModelError(RuntimeError):
    """The model cannot be used; the message is meant for the user."""


def tandem_home() -> Path:
    if os.environ.get("TANDEM_HOME"):
        return Path(os.environ["TANDEM_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "tandem"


def default_model_path() -> Path:
    return tandem_home() / "models" / DEFAULT_MODEL


@dataclass(frozen=True)
class ModelFiles:
    directory: Path
    manifest: dict

    @property
    def onnx(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def tokenizer(self) -> Path:
        return self.directory / "tokenizer.json"

    @property
    def label(self) -> str:
        base = f"{self.manifest.get('name', self.directory.parent.name)} ({self.manifest.get('precision', '?')})"
        return f"{base}, {self.version}" if self.version != "base" else base

    @property
    def version(self) -> str:
        """'base', or what `tandem learn` wrote: 'tuned on WORKSPACE at DATE, +N points'."""
        tuned = self.manifest.get("tuned")
        if not isinstance(tuned, dict) or not tuned.get("workspace"):
            return "base"
        gain = tuned.get("gain_points")
        return (f"tuned on {Path(str(tuned['workspace'])).name} at {tuned.get('date', '?')}"
                + (f", {gain:+.1f} points" if isinstance(gain, (int, float)) else ""))


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{what} {path} is missing. {BUILD_HINT}") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{what} {path} is unreadable or corrupt ({e}). Rebuild the model: {BUILD_HINT}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{what} {path} is corrupt (not a JSON object). {BUILD_HINT}")
    return data


def resolve_model(path: str | os.PathLike | None, device: str) -> ModelFiles:
    """Return the variant directory to load for `device` ('cuda' or 'cpu')."""
    root = Path(path).expanduser() if path else default_model_path()
    if not root.exists():
        if not path:
            raise ModelError(f"The default model is not built yet (looked in {root}). {BUILD_HINT}")
        raise ModelError(f"The model path {root} does not exist. Fix the `tandem.modelPath` setting, "
                         f"or leave it empty to use the default model. {BUILD_HINT}")
    if root.is_file():
        raise ModelError(f"The model path {root} is a file; it must be a model directory built by "
                         f"`tandem-models build --source {root}`.")
    if (root / BUNDLE_NAME).exists():
        bundle = _read_json(root / BUNDLE_NAME, "Model bundle")
        variants = bundle.get("variants") or {}
        order = [device, "cpu"] if device == "cuda" else ["cpu"]
        name = next((variants[d] for d in order if d in variants and (root / variants[d]).is_dir()), None)
        if name is None:
            raise ModelError(f"The model bundle {root} has no built variant for {device}. {BUILD_HINT}")
        root = root / name
    manifest = _read_json(root / MANIFEST_NAME, "Model manifest")
    files = ModelFiles(root, manifest)
    for f in (files.onnx, files.tokenizer):
        if not f.exists() or f.stat().st_size == 0:
            raise ModelError(f"{f} is missing or empty: the model build did not finish. {BUILD_HINT}")
    verify_files(files)
    return files


def has_variant(bundle: str | Path | None, device: str) -> bool:
    """Whether the bundle at `bundle` names a variant for `device` that has been built (a cheap
    look at two JSON files: nothing is opened or hashed)."""
    if not bundle:
        return False
    try:
        variant = json.loads((Path(bundle) / BUNDLE_NAME).read_text())["variants"][device]
        return (Path(bundle) / variant / MANIFEST_NAME).is_file()
    except (OSError, ValueError, KeyError, TypeError):
        return False


# -- integrity ----------------------------------------------------------------------------------
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def variant_files(directory: Path) -> list[str]:
    """The files of a variant that its manifest describes: every regular file but the manifest
    itself and hidden files (build and verification stamps)."""
    return sorted(p.name for p in Path(directory).iterdir()
                  if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith("."))


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _verified_paths(directory: Path) -> list[Path]:
    """Where the verified-stamp lives: beside the model, else (read-only model) under TANDEM_HOME."""
    key = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:32]
    return [Path(directory) / VERIFIED_NAME, tandem_home() / "verified" / f"{key}.json"]


def _read_verified(directory: Path) -> dict:
    for p in _verified_paths(directory):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("files"), dict):
            return data["files"]
    return {}


def _write_verified(directory: Path, entries: dict) -> None:
    text = json.dumps({"format": "tandem-verified/1", "files": entries}, indent=1, sort_keys=True)
    for p in _verified_paths(directory):
        tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            tmp.replace(p)  # atomic: a reader sees the old stamp or the new one
            return
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    # Nowhere writable: every load hashes again. Slower, never wrong.


def file_hashes(directory: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each named file in `directory`, computed once per version of the file (see the
    module docstring); later calls only stat the files. A file that changes while it is being
    hashed is hashed, but its hash is not kept."""
    directory = Path(directory)
    known = _read_verified(directory)
    entries, out, fresh = {}, {}, False
    for name in names:
        path = directory / name
        before = _stat_key(os.stat(path))
        old = known.get(name)
        if (isinstance(old, dict) and old.get("stat") == before
                and isinstance(old.get("sha256"), str) and _SHA256.fullmatch(old["sha256"])):
            out[name], entries[name] = old["sha256"], old
            continue
        out[name] = sha256_file(path)
        fresh = True
        if _stat_key(os.stat(path)) == before:
            entries[name] = {"stat": before, "sha256": out[name]}
    if fresh or entries.keys() != known.keys():
        _write_verified(directory, entries)
    return out


def verify_files(files: ModelFiles) -> None:
    """Check every file the manifest lists against its recorded size and sha256; ModelError with
    what to do when one is missing, of the wrong size, or changed since the build."""
    root, listed = files.directory, files.manifest.get("files")
    rebuild = f"Rebuild the model: {BUILD_HINT}"
    if not isinstance(listed, dict) or not all(
            isinstance(m, dict) and isinstance(m.get("size"), int) and isinstance(m.get("sha256"), str)
            and _SHA256.fullmatch(m["sha256"]) for m in listed.values()):
        raise ModelError(f"The manifest {root / MANIFEST_NAME} has no sha256 checksums for the model's "
                         f"files (built by an older Tandem, or edited), so they cannot be verified. {rebuild}")
    # The files the server reads must be covered; names are plain file names in the variant.
    needed = {files.onnx.name, files.tokenizer.name} | {p.name for p in root.glob("model.onnx*")}
    unlisted = sorted(needed - listed.keys())
    if unlisted:
        raise ModelError(f"The manifest {root / MANIFEST_NAME} has no checksum for {', '.join(unlisted)}: "
                         f"the model changed after it was built. {rebuild}")
    for name, meta in listed.items():
        p = root / name
        if Path(name).name != name or name.startswith("."):
            raise ModelError(f"The manifest {root / MANIFEST_NAME} lists {name!r}, which is not a file of "
                             f"the model. {rebuild}")
        if not p.is_file() or p.stat().st_size != meta["size"]:
            raise ModelError(f"{p} is missing or has the wrong size (corrupt or half-copied). {rebuild}")
    actual = file_hashes(root, sorted(listed))
    for name in sorted(listed):
        if actual[name] != listed[name]["sha256"]:
            raise ModelError(f"{root / name} is corrupt: its sha256 ({actual[name][:16]}...) is not the one "
                             f"recorded when the model was built ({listed[name]['sha256'][:16]}...). "
                             f"Restore the file, or rebuild the model: {BUILD_HINT}")


def disk_fingerprint(path: str | os.PathLike | None) -> tuple[tuple, tuple]:
    """A cheap picture of the model at `path` as it is on disk: (manifests and bundles, every
    other file), each as (relative path, size, mtime_ns, ctime_ns, inode), hidden files left out.
    A model path is looked at two directory levels deep (bundle, variants); without one, every
    default model under TANDEM_HOME/models is (which one serves depends on settings such as the
    model size and on what is built). A finished build rewrites the first part; any change to a
    file, even in place with the same size, changes the second."""
    root, depth = (Path(path).expanduser(), 2) if path else (tandem_home() / "models", 3)
    commit, rest = [], []

    def add(p: Path, rel: str) -> None:
        try:
            st = os.stat(p)
        except OSError:
            return
        entry = (rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        (commit if p.name in (MANIFEST_NAME, BUNDLE_NAME) else rest).append(entry)

    def walk(d: Path, rel: str, levels: int) -> None:
        try:
            with os.scandir(d) as it:
                found = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            return
        for e in found:
            try:
                is_dir = e.is_dir()
            except OSError:
                continue
            if not is_dir:
                add(Path(e.path), rel + e.name)
            elif levels > 1:
                walk(Path(e.path), f"{rel}{e.name}/", levels - 1)

    if root.is_dir():
        walk(root, "", depth)
    else:
        add(root, ".")
    return tuple(commit), tuple(rest)
