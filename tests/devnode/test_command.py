"""``xmtp-supervisor devnode`` as a new user runs it, with the README's ten-line chat script."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "devnode" / "README.md"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.node
def test_cli_node_and_readme_script_chat(tmp_path: Path) -> None:
    port = free_port()
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xmtp_supervisor.cli",
            "devnode",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "node.sqlite"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert node.stdout is not None
        banner = node.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner, banner
        [script] = re.findall(r"```python\n(import asyncio.*?)```", README.read_text(), re.S)
        assert len([line for line in script.splitlines() if line.strip()]) <= 13
        (tmp_path / "chat.py").write_text(script)
        chat = subprocess.run(
            [sys.executable, "chat.py", f"http://127.0.0.1:{port}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.strip() == "bob got: hi bob"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.py", "node.sqlite"]
    finally:
        node.send_signal(signal.SIGTERM)
        out, _ = node.communicate(timeout=15)
    assert node.returncode == 0
    assert "devnode stopped" in out


def test_cli_reports_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "xmtp_supervisor.cli", "devnode", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stdout
