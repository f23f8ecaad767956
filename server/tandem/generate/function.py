"""Generate a function's body from its signature and docstring: prompt, candidates, checks.

Plain Python over a LoadedModel (no pygls); features/generate_function.py drives it.
A job is prepared once; candidates come one at a time (greedy first, then sampled), each
is cut at the end of the function, re-indented the way the file indents, and kept only if
the function then parses. `checked_module` builds what the sandbox runs for one candidate.
"""
from __future__ import annotations

import ast
import re
import threading
import time
import zlib
from dataclasses import dataclass, field

from ..completion.prompt import build_fim_prompt
from ..context import as_markdown, render_block
from ..model.loaded import LoadedModel
from ..model.backend import Sampling
from ..text import line_span
from ..provenance.confidence import spans_of_ids
from .examples import Example, extract_examples
from .sandbox import Verdict
from .stub import Stub, is_stub_statement, parse, split_lines, without_indent

CHAT_INSTRUCTION = ("Write the body of the Python function below so that it does exactly what its docstring "
                    "says. Reply with the complete function in one ```python code block.")
TOP_LEVEL_KINDS = {"import_statement", "import_from_statement", "future_import_statement",
                   "function_definition", "class_definition", "decorated_definition"}
CHARS_PER_CONTEXT_TOKEN = 3  # for sizing the chat prompt's context from the token budget
SLOT = "function"  # the candidates' KV cache slot (a warm fills it ahead: features/warm.py)


@dataclass
class FunctionJob:
    stub: Stub
    text: str  # the document when the job was prepared
    mode: str  # "chat" or "fim"
    prompt_ids: list[int]
    examples: list[Example]
    runnable: str | None  # why the examples cannot run, or None when they can
    prompt_sources: list[dict]  # which lines of the document went into the prompt
    def_indent: str
    def_cols: int  # the def line's indentation width in the generated text

    @property
    def seed(self) -> int:
        return zlib.crc32(self.text[self.stub.start:self.stub.doc_end].encode("utf-8", "replace"))


@dataclass
class Candidate:
    index: int
    sampled: bool
    replacement: str  # replaces text[stub.edit_start:stub.edit_end]
    body: str  # the body alone, file indentation, "\n" line ends
    mean_logprob: float
    tokens: list[tuple[int, int, float]]  # (start, end, logprob) within `replacement`
    generated_tokens: int
    seconds: float
    verdict: Verdict | None = None
    notes: list[str] = field(default_factory=list)

    def rank_key(self) -> tuple:
        passed = self.verdict.passed if self.verdict else 0
        return (-passed, -self.mean_logprob, self.index)


def prepare(model: LoadedModel, text: str, stub: Stub, mode: str, budget_tokens: int,
            prefix_share: float, context=None, context_share: float = 0.0) -> FunctionJob:
    """`context`: what tandem/context found in other files (a Context); it takes up to
    `context_share` of the budget: fenced blocks with their paths in a chat prompt, the
    repository format before a FIM prompt."""
    line_start = text.rfind("\n", 0, stub.start) + 1
    def_indent = text[line_start:stub.start]
    examples = extract_examples(stub.docstring, stub.name)
    runnable = None
    if stub.scope == "function":
        runnable = "a nested function cannot be called from its examples"
    elif not re.match(r"(?:@|def\s|async\s|class\s)", text[stub.top_start:stub.top_start + 6]):
        runnable = "it is defined inside a top-level block (if/try/with) that the check does not run"
    if mode == "chat" and model.chat is not None:
        fn = _prompt_function(text, stub, def_indent)
        others_chars = int(budget_tokens * context_share * CHARS_PER_CONTEXT_TOKEN) if context is not None else 0
        others, other_sources = as_markdown(context, others_chars) if others_chars else ("", [])
        own, sources = _chat_context(text, stub, budget_tokens * CHARS_PER_CONTEXT_TOKEN - len(others))
        user = CHAT_INSTRUCTION + "\n\n"
        if others:
            user += f"Definitions from other files of the project:\n{others}\n\n"
            sources += other_sources
        if own:
            user += f"Context from the same file:\n```python\n{own}\n```\n\n"
        user += f"```python\n{fn}\n```"
        ids = model.encode_chat([{"role": "user", "content": user}], assistant_prefix=f"```python\n{fn}\n")
        sources.append({"lines": line_span(text, stub.start, stub.doc_end), "what": "signature and docstring"})
        return FunctionJob(stub, text, "chat", ids, examples, runnable, sources, def_indent, 0)
    # Fill in the middle: everything before the body, everything after it.
    prefix = text[:stub.edit_start] + "\n"
    if stub.inline_doc:  # give the model the docstring on its own line, as the edit will write it
        prefix += stub.body_indent + text[stub.edit_start:stub.doc_end].strip() + "\n"
    suffix = text[stub.edit_end:]
    block = None
    if context is not None and context_share > 0:
        block = render_block(model.codec, context, int(budget_tokens * context_share))
    head = block.ids if block is not None else ()
    p = build_fim_prompt(model.codec, model.fim, prefix, suffix, max(64, budget_tokens - len(head)), prefix_share,
                         head)
    sources = [{"lines": line_span(text, p.prefix_start, stub.edit_end + p.suffix_end),
                "what": "text around the function"}, *(block.sources if block is not None else [])]
    cols = len(def_indent.expandtabs(4))
    return FunctionJob(stub, text, "fim", p.ids, examples, runnable, sources, def_indent, cols)


def _prompt_function(text: str, stub: Stub, def_indent: str) -> str:
    """The signature and docstring at column 0, spaces for tabs, docstring on its own line."""
    if stub.inline_doc:
        src = text[stub.start:stub.edit_start] + "\n" + "    " + text[stub.edit_start:stub.doc_end].strip()
    else:
        src = text[stub.start:stub.edit_start]
    return without_indent(split_lines(src.replace("\r\n", "\n")), def_indent).expandtabs(4)


def _chat_context(text: str, stub: Stub, max_chars: int) -> tuple[str, list[dict]]:
    """The file's imports, then the top-level definitions the signature or docstring names
    (and, for a method, its class), as long as they fit."""
    tree = parse(text)
    data = text.encode("utf-8", "replace")
    wanted = set(re.findall(r"[A-Za-z_]\w*", text[stub.start:stub.doc_end])) - {stub.name}
    imports, defs = [], []
    for node in tree.root_node.named_children:
        if node.has_error:
            continue
        start = len(data[:node.start_byte].decode("utf-8", "replace"))
        end = len(data[:node.end_byte].decode("utf-8", "replace"))
        if node.type in ("import_statement", "import_from_statement", "future_import_statement"):
            imports.append((start, end))
            continue
        if start == stub.top_start:
            if stub.scope == "class":  # the method's class, without the stub itself
                defs.append((start, stub.start, "class of the method"))
            continue
        inner = node.child_by_field_name("definition") if node.type == "decorated_definition" else node
        name = inner.child_by_field_name("name") if inner is not None else None
        if name is not None and data[name.start_byte:name.end_byte].decode("utf-8", "replace") in wanted:
            defs.append((start, end, "definition named in the docstring"))
    parts, sources, used = [], [], 0
    for start, end, *what in [(s, e, "imports") for s, e in imports] + defs:
        chunk = text[start:end].replace("\r\n", "\n").expandtabs(4)
        if used + len(chunk) > max_chars:
            continue
        parts.append(chunk)
        used += len(chunk)
        sources.append({"lines": line_span(text, start, end), "what": what[0]})
    return "\n".join(parts).strip("\n"), sources


def generate_candidate(model: LoadedModel, job: FunctionJob, index: int, max_tokens: int,
                       cancel: threading.Event | None = None) -> Candidate | None:
    """Candidate `index` (0 is greedy, the rest sampled); None when it yields no usable body."""
    t0 = time.perf_counter()
    codec = model.codec
    sampling = None if index == 0 else Sampling(temperature=0.8, top_p=0.95, seed=job.seed + index)

    def stop(ids: list[int]) -> bool:
        return _cut(codec.decode(ids), job.def_cols)[1]

    gen = model.lm.generate(job.prompt_ids, max_new_tokens=max_tokens, stop_ids=model.stop_ids,
                            cancel=cancel, stop_check=stop, sampling=sampling, slot=SLOT)
    raw = codec.decode(gen.ids)
    kept, _ = _cut(raw, job.def_cols)
    body_lines = _reindent(kept, job.stub.body_indent)
    if not body_lines:
        return None
    body_lines = _until_it_parses(job, body_lines, truncated=gen.stop_reason == "max_tokens")
    if not body_lines:
        return None
    replacement = _replacement(job, body_lines)
    spans = spans_of_ids(codec, gen.ids, gen.logprobs, limit=len(kept))
    used = [lp for (s, _e, lp) in spans]
    mean = sum(used) / len(used) if used else float("-inf")
    return Candidate(index, sampling is not None, replacement, "\n".join(body_lines), mean,
                     _map_spans(spans, kept, body_lines, replacement, job), len(gen.ids),
                     time.perf_counter() - t0)


def _cut(raw: str, def_cols: int) -> tuple[str, bool]:
    """The generated text up to the end of the function; True when the end was seen."""
    lines = raw.split("\n")
    for i, line in enumerate(lines):
        if i == len(lines) - 1:
            break  # the last line may still be growing
        stripped = line.strip()
        if stripped.startswith("```") or (stripped and i > 0 and _cols(line) <= def_cols and not _in_string(lines[:i])):
            return "\n".join(lines[:i]), True
        if i == 0 and stripped and _cols(line) <= def_cols:
            return "", True  # no indented body at all
    if "```" in raw:
        return raw[:raw.index("```")], True
    return raw, False


def _in_string(lines: list[str]) -> bool:
    """Inside an unfinished triple-quoted string? (then a dedented line is string content)"""
    text = "\n".join(lines)
    return (text.count('"""') % 2 == 1) or (text.count("'''") % 2 == 1)


def _cols(line: str) -> int:
    """Width of the line's indentation, a tab counting as 4 columns."""
    wide = line.expandtabs(4)
    return len(wide) - len(wide.lstrip(" "))


def _reindent(kept: str, body_indent: str) -> list[str]:
    """Lines of the body in the file's indentation: the first line's indentation becomes
    `body_indent`, deeper levels use the file's unit (a tab per 4 columns in tab files)."""
    lines = [ln.rstrip("\r").rstrip() for ln in kept.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return []
    base = _cols(lines[0])
    tabs = "\t" in body_indent
    out = []
    for ln in lines:
        if not ln.strip():
            out.append("")
            continue
        extra = _cols(ln) - base
        if extra < 0:  # a continuation line inside brackets or a string: leave it as written
            out.append(ln)
            continue
        unit = "\t" * (extra // 4) + " " * (extra % 4) if tabs else " " * extra
        out.append(body_indent + unit + ln.lstrip(" \t"))
    return out


def _function_source(job: FunctionJob, body_lines: list[str]) -> str:
    line_start = job.text.rfind("\n", 0, job.stub.start) + 1
    src = job.text[line_start:job.stub.edit_start].replace("\r\n", "\n")
    if job.stub.inline_doc:
        src += "\n" + job.stub.body_indent + job.text[job.stub.edit_start:job.stub.doc_end].strip()
    src += "\n" + "\n".join(body_lines) + "\n"
    return without_indent(split_lines(src), job.def_indent)


def _until_it_parses(job: FunctionJob, body_lines: list[str], truncated: bool) -> list[str]:
    """The body if the function parses with it; a body cut off by the token limit loses its
    last lines until it does. A body that is only a stub again does not count."""
    tries = 8 if truncated else 1
    lines = list(body_lines)
    while lines and tries > 0:
        try:
            fn = ast.parse(_function_source(job, lines)).body[0]
            real = [s for s in fn.body[1:] if not is_stub_statement(s)]
            return lines if real else []
        except (SyntaxError, ValueError, IndexError):
            lines.pop()
            while lines and not lines[-1].strip():
                lines.pop()
            tries -= 1
    return []


def _replacement(job: FunctionJob, body_lines: list[str]) -> str:
    nl = job.stub.newline
    head = ""
    if job.stub.inline_doc:
        head = nl + job.stub.body_indent + job.text[job.stub.edit_start:job.stub.doc_end].strip()
    return head + nl + nl.join(body_lines)


def _map_spans(spans, kept: str, body_lines: list[str], replacement: str, job: FunctionJob):
    """Token spans from the generated text to `replacement`: lines keep their order, only
    their indentation (and trailing spaces) changed."""
    raw_lines = kept.split("\n")
    pos = 0
    while raw_lines and not raw_lines[0].strip():
        pos += len(raw_lines.pop(0)) + 1
    nl = job.stub.newline
    npos = len(replacement) - len(nl.join(body_lines))
    rows = []  # (raw start, raw indent, raw length, new start, new indent, new length)
    for raw, new in zip(raw_lines, body_lines):
        rows.append((pos, len(raw) - len(raw.lstrip(" \t")), len(raw),
                     npos, len(new) - len(new.lstrip(" \t")), len(new)))
        pos += len(raw) + 1
        npos += len(new) + len(nl)

    def move(off: int) -> int | None:
        for rs, rind, rlen, ns, nind, nlen in rows:
            if rs <= off <= rs + rlen:
                return ns + min(nlen, nind + max(0, off - rs - rind))
        return None

    out = []
    for s, e, lp in spans:
        a, b = move(s), move(e)
        if a is not None and b is not None and b > a:
            out.append((a, b, lp))
    return out


def checked_module(job: FunctionJob, cand: Candidate) -> list[dict]:
    """What the sandbox runs for `cand`: the file's imports and top-level definitions, with
    the stub's body replaced (each statement separately, so one failing import does not hide
    the rest). Other top-level code (scripts, `if __name__ == ...`) is left out."""
    stub = job.stub
    text = job.text[:stub.edit_start] + cand.replacement + job.text[stub.edit_end:]
    data = text.encode("utf-8", "replace")
    setup = []
    for node in parse(text).root_node.named_children:
        if node.type not in TOP_LEVEL_KINDS and not _constant_assignment(node):
            continue
        start = len(data[:node.start_byte].decode("utf-8", "replace"))
        code = data[node.start_byte:node.end_byte].decode("utf-8", "replace").replace("\r\n", "\n")
        is_target = start == stub.top_start
        if node.has_error and not is_target:
            continue
        first = code.split("\n", 1)[0][:60]
        setup.append({"code": code + "\n", "what": f"line {text.count(chr(10), 0, start) + 1}: {first}",
                      "fatal": is_target})
    return setup


def _constant_assignment(node) -> bool:
    """`NAME = literal` at the top level: cheap to run and often used by the functions."""
    if node.type != "expression_statement" or node.named_child_count != 1:
        return False
    a = node.named_children[0]
    if a.type != "assignment":
        return False
    right = a.child_by_field_name("right")
    return right is not None and right.type in ("integer", "float", "string", "true", "false", "none",
                                                 "list", "tuple", "dictionary", "set", "unary_operator")
