"""An in-memory network for unit tests of the runtime in virtual time (never the acceptance
path: the node tests run the real client against the devnode)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from xmtp_supervisor.inbound import InboundMessage


class FakeStream:
    def __init__(self, net: FakeNetwork, on_message: Callable[[InboundMessage], None],
                 on_error: Callable[[str], None], on_close: Callable[[], None]) -> None:
        self.net, self.on_message = net, on_message
        self.on_error, self.on_close = on_error, on_close
        self.silent = False

    async def close(self) -> None:
        if self in self.net.streams:
            self.net.streams.remove(self)


@dataclass
class FakeNetwork:
    inbox_id: str = "agent-inbox"
    down: bool = False
    messages: dict[str, list[InboundMessage]] = field(default_factory=dict)
    streams: list[FakeStream] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    n: int = 0
    on_open: Callable[[], None] | None = None
    """Called as soon as a stream is open (a peer whose message rides the brand-new stream)."""
    fetch_blocked: anyio.Event | None = None
    """When given, fetches wait for it (a network that hangs reads but still streams)."""

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def deliver(self, conversation_id: str, text: str, sent_at_ns: int,
                sender: str = "peer") -> InboundMessage:
        """A peer's message reaches the network and every live, non-silent stream."""
        self.n += 1
        message = InboundMessage(f"m{self.n}", conversation_id, sender, sent_at_ns,
                                 "xmtp.org/text:1.0", text)
        self.messages.setdefault(conversation_id, []).append(message)
        for stream in list(self.streams):
            if not stream.silent:
                stream.on_message(message)
        return message

    def kill_streams(self, error: str | None = "UNAVAILABLE: connection reset") -> None:
        for stream in list(self.streams):
            self.streams.remove(stream)
            if error is not None:
                stream.on_error(error)
            stream.on_close()

    async def open_stream(self, on_message: Callable[[InboundMessage], None],
                          on_error: Callable[[str], None],
                          on_close: Callable[[], None]) -> FakeStream:
        self._count("open_stream")
        if self.down:
            raise RuntimeError("stream ended before it opened")
        stream = FakeStream(self, on_message, on_error, on_close)
        self.streams.append(stream)
        if self.on_open is not None:
            self.on_open()
        return stream

    async def sync_conversations(self) -> list[str]:
        self._count("sync")
        if self.down:
            raise RuntimeError("UNAVAILABLE: sync refused")
        return sorted(self.messages)

    async def sync_conversation(self, conversation_id: str) -> None:
        self._count("sync_one")
        if self.down:
            raise RuntimeError("UNAVAILABLE: sync refused")

    async def changed_conversations(self, seen: dict[str, int]) -> list[str]:
        self._count("sync")
        if self.down:
            raise RuntimeError("UNAVAILABLE: sync refused")
        return sorted(cid for cid, messages in self.messages.items()
                      if cid not in seen or max(m.sent_at_ns for m in messages) > seen[cid])

    async def fetch_after(self, conversation_id: str, after_ns: int) -> list[InboundMessage]:
        self._count("fetch")
        if self.fetch_blocked is not None:
            await self.fetch_blocked.wait()
        return [m for m in self.messages.get(conversation_id, []) if m.sent_at_ns > after_ns]

    async def send_text(self, conversation_id: str, text: str) -> None:
        self._count("send")
        if self.down:
            raise RuntimeError("UNAVAILABLE: send failed")
        self.sent.append((conversation_id, text))

    async def close(self) -> None:
        pass
