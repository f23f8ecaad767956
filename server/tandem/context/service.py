"""The context seam: what other files contribute to a prompt, found on a time budget.

Providers (each can be switched off with the `contextSources` setting):
  - "imports": definitions of the names the current file imports from the workspace
    (signatures, class headers, first docstring lines, constants), nearest files first;
  - "similar": the most similar windows (Jaccard) of recently opened and edited files, of the
    workspace modules the file imports, and of the file itself away from the cursor (what the
    prompt's own window of the file does not show); the query is the lines above the cursor's
    16-line block, so the windows stay while the user types and moves within the block;
  - "path": the current file's path in the workspace.

Each provider runs on a small thread pool against a deadline. One that is not done in time
is skipped for this request, never waited for; it goes on in the background and its result,
cached by its inputs, serves the next request. Results are keyed by what they depend on (the
file's import lines, the lines above the cursor's line, the index's generation, the other
documents' versions), so while the user types on one line the context, its rendering and the
token ids the model sees first stay exactly the same: the runtime then reuses their KV cache.

Priority: the best similar window, the three nearest definitions, the second window, then
the rest (`_interleave`); rendered in Qwen2.5-Coder's repository format, before the current file:
    <|repo_name|>NAME\\n <|file_sep|>PATH\\nCONTENT\\n ... <|file_sep|>CURRENT_PATH\\n
and then the fill-in-the-middle part of the current file (completion/prompt.py). Chat prompts
(docstring action, explanations) get the same pieces as fenced blocks (`as_markdown`).

Plain Python: no pygls.
"""
from __future__ import annotations

import bisect
import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from . import outline as O
from . import similar as S
from .index import WorkspaceIndex, distance

log = logging.getLogger(__name__)

SOURCES = ("imports", "similar", "path")
PROVIDER_BUDGET_S = 0.05  # each provider, all running at once
RECENT_DOCS = 20
ANCHOR_LINES = 16  # the imports are ranked by use nearest the cursor's block of this many lines
MAX_DEFINITIONS = 48
MAX_SIMILAR = 4
NEIGHBOUR_FILES = 8  # imported workspace modules searched for similar code
RESULTS_CACHE = 256
BLOCKS_CACHE = 64
FOLLOW_REEXPORTS = 2  # `from .x import A` in a package's __init__: followed this deep
# A block is kept while the user writes new lines at the cursor (see `prompt_head`): edits since it
# was gathered confined to this many lines from the line where it was gathered, the cursor among them.
STICKY_LINES = ANCHOR_LINES
STICKY_DOCS = 32


def uri_to_path(uri: str) -> str | None:
    if not uri.startswith("file:"):
        return None
    try:
        return os.path.abspath(unquote(urlparse(uri).path))
    except ValueError:
        return None


def path_to_uri(path: str) -> str:
    return Path(path).as_uri()


@dataclass(frozen=True)
class Piece:
    uri: str
    rel: str  # the path shown to the model
    first: int  # 0-based lines in that file, inclusive
    last: int
    text: str
    what: str


@dataclass(frozen=True)
class Context:
    """What the providers found for one request: model-independent."""
    repo: str
    path: str  # the current file's path in the prompt ("" when the path source is off)
    pieces: tuple[Piece, ...]  # best first
    key: tuple
    skipped: tuple[str, ...] = ()  # providers that missed their deadline
    ms: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.pieces and not self.path


@dataclass(frozen=True)
class ContextBlock:
    """The context rendered for one model: the token ids that come before <|fim_prefix|>."""
    ids: tuple[int, ...]
    sources: list = field(default_factory=list)  # [{"uri", "lines": [a, b], "what"}] per piece used
    key: tuple = ()
    text: str = ""


@dataclass
class _Doc:
    uri: str
    path: str | None
    version: int
    text: str
    windows: list | None = None


def special_id(codec, token: str) -> int | None:
    """The id of a special token such as <|file_sep|> (inserted by id: the tokenizer would
    split its text)."""
    for obj in (codec, getattr(codec, "_tok", None)):
        f = getattr(obj, "token_to_id", None)
        if f is not None:
            try:
                i = f(token)
            except Exception:
                i = None
            if i is not None:
                return int(i)
    return None


class ContextService:
    def __init__(self, budget_s: float = PROVIDER_BUDGET_S, workers: int = 3):
        self.budget_s = budget_s
        self.index: WorkspaceIndex | None = None
        self.repo = ""
        self._docs: OrderedDict[str, _Doc] = OrderedDict()
        self._open: set[str] = set()
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tandem-context")
        self._results: OrderedDict[tuple, object] = OrderedDict()
        self._running: dict[tuple, Future] = {}
        self._blocks: OrderedDict[tuple, ContextBlock] = OrderedDict()
        self._loose: WorkspaceIndex | None = None
        self._own_windows: OrderedDict[str, dict] = OrderedDict()  # uri -> {window text: identifiers}
        self._sticky: OrderedDict[str, _Sticky] = OrderedDict()  # uri -> the block last gathered there
        self.sticky_lines = STICKY_LINES  # 0: gather every time

    # -- workspace and documents ---------------------------------------------------------
    def bind(self, roots: list[str], start: bool = True) -> None:
        roots = [r for r in roots if r and os.path.isdir(r)]
        if self.index is not None or not roots:
            return
        self.index = WorkspaceIndex(roots)
        self.repo = os.path.basename(os.path.abspath(roots[0]).rstrip(os.sep)) or "workspace"
        with self._lock:
            for d in self._docs.values():
                if d.path and d.uri in self._open:
                    self.index.set_text(d.path, d.version, d.text)
        if start:
            self.index.start()

    def opened(self, uri: str, text: str, version: int | None) -> None:
        self._put(uri, text, version or 0, opened=True)
        self.prefetch(uri)

    def changed(self, uri: str, text: str, version: int | None) -> None:
        self._put(uri, text, version or 0, opened=True)

    def closed(self, uri: str) -> None:
        with self._lock:
            self._open.discard(uri)
            self._sticky.pop(uri, None)
            d = self._docs.get(uri)
        if d is not None and d.path and self.index is not None:
            self.index.set_text(d.path, 0, None)  # the file on disk counts again
            self.index.invalidate(d.path)

    def saved(self, uri: str) -> None:
        path = uri_to_path(uri)
        if path and self.index is not None:
            self.index.invalidate(path)

    def files_changed(self, events: list[tuple[str, int]]) -> None:
        """workspace/didChangeWatchedFiles: (uri, type) with type 1 created, 2 changed, 3 deleted."""
        if self.index is None:
            return
        for uri, kind in events:
            path = uri_to_path(uri)
            if not path:
                continue
            if kind == 3:
                self.index.remove(path)
            elif kind == 1:
                self.index.add(path)
            else:
                self.index.invalidate(path)

    def _put(self, uri: str, text: str, version: int, opened: bool) -> None:
        path = uri_to_path(uri)
        with self._lock:
            d = self._docs.get(uri)
            if d is None:
                d = self._docs[uri] = _Doc(uri, path, version, text)
            else:
                d.version, d.text, d.windows = version, text, None
            self._docs.move_to_end(uri)
            if opened:
                self._open.add(uri)
            while len(self._docs) > RECENT_DOCS:
                old = next(iter(self._docs))
                if old in self._open and len(self._open) >= RECENT_DOCS:
                    break
                self._docs.pop(old)
        if path and self.index is not None:
            self.index.set_text(path, version, text)

    def recent_paths(self) -> list[str]:
        """Paths of the documents opened or edited lately (at most RECENT_DOCS), most recent last."""
        with self._lock:
            return [d.path for d in self._docs.values() if d.path]

    def prefetch(self, uri: str) -> None:
        """Start the import definitions of a document in the background (warms the outlines)."""
        with self._lock:
            d = self._docs.get(uri)
        if d is None or not d.path:
            return
        key = self._imports_key(d.path, d.text, self._others_stamp(uri))
        self._submit(key, self._imports, d.path, d.text)
        self._submit(("windows",) + key[1:], self._warm_windows, uri, d.path, d.text)

    def _warm_windows(self, uri: str, path: str, text: str) -> list:
        """The similar-code windows of the document and of the modules it imports."""
        fresh: dict = {}
        S.windows(text, fresh)
        self._keep_own_windows(uri, fresh)
        idx = self._index(path)
        for mpath in self._imported_files(idx, path, text):
            idx.windows_of(mpath)
        return []

    def _keep_own_windows(self, uri: str, memo: dict) -> None:
        """A document's window memo (window text -> identifiers), for its RECENT_DOCS latest."""
        with self._lock:
            self._own_windows[uri] = memo
            self._own_windows.move_to_end(uri)
            while len(self._own_windows) > RECENT_DOCS:
                self._own_windows.popitem(last=False)

    def settle(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) for the providers running in the background, e.g. a
        didOpen prefetch; True when none is left running. For tests and benchmarks."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                running = list(self._running.values())
            if not running:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait(running, timeout=left)

    # -- gathering --------------------------------------------------------------------------
    def gather(self, uri: str, text: str, offset: int, sources=SOURCES, budget_s: float | None = None) -> Context:
        """The context for a request at `offset` in `text` (the document `uri`)."""
        t0 = time.perf_counter()
        budget = self.budget_s if budget_s is None else budget_s
        path = uri_to_path(uri)
        rel = self._rel(uri, path)
        stamp = self._others_stamp(uri)
        jobs: list[tuple[str, tuple, object, tuple]] = []
        # The cursor's line, and a digest of the file without it: both providers read the rest
        # of the file, and their answers stay the same while the user types on that line.
        ls = text.rfind("\n", 0, offset) + 1
        le = text.find("\n", offset)
        le = len(text) if le < 0 else le
        line = text.count("\n", 0, ls)
        rest = hashlib.sha1((text[:ls] + text[le:]).encode("utf-8", "replace")).hexdigest()
        if "imports" in sources and path and path.endswith((".py", ".pyi")):
            # Which imported names are used nearest is decided per 16-line block of the cursor.
            key = self._imports_key(path, text, stamp) + (rest, line // ANCHOR_LINES)
            jobs.append(("imports", key, self._imports, (path, text, ls, le)))
        if "similar" in sources:
            q = S.query_lines(text, offset, S.QUERY_ALIGN)
            if len(S.tokens(q)) >= S.MIN_QUERY_TOKENS:
                line -= line % S.QUERY_ALIGN  # the first line of the cursor's block: one answer per block
            else:  # the file's first block: the lines above the cursor's line
                q = S.query_lines(text, offset)
            key = ("similar", uri, hashlib.sha1(q.encode("utf-8", "replace")).hexdigest(), stamp,
                   rest, line)
            jobs.append(("similar", key, self._similar, (uri, q, path, text, line)))
        futures = {name: (key, self._submit(key, fn, *args)) for name, key, fn, args in jobs}
        pending = [f for _k, f in futures.values() if not f.done()]
        if pending:
            wait(pending, timeout=max(0.0, budget - (time.perf_counter() - t0)))
        found: dict[str, tuple] = {}
        skipped = []
        for name, (key, fut) in futures.items():
            if not fut.done():
                skipped.append(name)
                continue
            try:
                found[name] = fut.result()
            except Exception:
                log.exception("context provider %s failed", name)
        pieces = _interleave(list(found.get("imports", ())), list(found.get("similar", ())))
        shown = rel if "path" in sources else ""
        ms = (time.perf_counter() - t0) * 1000
        if skipped:
            log.info("context: %s skipped (over %.0f ms)", ", ".join(skipped), budget * 1000)
        # Keyed by content: inputs that changed without changing what was found (a keystroke,
        # a save) keep the same key, hence the same rendered block and the engine's cached results.
        h = hashlib.sha1()
        for p in pieces:
            h.update(f"{p.uri}\0{p.first}\0{p.last}\0{p.what}\0{p.text}\0".encode("utf-8", "replace"))
        return Context(self.repo or "workspace", shown, tuple(pieces), (shown, h.hexdigest()), tuple(skipped), ms)

    def _submit(self, key: tuple, fn, *args) -> Future:
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                f: Future = Future()
                f.set_result(self._results[key])
                return f
            running = self._running.get(key)
            if running is not None:
                return running
            fut = self._pool.submit(self._keep, key, fn, *args)
            self._running[key] = fut
            return fut

    def _keep(self, key: tuple, fn, *args):
        try:
            value = tuple(fn(*args))
        finally:
            with self._lock:
                self._running.pop(key, None)
        with self._lock:
            self._results[key] = value
            while len(self._results) > RESULTS_CACHE:
                self._results.popitem(last=False)
        return value

    def _others_stamp(self, uri: str) -> tuple:
        with self._lock:
            docs = tuple((d.uri, d.version) for d in self._docs.values() if d.uri != uri)
        gen = self.index.generation if self.index is not None else -1
        return gen, docs

    def _imports_key(self, path: str, text: str, stamp: tuple) -> tuple:
        return ("imports", path, hashlib.sha1(O.import_lines_key(text).encode("utf-8", "replace")).hexdigest(),
                stamp)

    def _rel(self, uri: str, path: str | None) -> str:
        if path is None:
            return unquote(urlparse(uri).path).rsplit("/", 1)[-1] or uri
        if self.index is not None:
            return self.index.relpath(path)
        return os.path.basename(path)

    # -- providers --------------------------------------------------------------------------
    def _index(self, path: str) -> WorkspaceIndex:
        if self.index is not None:
            return self.index
        # No workspace folder: the importing file's own folder (siblings and relative imports),
        # never walked; its outlines are cached like the index's.
        with self._lock:
            if self._loose is None:
                self._loose = WorkspaceIndex([])
            return self._loose

    def _imports(self, path: str, text: str, line_start: int = -1, line_end: int = -1) -> list[Piece]:
        """Definitions of the imported names: those used nearest the cursor's block of lines
        first (the cursor's own line left out), then the others, files nearest first."""
        idx = self._index(path)
        here = os.path.dirname(path)
        found: OrderedDict[tuple[str, str], O.Definition] = OrderedDict()
        order: dict[str, int] = {}

        def take(mpath: str, names: list[str] | None, depth: int = 0) -> None:
            if os.path.abspath(mpath) == os.path.abspath(path):
                return  # a file importing itself (or a cycle back to it)
            defs = idx.outline_of(mpath)
            if names is None:  # `import m`: what the file uses of it, else its first definitions
                names = [n for n, d in defs.items() if d.kind != "import" and not n.startswith("_")][:8]
            for n in names:
                d = defs.get(n)
                if d is None:
                    continue
                if d.kind == "import":
                    if depth < FOLLOW_REEXPORTS:
                        target = _resolve_from(idx, d.source, mpath)
                        if target is not None:
                            take(target, [d.text], depth + 1)
                    continue
                if (mpath, n) not in found and len(found) < MAX_DEFINITIONS:
                    found[(mpath, n)] = d
                    order.setdefault(mpath, len(order))

        for imp in O.imports(text):
            try:
                if imp.names:
                    mpath = _resolve_from(idx, imp.module, path)
                    for n in imp.names:
                        defs = idx.outline_of(mpath) if mpath else {}
                        if n in defs:
                            take(mpath, [n])
                            continue
                        sub = _resolve_from(idx, _join(imp.module, n), path)
                        if sub is not None:  # `from pkg import module`
                            used = O.attributes_used(text, n)
                            take(sub, used or None)
                else:
                    mpath = idx.resolve(imp.module, path)
                    if mpath is not None:
                        used = O.attributes_used(text, imp.alias)
                        take(mpath, used or None)
            except Exception:
                log.exception("context: import %s", imp)
        files = sorted(order, key=lambda p: (distance(here, os.path.dirname(p)), order[p]))
        rank = {p: i for i, p in enumerate(files)}
        near = _use_distance(text, {n for (_p, n) in found}, line_start, line_end)
        items = sorted(found.items(), key=lambda kv: (near.get(kv[0][1], 1 << 30), rank[kv[0][0]], kv[1].first))
        return [Piece(path_to_uri(p), idx.relpath(p), d.first, d.last, d.text, f"definition of {n}")
                for (p, n), d in items]

    def _similar(self, uri: str, query: str, path: str | None = None, text: str = "",
                 line: int = -1) -> list[Piece]:
        """The windows most similar to the lines above the cursor among: the recently opened
        and edited documents; the current file away from the cursor (what the prompt's own
        window of the file does not show); the workspace modules the file imports."""
        q = S.tokens(query)
        if len(q) < S.MIN_QUERY_TOKENS:
            return []
        with self._lock:
            docs = [d for d in self._docs.values() if d.uri != uri]
        pool = []
        lines_of: dict[str, list[str]] = {}
        names: dict[str, tuple[str, str | None]] = {}
        for d in docs:
            version, dtext = d.version, d.text
            if d.windows is None or d.windows[0] != version:
                d.windows = (version, S.windows(dtext), dtext.split("\n"))
            pool.append((d.uri, d.windows[1]))
            lines_of[d.uri] = d.windows[2]
            names[d.uri] = (d.uri, d.path)
        if text and line >= 0:
            own = text.split("\n")
            with self._lock:
                memo = self._own_windows.get(uri, {})
            fresh: dict = {}
            wins = [w for w in S.windows(text, _Memo(memo, fresh))
                    if w.last < line - S.SELF_SKIP_ABOVE or w.first > line + S.QUERY_ALIGN + S.SELF_SKIP_BELOW]
            self._keep_own_windows(uri, fresh)  # only the windows of this version are kept
            if wins:
                pool.append((uri, wins))
                lines_of[uri], names[uri] = own, (uri, path)
        if path and text and path.endswith((".py", ".pyi")):
            idx = self._index(path)
            for mpath in self._imported_files(idx, path, text):
                muri = path_to_uri(mpath)
                if muri in names:
                    continue  # open: its document's text is already in the pool
                mlines, wins = idx.windows_of(mpath)
                if wins:
                    pool.append((muri, wins))
                    lines_of[muri], names[muri] = mlines, (muri, mpath)
        out = []
        for score, key, w in S.best_windows(q, pool, MAX_SIMILAR):
            body = "\n".join(lines_of[key][w.first:w.last + 1]).rstrip()
            if body:
                u, p = names[key]
                out.append(Piece(u, self._rel(u, p), w.first, w.last, body, f"similar code ({score:.2f})"))
        return out

    def _imported_files(self, idx: WorkspaceIndex, path: str, text: str) -> list[str]:
        """The workspace files `text` imports from (import order, at most NEIGHBOUR_FILES)."""
        out: list[str] = []
        for imp in O.imports(text):
            try:
                cands = [_resolve_from(idx, imp.module, path)] if imp.module else []
                if imp.names and (not cands or cands[0] is None or os.path.basename(cands[0]) == "__init__.py"):
                    cands += [_resolve_from(idx, _join(imp.module, n), path) for n in imp.names]
            except Exception:
                continue
            for c in cands:
                if c and c not in out and os.path.abspath(c) != os.path.abspath(path) \
                        and os.path.basename(c) != "__init__.py":
                    out.append(c)
            if len(out) >= NEIGHBOUR_FILES:
                break
        return out[:NEIGHBOUR_FILES]

    # -- rendering ----------------------------------------------------------------------------
    def block(self, codec, context: Context, budget_tokens: int) -> ContextBlock | None:
        """render_block, cached by the context's key (the same inputs give the same ids)."""
        key = (id(codec), context.key, context.repo, budget_tokens)
        with self._lock:
            hit = self._blocks.get(key, False)
            if hit is not False:
                self._blocks.move_to_end(key)
                return hit
        blk = render_block(codec, context, budget_tokens, key)
        with self._lock:
            self._blocks[key] = blk
            while len(self._blocks) > BLOCKS_CACHE:
                self._blocks.popitem(last=False)
        return blk

    def prompt_head(self, codec, uri: str, text: str, offset: int, sources, budget_tokens: int,
                    keep: bool = True) -> ContextBlock | None:
        """The context block of an inline completion at `offset`.

        While the user writes new lines where the block was last gathered, that block is kept:
        Enter shifts the file's lines below the cursor, which changes the windows of the file the
        providers find (and so the block) at about half the places, and a changed block means the
        whole prompt is computed again (~2 s on 2 CPU cores) instead of the new line. Kept only
        while every edit since the block was gathered lies within `sticky_lines` lines from the
        line it was gathered at, with the cursor there too, touches no import line, and nothing
        else changed (other documents, the index, settings); anything more gathers afresh.
        `keep` False gathers afresh every time (where a new prefill costs little: a GPU)."""
        key = (id(codec), tuple(sources), budget_tokens, self._others_stamp(uri))
        with self._lock:
            st = self._sticky.get(uri)
        if keep and st is not None and st.key == key:
            added = _local_edit(st.text, st.offset, text, offset, self.sticky_lines)
            if added is not None:
                return _shifted(st.block, uri, st.line, added)
        ctx = self.gather(uri, text, offset, sources)
        blk = self.block(codec, ctx, budget_tokens)
        with self._lock:
            if ctx.skipped:  # a provider missed its deadline: not a block to keep
                self._sticky.pop(uri, None)
            else:
                self._sticky[uri] = _Sticky(text, offset, text.count("\n", 0, offset), key, blk)
                self._sticky.move_to_end(uri)
                while len(self._sticky) > STICKY_DOCS:
                    self._sticky.popitem(last=False)
        return blk

    def shutdown(self) -> None:
        if self.index is not None:
            self.index.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def render_block(codec, context: Context, budget_tokens: int, key: tuple = ()) -> ContextBlock | None:
    """The context as token ids in the repository format, within `budget_tokens`: the pieces
    in priority order while they fit, grouped by file, the most relevant file last (next to the
    current one), then the current file's `<|file_sep|>path` line. None when nothing from other
    files fits or the tokenizer lacks the repository tokens (the plain FIM prompt then)."""
    if not context.pieces or budget_tokens <= 0:
        return None
    repo_id, sep_id = special_id(codec, "<|repo_name|>"), special_id(codec, "<|file_sep|>")
    if repo_id is None or sep_id is None:
        return None
    head = [repo_id, *codec.encode(context.repo + "\n")]
    tail = [sep_id, *codec.encode(context.path + "\n")]
    left = budget_tokens - len(head) - len(tail)
    chosen: list[Piece] = []
    seen_files: set[str] = set()
    for p in context.pieces:
        cost = len(codec.encode(p.text)) + 2
        if p.rel not in seen_files:
            cost += 1 + len(codec.encode(p.rel + "\n"))
        if cost > left:
            continue
        left -= cost
        seen_files.add(p.rel)
        chosen.append(p)
    if not chosen:
        return None
    ids, text = list(head), f"<|repo_name|>{context.repo}\n"
    sources = []
    for rel, group in reversed(_by_file(chosen)):
        content = "\n\n".join(p.text for p in group) + "\n"
        ids += [sep_id, *codec.encode(f"{rel}\n{content}")]
        text += f"<|file_sep|>{rel}\n{content}"
        sources += [{"uri": p.uri, "lines": [p.first, p.last], "what": p.what} for p in group]
    ids += tail
    text += f"<|file_sep|>{context.path}\n"
    return ContextBlock(tuple(ids), sources, key or (context.key, budget_tokens), text)


@dataclass(frozen=True)
class _Sticky:
    text: str  # the document when the block was gathered
    offset: int
    line: int  # the offset's line
    key: tuple
    block: ContextBlock | None


def _shifted(block: ContextBlock | None, uri: str, line: int, delta: int) -> ContextBlock | None:
    """A kept block whose sources name the current file's lines below `line` as they are now
    (`delta` lines were written there): the ids stay, the hover's line numbers follow the text."""
    if block is None or not delta:
        return block
    sources = [dict(src, lines=[src["lines"][0] + delta, src["lines"][1] + delta])
               if src.get("uri") == uri and src["lines"][0] > line else src for src in block.sources]
    return replace(block, sources=sources)


_IMPORT_LINE = re.compile(r"^\s*(?:from\s+\S+\s+)?import\s", re.M)


def _local_edit(old: str, old_offset: int, new: str, new_offset: int, lines: int) -> int | None:
    """The lines `new` has more than `old` when it differs only within `lines` lines from the
    line of `old_offset` (the text there written, none of it an import), with `new_offset`
    among those lines; None otherwise. Compares the texts around that window once (memcmp) and
    looks closer only inside it: this runs for every completion request."""
    if lines <= 0:
        return None
    start = old.rfind("\n", 0, old_offset) + 1  # the line's first character, the same in both ...
    if new_offset < start or not new.startswith(old[:start]):  # ... unless something above changed
        return None
    end = start  # the end of the window in the new text: `lines` lines from `start`
    for _ in range(lines):
        end = new.find("\n", end) + 1
        if not end:
            end = len(new)
            break
    old_end = len(old) - (len(new) - end)
    if old_end < start or not old.endswith(new[end:]) or new.count("\n", start, new_offset) >= lines:
        return None  # an edit below the window, or the cursor left it
    ow, nw = old[start:old_end], new[start:end]
    p = len(os.path.commonprefix([ow, nw]))
    s = len(os.path.commonprefix([ow[p:][::-1], nw[p:][::-1]]))
    # an edited line that now is, or was, an import: the imports provider must see it
    for w in (ow, nw):
        if _IMPORT_LINE.search(w[w.rfind("\n", 0, p) + 1:w.find("\n", len(w) - s) % (len(w) + 1)]):
            return None
    return nw.count("\n") - ow.count("\n")


class _Memo(dict):
    """Reads from `old`, writes what was used to `fresh` (so the memo never outgrows one version)."""

    def __init__(self, old: dict, fresh: dict):
        super().__init__()
        self.old, self.fresh = old, fresh

    def get(self, key, default=None):
        v = self.fresh.get(key)
        if v is None:
            v = self.old.get(key)
            if v is not None:
                self.fresh[key] = v
        return default if v is None else v

    def __setitem__(self, key, value):
        self.fresh[key] = value


def _interleave(defs: list[Piece], similar: list[Piece]) -> list[Piece]:
    """Priority order of the pieces: the best similar window (how code near here is written,
    which the definitions do not show), the nearest definitions, the next window, then the
    rest."""
    return similar[:1] + defs[:3] + similar[1:2] + defs[3:] + similar[2:]


def _use_distance(text: str, names: set[str], line_start: int, line_end: int) -> dict[str, int]:
    """For each name, how many lines its nearest use (outside import statements and the
    cursor's own line) is from the middle of the cursor's ANCHOR_LINES-line block."""
    if not names or line_start < 0:
        return {}
    head = text[:O.MAX_IMPORT_SCAN]
    newlines = [m.start() for m in re.finditer("\n", head)]
    anchor = (bisect.bisect_right(newlines, line_start - 1) // ANCHOR_LINES) * ANCHOR_LINES + ANCHOR_LINES // 2
    pattern = re.compile(r"(?<![\w.])(" + "|".join(sorted(map(re.escape, names))) + r")\b")
    spans = sorted((m.start(), m.end()) for rx in (O._FROM, O._IMPORT) for m in rx.finditer(head))
    starts = [a for a, _b in spans]
    out: dict[str, int] = {}
    for m in pattern.finditer(head):
        if line_start <= m.start() <= line_end:
            continue
        i = bisect.bisect_right(starts, m.start()) - 1
        if i >= 0 and spans[i][0] <= m.start() < spans[i][1]:
            continue  # the import statement itself
        ln = bisect.bisect_right(newlines, m.start() - 1)
        d = abs(ln - anchor)
        if d < out.get(m.group(1), 1 << 30):
            out[m.group(1)] = d
    return out


def _join(module: str, name: str) -> str:
    return module + name if module.endswith(".") or not module else module + "." + name


def _resolve_from(idx: WorkspaceIndex, module: str, importer: str) -> str | None:
    if not module:
        return None
    found = idx.resolve(module, importer)
    if found is None and not module.startswith("."):
        # A sibling module (a script's own folder is on sys.path), also before the index is built.
        base = os.path.join(os.path.dirname(importer), *module.split("."))
        for cand in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(cand):
                return cand
    return found


def _by_file(pieces: list[Piece]) -> list[tuple[str, list[Piece]]]:
    """Pieces grouped by file, files in order of their best piece, pieces in line order,
    a piece inside another one left out."""
    groups: OrderedDict[str, list[Piece]] = OrderedDict()
    for p in pieces:
        groups.setdefault(p.rel, []).append(p)
    out = []
    for rel, ps in groups.items():
        ps = sorted(ps, key=lambda p: (p.first, -p.last))
        kept: list[Piece] = []
        for p in ps:
            if kept and p.first >= kept[-1].first and p.last <= kept[-1].last and p.what.startswith("similar"):
                continue
            kept.append(p)
        out.append((rel, kept))
    return out


def as_markdown(context: Context, max_chars: int, language: str = "python") -> tuple[str, list[dict]]:
    """The pieces as fenced blocks with their paths (for chat prompts), within `max_chars`."""
    chosen, used = [], 0
    for p in context.pieces:
        if used + len(p.text) + len(p.rel) + 16 > max_chars:
            continue
        chosen.append(p)
        used += len(p.text) + len(p.rel) + 16
    parts, sources = [], []
    for rel, group in _by_file(chosen):
        body = "\n\n".join(p.text for p in group)
        parts.append(f"# {rel}\n```{language}\n{body}\n```")
        sources += [{"uri": p.uri, "lines": [p.first, p.last], "what": p.what} for p in group]
    return "\n\n".join(parts), sources
