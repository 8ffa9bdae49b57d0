"""Shared set-up: anyio's own pytest plugin runs async tests on asyncio (the SDK needs it)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
