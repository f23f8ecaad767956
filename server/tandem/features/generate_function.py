"""The "Generate function from docstring" code action.

Listing it is cheap (a tree-sitter parse to find the stub at the cursor); the body is written
in `codeAction/resolve`, with cancellable `$/progress`: candidates one by one (greedy, then
sampled), each run against the docstring's examples in the sandbox, the best one kept.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid

from lsprotocol import types

from ..generate.function import SLOT, Candidate, checked_module, generate_candidate, prepare
from ..generate.sandbox import Limits, Verdict, run_examples, scrub
from ..generate.stub import MAX_DOCSTRING_CHARS, Stub, find_stub
from ..inference import Priority
from ..model.backend import Cancelled, prefill
from ..provenance.store import Generated
from ..text import offset_at, position_at
from .context import gather_context
from .tracking import ACCEPT_COMMAND

log = logging.getLogger(__name__)

TITLE = "Generate function from docstring"
KIND = types.CodeActionKind.RefactorRewrite
DATA_TAG = "tandem.generateFunction"


def _is_python(doc) -> bool:
    lang = (getattr(doc, "language_id", None) or "").lower()
    return lang == "python" or (not lang and doc.uri.endswith((".py", ".pyi", ".pyw")))


def actions(ls, params: types.CodeActionParams) -> list[types.CodeAction]:
    only = params.context.only if params.context else None
    if only and not any(KIND.value.startswith(k.value if hasattr(k, "value") else str(k)) for k in only):
        return []
    doc = ls.workspace.get_text_document(params.text_document.uri)
    if not _is_python(doc):
        return []
    text = doc.source
    offset = offset_at(text, params.range.start.line, params.range.start.character, ls.encoding)
    stub = find_stub(text, offset)
    if stub is None:
        return []
    action = types.CodeAction(title=TITLE, kind=KIND, data={
        "tag": DATA_TAG, "uri": doc.uri, "version": doc.version, "offset": stub.start, "name": stub.qualname})
    reason = None
    if len(stub.docstring) > MAX_DOCSTRING_CHARS:
        reason = (f"the docstring is {len(stub.docstring):,} characters long; Tandem writes functions from "
                  f"docstrings of up to {MAX_DOCSTRING_CHARS:,}")
    elif ls.engine is None:
        reason = ls.status.message if ls.status.state == "error" else "the model is still loading"
    elif not ls.settings.enable:
        reason = "Tandem is disabled (tandem.enable)"
    if reason:
        caps = ls.client_capabilities.text_document
        if not (caps and caps.code_action and caps.code_action.disabled_support):
            return []  # a client that cannot show a greyed-out action gets none
        action.disabled = types.CodeActionDisabled(reason=reason)
    return [action]


async def resolve(ls, action: types.CodeAction) -> types.CodeAction:
    data = action.data or {}
    uri = data.get("uri")
    try:
        doc = ls.workspace.get_text_document(uri)
        text, version = doc.source, doc.version  # the edit is computed against this version
    except Exception:
        ls.tell(f"cannot generate `{data.get('name')}`: the document is no longer open.", types.MessageType.Warning)
        return action
    stub = find_stub(text, int(data.get("offset", 0)))
    if stub is None or stub.qualname != data.get("name"):
        ls.tell(f"`{data.get('name')}` is no longer a function with only a docstring; nothing was generated.",
                types.MessageType.Warning)
        return action
    engine = ls.ready_engine()
    if engine is None:
        ls.tell("the model is not ready; try again when the status says ready.", types.MessageType.Warning)
        return action
    model = engine.model
    ls.explainer.note_activity()  # a background explanation steps aside for the user's request
    cancel = threading.Event()
    token = str(uuid.uuid4())
    progress = await ls._progress_begin(token, f"Tandem: writing {stub.qualname}", cancellable=True)
    if progress and (future := ls.work_done_progress.tokens.get(token)) is not None:
        future.add_done_callback(lambda _f: cancel.set())  # the user pressed cancel on the progress
    t0 = time.perf_counter()
    try:
        best, tried, verdict_note, job = await _write(ls, model, doc.uri, text, stub, cancel,
                                                      token if progress else None)
    except asyncio.CancelledError:  # $/cancelRequest: stop the decode loop and the sandbox too
        cancel.set()
        raise
    except Cancelled:
        log.info("generating %s was cancelled", stub.qualname)
        return action
    except Exception as e:
        ls.on_inference_error(e)
        ls.tell(f"generating `{stub.qualname}` failed: {e}", types.MessageType.Error)
        return action
    finally:
        if progress:
            ls.work_done_progress.end(token, types.WorkDoneProgressEnd())
    seconds = time.perf_counter() - t0
    if best is None:
        ls.tell(f"could not write a body for `{stub.qualname}` that parses ({tried} tried). "
                "A more specific docstring may help.", types.MessageType.Warning)
        return action
    summary = best.verdict.summary if best.verdict else verdict_note
    log.info("generated %s in %.1f s: %s (candidate %d of %d tried, mean logprob %.3f)",
             stub.qualname, seconds, summary, best.index + 1, tried, best.mean_logprob)
    v = best.verdict
    if v and v.total and v.passed < v.total:
        failure = f" First failure: {scrub(v.failures[0], 360)}." if v.failures else ""  # the check's output: scrubbed again
        ls.tell(f"wrote `{stub.qualname}`, but only {summary} of its docstring.{failure} Review it.",
                types.MessageType.Warning)
    if doc.version != version or doc.source != text:
        # pygls updates `doc` in place: offsets computed on the old text must not be applied
        # to the new one.
        ls.tell(f"`{stub.qualname}` changed while Tandem was writing it; nothing was applied. "
                "Run the action again.", types.MessageType.Warning)
        return action
    action.title = f"{TITLE}: {summary}"
    action.edit = _edit(ls, doc.uri, version, text, stub, best.replacement)
    sources = [{"uri": doc.uri, **s} for s in job.prompt_sources]
    action.command = _remember(ls, doc.uri, stub, best, model, summary, sources)
    return action


async def _prepare(ls, model, uri: str, text: str, stub: Stub, cancel: threading.Event, priority: Priority):
    """The candidates' prompt (a FunctionJob), as the settings say; on the inference service."""
    settings = ls.settings
    mode = settings.functionPrompt
    if mode == "auto":
        mode = "chat" if model.chat is not None else "fim"
    # Definitions the file imports from other files, as for completions (tandem/context).
    context = await gather_context(ls, uri, text, stub.doc_end)
    return await ls.inference.run(priority, prepare, model, text, stub, mode, settings.contextTokens,
                                  settings.prefixShare, context, settings.contextShare, cancel=cancel,
                                  name="function-prepare")


async def warm(ls, engine, uri: str, offset: int, cancel: threading.Event) -> int | None:
    """The cursor rests on a stub the action is offered for (features/warm.py): compute the
    prompt its first candidate will run, so that taking the action starts decoding at once.
    Tokens computed; None when there is no stub there any more."""
    doc = ls.workspace.text_documents.get(uri)
    stub = find_stub(doc.source, offset) if doc is not None else None
    if stub is None or len(stub.docstring) > MAX_DOCSTRING_CHARS:
        return None
    model = engine.model
    job = await _prepare(ls, model, uri, doc.source, stub, cancel, Priority.WARM)
    return await ls.inference.run(Priority.WARM, prefill, model.lm, job.prompt_ids, SLOT, model.stop_ids,
                                  cancel, cancel=cancel, preemptible=True, name="warm-function")


async def _write(ls, model, uri: str, text: str, stub: Stub, cancel: threading.Event, token: str | None):
    """Candidates until one passes every example (or none can be run), at most the setting."""
    settings = ls.settings
    job = await _prepare(ls, model, uri, text, stub, cancel, Priority.FUNCTION)
    limit = settings.functionCandidates or (8 if model.device == "cuda" else 4)
    note = None
    checking = settings.verifyExamples and bool(job.examples) and job.runnable is None
    if not job.examples:
        note = "no examples in the docstring to check"
    elif not settings.verifyExamples:
        note = "examples not run (tandem.verifyExamples is off)"
    elif job.runnable:
        note = f"examples not run: {job.runnable}"
    if not checking:
        limit = min(limit, 2)  # nothing to choose by but likelihood: greedy, one retry if it fails to parse
    limits = Limits(wall_s=settings.verifyTimeoutMs / 1000, cpu_s=max(1, int(settings.verifyTimeoutMs / 1000) + 1))
    paths = [d] if (d := _doc_dir(uri)) else []
    seen: set[str] = set()
    found: list[Candidate] = []
    tried = 0
    for i in range(limit):
        if token:
            best = min(found, key=Candidate.rank_key) if found else None
            msg = f"candidate {i + 1} of up to {limit}" + (f"; best so far {best.verdict.summary}" if best and best.verdict else "")
            ls.work_done_progress.report(token, types.WorkDoneProgressReport(message=msg, percentage=int(100 * i / limit)))
        tried += 1
        # Not preemptible: a completion arriving meanwhile waits for this candidate to end
        # (restarting it would throw its tokens away); explanations wait for it.
        cand = await ls.inference.run(Priority.FUNCTION, generate_candidate, model, job, i,
                                      settings.maxTokensFunction, cancel, cancel=cancel, name="function")
        if cancel.is_set():
            raise Cancelled()
        if cand is None or cand.body in seen:
            continue
        seen.add(cand.body)
        found.append(cand)
        if not checking:
            break
        cand.verdict = await asyncio.to_thread(run_examples, checked_module(job, cand), job.examples,
                                               limits=limits, cancel=cancel, paths=paths)
        log.info("candidate %d for %s: %s in %.2f s (isolation %s)%s", i + 1, stub.qualname, cand.verdict.summary,
                 cand.verdict.seconds, cand.verdict.isolation,
                 f"; {cand.verdict.failures[0]}" if cand.verdict.failures else "")
        if cancel.is_set():
            raise Cancelled()
        if cand.verdict.passed == cand.verdict.total:
            break
    best = min(found, key=Candidate.rank_key) if found else None
    if best is not None and best.verdict is None:
        note = note or "no examples to check"
    return best, tried, note, job


def _doc_dir(uri: str) -> str | None:
    """The document's folder, so its examples can import sibling modules (read-only)."""
    from pygls.uris import to_fs_path

    path = to_fs_path(uri) if uri.startswith("file:") else None
    return os.path.dirname(path) if path else None


def _edit(ls, uri: str, version: int | None, text: str, stub: Stub, replacement: str) -> types.WorkspaceEdit:
    enc = ls.encoding
    start, end = position_at(text, stub.edit_start, enc), position_at(text, stub.edit_end, enc)
    edit = types.TextEdit(range=types.Range(types.Position(*start), types.Position(*end)), new_text=replacement)
    caps = ls.client_capabilities.workspace
    if caps and caps.workspace_edit and caps.workspace_edit.document_changes and version is not None:
        # Versioned (the version `text` had): an editor whose document changed since refuses
        # the edit instead of applying it in the wrong place.
        ident = types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version)
        return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(text_document=ident, edits=[edit])])
    return types.WorkspaceEdit(changes={uri: [edit]})


def _remember(ls, uri: str, stub: Stub, best: Candidate, model, summary: str,
              sources: list[dict]) -> types.Command:
    """Offer the body to provenance (hover explanations); the command confirms it was applied."""
    v: Verdict | None = best.verdict
    verification = {"passed": v.passed, "total": v.total, "summary": v.summary,
                    "failures": [scrub(f, 360) for f in v.failures[:3]],  # stored on disk: bounded, scrubbed
                    "isolation": scrub(v.isolation, 80), "timed_out": v.timed_out} if v else {"summary": summary}
    gen_id = ls.provenance.offer(Generated(
        uri=uri, start=stub.edit_start, text=best.replacement, kind="function", model=model.describe(),
        created=time.time(), prompt_sources=sources, tokens=list(best.tokens), verification=verification,
        extra={"name": stub.qualname, "candidate": best.index + 1, "sampled": best.sampled,
               "mean_logprob": round(best.mean_logprob, 4)}))
    return types.Command(title="Tandem: generated function applied", command=ACCEPT_COMMAND,
                         arguments=[{"id": gen_id}])

