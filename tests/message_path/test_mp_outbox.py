"""The outbox: persisted before sending, retried with jittered backoff, woken, ordered, resumed
after a restart, never sent twice by itself."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mp_fakes import FakeSend

from xmtp_supervisor.outbox import Outbox, ReplyResult
from xmtp_supervisor.store import Store

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def running(outbox: Outbox) -> AsyncIterator[Outbox]:
    async with anyio.create_task_group() as tg:
        await tg.start(outbox.run)
        yield outbox
        tg.cancel_scope.cancel()


async def until(predicate: object, timeout: float = 2.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def test_reply_is_sent_at_once_and_recorded(store: Store) -> None:
    send = FakeSend()
    outbox = Outbox(store, send)
    assert await outbox.reply("c1", "hello", "m1:0") is ReplyResult.SENT
    assert send.sent == [("c1", "hello")]
    assert store.outbox_pending() == []
    assert store.outbox_counts() == {"sent": 1}


async def test_same_key_is_enqueued_once(store: Store) -> None:
    send = FakeSend()
    outbox = Outbox(store, send)
    assert await outbox.reply("c1", "hello", "m1:0") is ReplyResult.SENT
    assert await outbox.reply("c1", "hello", "m1:0") is ReplyResult.DUPLICATE
    assert send.calls == 1
    assert outbox.counters.duplicates == 1


async def test_failed_send_is_retried_until_it_goes_through(store: Store) -> None:
    send = FakeSend(fail_times=3)
    outbox = Outbox(store, send, retry_initial=0.01, retry_max=0.02, rng=lambda: 1.0)
    async with running(outbox):
        assert await outbox.reply("c1", "hello", "m1:0") is ReplyResult.QUEUED
        assert outbox.pending == 1
        await until(lambda: send.sent)
        await anyio.sleep(0.05)
    assert send.sent == [("c1", "hello")]  # once
    assert send.calls == 4
    assert outbox.counters.failed_attempts == 3 and outbox.counters.sent == 1
    assert outbox.pending == 0
    assert store.outbox_pending() == []


async def test_backoff_is_capped_exponential_with_full_jitter(store: Store) -> None:
    draws = iter([1.0, 1.0, 1.0, 1.0, 0.5, 0.0])
    outbox = Outbox(store, FakeSend(), retry_initial=2.0, retry_max=10.0, rng=lambda: next(draws))
    assert [outbox.backoff(n) for n in (1, 2, 3, 4, 4, 9)] == [2.0, 4.0, 8.0, 10.0, 5.0, 0.0]
    assert Outbox(store, FakeSend(), rng=lambda: 1.0).backoff(10_000) == 120.0  # no overflow


async def test_wake_retries_now_instead_of_after_the_backoff(store: Store) -> None:
    send = FakeSend()
    send.down = True
    outbox = Outbox(store, send, retry_initial=3600, retry_max=3600, rng=lambda: 1.0)
    async with running(outbox):
        assert await outbox.reply("c1", "hello", "m1:0") is ReplyResult.QUEUED
        await anyio.sleep(0.05)
        assert send.sent == []
        send.down = False
        outbox.wake()
        await until(lambda: send.sent)
    assert send.sent == [("c1", "hello")]


async def test_replies_keep_their_order_per_conversation(store: Store) -> None:
    send = FakeSend()
    send.down = True
    outbox = Outbox(store, send, retry_initial=3600, retry_max=3600, rng=lambda: 1.0)
    async with running(outbox):
        await outbox.reply("c1", "one", "m1:0")
        send.down = False
        # The network is back, but "one" is waiting: "two" must not overtake it.
        assert await outbox.reply("c1", "two", "m2:0") is ReplyResult.QUEUED
        assert await outbox.reply("c2", "other", "m3:0") is ReplyResult.SENT
        outbox.wake()
        await until(lambda: len(send.sent) == 3)
    assert [t for c, t in send.sent if c == "c1"] == ["one", "two"]


async def test_pending_replies_resume_after_restart_and_are_sent_once(db: Path) -> None:
    first_send = FakeSend()
    first_send.down = True
    store = Store(db)
    first = Outbox(store, first_send, retry_initial=3600, retry_max=3600, rng=lambda: 1.0)
    async with running(first):
        await first.reply("c1", "one", "m1:0")
        await first.reply("c1", "two", "m2:0")
    store.close()  # the process stops with two replies unconfirmed

    store = Store(db)
    send = FakeSend()
    second = Outbox(store, send, retry_initial=3600, retry_max=3600, rng=lambda: 1.0)
    async with running(second):
        # A re-run handler after the restart produces the same keys: not queued again.
        assert await second.reply("c1", "one", "m1:0") is ReplyResult.DUPLICATE
        second.wake()
        await until(lambda: len(send.sent) == 2)
        await anyio.sleep(0.05)
    assert send.sent == [("c1", "one"), ("c1", "two")]
    assert store.outbox_pending() == []
    store.close()


async def test_restart_honours_the_remaining_backoff(db: Path) -> None:
    store = Store(db)
    down = FakeSend()
    down.down = True
    wall = [1000.0]
    first = Outbox(store, down, retry_initial=0.2, retry_max=0.2, rng=lambda: 1.0,
                   wall_clock=lambda: wall[0])
    await first.reply("c1", "one", "m1:0")
    entry = store.outbox_pending()[0]
    assert entry.attempts == 1 and entry.next_attempt_at == pytest.approx(1000.2)
    send = FakeSend()
    second = Outbox(store, send, retry_initial=0.2, retry_max=0.2, rng=lambda: 1.0,
                    wall_clock=lambda: wall[0])
    async with running(second):
        await anyio.sleep(0.05)
        assert send.sent == []  # still inside the persisted backoff
        await until(lambda: send.sent)
    store.close()


async def test_reply_cancelled_mid_send_is_kept_and_retried(store: Store) -> None:
    sent: list[str] = []
    block = [True]

    async def slow_send(conversation_id: str, text: str) -> None:
        if block[0]:
            await anyio.sleep_forever()
        sent.append(text)

    outbox = Outbox(store, slow_send, retry_initial=0.01, retry_max=0.01)
    async with running(outbox):
        with anyio.move_on_after(0.05):  # the handler's timeout cuts the send
            await outbox.reply("c1", "hello", "m1:0")
        block[0] = False
        outbox.wake()
        await until(lambda: sent)
    assert sent == ["hello"]


async def test_send_that_hangs_in_the_retry_loop_times_out(store: Store) -> None:
    calls = [0]

    async def hangs_once(conversation_id: str, text: str) -> None:
        calls[0] += 1
        if calls[0] <= 2:
            await anyio.sleep_forever()

    outbox = Outbox(store, hangs_once, retry_initial=0.01, retry_max=0.01, send_timeout=0.05)
    async with running(outbox):
        with anyio.move_on_after(0.02):
            await outbox.reply("c1", "hello", "m1:0")
        outbox.wake()
        await until(lambda: outbox.counters.sent == 1)
    assert calls[0] == 3


async def test_offline_queues_without_blocking_the_handler(store: Store) -> None:
    send = FakeSend()
    outbox = Outbox(store, send, retry_initial=3600, retry_max=3600, rng=lambda: 1.0)
    async with running(outbox):
        outbox.offline()
        assert await outbox.reply("c1", "hello", "m1:0") is ReplyResult.QUEUED
        await anyio.sleep(0.05)
        assert send.calls == 0  # not before its backoff
        outbox.wake()
        await until(lambda: send.sent)
        assert await outbox.reply("c1", "again", "m2:0") is ReplyResult.SENT
    assert [t for _, t in send.sent] == ["hello", "again"]


async def test_drain_lets_a_send_in_flight_finish_then_stops(store: Store) -> None:
    sent: list[str] = []
    gate = anyio.Event()

    async def gated_send(conversation_id: str, text: str) -> None:
        await gate.wait()
        sent.append(text)

    outbox = Outbox(store, gated_send, retry_initial=0.01, retry_max=0.01)
    async with running(outbox), anyio.create_task_group() as tg:
        tg.start_soon(outbox.reply, "c1", "one", "m1:0")
        await anyio.sleep(0.01)
        await outbox.reply("c1", "two", "m2:0")  # queued behind "one"

        async def open_gate() -> None:
            await anyio.sleep(0.05)
            gate.set()

        tg.start_soon(open_gate)
        with anyio.fail_after(1):
            left = await outbox.drain(deadline=0.5)
    assert sent == ["one"]
    assert left == 1
    assert [e.text for e in store.outbox_pending()] == ["two"]  # resumed by the next process


async def test_unpersistable_reply_is_sent_directly(store: Store) -> None:
    send = FakeSend()
    outbox = Outbox(store, send)

    def broken(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    store.outbox_add = broken
    assert await outbox.reply("c1", "hello", "m1:0") is ReplyResult.SENT
    assert send.sent == [("c1", "hello")]
