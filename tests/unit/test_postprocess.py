from tandem.completion.context import analyze
from tandem.completion.postprocess import finish, stop_early


def run(src: str, raw: str, hit_limit: bool = False):
    i = src.index("|")
    ctx = analyze(src[:i], src[i + 1:])
    return finish(ctx, raw, hit_limit)


def test_single_line_stops_at_line_end():
    s = run("x = |\n", "compute(1)\ny = 2\n")
    assert s.text == "compute(1)" and s.replace_chars == 0


def test_leading_newline_in_single_line_means_nothing():
    assert run("x = |\n", "\nbar") is None  # the line is not finished
    assert run("print(|)\n", "\nbar") is None  # code follows the cursor


def test_at_the_end_of_a_finished_line_the_next_line_is_suggested():
    s = run("def f(a):\n    x = compute(a)|\n", "\n    return x\n\nprint(f(1))")
    assert s.text == "\n    return x" and s.replace_chars == 0


def test_next_line_is_not_a_blank_line_nor_the_line_that_follows():
    assert run("x = compute(a)|\n", "\n\ny = 2") is None
    assert run("x = compute(a)|\ny = 2\n", "\ny = 2") is None


def test_stop_early_waits_for_the_end_of_the_next_line():
    ctx = analyze("x = compute(a)", "\n")
    assert not stop_early(ctx, "\n")
    assert not stop_early(ctx, "\ny = ")
    assert stop_early(ctx, "\ny = 2\n")
    assert stop_early(analyze("x = ", "\n"), "\n")


def test_blank_suggestions_are_dropped():
    assert run("def f():\n    |\n", "   \n\n") is None


def test_overlap_with_closing_bracket_replaces_it():
    s = run("print(|)\n", "'hello')")
    assert s.text == "'hello')" and s.replace_chars == 1


def test_closing_what_the_line_opened_replaces_the_rest():
    s = run("if check(|)\n", "a, b):")
    assert s.text == "a, b):" and s.replace_chars == 1


def test_inner_brackets_do_not_eat_the_outer_closer():
    s = run("print(|)\n", "len(x), 2")
    assert s.text == "len(x), 2" and s.replace_chars == 0


def test_retyping_what_follows_is_dropped():
    assert run("foo(|)\n", ")") is None


def test_stray_closer_is_cut():
    s = run("x = |\n", "a + b)) + 1")
    assert s.text == "a + b"


def test_single_line_closes_brackets_it_opened():
    s = run("x = |\n", "compute(a, [1, 2", hit_limit=True)
    assert s.text == "compute(a, [1, 2])"


def test_block_is_trimmed_at_dedent():
    s = run("def add(a, b):\n    |\n", "return a + b\n\nprint(add(1, 2))\n")
    assert s.text == "return a + b"


def test_top_level_block_stops_at_next_top_level_statement():
    s = run("|", "import os\nimport sys\n\n\ndef main():\n    pass\n")
    assert s.text == "import os\nimport sys"


def test_multiline_never_repeats_the_next_line():
    s = run("def f(xs):\n    total = 0\n    |\n    return total\n",
            "for x in xs:\n        total += x\n    return total\n")
    assert s.text == "for x in xs:\n        total += x"


def test_code_after_a_blank_line_of_its_own_goes_on_the_cursors_line(monkeypatch):
    """On a blank line the model may begin with a line break (healing's `)\n\n` token): the
    code it wrote below goes where the cursor is, without the indentation the cursor has."""
    src = "def f():\n    try:\n        g(\n        )\n    |\n"
    raw = "\n    except Exception as e:\n        raise\n\nprint(1)\n"
    assert run(src, raw).text == "except Exception as e:\n        raise"
    assert run("x = 1\n|\n", "\n\nimport math\n").text == "import math"  # top level, two blank lines
    assert run("def f():\n    |\n", "\n        deeper()\n").text == "    deeper()"
    # Code indented less than the cursor stays below it (the cursor's line would indent it too far).
    s = run("def f():\n    x = 1\n    |\n", "\nprint(x)\n")
    assert s is None or s.text.startswith("\n")
    # Not on a blank line: a leading line break keeps its meaning.
    assert run("x = |\n", "\nbar") is None
    monkeypatch.setenv("TANDEM_EVAL_RULES_OFF", "lead")
    assert run(src, raw).text.startswith("\n")


def test_unfinished_last_line_is_dropped_at_token_limit():
    s = run("def f():\n    |\n", "a = 1\n    b = compute(", hit_limit=True)
    assert s.text == "a = 1"


def test_a_line_still_looping_at_the_token_limit_is_dropped():
    # Seen on tuned models: a number that never ends, an import list going round in circles.
    assert run("def f(x):\n    |\n", "if x > 1" + "0" * 120, hit_limit=True) is None
    loop = "overload_varargs, overload_varkwargs, " * 4
    s = run("def f():\n    |\n", "a = 1\n    b = [" + loop, hit_limit=True)
    assert s.text == "a = 1"  # the lines before it stay
    assert run("x = |\n", "f(" + "ab, " * 12, hit_limit=True) is None  # single-line mode too


def test_a_repeating_line_that_ended_or_a_long_line_is_kept(monkeypatch):
    sep = "# " + "=" * 40
    assert run("def f():\n    |\n", sep + "\n    x = 1\n").text == sep + "\n    x = 1"
    long = "result = compute(alpha, beta, gamma, delta, epsilon, zeta"
    assert run("x = 1\n|\n", long, hit_limit=True).text == long  # no loop: kept
    monkeypatch.setenv("TANDEM_EVAL_RULES_OFF", "repeat")
    assert run("def f(x):\n    |\n", "if x > 1" + "0" * 120, hit_limit=True).text == "if x > 1" + "0" * 120


def test_stop_early_single_line_and_block():
    ctx = analyze("x = ", "\n")
    assert not stop_early(ctx, "foo(1")
    assert stop_early(ctx, "foo(1)\n")
    ctx = analyze("def f():\n    ", "\n")
    assert not stop_early(ctx, "a = 1\n    b = 2\n")
    assert stop_early(ctx, "a = 1\n\nprint(f())\nx")


def test_closer_followed_by_more_code_is_replaced_not_doubled():
    s = run("    return sum(|) + offset\n", "item for item in items)")
    assert s.text == "item for item in items)" and s.replace_chars == 1


# -- issue 14: bracket balancing only where the line is really finished -----------------

def test_bracket_the_code_below_closes_is_left_open():
    # `def |` with the parameters on the next lines: the `(` is closed by the `)` below.
    s = run("def|\n    text: str,\n    times: int,\n) -> str:\n    return text * times\n", " repeat(")
    assert s.text == " repeat("


def test_bracket_is_closed_when_the_code_below_is_balanced():
    s = run("x = foo(\n    a, |\n)\nprint(x)\n", "bar(1", hit_limit=True)
    assert s.text == "bar(1)"


def test_closer_of_another_kind_below_does_not_keep_a_bracket_open():
    s = run("if (ready) {\n  log(x, |\n}\n", "[1", hit_limit=True)
    assert s.text == "[1]"


def test_brackets_in_strings_and_comments_below_do_not_count():
    s = run("x = |\ny = ')'  # )\n", "compute(1", hit_limit=True)
    assert s.text == "compute(1)"


# -- issue 14: a cursor inside a word never repeats what was typed ----------------------

SESSION_DOC = "from db import Session\n\n\ndef run(\n    session: Se|\n) -> None:\n    pass\n"


def test_partial_word_is_continued_not_repeated():
    s = run(SESSION_DOC, "ssession,")
    assert s.text == "ssion,"


def test_retyped_partial_word_is_not_doubled():
    s = run(SESSION_DOC, "Session,")
    assert s.text == "ssion,"


def test_a_new_word_is_left_alone():
    s = run("def run(\n    session: Se|\n):\n    pass\n", "quence[int],")
    assert s.text == "quence[int],"


def test_known_completion_of_the_word_is_kept():
    s = run(SESSION_DOC, "ssion,")
    assert s.text == "ssion,"


def test_brackets_below_that_balance_the_line_above_still_let_the_suggestion_close():
    # `(` opened above, `)` below: that pair balances; the suggestion's own `[` is closed.
    s = run("total = sum(\n    x for x in |\n)\n", "[1, 2", hit_limit=True)
    assert s.text == "[1, 2]"


def test_cursor_inside_a_string_ignores_brackets_below():
    s = run("x = f('|')\ny = 1)\n", "a(b", hit_limit=True)
    assert s.text == "a(b)"


def test_rules_can_be_switched_off_for_the_evaluation(monkeypatch):
    monkeypatch.setenv("TANDEM_EVAL_RULES_OFF", "balance,words")
    assert run("x = |\n", "compute(1", hit_limit=True).text == "compute(1"
    assert run(SESSION_DOC, "ssession,").text == "ssession,"
    monkeypatch.setenv("TANDEM_EVAL_RULES_OFF", "stops")
    assert run("x = |\n", "compute(1)\ny = 2").text == "compute(1)\ny = 2"
    monkeypatch.setenv("TANDEM_EVAL_RULES_OFF", "nextline")
    assert run("x = compute(a)|\n", "\ny = 2") is None
    monkeypatch.setenv("TANDEM_EVAL_RULES_OFF", "range")
    s = run("print(|)\n", "'hello')")
    assert s.text == "'hello')" and s.replace_chars == 0
