"""Helpers for tests that run real libxmtp clients against an in-process DevNode."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import xmtp

from xmtp_supervisor import xmtp_compat


@dataclass
class Event:
    """One thing a stream did, ``at`` seconds after the watcher started."""

    at: float
    kind: str  # "message" | "error" | "end"
    item: Any = None


@dataclass
class StreamWatcher:
    """Consumes an SDK ``AsyncStream`` in the background and timestamps what it yields."""

    stream: Any
    events: list[Event] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> StreamWatcher:
        self.task = asyncio.ensure_future(self._consume())
        return self

    async def _consume(self) -> None:
        async for item in self.stream:
            kind = "message" if isinstance(item, xmtp.DecodedMessage) else "error"
            self._record(kind, item)
        self._record("end")

    def _record(self, kind: str, item: Any = None) -> None:
        self.events.append(Event(time.monotonic() - self.started, kind, item))
        self._changed.set()

    def mark(self) -> float:
        """Restart the clock (e.g. at the moment a fault is injected)."""
        self.started = time.monotonic()
        self.events.clear()
        return self.started

    def texts_only(self) -> list[str]:
        return [t for t in self.texts() if isinstance(t, str)]

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    def texts(self) -> list[Any]:
        return [event.item.content for event in self.events if event.kind == "message"]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True

    def first(self, kind: str) -> Event | None:
        return next((event for event in self.events if event.kind == kind), None)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.stream.close(), 5)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


ClientFactory = Callable[[], Awaitable[xmtp.Client]]


async def address_of(client: xmtp.Client) -> str:
    identifier = client.account_identifier
    assert identifier is not None
    return identifier.value


async def watch_all_messages(client: xmtp.Client) -> StreamWatcher:
    """Open the all-messages stream (subscribed on return, via xmtp_compat) and watch it."""
    return StreamWatcher(await xmtp_compat.stream_all_messages(client)).start()


def texts(messages: list[Any]) -> list[str]:
    """Text contents only (``FfiGroupUpdated.__eq__`` breaks ``in`` on mixed lists)."""
    return [m.content for m in messages if isinstance(m.content, str)]
