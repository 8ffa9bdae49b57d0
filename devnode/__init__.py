"""A local XMTP node for development and tests, with fault injection.

The real libxmtp client (``xmtp`` SDK, ``ClientOptions(env="local", api_url=node.url)``) talks to
it over plain gRPC. It is **not a validating node**: no signature, identity or MLS checks; it only
routes and stores what clients send (see :mod:`devnode.service`). Faults are injected through
:attr:`DevNode.faults` (:class:`devnode.faults.Faults`) so tests see what the client really does.

All nodes of a process share one background thread running one asyncio loop with grpc's asyncio
server: nodes can then be started, stopped and restarted on the same port from synchronous code or
from inside another event loop, and a frozen node does not block anything but its own traffic.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

import grpc

from devnode.faults import Faults, StreamControl
from devnode.proxy import Relay
from devnode.service import Hub, NodeService
from devnode.store import Store

__all__ = ["DevNode", "Faults"]

T = TypeVar("T")

# libxmtp pings often; a default grpc server would answer with GOAWAY "too_many_pings".
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 50 * 1024 * 1024),
    ("grpc.max_send_message_length", 50 * 1024 * 1024),
]
_OP_TIMEOUT = 15.0

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _node_loop() -> asyncio.AbstractEventLoop:
    """The process-wide loop all nodes run on (created on first use, daemon thread)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="devnode-loop", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def _run(coro: Coroutine[Any, Any, T], timeout: float = _OP_TIMEOUT) -> T:
    loop = _node_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("DevNode control methods cannot be awaited from the node's own loop")
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


class DevNode:
    """An in-process XMTP node; ``start()`` binds ``host:port`` (``port=0`` picks a free one)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, db_path: str | None = None) -> None:
        self.host = host
        self.port = port
        self.db_path = db_path
        self.faults = Faults()
        self._store: Store | None = None
        self._server: grpc.aio.Server | None = None
        self._relay: Relay | None = None
        self._hub: Hub | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The ``api_url`` for ``xmtp.ClientOptions`` (plain HTTP/2, no TLS)."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def open_streams(self) -> int:
        """Subscriptions currently open on the node (a best-effort, unlocked read)."""
        return 0 if self._hub is None else self._hub.open_streams

    def start(self) -> None:
        """Bind and serve; blocks only until the port is listening."""
        with self._lock:
            if self._server is not None:
                return
            if self._store is None:
                self._store = Store(self.db_path)
            _run(self._astart())

    def stop(self) -> None:
        """Stop like a killed process: listeners closed, every connection dropped at once."""
        with self._lock:
            if self._server is None:
                return
            _run(self._astop())

    def restart(self, keep_data: bool = True) -> None:
        """Stop and start again on the same port, keeping or wiping the stored data."""
        with self._lock:
            if self._server is not None:
                _run(self._astop())
            if self._store is None:
                self._store = Store(self.db_path)
            elif not keep_data:
                self._store.wipe()
            _run(self._astart())

    def close(self) -> None:
        """Stop and release the database."""
        self.stop()
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def __enter__(self) -> DevNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"DevNode({self.url!r}, {state}, db={self.db_path!r})"

    async def _astart(self) -> None:
        assert self._store is not None
        hub = Hub()
        service = NodeService(self._store, self.faults, hub)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers(service.generic_handlers())
        internal = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        relay = Relay(self.host, self.port, internal)
        try:
            self.port = await relay.start()
        except BaseException:
            await server.stop(0)
            raise
        relay.set_frozen(self.faults.frozen)
        self._server, self._relay, self._hub = server, relay, hub
        self.faults._attach(asyncio.get_running_loop(), hub.control, relay.set_frozen)

    async def _astop(self) -> None:
        self.faults._attach(None, None, None)
        server, relay, hub = self._server, self._relay, self._hub
        self._server = self._relay = self._hub = None
        if hub is not None:
            hub.control(StreamControl(grpc.StatusCode.UNAVAILABLE, "devnode stopped"))
        if relay is not None:
            await relay.stop()
        if server is not None:
            await server.stop(0)
