from tandem.text import offset_at, position_at, utf16_len

TEXT = "a😀b\r\nsecond é line\nlast"


def test_utf16_positions_count_surrogate_pairs():
    assert utf16_len("😀") == 2
    assert offset_at(TEXT, 0, 3) == 2  # after the emoji (2 UTF-16 units) comes 'b'
    assert TEXT[offset_at(TEXT, 0, 3)] == "b"
    assert position_at(TEXT, 2) == (0, 3)


def test_round_trip_every_offset():
    for off in range(len(TEXT) + 1):
        if TEXT[off - 1: off + 1] == "\r\n":
            continue  # between \r and \n is not a position an editor can name
        line, ch = position_at(TEXT, off)
        assert offset_at(TEXT, line, ch) == off


def test_positions_past_the_end_are_clamped():
    assert offset_at(TEXT, 0, 999) == TEXT.index("\r")  # end of line 0, before CRLF
    assert offset_at(TEXT, 99, 0) == len(TEXT)
    assert offset_at("", 5, 5) == 0
    assert position_at(TEXT, 10_000) == (2, 4)


def test_utf8_positions_as_neovim_counts_them():
    text = "s = 'é😀'; x\n"
    # "s = '" is 5 bytes, 'é' 2, '😀' 4: the closing quote is at byte 11, `x` at byte 14.
    assert offset_at(text, 0, 11, "utf-8") == text.index("'", 5)
    assert position_at(text, text.index("x"), "utf-8") == (0, 14)
    assert position_at(text, text.index("x"), "utf-16") == (0, 11)
    assert position_at(text, text.index("x"), "utf-32") == (0, 10)


def test_line_end_stops_before_crlf():
    from tandem.text import line_end
    text = "ab\r\ncd"
    assert line_end(text, 1) == 2 and line_end(text, 4) == 6


def test_line_span_ends_on_the_line_of_the_last_character():
    from tandem.text import line_span

    text = "a\nbc\nd\n"
    assert line_span(text, 0, len(text)) == [0, 2]  # not the empty line after the last break
    assert line_span(text, 2, 4) == [1, 1]
    assert line_span(text, 2, 2) == [1, 1]  # empty: the line of its start
