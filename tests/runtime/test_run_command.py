"""``xmtp-supervisor run`` as a user runs it: a real process with a wallet key against a devnode,
serving echo and /status, exposing /status over HTTP, and exiting 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from eth_account import Account

from devnode import DevNode
from xmtp_supervisor import xmtp_compat

pytestmark = pytest.mark.node


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "xmtp_supervisor.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await anyio.sleep(0.2)
    return False


def test_without_wallet_key_exits_2_and_points_to_demo() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMTP_")}
    proc = _cli("run", env=env)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "XMTP_WALLET_KEY" in err and "demo" in err and "Traceback" not in err


def test_production_without_persistent_db_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "XMTP_WALLET_KEY": "0x" + secrets.token_hex(32),
           "XMTP_ENV": "production"}
    env.pop("XMTP_DB_DIRECTORY", None)
    env.pop("XMTP_DB_ENCRYPTION_KEY", None)
    proc = _cli("run", env=env)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "XMTP_DB_DIRECTORY" in err and "installation" in err and "Traceback" not in err


@pytest.mark.anyio
async def test_run_serves_echo_and_status_and_stops_on_sigterm(tmp_path: Path) -> None:
    key = "0x" + secrets.token_hex(32)
    secret_db_key = secrets.token_hex(32)
    port = _free_port()
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.setblocking(False)
    with DevNode() as node:
        env = {**os.environ, "XMTP_WALLET_KEY": key, "XMTP_ENV": "local",
               "XMTP_API_URL": node.url, "XMTP_DB_DIRECTORY": str(tmp_path / "db"),
               "XMTP_DB_ENCRYPTION_KEY": secret_db_key,
               "XMTP_SUPERVISOR__HTTP__PORT": str(port), "NOTIFY_SOCKET": notify_path}
        proc = _cli("run", "--store", str(tmp_path / "store.db"), env=env)
        try:
            def status() -> dict[str, object] | None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status",
                                                timeout=2) as resp:
                        return dict(json.load(resp))
                except OSError:
                    return None

            assert await _until(lambda: (status() or {}).get("state") == "streaming", 60)
            peer = await xmtp_compat.create_client(api_url=node.url)
            dm = await peer.conversations.new_dm(Account.from_key(key).address.lower())
            await dm.send("ping from peer")
            await dm.send("/status")

            async def replies() -> list[object]:
                await xmtp_compat.sync_conversation(dm)
                return [m.content for m in await xmtp_compat.list_messages(dm)
                        if m.sender_inbox_id != peer.inbox_id]

            got: list[object] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = await replies()
                if len([g for g in got if isinstance(g, str)]) >= 2:
                    break
                await anyio.sleep(0.5)
            texts = [g for g in got if isinstance(g, str)]
            assert "ping from peer" in texts
            assert any(t.startswith("state: streaming") for t in texts)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
            assert 'xmtp_supervisor_state{state="streaming"} 1.0' in metrics
            handled = next(float(line.split()[1]) for line in metrics.splitlines()
                           if line.startswith("xmtp_supervisor_messages_handled_total "))
            assert handled >= 2  # ping and /status (and the DM's membership message)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        datagrams = []
        while True:
            try:
                datagrams.append(notify.recv(4096).decode())
            except BlockingIOError:
                break
        notify.close()
        ready = [i for i, d in enumerate(datagrams) if "READY=1" in d]
        stopping = [i for i, d in enumerate(datagrams) if "STOPPING=1" in d]
        assert ready and stopping and ready[0] < stopping[0]
        assert '"event": "shutdown"' in err and '"dest": "stopped"' in err
        for secret in (key, key[2:], secret_db_key, "ping from peer"):
            assert secret not in out + err
