"""What Tandem wrote into documents: where it is now, how it was made, and explanations of it.

store.py     remembered regions: offers, acceptance, following edits, persistence
regions.py   moving a region through one edit
confidence.py  token log-probabilities -> confidence summary and least confident spans
explain.py   explanation jobs on the inference thread (chat template, or completion form)
render.py    the Markdown a hover shows

No pygls here: the LSP handlers live in tandem/features (tracking, hover, explain).
"""
from .store import Generated, ProvenanceStore, Region

__all__ = ["Generated", "ProvenanceStore", "Region"]
