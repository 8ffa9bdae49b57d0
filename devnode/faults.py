"""Fault injection switches and per-RPC call counters, safe to flip from any thread.

Plain flags live behind a lock and are read by the handlers on the node's loop; actions that must
touch open streams or connections are posted to that loop with ``call_soon_threadsafe``, so no
caller (including code already running inside some other asyncio loop) ever blocks on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from devnode.schema import EXPECTED_METHODS

# Names used by counters() and refuse(): the RPC name, except the legacy MLS GetIdentityUpdates,
# which would otherwise collide with the identity service's.
MLS_GET_IDENTITY_UPDATES = "MlsApi.GetIdentityUpdates"
RPC_NAMES: frozenset[str] = frozenset(
    {name for methods in EXPECTED_METHODS.values() for name in methods} | {MLS_GET_IDENTITY_UPDATES}
)


@dataclass(frozen=True, slots=True)
class StreamControl:
    """A command for every open subscription: end normally (code None) or abort with a code."""

    code: grpc.StatusCode | None = None
    details: str = ""


class Faults:
    """The control panel of a :class:`devnode.DevNode` (see ``devnode/README.md`` for effects)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._silent = False
        self._refuse_code: grpc.StatusCode | None = None
        self._refuse_methods: frozenset[str] | None = None
        self._latency = 0.0
        self._frozen = False
        self._counters: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_stream_control: Callable[[StreamControl], None] | None = None
        self._on_freeze: Callable[[bool], None] | None = None

    # wiring (called by DevNode on its loop) ------------------------------------------------
    def _attach(
        self,
        loop: asyncio.AbstractEventLoop | None,
        on_stream_control: Callable[[StreamControl], None] | None,
        on_freeze: Callable[[bool], None] | None,
    ) -> None:
        with self._lock:
            self._loop = loop
            self._on_stream_control = on_stream_control
            self._on_freeze = on_freeze

    def _post(self, callback: Callable[..., None] | None, *args: object) -> None:
        with self._lock:
            loop = self._loop
        if loop is None or callback is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed since the check
            loop.call_soon_threadsafe(callback, *args)

    # stream faults -------------------------------------------------------------------------
    def end_streams(self) -> None:
        """Close every open subscription with status OK, as a server going away cleanly does."""
        self._post(self._on_stream_control, StreamControl(None, ""))

    def abort_streams(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """Fail every open subscription with a gRPC status."""
        self._post(self._on_stream_control, StreamControl(code, "aborted by devnode fault"))

    def set_silent(self, silent: bool) -> None:
        """Keep subscriptions open but deliver nothing; messages are still stored and queryable."""
        with self._lock:
            self._silent = silent

    # call faults ---------------------------------------------------------------------------
    def refuse(self, code: grpc.StatusCode | None, methods: set[str] | None = None) -> None:
        """Answer every call (or only ``methods``, by RPC name) with ``code``; ``None`` stops it."""
        if methods is not None:
            unknown = set(methods) - RPC_NAMES
            if unknown:
                raise ValueError(f"unknown RPC names {sorted(unknown)}; known: {sorted(RPC_NAMES)}")
        with self._lock:
            self._refuse_code = code
            self._refuse_methods = frozenset(methods) if methods is not None else None

    def set_latency(self, seconds: float) -> None:
        """Delay every call (and the start of every subscription) by ``seconds``."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = float(seconds)

    def freeze(self, frozen: bool) -> None:
        """Keep connections open but move no bytes either way (not even HTTP/2 pings)."""
        with self._lock:
            self._frozen = frozen
        self._post(self._on_freeze, frozen)

    # counters ------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Calls per RPC name since start or the last reset (refused calls count too)."""
        with self._lock:
            return dict(self._counters)

    def reset_counters(self) -> None:
        with self._lock:
            self._counters.clear()

    def clear(self) -> None:
        """Switch every fault off (counters are kept)."""
        with self._lock:
            self._silent = False
            self._refuse_code = None
            self._refuse_methods = None
            self._latency = 0.0
        self.freeze(False)

    # read by the node ----------------------------------------------------------------------
    @property
    def silent(self) -> bool:
        with self._lock:
            return self._silent

    @property
    def frozen(self) -> bool:
        with self._lock:
            return self._frozen

    def _admit(self, method: str) -> tuple[float, grpc.StatusCode | None]:
        """Count a call and tell the handler how long to wait and whether to refuse it."""
        with self._lock:
            self._counters[method] += 1
            refused = self._refuse_code
            if self._refuse_methods is not None and method not in self._refuse_methods:
                refused = None
            return self._latency, refused
