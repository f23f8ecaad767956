from tandem.completion.context import analyze, should_skip


def at_cursor(src: str):
    i = src.index("|")
    return analyze(src[:i], src[i + 1:])


def test_mid_line_is_single_line():
    ctx = at_cursor("x = foo(|)\n")
    assert not ctx.multiline and ctx.line_suffix == ")"


def test_after_code_is_single_line():
    assert not at_cursor("total = |\n").multiline


def test_empty_function_body_gets_the_block():
    ctx = at_cursor("def add(a, b):\n    |\n\nprint(1)\n")
    assert ctx.multiline and ctx.empty_block and ctx.block_indent == 4


def test_cursor_right_after_the_colon_gets_the_block():
    ctx = at_cursor("def add(a, b):|\n")
    assert ctx.multiline and ctx.empty_block and ctx.block_indent == 1


def test_block_with_body_below_is_not_empty():
    ctx = at_cursor("def add(a, b):|\n    return a + b\n")
    assert not ctx.multiline


def test_blank_line_inside_code_is_multiline_but_not_an_empty_block():
    ctx = at_cursor("x = 1\n|\ny = 2\n")
    assert ctx.multiline and not ctx.empty_block
    assert ctx.next_code_line == "y = 2"


def test_prefilter_skips_mid_word():
    assert should_skip("bar)")
    assert not should_skip(")")
    assert not should_skip("")
    assert not should_skip(" + 1")


def test_prefilter_lets_the_end_of_a_partial_word_through():
    # `session: Se|,` -- only a word that continues after the cursor is skipped; the end of a
    # partly typed word is completed (and must continue it: see test_postprocess).
    assert not should_skip(",")
    assert not should_skip("")
    ctx = at_cursor("def run(session: Se|):\n")
    assert ctx.line_prefix.endswith("Se") and not should_skip(ctx.line_suffix)
