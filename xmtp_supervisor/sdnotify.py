"""systemd ``Type=notify`` support: READY, STATUS, STOPPING and the watchdog.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
``NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Everything is a no-op when the
variable is unset, so the same code runs under systemd, Docker and a terminal. Sends never block:
a full socket buffer drops the datagram (systemd reads promptly; a lost WATCHDOG=1 is covered by
the next one at half the timeout).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

import anyio

from xmtp_supervisor.logs import Redactor, get_logger, secrets_from_env
from xmtp_supervisor.status import READY_STATES


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # systemd also allows vsock addresses; not supported here


class SystemdNotifier:
    """Sends notifications to systemd; does nothing when not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self._ready_sent = False
        self._log = get_logger("xmtp_supervisor.sdnotify")
        self._redactor = Redactor(secrets_from_env(env))
        self.watchdog_interval = _watchdog_interval(env)
        """Half of ``WATCHDOG_USEC`` in seconds, or ``None`` when the watchdog is off."""

    @property
    def enabled(self) -> bool:
        """True when ``NOTIFY_SOCKET`` names a socket we can use."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; False when disabled or the send failed."""
        if self.address is None:
            return False
        payload = "\n".join(fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            self._log.warning("sd_notify_failed", error=str(exc), fields=[f.split("=")[0]
                                                                         for f in fields])
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (once; later calls only update STATUS)."""
        fields = [] if self._ready_sent else ["READY=1"]
        if status:
            fields.append(f"STATUS={self._line(status)}")
        if not fields:
            return False
        sent = self.notify(*fields)
        self._ready_sent = self._ready_sent or sent
        return sent

    def status(self, text: str) -> bool:
        """STATUS=text, shown by ``systemctl status``."""
        return self.notify(f"STATUS={self._line(text)}")

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown has begun, do not treat the coming exit as a crash."""
        fields = ["STOPPING=1"]
        if status:
            fields.append(f"STATUS={self._line(status)}")
        return self.notify(*fields)

    def watchdog(self) -> bool:
        """WATCHDOG=1: one keep-alive ping."""
        return self.notify("WATCHDOG=1")

    def on_state(self, state: str, reason: str | None = None) -> None:
        """Call on every transition: READY=1 when first streaming or polling, STATUS always."""
        text = f"{state}: {reason}" if reason else state
        if state in READY_STATES and not self._ready_sent:
            self.ready(text)
        else:
            self.status(text)

    async def watchdog_loop(self, healthy: Callable[[], bool]) -> None:
        """Ping the watchdog at half of ``WATCHDOG_USEC`` while ``healthy()``; run it in the task
        group. Returns at once when there is no watchdog. When unhealthy it stays silent, so
        systemd restarts the service after ``WatchdogSec``."""
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        was_healthy = True
        while True:
            ok = healthy()
            if ok:
                self.watchdog()
            elif was_healthy:
                self._log.warning("watchdog_withheld", reason="event loop unhealthy")
            was_healthy = ok
            await anyio.sleep(interval)

    def _line(self, text: str) -> str:
        """Status text is visible to anyone running systemctl: one line, secrets scrubbed."""
        return self._redactor.scrub(" ".join(text.split()))

    def close(self) -> None:
        """Close the socket (after STOPPING=1)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process (e.g. our parent)
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
