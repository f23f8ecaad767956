"""textDocument/codeAction and codeAction/resolve: one handler each (LSP allows one per
method), gathering the actions of the features that offer them. Listing stays cheap; the
expensive part of an action happens in resolve."""
from __future__ import annotations

import logging

from lsprotocol import types

from . import generate_function

log = logging.getLogger(__name__)


def _explain_actions(ls, params) -> list[types.CodeAction]:
    try:
        from .explain import explain_code_actions
    except ImportError:  # the explain feature is optional to this module
        return []
    return explain_code_actions(ls, params)


def register(server) -> None:
    kinds = [generate_function.KIND, types.CodeActionKind.Refactor]

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                    types.CodeActionOptions(code_action_kinds=kinds, resolve_provider=True))
    def code_action(ls, params: types.CodeActionParams):
        found: list[types.CodeAction] = []
        for provider in (generate_function.actions, _explain_actions):
            try:
                found.extend(provider(ls, params))
            except Exception:  # one broken provider must not hide the others' actions
                log.exception("listing code actions failed in %s", getattr(provider, "__name__", provider))
        start, end = params.range.start, params.range.end
        if (start.line, start.character) == (end.line, end.character):
            # The editor asks on every cursor move (the light bulb): the cursor is here. On a
            # stub the docstring action is offered for, the user is about to take it: its
            # prompt is the one to warm.
            stub = any(a.title == generate_function.TITLE and a.disabled is None for a in found)
            ls.warmer.cursor_at(params.text_document.uri, start.line, start.character, stub=stub)
        return found or None

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def resolve(ls, action: types.CodeAction):
        data = action.data if isinstance(action.data, dict) else {}
        if data.get("tag") == generate_function.DATA_TAG:
            return await generate_function.resolve(ls, action)
        return action
