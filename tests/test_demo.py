"""``xmtp-supervisor demo`` end to end, as a user runs it: a real subprocess, real libxmtp clients,
a real node with real faults. It is the issue's "done when", so it checks the verdict the demo
prints and that the stream really came back after the stream error and after the outage."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

DURATION = "55s"  # the shortest run that fits the four faults (demo.MIN_DURATION)

pytestmark = pytest.mark.node


def _section(output: str, start: str, end: str) -> str:
    """The output between the first line containing ``start`` and the next containing ``end``."""
    begin = output.index(start)
    stop = output.find(end, begin + len(start))
    return output[begin: stop if stop >= 0 else len(output)]


def _number(output: str, label: str) -> int:
    """The value of one summary row."""
    match = re.search(rf"^\s+{re.escape(label)}\s+(\d+)", output, re.M)
    assert match is not None, output
    return int(match[1])


def test_demo_loses_nothing_through_every_fault() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "xmtp_supervisor.cli", "demo", "--duration", DURATION],
        capture_output=True, text=True, timeout=150,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert re.search(r"^\s+lost\s+0$", out, re.M), out
    assert re.search(r"^\s+duplicated\s+0$", out, re.M), out
    assert re.search(r"^\s+supervisor exit code\s+0$", out, re.M), out
    sent = _number(out, "messages sent (published by the peer)")
    replied = _number(out, "replied (echoes seen by the peer)")
    assert sent >= 30 and replied == sent, out
    for fault, after in (("stream error", "** fault: silent stall"),
                         ("outage", "** fault: node restart")):
        live = _section(out, f"** fault: {fault}", after)
        assert "→ restarting" in live and "restarting → streaming" in live, live
        assert re.search(rf"^\s+{fault}\s+at .*restarted, streaming again", out, re.M), out
    assert "RESULT: OK, 0 lost, 0 duplicated" in out
    assert "metrics: curl http://127.0.0.1:" in out
