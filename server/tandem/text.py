"""LSP positions (line, code units) <-> Python string offsets (code points).

The unit is the position encoding negotiated at `initialize`: UTF-16 by default (VS Code),
UTF-8 when the client prefers it (Neovim), or UTF-32. Positions past the end of a line or of
the document are clamped, never an error: editors send them after fast edits.
"""
from __future__ import annotations

UTF16, UTF8, UTF32 = "utf-16", "utf-8", "utf-32"


def unit_len(s: str, encoding: str = UTF16) -> int:
    if encoding == UTF8:
        return len(s.encode("utf-8", "surrogatepass"))
    if encoding == UTF32:
        return len(s)
    return len(s) + sum(1 for c in s if ord(c) > 0xFFFF)


def utf16_len(s: str) -> int:
    return unit_len(s, UTF16)


def _char_units(c: str, encoding: str) -> int:
    o = ord(c)
    if encoding == UTF8:
        return 1 if o < 0x80 else 2 if o < 0x800 else 3 if o < 0x10000 else 4
    if encoding == UTF32:
        return 1
    return 2 if o > 0xFFFF else 1


def offset_at(text: str, line: int, character: int, encoding: str = UTF16) -> int:
    start = 0
    for _ in range(max(line, 0)):
        nl = text.find("\n", start)
        if nl < 0:
            return len(text)  # line past the end: the end of the document
        start = nl + 1
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    if end > start and text[end - 1] == "\r":
        end -= 1
    units = 0
    i = start
    while i < end and units < character:
        units += _char_units(text[i], encoding)
        i += 1
    return i


def position_at(text: str, offset: int, encoding: str = UTF16) -> tuple[int, int]:
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset)
    line_start = text.rfind("\n", 0, offset) + 1
    return line, unit_len(text[line_start:offset], encoding)


def line_end(text: str, offset: int) -> int:
    """Offset of the end of the line holding `offset`, before any \\r\\n or \\n."""
    nl = text.find("\n", offset)
    end = len(text) if nl < 0 else nl
    return end - 1 if end > offset and text[end - 1] == "\r" else end


def line_span(text: str, start: int, end: int) -> list[int]:
    """[first, last] 0-based lines of text[start:end]: the line of its first character and of
    its last one (not the line after a final line break); an empty span is the line of `start`."""
    first = text.count("\n", 0, start)
    return [first, first + text.count("\n", start, max(start, end - 1))]
