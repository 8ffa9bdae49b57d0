"""Reading what the supervisor told systemd, for tests that play systemd's end of NOTIFY_SOCKET
(the ``notify_socket`` fixture in conftest.py binds it)."""

from __future__ import annotations

import socket


def pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already waiting, without blocking; the socket keeps its 10 s timeout."""
    sock.setblocking(False)
    out = []
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(10)
    return out
