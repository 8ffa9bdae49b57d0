"""Fakes for the message-path unit tests: message factory, policies and a recording send."""

from __future__ import annotations

import itertools
from dataclasses import replace

from fsm.policy import Dedup, Handlers, Policy
from fsm.policy import Store as StorePolicy
from xmtp_supervisor.inbound import TEXT_CONTENT_TYPE, InboundMessage

_ids = itertools.count(1)


def msg(
    conv: str = "c1",
    text: str | None = "hi",
    *,
    ns: int | None = None,
    sender: str = "peer",
    id: str | None = None,
    decode_error: str | None = None,
) -> InboundMessage:
    n = next(_ids)
    return InboundMessage(
        id=id or f"m{n}",
        conversation_id=conv,
        sender_inbox_id=sender,
        sent_at_ns=ns if ns is not None else n * 1000,
        content_type=TEXT_CONTENT_TYPE,
        text=text,
        decode_error=decode_error,
    )


def policy(
    *,
    max_ids: int = 500,
    evict: int = 250,
    timeout: float = 5.0,
    concurrency: int = 8,
    durability: str = "batch",
    batch_size: int = 100,
    batch_interval: float = 60.0,
) -> Policy:
    base = Policy()
    return replace(
        base,
        dedup=Dedup(max_ids=max_ids, evict=evict),
        handlers=replace(Handlers(), timeout=timeout, concurrency=concurrency),
        store=replace(
            StorePolicy(), durability=durability, batch_size=batch_size,
            batch_interval=batch_interval,
        ),
    )


class FakeSend:
    """``send(conversation_id, text)`` that fails while ``down`` and records what went out."""

    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times
        self.down = False
        self.sent: list[tuple[str, str]] = []
        self.calls = 0

    async def __call__(self, conversation_id: str, text: str) -> None:
        self.calls += 1
        if self.down or self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("network down")
        self.sent.append((conversation_id, text))
