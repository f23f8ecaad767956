"""Run a scripted Neovim session (a Lua driver such as hover.lua) against Tandem.

Same setup as nvim.run_cases (isolated headless Neovim, Tandem configured with the given
settings, the server in Neovim's process group so a timeout kills both), for drivers that
do more than accept one completion.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .nvim import _init_lua, _isolated_env, failure, find_nvim, run_nvim


def run_script(driver: Path, files: dict[str, str], config: dict, settings: dict, *, timeout: float = 180.0,
               env: dict | None = None, keep: bool = False, log_level: str = "WARN") -> dict:
    """Run another driver script (e.g. hover.lua) in a headless Neovim with Tandem set up as
    for `run_cases`. `files` (relative path -> text) are written to a fresh workspace, whose
    path the driver finds in its config as `workspace`; `env` is added to the environment
    (e.g. TANDEM_HOME). Returns the driver's JSON result, with "workdir" added; raises
    NvimError when the driver does not finish."""
    nvim = find_nvim()
    workdir = Path(tempfile.mkdtemp(prefix="tandem-nvim-"))
    run_env = {**_isolated_env(workdir / "home"), **(env or {})}
    root = workdir / "workspace"
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    result_path = workdir / "result.json"
    config_path = workdir / "driver-config.json"
    config_path.write_text(json.dumps({"poll_ms": 5, "total_timeout_ms": int(timeout * 1000), **config,
                                       "workspace": str(root), "result_path": str(result_path)}))
    init = workdir / "init.lua"
    init.write_text(_init_lua(settings, root, config_path, log_level, driver))
    proc, killed = run_nvim(nvim, init, root, run_env, workdir, timeout + 10)
    try:
        data = json.loads(result_path.read_text())
    except (OSError, ValueError):
        data = {"error": "Neovim wrote no result", "events": []}
    data["workdir"] = str(workdir)
    if killed or data.get("error") or not data.get("done"):
        raise failure(data, workdir, f"nvim exit code {proc.returncode}" + (", killed at the timeout" if killed else ""))
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return data
