"""The message the hot path works on, independent of the ``xmtp`` SDK.

The adapter converts each SDK message into an :class:`InboundMessage`, so the message path, the
dedup set, the store and the handlers never import ``xmtp`` and can be tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_CONTENT_TYPE = "xmtp.org/text:1.0"
"""The content type id of plain text (``authority/type:major.minor``), as the SDK spells it."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message received from the network, already decoded by the adapter.

    ``text`` is set for text content and ``None`` for other content types. When the adapter could
    not decode the content, ``decode_error`` names the reason (never the content itself): such a
    message is counted and its cursor advanced, but it is not given to handlers.
    """

    id: str
    conversation_id: str
    sender_inbox_id: str
    sent_at_ns: int
    content_type: str
    text: str | None
    decode_error: str | None = None

    @property
    def is_text(self) -> bool:
        """True when handlers registered for text should see this message."""
        return self.decode_error is None and self.text is not None
