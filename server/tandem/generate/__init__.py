"""Generate a function body from its docstring, verified against the docstring's examples."""
