"""Fixtures for the message-path unit tests: a real SQLite store file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xmtp_supervisor.store import Store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "supervisor.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(db)
    yield s
    s.close()
