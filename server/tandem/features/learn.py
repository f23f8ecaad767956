"""`tandem.learn` and model versions, as LSP commands (workspace/executeCommand).

- `tandem.learn` [{"workspace"?, "budgetMinutes"?, "minGain"?, "maxSteps"?, "focus"?, "focusShare"?}]: runs
  `python -m tandem_models.learn --json`, the documents open or edited lately as `--focus`
  (unless "focus" lists other paths), in its own process (lower priority, its own process
  group), so the server keeps serving while it trains; its JSON progress lines become
  `$/progress` reports (step, loss, tokens/s, time left). Cancelling the progress or the request
  stops it (SIGTERM; the run deletes its working files). When the run promotes a version the
  model is reloaded at once (the manifest watch would also see it). Answers the run's outcome.
- `tandem.listModelVersions`, `tandem.switchModelVersion` [id], `tandem.rollbackModelVersion`:
  the versions of the model being served (tandem/learn/versions.py); a switch reloads.
- `tandem.showFeedback`, `tandem.deleteFeedback`: the local feedback log (tandem/learn/feedback.py).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid

from lsprotocol import types

from ..learn import feedback, versions

log = logging.getLogger(__name__)

LEARN = "tandem.learn"
LIST_VERSIONS = "tandem.listModelVersions"
SWITCH_VERSION = "tandem.switchModelVersion"
ROLLBACK_VERSION = "tandem.rollbackModelVersion"
SHOW_FEEDBACK = "tandem.showFeedback"
DELETE_FEEDBACK = "tandem.deleteFeedback"
STOP_GRACE_S = 20.0


def _arg(args, key, default=None):
    first = args[0] if args else None
    return first.get(key, default) if isinstance(first, dict) else default


def _progress_message(ev: dict) -> tuple[str, int | None]:
    kind = ev.get("event")
    left = ev.get("time_left_s")
    left_text = f", {int(left // 60)}:{int(left % 60):02d} left" if isinstance(left, (int, float)) else ""
    if kind == "train":
        return (f"training step {ev['step']}, loss {ev['loss']:.3f}, {ev['tokens_per_s']:.0f} tokens/s{left_text}",
                None)
    if kind == "curve":
        return f"held-out loss {ev['heldout_loss']:.3f} at step {ev['step']}{left_text}", None
    if kind == "eval":
        return f"{ev['phase']}: {ev['done']}/{ev['total']} held-out lines{left_text}", None
    return str(ev.get("message") or ev.get("phase") or kind), None


def register(server) -> None:
    server.learn_process = None

    def doc_text(uri: str):
        doc = server.workspace.text_documents.get(uri)
        return doc.source if doc is not None else None

    def call_later(delay, fn, *args):
        if server.loop is not None and not server.loop.is_closed():
            server.loop.call_later(delay, fn, *args)

    server.feedback = feedback.Tracker(lambda: server.settings.feedback, doc_text, call_later)

    def workspace_root(ls) -> str | None:
        try:
            return ls.workspace.root_path
        except Exception:
            return None

    @server.command(LEARN)
    async def learn(ls, *args):
        args = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
        ws = _arg(args, "workspace") or workspace_root(ls)
        if not ws:
            msg = "no workspace folder is open: open a folder, or pass {\"workspace\": PATH}."
            ls.tell(msg, types.MessageType.Warning)
            return {"ok": False, "error": msg}
        if ls.learn_process is not None and ls.learn_process.returncode is None:
            msg = "a learning run is already in progress; cancel it or wait for it."
            ls.tell(msg, types.MessageType.Warning)
            return {"ok": False, "error": msg}
        settings = ls.settings
        try:
            bundle = versions.bundle_for(ls.model_root())  # the model that serves, e.g. the 1.5B
        except versions.VersionError as e:
            ls.tell(str(e), types.MessageType.Error)
            return {"ok": False, "error": str(e)}
        budget = float(_arg(args, "budgetMinutes", settings.learnBudgetMinutes))
        cmd = [sys.executable, "-m", "tandem_models.learn", str(ws), "--json", "--model-path", str(bundle),
               "--budget-minutes", str(budget), "--min-gain", str(_arg(args, "minGain", settings.learnMinGain))]
        for key, flag in (("maxSteps", "--max-steps"), ("evalSites", "--eval-sites"), ("lr", "--lr"),
                          ("curveSites", "--curve-sites")):
            if _arg(args, key) is not None:
                cmd += [flag, str(_arg(args, key))]
        if _arg(args, "useFeedback"):
            cmd.append("--use-feedback")
        # The files the user works in (open or edited lately, most recent last): they always
        # train, and get a share of the examples (tandem_models.learn --focus).
        focus = _arg(args, "focus")
        if focus is None:
            focus = ls.context.recent_paths()
        for path in focus if isinstance(focus, list) else []:
            if isinstance(path, str) and path:
                cmd += ["--focus", path]
        if _arg(args, "focusShare") is not None:
            cmd += ["--focus-share", str(_arg(args, "focusShare"))]
        # The prompts it trains and evaluates on are this server's: its context settings.
        cmd += ["--context-share", str(settings.contextShare), "--context-sources", ",".join(settings.contextSources),
                "--context-tokens", str(settings.contextTokens)]
        token = str(uuid.uuid4())
        progress = await ls._progress_begin(token, "Tandem: learning from this workspace", cancellable=True)
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, preexec_fn=lambda: os.nice(10))  # serving keeps the CPU first
        ls.learn_process = proc
        cancelled = asyncio.Event()
        if progress and (future := ls.work_done_progress.tokens.get(token)) is not None:
            loop = asyncio.get_running_loop()
            future.add_done_callback(lambda _f: loop.call_soon_threadsafe(cancelled.set))
        outcome: dict = {}
        started = time.monotonic()
        total_s = budget * 60

        async def read_events():
            assert proc.stdout is not None
            async for raw in proc.stdout:
                try:
                    ev = json.loads(raw)
                except ValueError:
                    continue
                if ev.get("event") in ("done", "error", "cancelled"):
                    outcome.update(ev)
                if ev.get("warning") and ev.get("message"):  # e.g. the run may not fit in memory
                    ls.tell(f"Learning: {ev['message']}", types.MessageType.Warning)
                if progress:
                    msg, _ = _progress_message(ev)
                    pct = min(99, int(100 * (time.monotonic() - started) / max(1.0, total_s)))
                    ls.work_done_progress.report(token, types.WorkDoneProgressReport(message=msg, percentage=pct))

        tail: list[str] = []

        async def read_log():
            assert proc.stderr is not None
            async for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                log.debug("learn: %s", line)
                tail[:] = [*tail[-4:], line]

        readers = asyncio.gather(read_events(), read_log())
        waiter = asyncio.ensure_future(cancelled.wait())
        try:
            done, _ = await asyncio.wait({readers, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                await _stop(proc)
                await asyncio.wait_for(readers, STOP_GRACE_S)
            await proc.wait()
        except asyncio.CancelledError:  # $/cancelRequest
            await _stop(proc)
            raise
        finally:
            waiter.cancel()
            ls.learn_process = None
            if progress:
                ls.work_done_progress.end(token, types.WorkDoneProgressEnd(
                    message=outcome.get("decision") or outcome.get("message") or "stopped"))
        kind = outcome.get("event")
        if kind == "done":
            ls.tell(outcome["decision"] + f" (report: {outcome.get('report')})")
            if outcome.get("promoted"):
                ls.start_loading(reason=f"Loading the tuned model ({outcome['decision']})")
            return {"ok": True, **outcome}
        if kind == "cancelled" or cancelled.is_set():
            ls.tell("learning cancelled; nothing of the run was kept.")
            return {"ok": False, "cancelled": True, "message": "cancelled"}
        msg = outcome.get("message")
        if not msg and any("No module named" in line for line in tail):
            msg = ("learning needs the model tools (torch, transformers, peft) in the server's environment: "
                   "`pip install -e .[models]` in the Tandem checkout.")
        msg = msg or f"the learning run failed (exit status {proc.returncode}): {tail[-1] if tail else 'see the log'}"
        ls.tell(msg, types.MessageType.Error)
        return {"ok": False, "error": msg}

    def _bundle(ls):
        return versions.bundle_for(ls.model_root())

    @server.command(LIST_VERSIONS)
    def list_versions(ls, *args):
        try:
            return {"ok": True, "versions": versions.list_versions(_bundle(ls))}
        except versions.VersionError as e:
            return {"ok": False, "error": str(e)}

    def _switched(ls, entry: dict) -> dict:
        ls.start_loading(reason=f"Switching to model version {entry['id']} ({entry['label']})")
        return {"ok": True, "version": entry}

    @server.command(SWITCH_VERSION)
    def switch_version(ls, *args):
        args = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
        vid = args[0] if args and isinstance(args[0], str) else _arg(args, "id")
        if not vid:
            return {"ok": False, "error": "give the version to switch to (its id, or \"base\")."}
        try:
            return _switched(ls, versions.switch(_bundle(ls), vid))
        except versions.VersionError as e:
            ls.tell(str(e), types.MessageType.Warning)
            return {"ok": False, "error": str(e)}

    @server.command(ROLLBACK_VERSION)
    def rollback_version(ls, *args):
        try:
            return _switched(ls, versions.rollback(_bundle(ls)))
        except versions.VersionError as e:
            ls.tell(str(e), types.MessageType.Warning)
            return {"ok": False, "error": str(e)}

    @server.command(SHOW_FEEDBACK)
    def show_feedback(ls, *args):
        return {"ok": True, "enabled": ls.settings.feedback, **feedback.summary()}

    @server.command(DELETE_FEEDBACK)
    def delete_feedback(ls, *args):
        return {"ok": True, "deleted": feedback.delete()}


async def _stop(proc) -> None:
    """SIGTERM the run's process group (it cleans up), SIGKILL after a grace period."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
    except asyncio.TimeoutError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()
