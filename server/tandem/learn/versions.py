"""Model versions made by `tandem learn`, inside the model's own bundle.

    <bundle>/tandem-bundle.json        variants: {"cpu": "versions/<id>/cpu-int8"} (the active one)
                                       base_variants: what the build wrote, active_version: <id>
    <bundle>/versions/<id>/            cpu-int8/ (the serving variant), adapter/ (LoRA weights),
                                       report.md, report.json, report.png, version.json
    <bundle>/versions/history.json     versions activated, in order (for rollback)

The server loads a bundle by its variants, so switching version is one atomic rewrite of
tandem-bundle.json: `tandem.modelPath` (or the default model) keeps pointing at the bundle, and
the server's manifest watch sees the bundle change and hot-loads the new variant. A version
whose run did not gain keeps its report and adapter but no serving variant, and cannot be
switched to. `base` is always there: the model as built.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from ..model.loader import BUNDLE_NAME, ModelError, default_model_path

VERSIONS_DIR = "versions"
VERSION_FILE = "version.json"
BASE = "base"


class VersionError(ValueError):
    """A version cannot be listed, switched to or rolled back to; the message says why."""


def bundle_for(model_path: str | None) -> Path:
    """The bundle a `tandem.modelPath` value (empty: the default model) names."""
    root = Path(model_path).expanduser() if model_path else default_model_path()
    if not (root / BUNDLE_NAME).is_file():
        if not root.exists():
            raise VersionError(f"no model at {root}: build it first (`make model`).")
        raise VersionError(f"{root} is a single model variant, not a bundle built by `tandem-models build`; "
                           "versions need a bundle.")
    return root


def _read(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, data) -> None:
    """JSON to `path` in one rename, flushed to the disk first: a kill or a crash leaves the old
    file or the new one whole (the bundle switch, the version history, a learning run's checkpoint)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def locked(bundle: Path, name: str = ".switch.lock", blocking: bool = True):
    d = bundle / VERSIONS_DIR
    d.mkdir(exist_ok=True)
    f = open(d / name, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise VersionError("another `tandem learn` is already running on this model; wait for it to "
                               "finish or cancel it.") from None
        yield
    finally:
        f.close()


def read_bundle(bundle: Path) -> dict:
    data = _read(bundle / BUNDLE_NAME)
    if not isinstance(data, dict):
        raise VersionError(f"{bundle / BUNDLE_NAME} is unreadable; rebuild the model.")
    return data


def active(bundle: Path) -> str:
    return read_bundle(bundle).get("active_version") or BASE


def version_info(bundle: Path, vid: str) -> dict | None:
    info = _read(bundle / VERSIONS_DIR / vid / VERSION_FILE)
    return info if isinstance(info, dict) else None


def list_versions(bundle: Path) -> list[dict]:
    current = active(bundle)
    out = [{"id": BASE, "label": "base", "active": current == BASE, "servable": True}]
    d = bundle / VERSIONS_DIR
    if d.is_dir():
        for p in sorted(d.iterdir()):
            if p.name.startswith(".") or not p.is_dir():
                continue
            info = version_info(bundle, p.name)
            if info is None:
                continue
            servable = any((p / v).is_dir() for v in (info.get("variants") or {}).values())
            out.append({**info, "id": p.name, "label": label(info), "active": current == p.name,
                        "servable": servable})
    return out


def label(info: dict | None) -> str:
    """'base', or 'tuned on WORKSPACE at DATE, +N points'."""
    if not info or not info.get("workspace"):
        return "base"
    gain = info.get("gain_points")
    g = f", {gain:+.1f} points" if isinstance(gain, (int, float)) else ""
    return f"tuned on {Path(info['workspace']).name} at {info.get('date', '?')}{g}"


def switch(bundle: Path, vid: str, record: bool = True) -> dict:
    """Make `vid` (or 'base') the version the bundle serves; returns its list entry."""
    with locked(bundle):
        data = read_bundle(bundle)
        base = data.get("base_variants") or data.get("variants") or {}
        if vid == BASE:
            variants = base
        else:
            info = version_info(bundle, vid)
            if info is None:
                raise VersionError(f"no version {vid!r}; `tandem versions` lists them.")
            variants = {dev: f"{VERSIONS_DIR}/{vid}/{name}" for dev, name in (info.get("variants") or {}).items()
                        if (bundle / VERSIONS_DIR / vid / name).is_dir()}
            if not variants:
                raise VersionError(f"version {vid} was not promoted ({info.get('decision', 'no gain')}), so it "
                                   "has no serving model; its report is in "
                                   f"{bundle / VERSIONS_DIR / vid / 'report.md'}.")
        new = {**data, "variants": variants, "base_variants": base}
        if vid == BASE:
            new.pop("active_version", None)
        else:
            new["active_version"] = vid
        if new != data:
            write_json_atomic(bundle / BUNDLE_NAME, new)
        if record:
            hist_path = bundle / VERSIONS_DIR / "history.json"
            hist = _read(hist_path)
            hist = hist if isinstance(hist, list) else []
            if not hist or hist[-1] != vid:
                hist.append(vid)
                write_json_atomic(hist_path, hist[-100:])
    return next(v for v in list_versions(bundle) if v["id"] == vid)


def rollback(bundle: Path) -> dict:
    """Back to the version that was active before the current one (base at the start)."""
    hist = _read(bundle / VERSIONS_DIR / "history.json")
    hist = hist if isinstance(hist, list) else []
    current = active(bundle)
    while hist and hist[-1] == current:
        hist.pop()
    servable = {v["id"] for v in list_versions(bundle) if v["servable"]}
    while hist and hist[-1] not in servable:
        hist.pop()
    target = hist[-1] if hist else BASE
    if target == current:
        raise VersionError("nothing to roll back to: the base model is already active.")
    result = switch(bundle, target, record=False)
    write_json_atomic(bundle / VERSIONS_DIR / "history.json", hist)
    return result


def delete_version(bundle: Path, vid: str) -> None:
    if vid == BASE or active(bundle) == vid:
        raise VersionError(f"{vid} is {'the base model' if vid == BASE else 'active'}; switch away from it first.")
    shutil.rmtree(bundle / VERSIONS_DIR / vid, ignore_errors=True)


def new_version_id() -> str:
    return time.strftime("v%Y%m%d-%H%M%S", time.gmtime())


def describe_model_dir(variant_dir: Path) -> str | None:
    """The version label of a variant directory inside versions/<id>/, else None."""
    p = Path(variant_dir)
    if p.parent.parent.name == VERSIONS_DIR:
        return label(_read(p.parent / VERSION_FILE))
    return None


__all__ = ["ModelError", "VersionError", "bundle_for", "list_versions", "switch", "rollback", "label"]
