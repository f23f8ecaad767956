"""Run code-server (VS Code in a browser) with Tandem installed, isolated in a temp folder.

`CodeServer` writes user settings, installs the .vsix with `code-server --install-extension`,
starts code-server on 127.0.0.1 (a free port, `--auth none`, telemetry and update checks off,
its own `--user-data-dir`, `--extensions-dir`, `--config` and XDG folders under the temp
folder) and stops it (its whole process group: the extension host and the Tandem server
it started) when done. Every wait has a deadline.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .tools import Tools, node_env


class CodeServerError(AssertionError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a person would have set, plus what keeps a fresh profile quiet and deterministic.
BASE_SETTINGS = {
    "telemetry.telemetryLevel": "off",
    "update.mode": "none",
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": "off",
    "extensions.ignoreRecommendations": True,
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "workbench.enableExperiments": False,
    "workbench.welcomePage.walkthroughs.openOnInstall": False,
    "security.workspace.trust.enabled": False,
    "git.enabled": False,
    "editor.inlineSuggest.enabled": True,
    "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
    "editor.suggestOnTriggerCharacters": False,
    "editor.minimap.enabled": False,
    "files.autoSave": "off",
    "window.restoreWindows": "none",
    "chat.disableAIFeatures": True,
    "chat.commandCenter.enabled": False,
}


class CodeServer:
    def __init__(self, tools: Tools, root: Path, settings: dict, machine_settings: dict | None = None):
        """`settings` go to the user settings; `machine_settings` to the remote machine's
        settings (`<user-data-dir>/Machine/settings.json`, the "Remote" tab of the Settings UI).
        code-server's window is a remote window: there VS Code applies settings of scope
        `machine` / `machine-overridable` (tandem.python, tandem.modelPath) only from the
        machine settings (or the workspace's), and ignores them in the user settings once the
        extension's configuration schema is registered."""
        self.tools = tools
        self.root = root
        self.user_data = root / "user-data"
        self.extensions = root / "extensions"
        self.logs = root / "logs"
        for d in (self.user_data / "User", self.user_data / "Machine", self.extensions, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        (self.user_data / "User" / "settings.json").write_text(json.dumps({**BASE_SETTINGS, **settings}, indent=2))
        (self.user_data / "Machine" / "settings.json").write_text(json.dumps(machine_settings or {}, indent=2))
        self.config = root / "config.yaml"
        self.config.write_text("auth: none\ncert: false\n")
        self.env = node_env(tools.node)
        for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
            d = root / "home" / name.lower()
            d.mkdir(parents=True, exist_ok=True)
            self.env[name] = str(d)
        # No extension gallery: nothing to look up outside this machine (the default, open-vsx,
        # cannot be reached here anyway).
        self.env["EXTENSIONS_GALLERY"] = "{}"
        for name in ("VSCODE_IPC_HOOK_CLI", "VSCODE_CWD", "VSCODE_PID", "TERM_PROGRAM", "PASSWORD", "HASHED_PASSWORD"):
            self.env.pop(name, None)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._out = None

    def _base_cmd(self) -> list[str]:
        return [str(self.tools.node), str(self.tools.code_server), "--config", str(self.config),
                "--user-data-dir", str(self.user_data), "--extensions-dir", str(self.extensions)]

    def install_extension(self, vsix: Path, timeout: float = 180) -> str:
        out = subprocess.run(self._base_cmd() + ["--install-extension", str(vsix), "--force"],
                             env=self.env, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        text = out.stdout + out.stderr
        if out.returncode != 0 or "successfully installed" not in text.lower():
            raise CodeServerError(f"--install-extension {vsix} failed ({out.returncode}):\n{text[-3000:]}")
        listed = subprocess.run(self._base_cmd() + ["--list-extensions", "--show-versions"], env=self.env,
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return listed.stdout.strip()

    def start(self, timeout: float = 120) -> str:
        self.port = free_port()
        self._out = open(self.logs / "code-server.log", "wb")
        cmd = self._base_cmd() + [
            "--bind-addr", f"127.0.0.1:{self.port}", "--auth", "none", "--disable-telemetry",
            "--disable-update-check", "--disable-workspace-trust", "--disable-getting-started-override",
            "--ignore-last-opened", "--disable-proxy",
        ]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.root, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CodeServerError(f"code-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return f"http://127.0.0.1:{self.port}"
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise CodeServerError(f"code-server did not answer {url} within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        path = self.logs / "code-server.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self, grace: float = 5) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                try:
                    os.killpg(pgid, 0)
                except (ProcessLookupError, PermissionError):
                    break
                self.proc.poll()
                time.sleep(0.1)
            else:
                continue
            break
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        if self._out:
            self._out.close()
        self.proc = None

    def __enter__(self) -> "CodeServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
