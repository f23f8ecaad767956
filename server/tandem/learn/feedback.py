"""The local feedback log (opt-in: the `tandem.feedback` setting, default off).

What is recorded, as JSON lines in TANDEM_HOME/feedback/events.jsonl:
- `shown`: an inline completion was offered (its id, the file's name, its length);
- `accepted`: the editor inserted it (with up to 1,500 characters before it and 500 after, so
  `tandem learn --use-feedback` can train on it);
- `dismissed`: another completion was offered in the same document before it was accepted;
- `retained`: 30 s and 2 min after acceptance, whether the accepted text is still in the document.

The log is bounded (MAX_BYTES: the oldest half is dropped when it is full), stays on this
machine (nothing here opens a socket), and `tandem.showFeedback` / `tandem.deleteFeedback` (or
`tandem feedback show|delete`) show and delete it.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

from ..model.loader import tandem_home

MAX_BYTES = 2 * 1024 * 1024
RETENTION_CHECKS_S = (30.0, 120.0)
PREFIX_CHARS, SUFFIX_CHARS = 1500, 500
_lock = threading.Lock()


def log_path() -> Path:
    return tandem_home() / "feedback" / "events.jsonl"


def append(event: dict) -> None:
    path = log_path()
    line = json.dumps({"t": round(time.time(), 3), **event}) + "\n"
    with _lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        if size + len(line) > MAX_BYTES:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            keep = lines[len(lines) // 2:]
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(keep), encoding="utf-8")
            os.replace(tmp, path)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)


def events() -> list[dict]:
    try:
        text = log_path().read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


def summary(recent: int = 20) -> dict:
    evs = events()
    counts = Counter(e.get("event") for e in evs)
    kept = {s: [e for e in evs if e.get("event") == "retained" and e.get("after_s") == s] for s in RETENTION_CHECKS_S}
    shown, accepted = counts.get("shown", 0), counts.get("accepted", 0)
    path = log_path()
    return {
        "path": str(path), "bytes": path.stat().st_size if path.exists() else 0,
        "counts": dict(counts),
        "acceptance_rate": round(accepted / shown, 3) if shown else None,
        "retention": {f"{int(s)}s": (round(sum(e.get("still_there", False) for e in v) / len(v), 3) if v else None)
                      for s, v in kept.items()},
        "recent": [{k: v for k, v in e.items() if k not in ("prefix", "suffix", "text")} for e in evs[-recent:]],
    }


def delete() -> bool:
    with _lock:
        try:
            log_path().unlink()
            return True
        except FileNotFoundError:
            return False


def around(text: str, offset: int) -> tuple[str, str]:
    """What the log keeps of the document around an offer: PREFIX_CHARS before, SUFFIX_CHARS after."""
    return text[max(0, offset - PREFIX_CHARS):offset], text[offset:offset + SUFFIX_CHARS]


def retained_examples(after_s: float = RETENTION_CHECKS_S[-1]) -> list[tuple[str, str, str]]:
    """(prefix, accepted text, suffix) of accepted completions still there after `after_s`."""
    evs = events()
    kept = {e.get("id") for e in evs if e.get("event") == "retained" and e.get("after_s") == after_s
            and e.get("still_there")}
    return [(e.get("prefix", ""), e["text"], e.get("suffix", "")) for e in evs
            if e.get("event") == "accepted" and e.get("id") in kept and isinstance(e.get("text"), str)]


class Tracker:
    """Follows offers through acceptance and retention; records only while `enabled()`."""

    def __init__(self, enabled, doc_text, call_later):
        self.enabled, self.doc_text, self.call_later = enabled, doc_text, call_later
        self.offers: dict[str, dict] = {}  # id -> offer, until accepted or superseded
        self.latest: dict[str, str] = {}  # uri -> id of the last offer there

    def shown(self, gid: str, uri: str, text: str, offset: int, insert_text: str) -> None:
        if not self.enabled():
            return
        prev = self.latest.get(uri)
        if prev is not None and prev in self.offers:
            self.offers.pop(prev)
            append({"event": "dismissed", "id": prev, "file": Path(uri).name})
        self.latest[uri] = gid
        prefix, suffix = around(text, offset)
        self.offers[gid] = {"uri": uri, "prefix": prefix, "suffix": suffix, "text": insert_text}
        while len(self.offers) > 256:
            self.offers.pop(next(iter(self.offers)))
        append({"event": "shown", "id": gid, "file": Path(uri).name, "chars": len(insert_text)})

    def accepted(self, gid: str) -> None:
        offer = self.offers.pop(gid, None)
        if offer is None or not self.enabled():
            return
        append({"event": "accepted", "id": gid, "file": Path(offer["uri"]).name, "text": offer["text"],
                "prefix": offer["prefix"], "suffix": offer["suffix"]})
        for after in RETENTION_CHECKS_S:
            self.call_later(after, self._check, gid, offer["uri"], offer["text"], after)

    def _check(self, gid: str, uri: str, text: str, after: float) -> None:
        if not self.enabled():
            return
        doc = self.doc_text(uri)
        still = doc is not None and text.strip() in doc
        append({"event": "retained", "id": gid, "file": Path(uri).name, "after_s": after, "still_there": still})
