"""The server's copy of each open document, kept in step with the client's exactly as LSP 3.18
defines text sync.

pygls's TextDocument splits lines with str.splitlines (which also breaks at U+2028, U+2029,
U+0085, \\x0b, \\x0c and \\x1c) and its position codec clamps a character one past a line's end
to between "\\r" and "\\n". Both made the copy diverge from the client's. Here every incremental
change is applied through tandem.text (the one position implementation every feature uses):
lines end at \\r\\n, \\r or \\n only; a character past a line's end is the end of the line,
before its terminator; a line past the end is the end of the document; a reversed range is
read start-first (as vscode-languageserver's TextDocument does).

The protocol installs TandemWorkspace in place of pygls's Workspace (see protocol.py), so
pygls's own handlers (didOpen / didChange / didClose) fill these documents.
"""
from __future__ import annotations

from typing import Sequence

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace
from pygls.workspace.position_codec import PositionCodec, ServerTextPosition

from . import text as T


def _encoding(codec: PositionCodec) -> str:
    return str(codec.encoding or T.UTF16)


class LspPositionCodec(PositionCodec):
    """pygls's codec API (code-point columns into `lines`) with LSP 3.18 clamping. `lines` are
    LSP lines with their terminators (TandemDocument.lines)."""

    def position_from_client_units(self, lines: Sequence[str], position: types.Position) -> ServerTextPosition:
        if not lines:
            return ServerTextPosition(0, 0)
        if position.line >= len(lines):
            last = lines[-1]
            if last.endswith(("\r", "\n")):  # the empty line after a final terminator
                return ServerTextPosition(len(lines), 0)
            return ServerTextPosition(len(lines) - 1, len(last))
        line = lines[position.line]
        content = line.rstrip("\r\n") if line.endswith(("\r", "\n")) else line
        offset = T.LineIndex(content).offset_at(0, max(0, position.character), _encoding(self))
        return ServerTextPosition(position.line, offset)

    def position_to_client_units(self, lines: Sequence[str], position) -> types.Position:
        if position.line >= len(lines):
            return types.Position(line=len(lines), character=0)
        line = lines[position.line]
        content = line.rstrip("\r\n") if line.endswith(("\r", "\n")) else line
        return types.Position(line=position.line,
                              character=T.unit_len(content[:max(0, position.character)], _encoding(self)))


class TandemDocument(TextDocument):
    @property
    def encoding(self) -> str:
        return _encoding(self.position_codec)

    @property
    def lines(self) -> Sequence[str]:
        return tuple(T.split_lines(self.source, keepends=True))

    def offset_at(self, line: int, character: int) -> int:
        return T.offset_at(self.source, line, character, self.encoding)

    def position_at(self, offset: int) -> tuple[int, int]:
        return T.position_at(self.source, offset, self.encoding)

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        source = self.source
        rng = change.range
        a = T.offset_at(source, rng.start.line, rng.start.character, self.encoding)
        b = T.offset_at(source, rng.end.line, rng.end.character, self.encoding)
        if b < a:
            a, b = b, a
        self._source = source[:a] + change.text + source[b:]

    def offset_at_position(self, client_position: types.Position) -> int:
        return self.offset_at(client_position.line, client_position.character)

    def offset_at_server_position(self, server_position: ServerTextPosition) -> int:
        idx = T.index_of(self.source)
        if server_position.line >= idx.line_count:
            return len(self.source)
        start, end = int(idx.starts[server_position.line]), int(idx.ends[server_position.line])
        return min(start + max(0, server_position.character), end)

    def server_position_at_offset(self, offset: int) -> ServerTextPosition:
        line, ch = T.position_at(self.source, offset, T.UTF32)
        return ServerTextPosition(line, ch)

    def client_position_at_offset(self, offset: int) -> types.Position:
        line, ch = self.position_at(offset)
        return types.Position(line=line, character=ch)


class TandemWorkspace(Workspace):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._position_codec = LspPositionCodec(encoding=self._position_encoding)

    @classmethod
    def replacing(cls, ws: Workspace) -> "TandemWorkspace":
        """The same workspace (root, sync kind, folders, encoding) with LSP-exact documents."""
        new = cls(ws.root_uri, ws._sync_kind, list(ws.folders.values()), ws.position_encoding)
        for uri, doc in ws.text_documents.items():
            new._text_documents[uri] = new._create_text_document(doc.uri, doc._source, doc.version, doc.language_id)
        return new

    def _create_text_document(self, doc_uri, source=None, version=None, language_id=None) -> TandemDocument:
        return TandemDocument(doc_uri, source=source, version=version, language_id=language_id,
                              sync_kind=self._sync_kind, position_codec=self._position_codec)
