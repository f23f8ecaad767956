"""`tandem learn` end to end with the tiny model: real peft, the real genai export, the real
serving engine, the real server over stdio.

- over LSP: `tandem.learn` with `$/progress`, promotion on a measured gain, the server then
  serving the new version (status names it), rollback and switch as commands;
- from the shell: a run without gain is not promoted and the served model is unchanged;
- cancellation through the progress leaves nothing behind;
- bad input (empty workspace, only secrets, one file, a second run at once) gets a clear message;
- a run killed outright (SIGKILL) resumes from its checkpoint; a corrupt checkpoint, or one made
  with other settings, is discarded with a message and the run starts over.

The workspace repeats a plugin module whose lines the tiny model can learn in a few hundred
LoRA steps (measured through the completion engine, the served prompt layout with healing:
held-out exact match 0% -> 50% after 600 steps at lr 3e-3, 40 s at load ~4; after 150 steps,
what the earlier layout needed, 0% -> 0%).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from lsprotocol import types

from tandem.learn import versions

from .harness import status_field, tandem

pytest.importorskip("peft")

PLUGIN = '''import registry


def setup(app):
    app.register(registry.HANDLERS)
    app.configure(timeout=30, retries=3)
    return app.finish()


def teardown(app):
    app.unregister(registry.HANDLERS)
    return app.close(force=True)
'''
# Enough to gain on the tiny model, small enough for CI (one thread: the machine is shared).
FAST = {"maxSteps": 600, "lr": 3e-3, "curveSites": 4, "evalSites": 40}


def make_workspace(root: Path, n: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"plugin_{i:02d}.py").write_text(f"# plugin {i}\n" + PLUGIN)
    return root


@pytest.fixture
def bundle(tiny_model: Path, tmp_path: Path, monkeypatch) -> Path:
    """A private copy of the tiny model's bundle (its checkpoint and served variant)."""
    home = tmp_path / "home"
    b = home / "models" / "tiny"
    b.mkdir(parents=True)
    for part in ("hf", "cpu-int8"):
        shutil.copytree(tiny_model / part, b / part, ignore=shutil.ignore_patterns(".tandem-verified.json"))
    shutil.copy2(tiny_model / "tandem-bundle.json", b / "tandem-bundle.json")
    monkeypatch.setenv("TANDEM_HOME", str(home))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return b


def run_learn(ws: Path, bundle: Path, *extra: str, timeout: float = 600) -> tuple[int, list[dict]]:
    cmd = [sys.executable, "-m", "tandem", "learn", str(ws), "--model-path", str(bundle), "--json", "--threads", "1",
           *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events


def no_run_left(bundle: Path) -> bool:
    return not list((bundle / "versions").glob(".run-*"))


async def test_learn_over_lsp_promotes_on_gain_and_the_server_serves_it(bundle, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    # A document the user has open: it is passed as a file they work in (--focus) and trains.
    # (One the split trains on anyway, so the run is the one this test was tuned for.)
    from tandem.learn.workspace import collect, split
    mine = split(collect(ws).files)[0][0].rel
    async with tandem({"modelPath": str(bundle), "learnMinGain": 2}, root=ws) as s:
        await s.wait_for_state("ready", timeout=120)
        s.open((ws / mine).as_uri(), (ws / mine).read_text())
        result = await asyncio.wait_for(s.client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="tandem.learn", arguments=[{"workspace": str(ws), "budgetMinutes": 20, **FAST}])), 900)
        print("learn result:", result)
        assert result["ok"] and result["promoted"], result
        assert result["after"] - result["before"] >= 2
        # $/progress: the training steps with loss, tokens/s and time left
        reports = [v for vs in s.client.progress_reports.values() for v in vs]
        titles = [getattr(v, "title", "") for v in reports if getattr(v, "kind", "") == "begin"]
        assert any("learning" in (t or "") for t in titles)
        steps = [v.message for v in reports if getattr(v, "message", None) and "training step" in v.message]
        assert steps and "loss" in steps[-1] and "tokens/s" in steps[-1] and "left" in steps[-1]
        # the server loads the promoted version and names it
        await s.wait_for(lambda: s.state == "ready" and "tuned on ws" in (status_field(s.statuses[-1], "model") or ""),
                         timeout=120, what="the tuned model served")
        st = await s.client.workspace_execute_command_async(types.ExecuteCommandParams(command="tandem.status"))
        assert "/versions/" in st["modelInfo"]["path"] and st["modelInfo"]["version"].startswith("tuned on ws")
        listed = await s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="tandem.listModelVersions"))
        vid = result["version"]
        assert [v["id"] for v in listed["versions"] if v["active"]] == [vid]
        d = bundle / "versions" / vid
        for f in ("report.md", "report.json", "report.png", "version.json", "adapter", "cpu-int8"):
            assert (d / f).exists(), f
        report = json.loads((d / "report.json").read_text())
        assert report["before"]["sites"] == report["after"]["sites"] > 0 and report["loss"]
        assert report["config"]["focus"] == [mine] and f"`{mine}`" in (d / "report.md").read_text()
        # The held-out loss, before the first step and after the last: it fell with the gain.
        curve = report["training"]["curve"]
        assert curve[0]["step"] == 0 and curve[-1]["step"] == len(report["loss"])
        assert curve[-1]["heldout_loss"] < curve[0]["heldout_loss"] and report["heldout_loss_change_pct"] < 0
        assert any("held-out loss" in (getattr(v, "message", None) or "") for v in reports)
        assert "Held-out loss during training" in (d / "report.md").read_text()
        # ... and through the served graphs themselves (the base's and the promoted one's)
        assert report["after"]["heldout_loss"] < report["before"]["heldout_loss"]
        assert report["after"]["scored_tokens"] == report["before"]["scored_tokens"] > 0
        assert report["served_heldout_loss_change_pct"] < 0 and "teacher-forced" in (d / "report.md").read_text()
        assert no_run_left(bundle)
        # rollback: back to base, served at once; switching forward again works
        rb = await s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="tandem.rollbackModelVersion"))
        assert rb["ok"] and rb["version"]["id"] == "base"
        await s.wait_for(lambda: s.state == "ready" and "tuned" not in (status_field(s.statuses[-1], "model") or "")
                         and len(s.statuses) > 3, timeout=120, what="base served again")
        sw = await s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="tandem.switchModelVersion", arguments=[vid]))
        assert sw["ok"] and versions.active(bundle) == vid


def test_a_model_served_on_a_gpu_gets_its_tuned_version_there_too(bundle, tmp_path):
    """`--cuda` (the default where the model serves on a GPU and one is present): the promoted
    version holds the fp16 CUDA variant beside the CPU one, both named as tuned, so a GPU machine
    keeps serving on the GPU after a promotion. Here without a GPU: the CUDA graph is built and
    its parity checked on the CPU (the gate measures the CPU variant either way)."""
    ws = make_workspace(tmp_path / "ws")
    rc, events = run_learn(ws, bundle, "--max-steps", "600", "--lr", "3e-3", "--curve-sites", "4",
                           "--eval-sites", "40", "--min-gain", "2", "--cuda")
    done = events[-1]
    assert rc == 0 and done["event"] == "done" and done["promoted"], events[-3:]
    d = bundle / "versions" / done["version"]
    info = json.loads((d / "version.json").read_text())
    assert info["variants"] == {"cpu": "cpu-int8", "cuda": "cuda-fp16"}
    for name in info["variants"].values():
        manifest = json.loads((d / name / "tandem-model.json").read_text())
        assert manifest["tuned"]["version"] == done["version"] and manifest["parity"]["argmax_agreement"] > 0.9
    assert json.loads((bundle / "tandem-bundle.json").read_text())["variants"]["cuda"].endswith("/cuda-fp16")
    assert no_run_left(bundle)


def test_no_gain_is_not_promoted(bundle, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    before = (bundle / "tandem-bundle.json").read_text()
    stale = bundle / "versions" / ".run-v20000101-000000"  # left by a run killed outright
    (stale / "merged").mkdir(parents=True)
    rc, events = run_learn(ws, bundle, "--max-steps", "2", "--lr", "1e-7", "--curve-sites", "0")
    done = events[-1]
    assert rc == 0 and done["event"] == "done", events[-3:]
    assert not done["promoted"] and "kept the current model" in done["decision"]
    assert (bundle / "tandem-bundle.json").read_text() == before  # still serving the base
    d = bundle / "versions" / done["version"]
    assert (d / "report.md").exists() and not (d / "cpu-int8").exists()
    assert "kept the current model" in (d / "report.md").read_text()
    with pytest.raises(versions.VersionError, match="not promoted"):
        versions.switch(bundle, done["version"])
    assert no_run_left(bundle)  # the stale run directory is gone too
    # What followed training was timed, for the next run's plan of the budget (models/learn.py).
    timings = json.loads((Path(os.environ["TANDEM_HOME"]) / "state" / "learn-timings.json").read_text())
    [(key, seconds)] = timings.items()
    assert key.startswith("tandem-tiny-test|") and 0 < seconds < 600


async def test_learn_is_cancelled_through_its_progress_and_leaves_nothing(bundle, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    async with tandem({"modelPath": str(bundle)}, root=ws) as s:
        await s.wait_for_state("ready", timeout=120)
        task = asyncio.ensure_future(s.client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="tandem.learn", arguments=[{"workspace": str(ws), "budgetMinutes": 30, "maxSteps": 100000}])))

        def training_token():
            for token, vs in s.client.progress_reports.items():
                if any("training step" in (getattr(v, "message", None) or "") for v in vs):
                    return token
            return None

        await s.wait_for(lambda: training_token() is not None or task.done(), timeout=300, what="training")
        assert not task.done(), task.result()
        s.client.protocol.notify(types.WINDOW_WORK_DONE_PROGRESS_CANCEL,
                                 types.WorkDoneProgressCancelParams(token=training_token()))
        result = await asyncio.wait_for(task, 60)
        assert result == {"ok": False, "cancelled": True, "message": "cancelled"}
        assert any("cancelled" in m for m in s.messages())
        assert no_run_left(bundle) and [p.name for p in (bundle / "versions").iterdir()
                                        if not p.name.startswith(".")] == []


def test_bad_input_gets_a_clear_message(bundle, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, ev = run_learn(empty, bundle)
    assert rc == 2 and "no source files" in ev[-1]["message"]

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / ".env").write_text("API_KEY=x\n")
    (secrets / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (secrets / "keys.py").write_text("KEY = 'sk-abcdefghijklmnopqrstuvwxyz012345'\n")
    (secrets / "blob.py").write_bytes(b"\xff\xfe\x00\x00")
    rc, ev = run_learn(secrets, bundle)
    msg = ev[-1]["message"]
    assert rc == 2 and "no source files" in msg and "secret-looking" in msg and "binary" in msg

    one = tmp_path / "one"
    one.mkdir()
    (one / "a.py").write_text("def f():\n    return 1\n")
    rc, ev = run_learn(one, bundle)
    assert rc == 2 and "at least 2" in ev[-1]["message"]

    rc, ev = run_learn(tmp_path / "missing", bundle)
    assert rc == 2 and "not a directory" in ev[-1]["message"]

    # a second run while one holds the lock
    with versions.locked(bundle, ".learn.lock"):
        rc, ev = run_learn(make_workspace(tmp_path / "ws"), bundle)
    assert rc == 2 and "already running" in ev[-1]["message"]
    assert no_run_left(bundle)


async def test_feedback_is_opt_in_local_and_the_hover_names_the_tuned_version(bundle, tmp_path):
    """A version made by hand (the tiny model's own variant, tagged as tuned) is served; with
    `feedback` on, a shown and accepted completion is logged, and the hover names the version."""
    from tandem.learn import feedback

    d = bundle / "versions" / "v1"
    d.mkdir(parents=True)
    shutil.copytree(bundle / "cpu-int8", d / "cpu-int8")
    manifest = json.loads((d / "cpu-int8" / "tandem-model.json").read_text())
    manifest["tuned"] = {"workspace": str(tmp_path / "proj"), "date": "2026-11-30 01:00 UTC", "gain_points": 7.5}
    (d / "cpu-int8" / "tandem-model.json").write_text(json.dumps(manifest))
    (d / "version.json").write_text(json.dumps({"workspace": str(tmp_path / "proj"), "date": "2026-11-30 01:00 UTC",
                                                "gain_points": 7.5, "variants": {"cpu": "cpu-int8"}}))
    versions.switch(bundle, "v1")
    uri = (tmp_path / "a.py").as_uri()
    text = "def add(a, b):\n    \n"
    async with tandem({"modelPath": str(bundle), "feedback": True}, root=tmp_path) as s:
        await s.wait_for_state("ready", timeout=120)
        assert "tuned on proj at 2026-11-30 01:00 UTC, +7.5 points" in status_field(s.statuses[-1], "model")
        s.open(uri, text)
        item = (await s.complete(uri, 1, 4)).items[0]
        r = item.range
        s.change(uri, (r.start.line, r.start.character), (r.end.line, r.end.character), item.insert_text)
        await s.client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=item.command.command, arguments=item.command.arguments))
        shown = await s.client.workspace_execute_command_async(types.ExecuteCommandParams(command="tandem.showFeedback"))
        assert shown["enabled"] and shown["counts"] == {"shown": 1, "accepted": 1}
        assert shown["path"].startswith(os.environ["TANDEM_HOME"])
        h = await asyncio.wait_for(s.client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(1, 6))), 60)
        assert h is not None and "tuned on proj at 2026-11-30 01:00 UTC, +7.5 points" in h.contents.value
        deleted = await s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="tandem.deleteFeedback"))
        assert deleted == {"ok": True, "deleted": True} and feedback.events() == []


def kill_during_training(ws: Path, bundle: Path, *extra: str, at_step: int = 30, timeout: float = 300) -> int:
    """Start `tandem learn`, SIGKILL it once training passed `at_step` (nothing runs its cleanup,
    as with a power cut); returns the last step reported."""
    cmd = [sys.executable, "-m", "tandem", "learn", str(ws), "--model-path", str(bundle), "--json", "--threads", "1",
           *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ)
    watchdog = threading.Timer(timeout, proc.kill)  # a wait that never ends is a failure, not a hang
    watchdog.start()
    step = 0
    try:
        for line in proc.stdout:
            ev = json.loads(line) if line.startswith("{") else {}
            if ev.get("event") == "train":
                step = ev["step"]
                if step >= at_step:
                    break
    finally:
        proc.kill()
        proc.wait(30)
        watchdog.cancel()
    assert step >= at_step, f"training never reached step {at_step}"
    return step


def test_a_killed_run_resumes_a_corrupt_checkpoint_is_discarded(bundle, tmp_path):
    """A run killed outright leaves its checkpoint; the next run with the same model, workspace
    and settings resumes from it (and says so); a corrupt checkpoint is discarded with a message
    and the run starts over; other settings discard it too. Nothing is left behind at the end."""
    from tests.corrupt import flip_byte

    ws = make_workspace(tmp_path / "ws")
    args = ("--max-steps", "200", "--lr", "3e-3", "--curve-sites", "0", "--eval-sites", "16",
            "--checkpoint-seconds", "0", "--no-promote")
    killed_at = kill_during_training(ws, bundle, *args)
    (run,) = (bundle / "versions").glob(".run-*")
    assert (run / "checkpoint.json").exists() and (run / "before.json").exists()
    rc, events = run_learn(ws, bundle, *args)
    assert rc == 0 and events[-1]["event"] == "done", events[-3:]
    resumed = [e for e in events if "resumed_from_step" in e]
    assert resumed and killed_at - 5 <= resumed[0]["resumed_from_step"] <= killed_at, resumed
    assert "resuming the interrupted run" in resumed[0]["message"]
    assert not [e for e in events if e.get("phase") == "eval-before" and e["event"] == "eval"]  # reused
    report = json.loads((bundle / "versions" / events[-1]["version"] / "report.json").read_text())
    assert report["training"]["resumed_from_step"] == resumed[0]["resumed_from_step"]
    assert len(report["loss"]) == 200  # the steps before the kill and after it, once each
    assert no_run_left(bundle)

    # a corrupt checkpoint: discarded with a clear message, the run starts over and completes
    kill_during_training(ws, bundle, *args)
    (run,) = (bundle / "versions").glob(".run-*")
    flip_byte(next(run.glob("checkpoint-*.pt")))
    rc, events = run_learn(ws, bundle, *args)
    assert rc == 0 and events[-1]["event"] == "done", events[-3:]
    assert any("checkpoint is unusable" in (e.get("message") or "") and "sha256" in e["message"] for e in events)
    assert not [e for e in events if "resumed_from_step" in e]
    assert no_run_left(bundle)

    # other settings: the interrupted run's folder is discarded, this run starts fresh
    kill_during_training(ws, bundle, *args)
    rc, events = run_learn(ws, bundle, *args[:3], "2e-3", *args[4:])
    assert rc == 0 and events[-1]["event"] == "done", events[-3:]
    assert any("discarding an interrupted run's checkpoint" in (e.get("message") or "") for e in events)
    assert not [e for e in events if "resumed_from_step" in e]
    assert no_run_left(bundle)


async def test_versions_learn_and_the_watch_follow_the_model_that_serves(tiny_model, tmp_path, monkeypatch):
    """With `modelSize` 1.5b and its CPU variant built, the 1.5B bundle serves (modelPath empty):
    the version commands act on it, not on the default 0.5B's, and the server reloads when that
    bundle changes on disk (a version switched from the shell). Both "models" are copies of the
    tiny model; what matters is which bundle the server acts on."""
    home = tmp_path / "home"
    bundles = {}
    for size, name in (("0.5b", "qwen2.5-coder-0.5b-instruct"), ("1.5b", "qwen2.5-coder-1.5b-instruct")):
        b = bundles[size] = home / "models" / name
        b.mkdir(parents=True)
        shutil.copytree(tiny_model / "cpu-int8", b / "cpu-int8", ignore=shutil.ignore_patterns(".tandem-verified.json"))
        shutil.copy2(tiny_model / "tandem-bundle.json", b / "tandem-bundle.json")
    big = bundles["1.5b"]
    v = big / "versions" / "v-test"
    shutil.copytree(tiny_model / "cpu-int8", v / "cpu-int8", ignore=shutil.ignore_patterns(".tandem-verified.json"))
    tuned = {"workspace": "/work/ws", "date": "2026-11-30", "gain_points": 3.0}
    (v / "version.json").write_text(json.dumps({**tuned, "variants": {"cpu": "cpu-int8"}}))
    manifest = v / "cpu-int8" / "tandem-model.json"  # as learn writes it: the served label names it
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "tuned": tuned}))
    monkeypatch.setenv("TANDEM_HOME", str(home))
    uri = (tmp_path / "a.py").as_uri()
    async with tandem({"modelSize": "1.5b", "device": "cpu"}) as s:
        await s.wait_for_state("ready", timeout=120)
        run = lambda command, *args: s.client.workspace_execute_command_async(  # noqa: E731
            types.ExecuteCommandParams(command=command, arguments=list(args)))
        st = await run("tandem.status")
        assert st["modelInfo"]["path"].startswith(str(big)), st
        listed = await run("tandem.listModelVersions")
        assert [x["id"] for x in listed["versions"]] == ["base", "v-test"], listed
        # A switch from the shell (`tandem versions switch`) rewrites the 1.5B's bundle: the
        # server, watching the bundle that serves, reloads and names the version.
        versions.switch(big, "v-test")
        s.open(uri, "def add(a, b):\n    ")
        await asyncio.sleep(5.5)  # the server looks at most every 5 s, on a request
        await s.complete(uri, 1, 4)
        await s.wait_for(lambda: "tuned on ws" in (status_field(s.statuses[-1], "model") or ""), timeout=120,
                         what="the switched version served")
        assert (await run("tandem.status"))["modelInfo"]["path"].startswith(str(v))
        rb = await run("tandem.rollbackModelVersion")
        assert rb["ok"] and versions.active(big) == "base" and versions.active(bundles["0.5b"]) == "base"
