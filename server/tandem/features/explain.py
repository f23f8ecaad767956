""""Explain this code": the `tandem.explain` command and its code action.

`tandem.explain` [{"uri", "range", "show"?}] answers Markdown (the same layout as the hover).
The VS Code extension shows the answer itself; a code action's command result is dropped by
editors, so the action sets "show": the server then writes the Markdown to a file under the
Tandem home and asks the editor to open it (window/showDocument), or, for an editor that
cannot, shows it as a message.

`explain_code_actions(ls, params)` is called by the one textDocument/codeAction handler
(features/code_actions.py).
"""
from __future__ import annotations

import asyncio
import logging
import re

from lsprotocol import types

from ..provenance.explain import ModelUnavailable, code_key, request_for, with_context
from ..provenance.render import code_markdown, file_name
from ..text import offset_at
from .context import gather_context
from .tracking import ensure_bound

log = logging.getLogger(__name__)

EXPLAIN_COMMAND = "tandem.explain"
EXPLAIN_TITLE = "Explain this code (Tandem)"
EXPLAIN_TIMEOUT_S = 600.0


def register(server) -> None:
    @server.command(EXPLAIN_COMMAND)
    async def explain(ls, *args):
        _follow_outer_cancel(ls)
        return await explain_command(ls, args[0] if args else None)


def explain_code_actions(ls, params: types.CodeActionParams) -> list[types.CodeAction]:
    """The "Explain this code" action for a non-empty selection (cheap: nothing runs until
    the editor executes its command)."""
    only = params.context.only if params.context else None
    if only:  # the client asks for particular kinds; this action has none
        return []
    r = params.range
    if (r.start.line, r.start.character) == (r.end.line, r.end.character):
        return []
    arg = {"uri": params.text_document.uri, "show": True,
           "range": {"start": {"line": r.start.line, "character": r.start.character},
                     "end": {"line": r.end.line, "character": r.end.character}}}
    return [types.CodeAction(title=EXPLAIN_TITLE,
                             command=types.Command(title=EXPLAIN_TITLE, command=EXPLAIN_COMMAND, arguments=[arg]))]


async def explain_command(ls, arg) -> str:
    if not isinstance(arg, dict) or not isinstance(arg.get("uri"), str):
        raise ValueError('tandem.explain expects [{"uri": ..., "range": {"start": ..., "end": ...}}]')
    uri = arg["uri"]
    ensure_bound(ls)
    doc = ls.workspace.text_documents.get(uri)
    if doc is None:
        try:
            doc = ls.workspace.get_text_document(uri)  # not open: read it from disk
            doc.source
        except Exception:
            return "Tandem: this document is not open, and it could not be read."
    text = doc.source
    start, end = _range_offsets(text, arg.get("range"), ls.encoding)
    if not text[start:end].strip():
        return "Tandem: select some code to explain."
    if ls.model is None:
        md = code_markdown(None, f"The model is not ready ({ls.status.message}); try again once it is.", uri=uri)
        return await _show(ls, md, arg)
    req = request_for(text, start, end, uri, file_name(uri))
    key = code_key(ls.model.label, req)
    ctx = await gather_context(ls, uri, text, start)  # what it uses from other files
    req = with_context(req, ctx, int(ls.settings.contextTokens * ls.settings.contextShare * 3))
    explanation, status = ls.explainer.cached(key), None
    if explanation is None:
        job = ls.explainer.explain(key, req, background=False)
        try:
            explanation = await ls.explainer.wait(job, EXPLAIN_TIMEOUT_S)
        except ModelUnavailable:
            status = f"The model is not ready ({ls.status.message}); try again once it is."
        if explanation is None and status is None:
            status = "The explanation was stopped before it was finished."
    regions = ls.provenance.regions_in(uri, start, end)
    return await _show(ls, code_markdown(explanation, status, uri=uri, regions=regions), arg)


def _range_offsets(text: str, rng, enc: str) -> tuple[int, int]:
    """Offsets of an LSP range given as a dict; an empty range means its whole line."""
    try:
        s, e = rng["start"], rng["end"]
        a = offset_at(text, int(s["line"]), int(s["character"]), enc)
        b = offset_at(text, int(e["line"]), int(e["character"]), enc)
    except (TypeError, KeyError, ValueError):
        raise ValueError("tandem.explain: the range must be {start: {line, character}, end: {...}}") from None
    a, b = min(a, b), max(a, b)
    if a == b:
        a = text.rfind("\n", 0, a) + 1
        nl = text.find("\n", b)
        b = len(text) if nl < 0 else nl
    return a, b


async def _show(ls, md: str, arg: dict) -> str:
    if not arg.get("show"):
        return md
    from ..model.loader import tandem_home

    caps = ls.client_capabilities.window
    if caps and caps.show_document and caps.show_document.support:
        folder = tandem_home() / "state" / "explanations"
        name = re.sub(r"[^\w.-]+", "_", file_name(arg["uri"]))[:60] or "code"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            files = sorted(folder.glob("*.md"), key=lambda p: p.stat().st_mtime)
            for old in files[:-20]:  # keep the last few only
                old.unlink(missing_ok=True)
            path = folder / f"explain-{name}-{abs(hash(md)) % 10**8}.md"
            path.write_text(md, encoding="utf-8")
            await asyncio.wait_for(ls.window_show_document_async(
                types.ShowDocumentParams(uri=path.as_uri(), take_focus=False)), 10)
            return md
        except Exception as e:
            log.warning("could not show the explanation as a document: %s", e)
    ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=md))
    return md


def _follow_outer_cancel(ls) -> None:
    """pygls runs a command handler as a task of its own under the executeCommand request, and
    `$/cancelRequest` cancels only that request's future: make it cancel this task too, so a
    cancelled explanation stops generating."""
    try:
        task = asyncio.current_task()
        outer = ls.protocol._request_futures.get(ls.protocol.msg_id)
    except Exception:
        return
    if task is None or outer is None or outer is task:
        return
    loop = asyncio.get_running_loop()

    def done(f):
        if f.cancelled():
            loop.call_soon_threadsafe(task.cancel)

    outer.add_done_callback(done)
