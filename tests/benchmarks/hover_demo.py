"""Demo and timing: accept a completion from the default model, then hover it.

    .venv/bin/python tests/benchmarks/hover_demo.py [--model DIR]

Runs the real server over stdio (the same pytest-lsp client as the end-to-end tests) on the
default model (built by `make model`), in a temporary workspace with a temporary Tandem
state directory. Asks for a completion, applies it and runs its command as an editor does,
hovers at once (cold: the hover starts the explanation and answers "being written" while
it is), hovers until the explanation is there, then hovers again (cached). Also runs the
"Explain this code" command on the function, twice. Prints the hover text and the times.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lsprotocol import types  # noqa: E402

from tandem.model.loader import default_model_path  # noqa: E402
from tandem.text import offset_at  # noqa: E402
from tests.e2e.harness import tandem  # noqa: E402

SOURCE = '''import re
from collections import Counter


def word_frequencies(text):
    """Count how often each word occurs in `text`, ignoring case and punctuation.

    Returns a Counter mapping each lower-cased word to its number of occurrences.
    """
    
'''
CURSOR = (9, 4)


def apply(text: str, item) -> str:
    r = item.range
    a = offset_at(text, r.start.line, r.start.character)
    b = offset_at(text, r.end.line, r.end.character)
    return text[:a] + item.insert_text + text[b:]


async def hover(s, uri, line, col):
    t = time.perf_counter()
    h = await asyncio.wait_for(s.client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, col))), 600)
    return h, (time.perf_counter() - t) * 1000


def writing(h) -> bool:
    return h is not None and ("being written" in h.contents.value or "writing the explanation" in h.contents.value)


async def run(model: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="tandem-hover-demo-"))
    root = work / "project"
    root.mkdir()
    uri = (root / "words.py").as_uri()
    env = {"TANDEM_HOME": str(work / "home")}  # the state file goes here, not in the user's home
    async with tandem(settings={"modelPath": model}, env=env, root=root) as s:
        await s.wait_for_state("ready", timeout=600)
        print(f"model: {s.statuses[-1]}")
        s.open(uri, SOURCE)
        t = time.perf_counter()
        result = await asyncio.wait_for(s.client.text_document_inline_completion_async(s.inline_params(
            uri, *CURSOR)), 600)
        completion_ms = (time.perf_counter() - t) * 1000
        item = list(result.items)[0]
        text = apply(SOURCE, item)
        r = item.range
        s.change(uri, (r.start.line, r.start.character), (r.end.line, r.end.character), item.insert_text)
        accepted = await asyncio.wait_for(s.client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=item.command.command, arguments=item.command.arguments)), 60)
        t_accept = time.perf_counter()
        print(f"\ncompletion in {completion_ms:.0f} ms, accepted: {accepted}\n--- accepted text ---\n"
              f"{item.insert_text}\n---------------------")

        line, col = CURSOR[0], CURSOR[1] + 2
        first, first_ms = await hover(s, uri, line, col)
        print(f"\ncold hover answered in {first_ms:.0f} ms: "
              f"{'says the explanation is being written' if writing(first) else 'with the explanation'}")
        h = first
        polls = 1
        while writing(h):
            await asyncio.sleep(0.5)
            h, _ = await hover(s, uri, line, col)
            polls += 1
        ready_s = time.perf_counter() - t_accept
        cached = []
        for _ in range(5):
            h2, ms = await hover(s, uri, line, col)
            cached.append(ms)
        assert h2.contents.value == h.contents.value
        print(f"explanation in the hover {ready_s:.1f} s after acceptance ({polls} hovers)")
        print(f"cached hover: median {statistics.median(cached):.1f} ms, max {max(cached):.1f} ms (5 hovers)")
        print("\n=============== hover (Markdown) ===============")
        print(h.contents.value)
        print("================================================")
        explain_log = [m for m in s.logs() if "explanation region:" in m and "written in" in m]
        if explain_log:
            print("server log:", explain_log[-1].split(": ", 1)[-1])

        # "Explain this code" on the whole function, cold then cached.
        end = text.count("\n")
        args = [{"uri": uri, "range": {"start": {"line": 4, "character": 0}, "end": {"line": end, "character": 0}}}]
        times = []
        for _ in range(2):
            t = time.perf_counter()
            md = await asyncio.wait_for(s.client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="tandem.explain", arguments=args)), 600)
            times.append(time.perf_counter() - t)
        print(f"\nexplain command on lines 5-{end}: cold {times[0]:.1f} s, cached {times[1] * 1000:.0f} ms")
        print("=============== tandem.explain (Markdown) ===============")
        print(md)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU used")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default_model_path()), help="model directory (default: the default model)")
    a = ap.parse_args()
    asyncio.run(run(a.model))


if __name__ == "__main__":
    main()
