"""What effect handlers may touch: the runtime hands each one this context, nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fsm.policy import Policy
from fsm.table import Event
from xmtp_supervisor.message_path import MessagePath
from xmtp_supervisor.outbox import Outbox
from xmtp_supervisor.xmtp_adapter import Network, Stream

Outcome = tuple[Event, dict[str, Any]]


class EffectContext(Protocol):
    policy: Policy
    network: Network
    path: MessagePath
    outbox: Outbox
    log: Any
    missed_grace_ns: int
    """Messages younger than this may still be on their way down the stream: not "missed"."""

    def now(self) -> float:
        """The runtime's one clock (seconds)."""
        ...

    def read_from(self, conversation_id: str) -> int:
        """Where a catch-up of this conversation starts (ns): the lookback window behind its
        cursor, but never before the agent's first start ever (older history is not replayed)."""
        ...

    def seen_times(self) -> dict[str, int]:
        """Per conversation, the newest sent_at_ns known handled or seen (own messages too)."""
        ...

    def note_seen(self, conversation_id: str, sent_at_ns: int) -> None: ...

    def full_sync_due(self) -> bool:
        """Whether this sync must re-read every conversation (``timers.full_sync_interval``)."""
        ...

    def full_sync_done(self) -> None: ...

    def stream_callbacks(self) -> tuple[Callable[..., None], Callable[[str], None],
                                         Callable[[], None]]:
        """Fresh (on_message, on_error, on_close) bound to a new stream generation."""
        ...

    def hold_inbound(self) -> int:
        """Hold stream messages (they queue, in order) until :meth:`release_inbound` with the
        returned token; a newer hold supersedes an older one."""
        ...

    def held_inbound(self) -> int | None:
        """The token of the hold in force, if any."""
        ...

    def release_inbound(self, token: int) -> None:
        """Let held stream messages through, unless a newer hold replaced ``token``'s."""
        ...

    def set_stream(self, stream: Stream | None) -> Stream | None:
        """Install the open stream (or none); returns the previous one for closing."""
        ...

    def rpc(self, kind: str, ok: bool) -> None:
        """Count one supervisor network call (the network budget)."""
        ...

    def health(self) -> dict[str, Any]:
        """The health check's report: ``rss_bytes`` and ``over_ceiling`` (the service's hook also
        records the size of every bounded structure as a metric); empty without a hook."""
        ...

    def alert(self, reason: str, detail: dict[str, Any]) -> None: ...
