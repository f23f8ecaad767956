"""Context from beyond the open file for every prompt (completions, functions, explanations):
providers on a time budget, a background index of the workspace, the repository format.
See service.py. No pygls here."""
from .service import SOURCES, Context, ContextBlock, ContextService, Piece, as_markdown, render_block

__all__ = ["SOURCES", "Context", "ContextBlock", "ContextService", "Piece", "as_markdown", "render_block"]
