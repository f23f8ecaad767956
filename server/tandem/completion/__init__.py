"""Inline completion: cursor context, FIM prompt, post-processing, and the engine tying them."""
