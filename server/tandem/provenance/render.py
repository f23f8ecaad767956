"""The Markdown a hover (or the explain command) shows: explanation, confidence, provenance."""
from __future__ import annotations

import time
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

from .confidence import summarize
from .explain import Explanation
from .store import Region

KIND = {"inline": "inline completion", "function": "function generated from its docstring"}


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "an unknown time"


def file_name(uri: str) -> str:
    try:
        path = unquote(urlparse(uri).path)
    except ValueError:
        path = uri
    return PurePosixPath(path).name or uri


def sources_text(sources: list[dict] | None, this_uri: str | None = None) -> str:
    """Every file and line range that went into the prompt, one entry per file in the order
    first seen: `this file lines 1–40, shapes.py lines 7–22, 30–31; util.py line 3`. Files whose
    names clash are told apart by their folder."""
    groups: dict[str, list[tuple[int, int]]] = {}
    for s in sources or []:
        uri = str(s.get("uri", ""))
        ranges = groups.setdefault(uri, [])
        lines = s.get("lines") or []
        if len(lines) == 2:
            try:
                ranges.append((int(lines[0]) + 1, int(lines[1]) + 1))
            except (TypeError, ValueError):
                continue
    names = {uri: file_name(uri) for uri in groups}
    clash = {n for n in names.values() if list(names.values()).count(n) > 1}
    parts, several = [], False
    for uri, ranges in groups.items():
        name = names[uri]
        if this_uri is not None and uri == this_uri:
            name = "this file"
        elif name in clash:
            parent = PurePosixPath(unquote(urlparse(uri).path)).parent.name
            name = f"{parent}/{name}" if parent else name
        ranges = _merged(ranges)
        if not ranges:
            parts.append(name)
            continue
        several = several or len(ranges) > 1
        spans = [f"{a}" if a == b else f"{a}–{b}" for a, b in ranges]
        one = len(ranges) == 1 and ranges[0][0] == ranges[0][1]
        parts.append(f"{name} {'line' if one else 'lines'} {', '.join(spans)}")
    return ("; " if several else ", ").join(parts) if parts else "nothing recorded"


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(set(ranges)):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def model_text(model: dict | None) -> str:
    if not model:
        return "unknown model"
    bits = [str(model.get("model") or "unknown model")]
    if model.get("version") and model["version"] != "base":
        bits.append(str(model["version"]))  # tuned by `tandem learn`: where, when, measured gain
    if model.get("precision"):
        bits.append(str(model["precision"]))
    if model.get("device"):
        bits.append(str(model["device"]))
    return " · ".join(bits)


def code_span(s: str) -> str:
    s = s.replace("\n", "⏎").replace("\r", "")
    if len(s) > 40:
        s = s[:39] + "…"
    fence = "``" if "`" in s else "`"
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def seconds(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def explanation_block(explanation: Explanation | None, status: str | None) -> list[str]:
    if explanation is not None:
        if explanation.text:
            return [explanation.text]
        return ["_The model wrote no explanation for this code._"]
    return [f"_{status or 'No explanation yet.'}_"]


def explanation_note(explanation: Explanation | None, this_uri: str | None) -> list[str]:
    if explanation is None:
        return []
    form = ""
    if explanation.style == "plain":
        why = {"no chat template": "the model has no chat template",
               "empty chat answer": "it answered nothing through its chat template"}.get(explanation.fallback)
        form = f" (asked in completion form: {why})" if why else " (asked in completion form)"
    n = explanation.tokens
    return [f"*Explained* {when(explanation.created)} by {explanation.model.get('model') or 'the model'} in "
            f"{seconds(explanation.ms)} ({n} token{'' if n == 1 else 's'}){form}, "
            f"from {sources_text(explanation.sources, this_uri)}"]


def region_markdown(region: Region, *, explanation: Explanation | None, status: str | None,
                    line_of=None) -> str:
    """Hover text for a region. `line_of(offset) -> 0-based line` places the least confident
    spans in the document (they are offsets within the generated text)."""
    out = [f"**Tandem wrote this** · {KIND.get(region.kind, region.kind)} · accepted {when(region.accepted)}"]
    if region.changed:
        out.append("")
        out.append("⚠️ **Edited since Tandem wrote it**: the explanation, confidence and checks below "
                   "are about the code as generated.")
    out.append("")
    out += explanation_block(explanation, status)
    out.append("")
    conf = summarize(region.tokens, region.text)
    out.append(f"**Confidence: {conf.level}**" + ("" if conf.mean_p is None else
                                                    f" (average token probability {conf.mean_p:.0%}, "
                                                    f"lowest {conf.min_p:.0%}, {conf.tokens} tokens)"))
    if conf.mean_p is None:
        out[-1] += " (no token probabilities were recorded for this text)"
    if conf.low:
        marks = []
        for a, b, p in conf.low:
            where = ""
            if line_of is not None and not region.changed:
                where = f", line {line_of(region.start + a) + 1}"
            marks.append(f"{code_span(region.text[a:b])} ({p:.0%}{where})")
        out.append("")
        out.append("Least sure of: " + " · ".join(marks))
    if region.verification:
        v = region.verification
        summary = v.get("summary") or (f"{v.get('passed')}/{v.get('total')} examples pass"
                                       if "passed" in v and "total" in v else "checked")
        ok = v.get("passed") == v.get("total") and v.get("total")
        out.append("")
        out.append(f"**Verification:** {'✅' if ok else '⚠️'} {summary}")
    out.append("")
    out.append("---")
    out.append(f"*Model* {model_text(region.model)}  ")
    out.append(f"*Generated* {when(region.created)} from {sources_text(region.prompt_sources, region.uri)}  ")
    out += explanation_note(explanation, region.uri)
    return "\n".join(out).rstrip() + "\n"


def code_markdown(explanation: Explanation | None, status: str | None, *, uri: str,
                  regions: list[Region] = ()) -> str:
    """The explain command's answer for any selected code."""
    out = ["**Tandem: what this code does**", ""]
    out += explanation_block(explanation, status)
    if regions:
        out.append("")
        kinds = ", ".join(sorted({KIND.get(r.kind, r.kind) for r in regions}))
        changed = " (edited since)" if any(r.changed for r in regions) else ""
        out.append(f"Part of this code was written by Tandem ({kinds}){changed}: hover it for its provenance "
                   "and confidence.")
    out.append("")
    out.append("---")
    if explanation is not None:
        out.append(f"*Model* {model_text(explanation.model)}  ")
    out += explanation_note(explanation, uri)
    return "\n".join(out).rstrip() + "\n"
