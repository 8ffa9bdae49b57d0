"""sd_notify against a real AF_UNIX datagram socket named by NOTIFY_SOCKET."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import anyio
import pytest
from sd_socket import pending

from xmtp_supervisor.sdnotify import SystemdNotifier


def test_ready_status_stopping(notify_socket: socket.socket) -> None:
    notifier = SystemdNotifier()
    assert notifier.enabled
    notifier.on_state("connecting", "opening stream")
    assert notify_socket.recv(4096) == b"STATUS=connecting: opening stream"
    notifier.on_state("streaming", "stream open")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=streaming: stream open"
    notifier.on_state("backoff")
    notifier.on_state("polling")  # READY only once
    assert notify_socket.recv(4096) == b"STATUS=backoff"
    assert notify_socket.recv(4096) == b"STATUS=polling"
    assert notifier.stopping("shutting down")
    assert notify_socket.recv(4096) == b"STOPPING=1\nSTATUS=shutting down"
    notifier.close()


def test_status_text_is_scrubbed(
    notify_socket: socket.socket, secret_env: tuple[str, str]
) -> None:
    wallet, _ = secret_env
    SystemdNotifier().status(f"failed\nwith {wallet}")
    data = notify_socket.recv(4096).decode()
    assert data.startswith("STATUS=failed with ") and wallet[2:] not in data.lower()


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "xmtp-sup-test-" + secrets.token_hex(6)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert SystemdNotifier().ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_no_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog() and not notifier.stopping()


def test_missing_socket_file_fails_softly(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "absent")})
    assert notifier.ready() is False


def test_watchdog_interval_is_half_of_usec() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert SystemdNotifier(env).watchdog_interval == 15.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert SystemdNotifier({"WATCHDOG_USEC": "nope"}).watchdog_interval is None


@pytest.mark.anyio
async def test_watchdog_pings_only_while_healthy(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # ping every 10 ms
    notifier = SystemdNotifier()
    healthy = [True]
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.watchdog_loop, lambda: healthy[0])
        data = await anyio.to_thread.run_sync(notify_socket.recv, 4096)
        assert data == b"WATCHDOG=1"
        healthy[0] = False
        await anyio.sleep(0.05)  # let any ping sent before the switch arrive
        pending(notify_socket)
        for _ in range(5):  # several intervals while unhealthy
            await anyio.sleep(0.02)
        assert pending(notify_socket) == []
        healthy[0] = True
        data = await anyio.to_thread.run_sync(notify_socket.recv, 4096)
        assert data == b"WATCHDOG=1"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_watchdog_loop_returns_without_watchdog(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    with anyio.fail_after(5):
        await SystemdNotifier().watchdog_loop(lambda: True)
