"""Wiring of tandem/context (other files in prompts) into the server.

- The workspace index starts at the first didOpen (in the background) and follows didSave and
  workspace/didChangeWatchedFiles (registered dynamically for `**/*.py` where the client
  supports it; elsewhere saves and open documents keep it current).
- `block_for(...)`: the context block of an inline completion, gathered off the event loop.
- `tandem/context` {"textDocument": {"uri"}, "position": {line, character}}: what the context
  providers find there (pieces, sources and the rendered text) - for tests and debugging.
"""
from __future__ import annotations

import asyncio
import logging
import os
import uuid

from lsprotocol import types
from pygls.uris import to_fs_path

from ..context import as_markdown
from ..text import offset_at

log = logging.getLogger(__name__)

CONTEXT_REQUEST = "tandem/context"
WATCH_GLOB = "**/*.py"


def register(server) -> None:
    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls, params: types.DidSaveTextDocumentParams):
        ls.context.saved(params.text_document.uri)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def watched(ls, params: types.DidChangeWatchedFilesParams):
        ls.context.files_changed([(c.uri, int(c.type)) for c in params.changes])

    @server.feature(CONTEXT_REQUEST)
    async def context_request(ls, params):
        td = _field(params, "textDocument")
        uri = _field(td, "uri")
        pos = _field(params, "position")
        doc = ls.workspace.text_documents.get(uri) if isinstance(uri, str) else None
        if doc is None:
            return None
        text = doc.source
        offset = offset_at(text, int(_field(pos, "line") or 0), int(_field(pos, "character") or 0), ls.encoding) \
            if pos is not None else len(text)
        s = ls.settings
        ctx = await asyncio.to_thread(ls.context.gather, uri, text, offset, s.contextSources)
        out = {"path": ctx.path, "repo": ctx.repo, "skipped": list(ctx.skipped), "ms": round(ctx.ms, 2),
               "pieces": [{"uri": p.uri, "path": p.rel, "lines": [p.first, p.last], "what": p.what, "text": p.text}
                          for p in ctx.pieces]}
        if ls.model is not None:
            blk = ls.context.block(ls.model.codec, ctx, int(s.contextTokens * s.contextShare))
            out["prompt"] = blk.text if blk is not None else ""
            out["sources"] = blk.sources if blk is not None else []
            out["tokens"] = len(blk.ids) if blk is not None else 0
        else:
            out["prompt"], out["sources"] = as_markdown(ctx, 4000)
        return out


def _field(obj, name: str):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def bind(ls) -> None:
    """Start the index over the workspace folders (once), and ask for file events."""
    if ls.context.index is not None or getattr(ls, "_context_bound", False):
        return
    ls._context_bound = True
    ws = ls.workspace
    roots = []
    for f in ws.folders.values():
        p = to_fs_path(f.uri) if f.uri.startswith("file:") else None
        if p:
            roots.append(p)
    if not roots and ws.root_path:
        roots.append(ws.root_path)
    ls.context.bind(roots)
    caps = ls.client_capabilities.workspace
    watch = caps.did_change_watched_files if caps else None
    if roots and watch is not None and watch.dynamic_registration:
        try:
            asyncio.get_running_loop().create_task(_watch(ls))
        except RuntimeError:
            pass


async def _watch(ls) -> None:
    reg = types.Registration(
        id=str(uuid.uuid4()), method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
        register_options=types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern=WATCH_GLOB)]))
    try:
        await asyncio.wait_for(ls.client_register_capability_async(types.RegistrationParams(registrations=[reg])), 10)
    except Exception as e:
        log.info("the editor did not take the file watcher (%s); saves and open documents keep the index", e)


async def block_for(ls, model, uri: str, text: str, offset: int):
    """The context block for a completion at `offset`, or None (off, nothing found, or failed)."""
    s = ls.settings
    if s.contextShare <= 0 or not s.contextSources:
        return None
    budget = int(s.contextTokens * s.contextShare)
    # On a CPU a changed block means the whole prompt is prefilled again (README, "Context from
    # other files": Enter, p50 2.3 s against 0.6 s with the block kept); on a GPU that costs a
    # few milliseconds, so the block is gathered afresh for every request there.
    # TANDEM_CONTEXT_KEEP=0 / 1 overrides (benchmarks: bench_inline.py's Enter row both ways).
    keep = {"0": False, "1": True}.get(os.environ.get("TANDEM_CONTEXT_KEEP", ""),
                                       getattr(model, "device", "cpu") == "cpu")
    try:
        return await asyncio.to_thread(ls.context.prompt_head, model.codec, uri, text, offset,
                                       s.contextSources, budget, keep)
    except Exception:
        log.exception("gathering the context failed; completing without it")
        return None


async def gather_context(ls, uri: str, text: str, offset: int):
    """What the context providers find at `offset` (a tandem.context.Context), or None when
    context is off or gathering failed."""
    s = ls.settings
    if s.contextShare <= 0 or not s.contextSources:
        return None
    try:
        return await asyncio.to_thread(ls.context.gather, uri, text, offset, s.contextSources)
    except Exception:
        log.exception("gathering the context failed")
        return None


def gather_now(ls, uri: str, text: str, offset: int, budget_s: float = 0.02):
    """The same, synchronously on a short budget (for code paths that cannot await)."""
    s = ls.settings
    if s.contextShare <= 0 or not s.contextSources:
        return None
    try:
        return ls.context.gather(uri, text, offset, s.contextSources, budget_s=budget_s)
    except Exception:
        log.exception("gathering the context failed")
        return None


def sources_of(block) -> list[dict]:
    return list(block.sources) if block is not None else []
