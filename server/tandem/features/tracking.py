"""Following what Tandem wrote: acceptance, document changes, persistence.

- `tandem.completionAccepted` [{"id": ...}]: the editor inserted an offered item (inline
  completion, generated function): remember it as a region (tandem/provenance/store.py)
  and start writing its explanation in the background.
- didOpen / didChange / didClose: pygls updates its documents itself (its built-in handler
  applies the changes first and then calls these), so they only keep the regions in step.
- The state file is written a moment after changes settle, at once on acceptance and close,
  and at exit.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import weakref

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..provenance.explain import Explanation, request_for, with_context
from ..provenance.render import file_name
from ..provenance.store import Region
from ..text import index_of
from . import context as context_feature

log = logging.getLogger(__name__)

ACCEPT_COMMAND = "tandem.completionAccepted"
DOCUMENT_STATE = "tandem/documentState"
SAVE_DELAY_S = 1.0
REGION_KEY = "region:"


def register(server) -> None:
    store = server.provenance
    explainer = server.explainer

    def on_explained(key: str, explanation: Explanation) -> None:
        if key.startswith(REGION_KEY):
            store.set_explanation(key[len(REGION_KEY):], explanation.to_json())
            schedule_save(server)

    explainer.on_done = on_explained
    store.listeners.append(lambda region: _explain_in_background(server, region))
    ref = weakref.ref(server)
    atexit.register(lambda: (s := ref()) is not None and _save_now(s))
    # The stdio server ends with os._exit (it must not wait for a model still loading), which
    # skips atexit: it runs its protocol's exit hooks instead.
    hooks = getattr(server.protocol, "exit_hooks", None)
    if hooks is not None:
        hooks.append(lambda: (s := ref()) is not None and _save_now(s))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls, params: types.DidOpenTextDocumentParams):
        ensure_bound(ls)
        ls.provenance.opened(params.text_document.uri, params.text_document.text)
        context_feature.bind(ls)
        td = params.text_document
        ls.context.opened(td.uri, td.text, td.version)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls, params: types.DidChangeTextDocumentParams):
        uri = params.text_document.uri
        doc = ls.workspace.text_documents.get(uri)
        changes = []
        for c in params.content_changes:
            rng = getattr(c, "range", None)
            if rng is None:
                changes.append((None, c.text))
            else:
                changes.append(((rng.start.line, rng.start.character, rng.end.line, rng.end.character), c.text))
        if ls.provenance.changed(uri, changes, doc.source if doc is not None else None, ls.encoding):
            schedule_save(ls)
        if doc is not None:
            ls.context.changed(uri, doc.source, doc.version)
        ls.warmer.edited(uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls, params: types.DidCloseTextDocumentParams):
        ls.provenance.closed(params.text_document.uri)
        ls.context.closed(params.text_document.uri)
        ls.warmer.closed(params.text_document.uri)
        _save_now(ls)

    @server.feature(DOCUMENT_STATE)
    def document_state(ls, params):
        """The server's copy of a document ({"uri", "version", "text", "lineCount"}, or null
        when it is not open): lets a client or a test check that text sync holds."""
        uri = _field(_field(params, "textDocument"), "uri")  # pygls reads untyped params as Object
        if not isinstance(uri, str):
            raise JsonRpcInvalidParams(f'{DOCUMENT_STATE}: expected {{"textDocument": {{"uri": "..."}}}}')
        doc = ls.workspace.text_documents.get(uri)
        if doc is None:
            return None
        return {"uri": uri, "version": doc.version, "text": doc.source,
                "lineCount": index_of(doc.source).line_count}

    @server.command(ACCEPT_COMMAND)
    def completion_accepted(ls, *args):
        gid = _id_of(args)
        if gid is None:
            log.warning("%s: expected [{\"id\": ...}], got %r", ACCEPT_COMMAND, args)
            return None
        return accept(ls, gid)


def _field(obj, name: str):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def ensure_bound(ls) -> None:
    if not ls.provenance.bound:
        ws = ls.workspace
        root = ws.root_uri
        if root is None and ws.folders:
            root = next(iter(ws.folders.values())).uri
        ls.provenance.bind(root)


def _id_of(args) -> str | None:
    if not args:
        return None
    a = args[0]
    if isinstance(a, dict):
        a = a.get("id")
    return a if isinstance(a, str) and a else None


def accept(ls, gid: str) -> dict | None:
    """Remember the offer `gid` as a region of its document. Returns {"region": id} or None."""
    ensure_bound(ls)
    store = ls.provenance
    g = store.pending(gid)
    if g is None:
        log.info("accepted offer %s is unknown (expired, or from before a restart)", gid)
        return None
    if (fb := getattr(ls, "feedback", None)) is not None:  # the opt-in local log (tandem/learn/feedback.py)
        fb.accepted(gid)
    resolve = g.extra.pop("_resolve", None)
    if callable(resolve):  # the details that were too costly to work out for every offer
        try:
            for k, v in resolve().items():
                setattr(g, k, v)
        except Exception:
            log.exception("could not resolve the offer's provenance details")
    doc = ls.workspace.text_documents.get(g.uri)
    region = store.accept(gid, doc.source if doc is not None else None)
    _save_now(ls)
    if region is None:
        return None
    log.info("remembered %s (%d chars) at %d in %s", region.kind, len(region.text), region.start, region.uri)
    return {"region": region.id}


def region_request(ls, region: Region):
    """The explanation request for a region: the code as generated, with the lines around
    where it is now."""
    text = ls.provenance.text_of(region.uri)
    if text is None:
        doc = ls.workspace.text_documents.get(region.uri)
        text = doc.source if doc is not None else None
    if text is None:
        text = region.text
        start, end = 0, len(text)
    else:
        start, end = region.start, region.end
    req = request_for(text, start, end, region.uri, file_name(region.uri))
    req.code = region.text  # an edited region is explained as Tandem wrote it
    # What the code uses from other files (tandem/context), on a short budget: this runs on
    # the event loop, and a late provider's result serves the next request.
    return with_context(req, context_feature.gather_now(ls, region.uri, text, start), _context_chars(ls))


def _context_chars(ls) -> int:
    return int(ls.settings.contextTokens * ls.settings.contextShare * 3)  # ~3 characters a token


def region_explanation(ls, region: Region) -> Explanation | None:
    key = REGION_KEY + region.id
    e = ls.explainer.cached(key)
    if e is None and region.explanation:
        e = Explanation.from_json(region.explanation)
        if e is not None:
            ls.explainer.remember(key, e)
    return e


def start_explaining(ls, region: Region, background: bool = True):
    return ls.explainer.explain(REGION_KEY + region.id, region_request(ls, region), background=background)


def _explain_in_background(ls, region: Region) -> None:
    if ls.model is None or region_explanation(ls, region) is not None:
        return
    try:
        start_explaining(ls, region, background=True)
    except RuntimeError:  # no running loop (a unit test driving the store directly)
        pass


def schedule_save(ls) -> None:
    loop = _loop(ls)
    if loop is None:
        _save_now(ls)
        return
    handle = getattr(ls, "_provenance_save", None)
    if handle is not None:
        handle.cancel()
    ls._provenance_save = loop.call_later(SAVE_DELAY_S, _save_now, ls)


def _save_now(ls) -> None:
    handle = getattr(ls, "_provenance_save", None)
    if handle is not None:
        handle.cancel()
        ls._provenance_save = None
    try:
        ls.provenance.save()
    except Exception:
        log.exception("saving the provenance state failed")


def _loop(ls):
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
