"""Tandem's model pipeline: fetch, convert, fine-tune, export, verify.

Installed as the package ``tandem_models`` (see pyproject.toml). Everything here may
import torch and transformers; the language server (``tandem``) never imports this package.
"""
