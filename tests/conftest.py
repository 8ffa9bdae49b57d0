"""Shared pytest set-up: anyio's own plugin runs async tests on asyncio (the xmtp SDK is asyncio)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
