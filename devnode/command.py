"""``xmtp-supervisor devnode``: run a local XMTP node in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from devnode import DevNode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=5556, help="port to bind (default: 5556)")
    parser.add_argument(
        "--db", default=None, metavar="FILE", help="SQLite file to keep data across restarts"
    )


def run(args: argparse.Namespace) -> int:
    node = DevNode(host=args.host, port=args.port, db_path=args.db)
    try:
        node.start()
    except OSError as exc:
        print(f"xmtp-supervisor devnode: cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    storage = args.db or "memory"
    print(f"devnode listening on {node.url} (storage: {storage}); Ctrl-C to stop", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        node.close()
    print("devnode stopped", flush=True)
    return 0
