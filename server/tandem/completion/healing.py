"""Token healing at the cursor.

A prompt that ends inside a word ends inside a token: `session: Se` is tokenized
`session`, `:`, ` Se`, while the finished text would be `session`, `:`, ` Session`. The model
was trained on the second split and has rarely seen ` Se` followed by `ssion`, so it
continues the cut-off token badly (it retypes the word, or writes `ssession`). Healing backs
the prompt off to the last token boundary that the text would keep (drops ` Se`), and
constrains the first generated tokens to spell the dropped text again, so the model may write
` Session` in one token, as it learned to.

Pure parts only: which prompt tokens to drop (`backoff`), and a constraint object whose
`allowed(generated_ids)` gives the token ids the decode loop may pick next (None once the
dropped text has been written again). The decode loop masks the logits to those ids.
`VocabTable` holds every token's bytes sorted once per tokenizer, so `allowed` is a bisect.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_BACKOFF = 3  # prompt tokens at most: a partial word is one or two tokens


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: byte-level BPE token strings -> bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _raw_tokenizer(tokenizer):
    """A `tokenizers.Tokenizer` from itself or from tandem's TextCodec wrapper."""
    return getattr(tokenizer, "_tok", tokenizer)


class VocabTable:
    """Each token's bytes (None for special tokens, which never spell text), and all tokens
    sorted by their bytes: the tokens that start with some bytes are one contiguous run."""

    def __init__(self, token_bytes: list[bytes | None]):
        self.token_bytes = token_bytes
        order = sorted((i for i, b in enumerate(token_bytes) if b), key=token_bytes.__getitem__)
        self.sorted_bytes = [token_bytes[i] for i in order]
        self.sorted_ids = np.asarray(order, dtype=np.int64)
        self.exact: dict[bytes, list[int]] = {}
        for i in order:
            self.exact.setdefault(token_bytes[i], []).append(i)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "VocabTable":
        from tokenizers import decoders

        tok = _raw_tokenizer(tokenizer)
        size = tok.get_vocab_size(with_added_tokens=True)
        special = set(tok.get_added_tokens_decoder())
        table: list[bytes | None] = [None] * size
        byte_level = isinstance(tok.decoder, decoders.ByteLevel)
        dec = _byte_decoder()
        for piece, i in tok.get_vocab(with_added_tokens=True).items():
            if i in special or i >= size:
                continue
            if byte_level and all(c in dec for c in piece):
                table[i] = bytes(dec[c] for c in piece)
            else:  # other tokenizers: the token's own decoded text
                table[i] = tok.decode([i], skip_special_tokens=False).encode("utf-8") or None
        return cls(table)

    def starting_with(self, prefix: bytes) -> np.ndarray:
        """Ids of the tokens whose bytes start with `prefix`."""
        lo = bisect.bisect_left(self.sorted_bytes, prefix)
        after = _successor(prefix)
        hi = bisect.bisect_left(self.sorted_bytes, after) if after else len(self.sorted_bytes)
        return self.sorted_ids[lo:hi]

    def extends(self, prefix: bytes) -> bool:
        """Does some token start with `prefix` and go on past it?"""
        lo = bisect.bisect_right(self.sorted_bytes, prefix)  # past the exact matches
        return lo < len(self.sorted_bytes) and self.sorted_bytes[lo].startswith(prefix)


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with `prefix`."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else None


_tables: dict[int, tuple[object, VocabTable]] = {}
_tables_lock = threading.Lock()


def vocab_table(tokenizer) -> VocabTable:
    """The table of `tokenizer`, built once (about 0.3 s for Qwen2's 151,936 tokens)."""
    tok = _raw_tokenizer(tokenizer)
    with _tables_lock:
        hit = _tables.get(id(tok))
        if hit is not None and hit[0] is tok:
            return hit[1]
        table = VocabTable.from_tokenizer(tok)
        _tables[id(tok)] = (tok, table)  # keeps the tokenizer alive: the id stays its own
        return table


@dataclass(frozen=True)
class Healing:
    drop: int  # prompt tokens to remove from the end of the text before the cursor
    text: str  # the text they covered: the generation must start by writing it again

    @property
    def required(self) -> bytes:
        return self.text.encode("utf-8")


NO_HEALING = Healing(0, "")


def backoff(table: VocabTable, prefix_ids: list[int], max_tokens: int = MAX_BACKOFF) -> Healing:
    """How many of the last tokens before the cursor to drop: the most (up to `max_tokens`)
    whose text some single token of the vocabulary starts with and goes on past, i.e. whose
    split could change if the text continued. Never past a special token, and never splitting
    a character (the kept tokens must end on a whole UTF-8 character)."""
    best = NO_HEALING
    tail = b""
    for k in range(1, min(max_tokens, len(prefix_ids)) + 1):
        piece = table.token_bytes[prefix_ids[-k]] if 0 <= prefix_ids[-k] < len(table.token_bytes) else None
        if not piece:
            break
        tail = piece + tail
        if not table.extends(tail):
            continue
        try:
            best = Healing(k, tail.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return best


def heal_text(tokenizer, text: str, max_tokens: int = MAX_BACKOFF) -> tuple[list[int], Healing]:
    """Tokenize the text before the cursor and say what to drop: (ids, healing)."""
    tok = _raw_tokenizer(tokenizer)
    ids = tok.encode(text, add_special_tokens=False).ids
    return ids, backoff(vocab_table(tok), ids, max_tokens)


class PrefixConstraint:
    """Generated text must start with `required` bytes. `allowed(generated_ids)` gives the
    ids the next token may take: tokens that write all of the rest of the required text and
    maybe more (as in guidance's token healing: the model picks the word's real token, say
    ` Session` for ` Se`, instead of spelling the cut-off piece again and continuing from an
    odd split), or, only when no token does, the tokens that write a part of it; None once
    it is written (unconstrained from there).

    Measured on Qwen2's 151,936-token vocabulary: 1-3 us per call (a bisect in the sorted
    table and a slice of the id array), against ~20 us for masking the logits and the
    argmax, and tens of ms for a decode step."""

    def __init__(self, table: VocabTable, required: bytes):
        self.table = table
        self.required = required
        self._done = not required

    @classmethod
    def for_healing(cls, table: VocabTable, healing: Healing) -> "PrefixConstraint | None":
        return cls(table, healing.required) if healing.drop else None

    def allowed(self, generated_ids) -> np.ndarray | None:
        if self._done:
            return None
        got = b""
        for i in generated_ids:
            got += self.table.token_bytes[i] or b""
            if len(got) >= len(self.required):
                break
        if len(got) >= len(self.required) or not self.required.startswith(got):
            self._done = True  # written (or the loop did not honour the mask: give up)
            return None
        rest = self.required[len(got):]
        run = self.table.starting_with(rest)
        if len(run):
            return run
        # No token writes all of it (possible only after a first token that wrote part of it):
        # the tokens that write a part.
        return np.asarray([i for n in range(1, len(rest)) for i in self.table.exact.get(rest[:n], ())],
                          dtype=np.int64)
