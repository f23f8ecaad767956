"""Tandem: a local-first AI pair programmer, served over the Language Server Protocol."""
__version__ = "0.1.0"
