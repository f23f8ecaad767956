"""Drive the real server process over stdio with pytest-lsp's real client.

Every wait has a timeout; notifications are collected as they arrive and polled for, so a
notification that came before we started waiting is never missed.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from contextlib import asynccontextmanager
from typing import Union
from pathlib import Path

from lsprotocol import types
from pytest_lsp import ClientServerConfig, client_capabilities

TIMEOUT = 60.0


def apply_inline(text: str, item: types.InlineCompletionItem) -> str:
    """`text` after accepting `item` the way an editor does (UTF-16 range)."""
    from tandem.text import offset_at

    r = item.range
    start = offset_at(text, r.start.line, r.start.character)
    end = offset_at(text, r.end.line, r.end.character)
    return text[:start] + item.insert_text + text[end:]


def action_params(uri: str, line: int, character: int, end: tuple[int, int] | None = None) -> types.CodeActionParams:
    """A code-action request at the cursor (or for a selection ending at `end`), as an editor sends
    on every cursor move for its light bulb."""
    pos = types.Position(line, character)
    return types.CodeActionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                  range=types.Range(pos, types.Position(*end) if end else pos),
                                  context=types.CodeActionContext(diagnostics=[]))


def status_field(params, name):
    return params.get(name) if isinstance(params, dict) else getattr(params, name, None)


class Session:
    def __init__(self, client):
        self.client = client
        self.statuses: list = []
        self.version = 0

        # lsprotocol reads a `(Command | CodeAction)[]` answer's CodeAction that carries a
        # `command` as a bare Command; tell them apart by the type of `command` (see FACTS).
        converter = client.protocol._converter

        def command_or_action(obj, _type):
            kind = types.Command if isinstance(obj.get("command"), str) else types.CodeAction
            return converter.structure(obj, kind)

        converter.register_structure_hook(Union[types.Command, types.CodeAction], command_or_action)

        @client.feature("tandem/status")
        def on_status(params):  # no `ls` first parameter: pygls then passes params alone
            self.statuses.append(params)

    @property
    def state(self) -> str | None:
        return status_field(self.statuses[-1], "state") if self.statuses else None

    async def wait_for(self, predicate, timeout: float = TIMEOUT, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; statuses={self.statuses[-3:]}")

    async def wait_for_state(self, state: str, timeout: float = TIMEOUT):
        await self.wait_for(lambda: self.state == state, timeout, f"status {state!r}")

    def check_backend(self, backend: dict) -> None:
        """The model is served where the `backend` fixture asked (a remote endpoint: device "remote")."""
        device = status_field(self.statuses[-1], "device") if self.statuses else None
        assert device == ("remote" if backend.get("backend") == "openai" else device) and device, self.statuses[-1:]

    def open(self, uri: str, text: str, language: str = "python") -> None:
        self.version += 1
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id=language, version=self.version, text=text)))

    def change(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        self.version += 1
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=self.version),
            [types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(*start), types.Position(*end)), text=text)]))

    def inline_params(self, uri: str, line: int, character: int) -> types.InlineCompletionParams:
        return types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))

    async def complete(self, uri: str, line: int, character: int, timeout: float = TIMEOUT):
        result = await asyncio.wait_for(
            self.client.text_document_inline_completion_async(self.inline_params(uri, line, character)), timeout)
        result.items = list(result.items)  # the client may hand a tuple back
        return result

    async def code_actions(self, uri: str, line: int, character: int, end: tuple[int, int] | None = None,
                           timeout: float = TIMEOUT) -> list:
        """The code actions at the cursor (what the editor asks on every cursor move)."""
        result = await asyncio.wait_for(
            self.client.text_document_code_action_async(action_params(uri, line, character, end)), timeout)
        return list(result or [])

    async def command(self, name: str, *arguments, timeout: float = TIMEOUT):
        """`workspace/executeCommand` (e.g. tandem.status) and its answer."""
        return await asyncio.wait_for(self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=list(arguments) or None)), timeout)

    def complete_raw(self, uri: str, line: int, character: int, msg_id: str):
        """Send the request with a known id (to cancel it) and return an awaitable."""
        fut = self.client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                                self.inline_params(uri, line, character), msg_id=msg_id)
        return asyncio.wrap_future(fut)

    def cancel(self, msg_id: str) -> None:
        self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))

    async def set_settings(self, settings: dict) -> None:
        self.client.set_configuration(settings, section="tandem")
        self.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))

    def messages(self, kind: types.MessageType | None = None) -> list[str]:
        return [m.message for m in self.client.messages if kind is None or m.type == kind]

    def logs(self) -> list[str]:
        return [m.message for m in self.client.log_messages]


@asynccontextmanager
async def tandem(settings: dict | None = None, env: dict | None = None, editor: str = "visual-studio-code",
                 root: Path | None = None):
    server_env = {**os.environ, **(env or {})}
    config = ClientServerConfig(server_command=[sys.executable, "-m", "tandem", "--log-level", "DEBUG"],
                                server_env=server_env)
    client = await asyncio.wait_for(config.start(devtools=None), TIMEOUT)
    session = Session(client)
    if settings is not None:
        client.set_configuration(settings, section="tandem")
    caps = client_capabilities(editor)
    root_uri = root.as_uri() if root else None
    result = await asyncio.wait_for(client.initialize_session(types.InitializeParams(
        capabilities=caps, root_uri=root_uri, process_id=os.getpid())), TIMEOUT)
    session.initialize_result = result
    try:
        yield session
    finally:
        try:
            await asyncio.wait_for(client.shutdown_session(), 20)
        finally:
            await asyncio.wait_for(client.stop(), 20)
