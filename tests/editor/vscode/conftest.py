"""The VS Code check (code-server + headless Chromium): marker, opt-out and shared fixtures."""
from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "vscode: drives the Tandem extension in real VS Code (code-server in headless Chromium)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TANDEM_SKIP_VSCODE") == "1":
        skip = pytest.mark.skip(reason="TANDEM_SKIP_VSCODE=1")
        for item in items:
            if "vscode" in item.keywords:
                item.add_marker(skip)
