"""Warming the completion cache where the cursor rests.

VS Code does not ask for inline completions when the cursor moves (its maintainers turned that
off as distracting), so the first keystroke at a new place pays for the whole prompt: about 2 s
on 2 CPU cores. The editor does say where the cursor is: it asks for code actions there (the
light bulb) each time the cursor moves. When the cursor has rested at one place for
`WARM_DELAY_S`, in a document the user has edited lately, the server runs the prompt a
completion there would send through the model, without generating (`CompletionEngine.warm`),
so the first completion after the user starts typing there reuses it. Any completion (and a
docstring candidate) takes the model first: the warm steps aside within one prefill pass and
keeps what it computed. On a stub the "Generate function from docstring" action is offered
for, the prompt warmed is that action's, in its own cache slot, so taking the action starts
decoding at once. Local models only (a team's server has its own prefix cache);
`tandem.warmAtCursor` false turns it off.

Browsing is not warmed: a document is warmed when it changed in the last `EDITED_WITHIN_S`, or
when it lies in a workspace folder while the user has changed some document in that time (a
file of the project opened to work in); a library file opened to read while nothing is being
edited, files outside the workspace that were not edited, and selections (a range, not a
cursor) are left alone, as is a place already warmed at the same document version.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time

from ..inference import Priority
from ..model.backend import Cancelled
from ..text import offset_at
from . import generate_function
from .context import block_for

log = logging.getLogger(__name__)

WARM_DELAY_S = 0.4  # the cursor rests this long before the model is asked (moves in between cost nothing)
EDITED_WITHIN_S = 600.0  # only documents the user changed this recently


class Warmer:
    def __init__(self, ls):
        self.ls = ls
        self._task: asyncio.Task | None = None
        self._edited: dict[str, float] = {}  # uri -> when it last changed (open documents)
        self._done: tuple | None = None  # (uri, version, offset, engine, stub) of the last finished warm
        self.stats = {"warmed": 0, "tokens": 0, "stepped_aside": 0}

    def edited(self, uri: str) -> None:
        self._edited[uri] = time.monotonic()

    def closed(self, uri: str) -> None:
        self._edited.pop(uri, None)

    def stand_down(self) -> None:
        """A completion is asked for: a warm not yet started is not wanted any more (one running
        steps aside by itself, the inference service preempts it)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def cursor_at(self, uri: str, line: int, character: int, stub: bool = False) -> None:
        """The editor says the cursor is here (a code-action request for an empty range);
        `stub`: on a stub the docstring action is offered for, whose prompt is warmed instead."""
        self.stand_down()
        if not self._wanted(uri):
            return
        try:
            self._task = asyncio.get_running_loop().create_task(self._warm_later(uri, line, character, stub))
        except RuntimeError:  # no event loop (a handler called outside the server): nothing to do
            self._task = None

    def _wanted(self, uri: str) -> bool:
        ls = self.ls
        if not (ls.settings.enable and ls.settings.warmAtCursor):
            return False
        if ls.engine is None or ls.engine.model.device == "remote":
            return False
        now = time.monotonic()
        changed = self._edited.get(uri)
        if changed is not None and now - changed < EDITED_WITHIN_S:
            return True
        editing = any(now - t < EDITED_WITHIN_S for t in self._edited.values())
        return editing and self._in_workspace(uri)

    def _in_workspace(self, uri: str) -> bool:
        ws = self.ls.workspace
        roots = [f.uri for f in ws.folders.values()] or ([ws.root_uri] if ws.root_uri else [])
        return any(uri.startswith(r.rstrip("/") + "/") for r in roots if r and r.startswith("file:"))

    async def _warm_later(self, uri: str, line: int, character: int, stub: bool) -> None:
        await asyncio.sleep(WARM_DELAY_S)
        ls = self.ls
        engine, doc = ls.engine, ls.workspace.text_documents.get(uri)
        if engine is None or doc is None or ls.inflight or not self._wanted(uri):
            return  # unloaded, closed, or a completion is already running
        text = doc.source
        offset = offset_at(text, line, character, ls.encoding)
        key = (uri, doc.version, offset, id(engine), stub)
        if key == self._done:
            return
        cancel = threading.Event()
        try:
            if stub:  # the docstring action's prompt, in its own cache slot
                computed = await generate_function.warm(ls, engine, uri, offset, cancel)
                if computed is None:
                    return
            else:
                block = await block_for(ls, engine.model, uri, text, offset)
                computed = await ls.inference.run(Priority.WARM, engine.warm, text, offset, ls.settings, cancel,
                                                  block, cancel=cancel, preemptible=True, name="warm")
        except Cancelled:  # a completion or a docstring candidate took the model
            self.stats["stepped_aside"] += 1
            return
        except asyncio.CancelledError:  # the cursor moved on, or a completion was asked for
            self.stats["stepped_aside"] += 1
            raise
        except Exception as e:  # as for a completion: a GPU lost here moves the model to the CPU
            ls.on_inference_error(e)
            return
        self._done = key
        self.stats["warmed"] += 1
        self.stats["tokens"] += computed
        # Once at INFO, so the editor's log shows the feature at work; then at DEBUG.
        (log.debug if self.stats["warmed"] > 1 else log.info)(
            "warmed the prompt where the cursor rests (%d tokens computed%s; tandem.warmAtCursor)", computed,
            ", the docstring action's" if stub else "")
