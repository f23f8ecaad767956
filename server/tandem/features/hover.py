"""textDocument/hover over code Tandem wrote: what it does, how sure the model was, where it
came from. Anywhere else Tandem answers nothing (other servers' hovers are not disturbed).

The explanation is usually written already (in the background, right after acceptance). If
not, the hover waits for it briefly; past that it answers at once that the explanation is
being written (the job goes on, and the next hover shows it). A cancelled hover stops the
generation within one decode step; the job resumes once the user is idle.
"""
from __future__ import annotations

import logging

from lsprotocol import types

from ..provenance.explain import ModelUnavailable
from ..provenance.render import region_markdown
from ..text import offset_at, position_at
from .tracking import region_explanation, start_explaining

log = logging.getLogger(__name__)

HOVER_WAIT_S = 0.8  # how long a hover waits for an explanation still being written


def register(server) -> None:
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls, params: types.HoverParams):
        return await hover_at(ls, params)


async def hover_at(ls, params: types.HoverParams) -> types.Hover | None:
    uri = params.text_document.uri
    doc = ls.workspace.text_documents.get(uri)
    if doc is None:
        return None
    enc = ls.encoding
    text = doc.source
    offset = offset_at(text, params.position.line, params.position.character, enc)
    region = ls.provenance.region_at(uri, offset)
    if region is None:
        return None
    explanation = region_explanation(ls, region)
    status = None
    if explanation is None:
        if ls.model is None:
            status = f"The explanation will be written once the model is ready ({ls.status.message})."
        else:
            job = start_explaining(ls, region, background=True)
            try:
                explanation = await ls.explainer.wait(job, HOVER_WAIT_S)
            except ModelUnavailable:
                status = f"The explanation will be written once the model is ready ({ls.status.message})."
            except Exception as e:
                log.warning("explanation failed: %s", e)
                status = f"Writing the explanation failed: {e}"
            if explanation is None and status is None:
                so_far = f" ({job.tokens} tokens so far)" if job.tokens else ""
                status = f"Tandem is writing the explanation{so_far}; hover again in a moment."
        # The document may have changed while we waited: answer for where the region is now.
        region = ls.provenance.get(region.id)
        doc = ls.workspace.text_documents.get(uri)
        if region is None or doc is None:
            return None
        text = doc.source
    md = region_markdown(region, explanation=explanation, status=status,
                         line_of=lambda off: text.count("\n", 0, off))
    start, end = position_at(text, region.start, enc), position_at(text, region.end, enc)
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=md),
                       range=types.Range(types.Position(*start), types.Position(*end)))
