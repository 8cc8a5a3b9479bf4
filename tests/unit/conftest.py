"""Fixtures the unit tests share."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def gxx() -> str:
    found = shutil.which("g++")
    if found is None:
        pytest.skip("g++ is not on PATH: the sketch's code cannot be compiled on this host")
    return found
