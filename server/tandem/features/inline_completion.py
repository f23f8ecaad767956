"""textDocument/inlineCompletion: ghost text while typing.

A newer request for the same document cancels the older one, and `$/cancelRequest` does too;
either way the decode loop stops within one token step. A request also pushes background
explanation work aside (it resumes once the user is idle).

Every item is offered to provenance (tandem/provenance) and carries the command
`tandem.completionAccepted` with its id: the editor runs it after inserting the item, and the
server then remembers the inserted text (for hover explanations).
"""
from __future__ import annotations

import logging
import threading
import time

from lsprotocol import types

from ..inference import Priority
from ..model.backend import Cancelled
from ..provenance.confidence import spans_of_ids
from ..provenance.store import Generated
from ..text import line_end, line_span, offset_at, position_at
from .context import block_for, sources_of
from .tracking import ACCEPT_COMMAND

log = logging.getLogger(__name__)


def register(server) -> None:
    # The options make pygls advertise inlineCompletionProvider; without them editors never ask.
    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls, params: types.InlineCompletionParams):
        return await complete(ls, params)


async def complete(ls, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    empty = types.InlineCompletionList(items=[])
    if not ls.settings.enable:
        return empty
    engine = ls.ready_engine()
    if engine is None:
        return empty
    ls.explainer.note_activity()  # the user is typing: background explanations step aside
    ls.warmer.stand_down()  # the completion itself computes the prompt now
    uri = params.text_document.uri
    doc = ls.workspace.get_text_document(uri)
    text = doc.source
    encoding = ls.encoding  # negotiated: Neovim counts UTF-8
    offset = offset_at(text, params.position.line, params.position.character, encoding)

    if (older := ls.inflight.get(uri)) is not None:
        older.set()  # the user typed on: that answer is stale
    cancel = threading.Event()
    ls.inflight[uri] = cancel
    # Other files' definitions and similar code, on their time budget (tandem/context).
    block = await block_for(ls, engine.model, uri, text, offset)
    try:
        # Highest priority on the inference service; `$/cancelRequest` (the task's cancellation)
        # sets `cancel` there, which stops the decode loop within one step or drops the job
        # while it is still queued.
        result = await ls.inference.run(Priority.COMPLETION, engine.complete, text, offset, ls.settings, cancel,
                                        block, cancel=cancel, name="completion")
    except Cancelled:
        return empty
    except Exception as e:  # keep serving; a GPU failure switches to the CPU
        ls.on_inference_error(e)
        return empty
    finally:
        if ls.inflight.get(uri) is cancel:
            del ls.inflight[uri]
    if result is None:
        return empty
    ls.last_completion = {"promptTokens": result.prompt_tokens, "reusedTokens": result.reused_tokens,
                          "generatedTokens": result.generated_tokens, "latencyMs": round(result.latency_ms, 1),
                          "cached": result.cached}
    if not result.cached:
        ls.on_inference_ok()
        ls.set_status(lastLatencyMs=round(result.latency_ms, 1))
    # Always replace up to the end of the line, carrying what the suggestion keeps of it:
    # every client then shows and applies the same thing (Neovim draws a ranged item over the
    # rest of the line; VS Code, given no range, would replace to the line end anyway).
    end = line_end(text, offset)
    kept = text[min(offset + result.replace_chars, end):end]
    start_line, start_char = position_at(text, offset, encoding)
    end_line, end_char = position_at(text, end, encoding)
    item = types.InlineCompletionItem(
        insert_text=result.text + kept,
        range=types.Range(types.Position(start_line, start_char), types.Position(end_line, end_char)),
    )
    item.command = _offer(ls, engine, uri, text, offset, result, item.insert_text, sources_of(block))
    return types.InlineCompletionList(items=[item])


def _offer(ls, engine, uri: str, text: str, offset: int, result, insert_text: str,
           context_sources: list[dict] = ()) -> types.Command:
    """Offer the item to provenance; its command tells the server it was accepted. The lines
    the prompt covered come from the engine; the per-token confidence is worked out only on
    acceptance, from the generated tokens themselves."""
    model = engine.model
    # The prompt's lines; with no suffix in it, it ends on the cursor's line.
    lines = line_span(text, result.prompt_start, max(result.prompt_end, offset + 1))
    codec, completion = model.codec, result.text
    ids, logprobs, skip = result.token_ids, result.logprobs, result.token_skip

    def resolve() -> dict:
        return {"prompt_sources": [{"uri": uri, "lines": lines, "what": "text around the cursor"},
                                   *context_sources],
                "tokens": spans_of_ids(codec, ids, logprobs, skip=skip, limit=len(completion))}

    gid = ls.provenance.offer(Generated(
        uri=uri, start=offset, text=insert_text, kind="inline", model=model.describe(), created=time.time(),
        prompt_sources=[], extra={"own_chars": len(completion), "latency_ms": round(result.latency_ms, 1),
                                  "cached": result.cached, "_resolve": resolve}))
    if (fb := getattr(ls, "feedback", None)) is not None:  # the opt-in local log (tandem/learn/feedback.py)
        fb.shown(gid, uri, text, offset, insert_text)
    return types.Command(title="Tandem: completion accepted", command=ACCEPT_COMMAND, arguments=[{"id": gid}])
