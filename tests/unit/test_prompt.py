from tandem.completion.prompt import PREFIX_ALIGN, FimIds, build_fim_prompt


class ByteEncoder:
    """One token per UTF-8 byte: a real, if trivial, tokenizer that makes budgets exact."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode())


FIM = FimIds(prefix=1000, suffix=1001, middle=1002)
ENC = ByteEncoder()


def test_short_text_is_kept_whole_in_fim_order():
    p = build_fim_prompt(ENC, FIM, "ab", "cd", budget=100, prefix_share=0.7)
    assert p.ids == [1000, 97, 98, 1001, 99, 100, 1002]


def test_budget_is_respected_and_split():
    prefix = "".join(f"line {i}\n" for i in range(500))
    suffix = "".join(f"after {i}\n" for i in range(500))
    p = build_fim_prompt(ENC, FIM, prefix, suffix, budget=300, prefix_share=0.7)
    assert p.prefix_tokens + p.suffix_tokens <= 300
    assert p.suffix_tokens <= 90 + 1 and p.prefix_tokens >= 150
    body = bytes(p.ids[1:p.ids.index(1001)]).decode()
    assert prefix.endswith(body)  # the text nearest the cursor is kept
    assert body.startswith("line ")  # cut at a line start
    assert int(body.split()[1]) % PREFIX_ALIGN == 0  # ...an aligned one, for KV-cache reuse
    after = bytes(p.ids[p.ids.index(1001) + 1:-1]).decode()
    assert suffix.startswith(after) and after.endswith("\n")


def test_unused_suffix_budget_goes_to_the_prefix():
    prefix = "x = 1\n" * 400
    p = build_fim_prompt(ENC, FIM, prefix, "", budget=300, prefix_share=0.5)
    assert p.suffix_tokens == 0 and p.prefix_tokens > 200


def test_unused_prefix_budget_goes_to_the_suffix():
    p = build_fim_prompt(ENC, FIM, "x", "y = 2\n" * 400, budget=300, prefix_share=0.9)
    assert p.suffix_tokens > 200


def test_prefix_start_is_stable_while_typing():
    base = "".join(f"v{i} = {i}\n" for i in range(300))
    starts = {build_fim_prompt(ENC, FIM, base + "x" * k, "", budget=400, prefix_share=0.7).ids[1:20].__repr__()
              for k in range(1, 30)}
    assert len(starts) <= 2  # typing 30 characters moves the start at most once


def test_one_huge_line_keeps_its_end():
    p = build_fim_prompt(ENC, FIM, "z" * 10_000, "", budget=100, prefix_share=0.7)
    assert p.prefix_tokens <= 100 and p.ids[-3] == ord("z")
