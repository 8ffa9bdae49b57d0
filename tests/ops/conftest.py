"""Fixtures for the operations layer: captured logs with secrets in the environment, and a
socket playing systemd."""

from __future__ import annotations

import io
import logging
import os
import secrets
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import structlog

from fsm.policy import Policy
from xmtp_supervisor.logs import LoggingSetup, configure_logging


@dataclass
class Clock:
    """A hand-driven monotonic clock."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Captured:
    stream: io.StringIO
    setup: LoggingSetup
    clock: Clock
    wallet_key: str
    db_key: str

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Fresh random secrets in the environment, as a deployment would have them."""
    wallet = "0x" + secrets.token_hex(32)
    db_key = secrets.token_hex(32)
    monkeypatch.setenv("XMTP_WALLET_KEY", wallet)
    monkeypatch.setenv("XMTP_DB_ENCRYPTION_KEY", db_key)
    return wallet, db_key


def _reset_logging() -> None:
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "xmtp_supervisor":
            root.removeHandler(handler)


MakeLogs = Callable[..., Captured]


@pytest.fixture
def make_logs(secret_env: tuple[str, str], clock: Clock) -> Iterator[MakeLogs]:
    """Configure logging into a StringIO; call with a Policy (and a transition log path)."""
    made: list[Captured] = []

    def make(policy: Policy | None = None, transition_log_path: str | None = None) -> Captured:
        stream = io.StringIO()
        setup = configure_logging(
            policy or Policy(), stream, transition_log_path, clock=clock
        )
        cap = Captured(stream, setup, clock, *secret_env)
        made.append(cap)
        return cap

    yield make
    for cap in made:
        cap.setup.close()
    _reset_logging()


@pytest.fixture
def logs(make_logs: MakeLogs) -> Captured:
    """Production logging (JSON lines) into a StringIO."""
    return make_logs()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket playing systemd (10 s receive timeout), named by NOTIFY_SOCKET;
    short path (AF_UNIX paths max ~107 bytes); no watchdog unless a test sets WATCHDOG_USEC."""
    directory = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    try:
        yield sock
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)
