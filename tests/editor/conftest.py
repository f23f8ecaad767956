"""Shared by the Neovim tests: the nvim binary, or a skip that says why there is none."""
from __future__ import annotations

import pytest

from .nvim import NvimNotFound, find_nvim


@pytest.fixture(scope="session")
def nvim_binary() -> str:
    try:
        return find_nvim()
    except NvimNotFound as e:
        pytest.skip(str(e))
