"""What Tandem wrote that entered a document, where it is now, and how it was made.

The life of a generation:
  1. `offer(Generated)` when a suggestion is shown (an inline completion item, a generated
     function): it waits in a bounded map of pending offers, keyed by a fresh id.
  2. The editor runs the item's command (`tandem.completionAccepted` with that id) after
     inserting it: `accept(id, text)` finds the inserted text in the document, near where it
     was offered, and remembers it as a Region. If the text is not there yet (the command
     overtook the change), the region waits a few seconds for the change that brings it.
  3. Every change to the document moves the regions (`changed`): an edit before a region
     shifts it, an edit inside marks it changed since generation, an edit that removes it
     drops it.
  4. Regions are kept per workspace in one JSON file under the Tandem home, with each file's
     content hash: reopening the same content restores them exactly; changed content (edited
     outside the editor) restores those found again by their text. The file is written
     atomically and bounded: the oldest regions are evicted first.

Plain Python: no pygls. Offsets are Python str indices; the LSP layer converts positions.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..text import UTF16, offset_at
from .regions import Edit, adjust, diff_edits, locate

log = logging.getLogger(__name__)

FORMAT = "tandem-provenance/1"
MAX_REGIONS = 500  # per workspace; the oldest are evicted first
MAX_WORKSPACES = 64  # state files kept; the least recently written go first
MAX_FILE_BYTES = 4_000_000  # the state file: past this the oldest regions go too
MAX_REGION_CHARS = 100_000  # longer insertions are not remembered
MAX_PENDING = 256  # offers shown but not (yet) accepted
PENDING_TTL_S = 3600.0
AWAIT_S = 10.0  # an accepted offer whose text has not reached the document yet
LOCATE_WINDOW = 20_000  # how far from the offered place the accepted text may have moved


@dataclass
class Generated:
    uri: str
    start: int            # character offset (Python str index) in the document text at offer time
    text: str             # exactly the text that will be inserted at `start`
    kind: str             # "inline" or "function"
    model: dict           # LoadedModel.describe(): model, variant, precision, device, path
    created: float        # time.time()
    prompt_sources: list[dict]  # e.g. [{"uri": ..., "lines": [first, last]}] (0-based, inclusive)
    tokens: list[tuple[int, int, float]] = ()  # (start, end, logprob) char spans within `text`
    verification: dict | None = None  # for "function": {"passed": int, "total": int, "summary": ...}
    extra: dict = field(default_factory=dict)


@dataclass
class Region:
    id: str
    uri: str
    start: int  # where it is now, in the current text of the document
    end: int
    text: str  # what Tandem wrote
    kind: str
    model: dict
    created: float
    accepted: float
    prompt_sources: list[dict]
    tokens: list[tuple[int, int, float]]
    verification: dict | None = None
    extra: dict = field(default_factory=dict)
    changed: bool = False  # edited since generation
    explanation: dict | None = None  # filled in by the explainer, persisted with the region
    current: str | None = None  # its text at the last save (to find it again after a restart)

    def to_json(self) -> dict:
        return {
            "id": self.id, "uri": self.uri, "start": self.start, "end": self.end, "text": self.text,
            "kind": self.kind, "model": self.model, "created": self.created, "accepted": self.accepted,
            "prompt_sources": self.prompt_sources, "tokens": [list(t) for t in self.tokens],
            "verification": self.verification, "extra": _jsonable(self.extra), "changed": self.changed,
            "explanation": self.explanation, "current": self.current,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Region":
        return cls(
            id=str(d["id"]), uri=str(d["uri"]), start=int(d["start"]), end=int(d["end"]), text=str(d["text"]),
            kind=str(d.get("kind", "inline")), model=dict(d.get("model") or {}), created=float(d.get("created", 0)),
            accepted=float(d.get("accepted", d.get("created", 0))),
            prompt_sources=list(d.get("prompt_sources") or []),
            tokens=[(int(a), int(b), float(lp)) for a, b, lp in d.get("tokens") or []],
            verification=d.get("verification"), extra=dict(d.get("extra") or {}),
            changed=bool(d.get("changed", False)), explanation=d.get("explanation"), current=d.get("current"))


def _jsonable(extra: dict) -> dict:
    """Keys starting with `_` are in-memory only (e.g. callables); the rest must be JSON."""
    out = {}
    for k, v in extra.items():
        if k.startswith("_"):
            continue
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def state_path(home: Path, root: str | None) -> Path:
    key = hashlib.sha256((root or "<no workspace>").encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return home / "state" / "provenance" / f"{key}.json"


@dataclass
class _Pending:
    gen: Generated
    offered: float
    accepted: float | None = None  # set while it waits for its text to reach the document


class ProvenanceStore:
    def __init__(self, home: Path | None = None, *, max_regions: int = MAX_REGIONS,
                 max_file_bytes: int = MAX_FILE_BYTES, max_pending: int = MAX_PENDING):
        self._home = home  # None: tandem_home() when bound (tests set TANDEM_HOME)
        self.max_regions = max_regions
        self.max_file_bytes = max_file_bytes
        self.max_pending = max_pending
        self.path: Path | None = None
        self.root: str | None = None
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._awaiting: dict[str, list[_Pending]] = {}  # uri -> accepted, text not arrived yet
        self._regions: dict[str, Region] = {}
        self._by_uri: dict[str, list[str]] = {}
        self._texts: dict[str, str] = {}  # uri -> its text as we last saw it (open documents)
        self._hashes: dict[str, str] = {}  # uri -> content hash the regions' offsets belong to
        self.dirty = False
        self.listeners: list = []  # callables(region) told when a region is remembered

    # -- workspace ------------------------------------------------------------------------
    @property
    def bound(self) -> bool:
        return self.path is not None

    def bind(self, root: str | None) -> None:
        """Attach to a workspace and load what was remembered there. Once per server."""
        if self.path is not None:
            return
        if self._home is None:
            from ..model.loader import tandem_home

            self._home = tandem_home()
        self.root = root
        self.path = state_path(self._home, root)
        self._load()
        self._prune_workspaces()

    def _prune_workspaces(self) -> None:
        try:
            files = sorted(self.path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        for old in [f for f in files if f != self.path][MAX_WORKSPACES - 1:]:
            try:
                old.unlink()
            except OSError:
                pass

    def _load(self) -> None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("cannot read %s: %s", self.path, e)
            return
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            files = data["files"]
            loaded = []
            for uri, entry in files.items():
                self._hashes[uri] = str(entry["hash"])
                for d in entry["regions"]:
                    loaded.append(Region.from_json(d))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("ignoring the unreadable provenance file %s (%s)", self.path, e)
            try:
                os.replace(self.path, self.path.with_suffix(".corrupt"))
            except OSError:
                pass
            self._hashes.clear()
            return
        for r in loaded:
            if r.uri not in self._texts:  # an open document's live regions win
                self._add(r)
        log.info("provenance: %d remembered region(s) in %d file(s) from %s", len(loaded), len(files), self.path)

    # -- offers and acceptance ------------------------------------------------------------
    def offer(self, g: Generated) -> str:
        """Remember a suggestion that was shown; returns the id its accept command carries."""
        gid = uuid.uuid4().hex[:16]
        now = time.time()
        self._pending[gid] = _Pending(g, now)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
        if self._pending:
            oldest = next(iter(self._pending.values()))
            if now - oldest.offered > PENDING_TTL_S:
                self._pending = OrderedDict((k, p) for k, p in self._pending.items()
                                            if now - p.offered <= PENDING_TTL_S)
        return gid

    def pending(self, gid: str) -> Generated | None:
        p = self._pending.get(gid)
        return p.gen if p else None

    def accept(self, gid: str, text: str | None) -> Region | None:
        """The offer `gid` entered the document whose current text is `text` (None: not open).
        Returns the new region, or None when the text is not there (yet: it waits a little
        for the change that brings it) or the id is unknown or expired."""
        p = self._pending.pop(gid, None)
        if p is None:
            log.info("provenance: accepted id %s is unknown or expired", gid)
            return None
        g = p.gen
        if not g.text or len(g.text) > MAX_REGION_CHARS:
            return None
        p.accepted = time.time()
        if text is not None:
            region = self._place(p, text)
            if region is not None:
                return region
        self._awaiting.setdefault(g.uri, []).append(p)
        log.info("provenance: accepted text not in %s yet; waiting for the change", g.uri)
        return None

    def _place(self, p: _Pending, text: str) -> Region | None:
        g = p.gen
        at = locate(text, g.text, g.start, LOCATE_WINDOW)
        if at is None:
            return None
        own = g.extra.get("own_chars")
        own = len(g.text) if not isinstance(own, int) or not 0 < own <= len(g.text) else own
        region = Region(
            id=uuid.uuid4().hex[:16], uri=g.uri, start=at, end=at + own, text=g.text[:own], kind=g.kind,
            model=dict(g.model or {}), created=g.created, accepted=p.accepted or time.time(),
            prompt_sources=list(g.prompt_sources or []),
            tokens=[(int(a), int(b), float(lp)) for a, b, lp in (g.tokens or ()) if b <= own],
            verification=g.verification, extra=dict(g.extra or {}))
        self._track(g.uri, text)
        self._add(region)
        self._evict()
        self.dirty = True
        for listener in list(self.listeners):
            try:
                listener(region)
            except Exception:
                log.exception("provenance listener failed")
        return region

    # -- documents ------------------------------------------------------------------------
    def _track(self, uri: str, text: str) -> None:
        if uri not in self._texts:
            self._texts[uri] = text
            self._hashes[uri] = content_hash(text)

    def opened(self, uri: str, text: str) -> None:
        """A document was opened with `text`: restore its remembered regions."""
        ids = self._by_uri.get(uri)
        if not ids:
            return
        if self._hashes.get(uri) != content_hash(text):
            # Edited elsewhere: keep the regions whose text is still there.
            for rid in list(ids):
                r = self._regions[rid]
                current = r.current if r.current is not None else r.text
                at = locate(text, current, r.start)
                if at is None:
                    self._remove(rid)
                else:
                    r.start, r.end = at, at + len(current)
                    r.changed = current != r.text
            self.dirty = True
        else:
            n = len(text)
            for rid in list(ids):
                r = self._regions[rid]
                if not (0 <= r.start < r.end <= n):
                    self._remove(rid)
        if self._by_uri.get(uri):
            self._texts[uri] = text
            self._hashes[uri] = content_hash(text)

    def changed(self, uri: str, changes: Iterable[tuple[tuple[int, int, int, int] | None, str]],
                new_text: str | None, encoding: str = UTF16) -> bool:
        """Apply a didChange: `changes` in order, each (range as (line, char, line, char) in
        `encoding` units, or None for the whole document, new text). `new_text` is the
        document after all of them (to check we followed; None to skip the check).
        Returns True when a region moved, changed or went away."""
        touched = False
        text = self._texts.get(uri)
        if text is not None:
            for rng, new in changes:
                if rng is None:
                    edits = diff_edits(text, new)[::-1]  # last first: earlier offsets stay valid
                else:
                    a = offset_at(text, rng[0], rng[1], encoding)
                    b = max(a, offset_at(text, rng[2], rng[3], encoding))
                    edits = [Edit(a, b, new)] if text[a:b] != new else []
                for edit in edits:
                    touched |= self._apply(uri, text, edit)
                    text = text[:edit.start] + edit.new + text[edit.end:]
            if new_text is not None and text != new_text:
                log.warning("provenance: lost track of %s; finding its regions again", uri)
                self._resync(uri, text, new_text)
                text = new_text
                touched = True
            if self._by_uri.get(uri) or self._awaiting.get(uri):
                self._texts[uri] = text
            else:
                self._texts.pop(uri, None)
        if self._awaiting.get(uri):
            doc = new_text if new_text is not None else text
            touched |= self._place_awaiting(uri, doc)
        if touched:
            self.dirty = True
        return touched

    def _apply(self, uri: str, text: str, edit: Edit) -> bool:
        touched = False
        new_text = None
        for rid in list(self._by_uri.get(uri, ())):
            r = self._regions[rid]
            moved = adjust(r.start, r.end, text[r.start:r.end], edit)
            if moved is None:
                self._remove(rid)
                touched = True
                continue
            if moved == (r.start, r.end) and edit.start >= r.end:
                continue
            touched = True
            inside = not (edit.end <= r.start)
            r.start, r.end = moved
            if inside:
                if new_text is None:
                    new_text = text[:edit.start] + edit.new + text[edit.end:]
                r.changed = new_text[r.start:r.end] != r.text
        return touched

    def _resync(self, uri: str, old: str, new: str) -> None:
        for rid in list(self._by_uri.get(uri, ())):
            r = self._regions[rid]
            current = old[r.start:r.end]
            at = locate(new, current, r.start)
            if at is None:
                self._remove(rid)
            else:
                r.start, r.end = at, at + len(current)

    def _place_awaiting(self, uri: str, text: str) -> bool:
        now = time.time()
        left, placed = [], False
        for p in self._awaiting.pop(uri, []):
            if self._place(p, text) is not None:
                placed = True
            elif now - (p.accepted or now) < AWAIT_S:
                left.append(p)
        if left:
            self._awaiting[uri] = left
            self._track(uri, text)
        return placed

    def closed(self, uri: str) -> None:
        """The document was closed: its regions stay remembered under its last content."""
        text = self._texts.pop(uri, None)
        self._awaiting.pop(uri, None)
        if text is not None and self._by_uri.get(uri):
            self._snapshot(uri, text)
            self.dirty = True

    def _snapshot(self, uri: str, text: str) -> None:
        self._hashes[uri] = content_hash(text)
        for rid in self._by_uri.get(uri, ()):
            r = self._regions[rid]
            r.current = text[r.start:r.end]

    # -- queries ------------------------------------------------------------------------
    def get(self, rid: str) -> Region | None:
        return self._regions.get(rid)

    def regions(self, uri: str) -> list[Region]:
        return sorted((self._regions[i] for i in self._by_uri.get(uri, ())), key=lambda r: r.start)

    def region_at(self, uri: str, offset: int) -> Region | None:
        """The region under `offset` (its end counts: the cursor after the last character);
        the innermost, then the newest, when several overlap."""
        hits = [r for r in self.regions(uri) if r.start <= offset <= r.end]
        if not hits:
            return None
        return min(hits, key=lambda r: (r.end - r.start, -r.accepted))

    def regions_in(self, uri: str, start: int, end: int) -> list[Region]:
        return [r for r in self.regions(uri) if r.start < end and start < r.end]

    def text_of(self, uri: str) -> str | None:
        return self._texts.get(uri)

    def set_explanation(self, rid: str, explanation: dict) -> None:
        r = self._regions.get(rid)
        if r is not None:
            r.explanation = explanation
            self.dirty = True

    # -- bookkeeping --------------------------------------------------------------------
    def _add(self, r: Region) -> None:
        self._regions[r.id] = r
        self._by_uri.setdefault(r.uri, []).append(r.id)

    def _remove(self, rid: str) -> None:
        r = self._regions.pop(rid, None)
        if r is None:
            return
        ids = self._by_uri.get(r.uri)
        if ids and rid in ids:
            ids.remove(rid)
            if not ids:
                del self._by_uri[r.uri]
                if r.uri not in self._texts:
                    self._hashes.pop(r.uri, None)

    def _evict(self, keep: int | None = None) -> int:
        keep = self.max_regions if keep is None else keep
        if len(self._regions) <= keep:
            return 0
        order = sorted(self._regions.values(), key=lambda r: r.accepted)
        gone = order[:len(order) - keep]
        for r in gone:
            self._remove(r.id)
        return len(gone)

    # -- persistence --------------------------------------------------------------------
    def snapshot(self) -> dict:
        for uri, text in self._texts.items():
            if self._by_uri.get(uri):
                self._snapshot(uri, text)
        files: dict[str, dict] = {}
        for uri, ids in self._by_uri.items():
            if ids and uri in self._hashes:
                files[uri] = {"hash": self._hashes[uri],
                              "regions": [self._regions[i].to_json() for i in ids]}
        return {"format": FORMAT, "root": self.root, "saved": time.time(), "files": files}

    def save(self) -> bool:
        """Write the state file atomically (if bound and something changed). True if written."""
        if self.path is None or not self.dirty:
            return False
        data = json.dumps(self.snapshot(), ensure_ascii=False, default=str)
        while len(data.encode("utf-8")) > self.max_file_bytes and self._regions:
            self._evict(keep=max(0, len(self._regions) - max(1, len(self._regions) // 10)))
            data = json.dumps(self.snapshot(), ensure_ascii=False, default=str)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(data, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot write %s: %s", self.path, e)
            try:
                tmp.unlink()
            except OSError:
                pass
            return False
        self.dirty = False
        return True
