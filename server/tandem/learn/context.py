"""The server's context from other files, for `tandem learn`'s training examples and evaluation.

The same seam the inline completion path uses (tandem.context.ContextService: the workspace
index, the providers, the repository-format rendering), bound to the workspace being learnt,
with the same budget split: the block gets `contextShare` of the prompt's `contextTokens`, the
current file what the block leaves (completion.engine.serving_prompt). Nothing is copied here:
this module only decides which documents count as "open" and waits for every provider (the
server skips a provider that misses its 50 ms; a training example should not depend on the
machine's load, so here each gets GATHER_S).

Open documents (what the `similar` provider searches): in the editor, the documents the user
has open or edited recently. A learning run started from the editor is given those (`--focus`); otherwise,
or to fill up to the server's RECENT_DOCS, it takes the training files changed most recently on
disk (by mtime), never a held-out file: a held-out file's text must not reach a prompt that is
scored on it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..context.service import RECENT_DOCS, ContextBlock, ContextService, path_to_uri
from ..settings import Settings
from .workspace import SourceFile

GATHER_S = 10.0  # per request: every provider finishes (the result is cached by its inputs)
INDEX_WAIT_S = 60.0


@dataclass(frozen=True)
class ContextSettings:
    share: float = Settings().contextShare  # of the prompt budget, as the server's contextShare
    sources: tuple = tuple(Settings().contextSources)

    @property
    def on(self) -> bool:
        return self.share > 0 and bool(self.sources)


class WorkspaceContext:
    def __init__(self, root: Path, open_files: list[SourceFile], settings: ContextSettings):
        self.root = Path(root)
        self.settings = settings
        self.svc = ContextService(budget_s=GATHER_S)
        self.svc.bind([str(self.root)])  # the server's own walk of the workspace
        self.svc.index.ready.wait(INDEX_WAIT_S)
        self.open_files = [f.rel for f in open_files]
        for f in open_files:
            self.svc.opened(self.uri(f.rel), f.text, 1)

    @classmethod
    def for_run(cls, root: Path, train: list[SourceFile], settings: ContextSettings, focus=()
                ) -> "WorkspaceContext | None":
        """`focus`: the files the user works in (relative paths), the most recent documents."""
        if not settings.on:
            return None
        by_rel = {f.rel: f for f in train}
        mine = [by_rel[r] for r in focus if r in by_rel]  # in the order given: most recent last
        chosen = {f.rel for f in mine}
        rest = recent_files(root, [f for f in train if f.rel not in chosen], RECENT_DOCS - len(mine))
        return cls(root, rest + mine[-RECENT_DOCS:], settings)

    def uri(self, rel: str) -> str:
        return path_to_uri(str(self.root / rel))

    def block(self, codec, rel: str, text: str, offset: int, prompt_tokens: int) -> ContextBlock | None:
        """The context block the server would put before the FIM prompt of a completion at
        `offset` in `text` (the document `rel` as the user has it), for a prompt budget of
        `prompt_tokens` (the server's contextTokens)."""
        ctx = self.svc.gather(self.uri(rel), text, offset, self.settings.sources, budget_s=GATHER_S)
        return self.svc.block(codec, ctx, int(prompt_tokens * self.settings.share))

    def close(self) -> None:
        self.svc.shutdown()


def recent_files(root: Path, files: list[SourceFile], n: int = RECENT_DOCS) -> list[SourceFile]:
    """The `n` files changed most recently on disk, most recent last (as the server's recent
    documents are ordered)."""
    def mtime(f: SourceFile) -> float:
        try:
            return os.stat(Path(root) / f.rel).st_mtime
        except OSError:
            return 0.0
    return sorted(sorted(files, key=lambda f: f.rel), key=mtime)[-n:] if n > 0 else []
