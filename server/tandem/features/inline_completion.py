"""textDocument/inlineCompletion: ghost text while typing.

A newer request for the same document cancels the older one, and `$/cancelRequest` does too;
either way the decode loop stops within one token step.
"""
from __future__ import annotations

import asyncio
import logging
import threading

from lsprotocol import types

from ..model.runtime import Cancelled
from ..text import UTF16, line_end, offset_at, position_at

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
    uri = params.text_document.uri
    doc = ls.workspace.get_text_document(uri)
    text = doc.source
    encoding = str(ls.workspace.position_encoding or UTF16)  # negotiated: Neovim counts UTF-8
    offset = offset_at(text, params.position.line, params.position.character, encoding)

    if (older := ls.inflight.get(uri)) is not None:
        older.set()  # the user typed on: that answer is stale
    cancel = threading.Event()
    ls.inflight[uri] = cancel
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(ls.inference, engine.complete, text, offset, ls.settings, cancel)
    except asyncio.CancelledError:
        cancel.set()  # $/cancelRequest: stop the decode loop, not just the await
        raise
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
    if not result.cached:
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
    return types.InlineCompletionList(items=[item])
