"""MessagePath: own/dedup/cursor filtering, ordering, concurrency, failures, timeouts, drain and
cursor durability. Real SQLite file, fake handlers, real (short) time."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mp_fakes import msg, policy

from fsm.policy import Policy
from xmtp_supervisor.inbound import InboundMessage
from xmtp_supervisor.message_path import MessagePath, Verdict
from xmtp_supervisor.store import Cursor, Store

pytestmark = pytest.mark.anyio

Handler = Callable[[InboundMessage], Awaitable[None]]


class Recorder:
    """A handler that records calls; per-text behaviour: 'boom' raises, 'hang' sleeps forever,
    'slow' sleeps 0.05 s."""

    def __init__(self) -> None:
        self.seen: list[InboundMessage] = []
        self.active = 0
        self.max_active = 0
        self.by_conv: dict[str, list[str]] = defaultdict(list)

    async def __call__(self, m: InboundMessage) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if m.text == "boom":
                raise ValueError("secret text must not be logged")
            if m.text == "hang":
                await anyio.sleep_forever()
            if m.text == "slow":
                await anyio.sleep(0.05)
            else:
                await anyio.lowlevel.checkpoint()
            self.seen.append(m)
            self.by_conv[m.conversation_id].append(m.id)
        finally:
            self.active -= 1


@asynccontextmanager
async def running(
    store: Store, handler: Handler, pol: Policy | None = None, **kw: object
) -> AsyncIterator[MessagePath]:
    path = MessagePath(store, handler, own_inbox_id="me", policy=pol or policy(), **kw)
    async with anyio.create_task_group() as tg:
        await tg.start(path.run)
        yield path
        tg.cancel_scope.cancel()


async def test_own_messages_and_duplicates_are_skipped(store: Store) -> None:
    rec = Recorder()
    async with running(store, rec) as path:
        a = msg("c1")
        assert await path.submit(a) is Verdict.ACCEPTED
        assert await path.submit(a) is Verdict.DUPLICATE
        assert await path.submit(msg("c1", sender="me")) is Verdict.OWN
        await path.wait_idle()
        assert await path.submit(a) is Verdict.DUPLICATE
    c = path.counters
    assert (c.received, c.handled, c.deduplicated, c.own_skipped) == (4, 1, 2, 1)
    assert [m.id for m in rec.seen] == [a.id]
    assert path.cursor("c1") == Cursor(a.sent_at_ns, a.id)


async def test_cursor_rejects_old_messages_after_dedup_eviction(store: Store) -> None:
    rec = Recorder()
    first = [msg("c1") for _ in range(3)]
    async with running(store, rec, policy(max_ids=2, evict=1)) as path:
        for m in first:
            await path.submit(m)
        await path.wait_idle()
        assert first[0].id not in path.dedup  # evicted
        # Catch-up re-fetches everything: the cursor still knows.
        for m in first:
            assert await path.submit(m) is Verdict.DUPLICATE
        late = msg("c1")
        assert await path.submit(late) is Verdict.ACCEPTED
        await path.wait_idle()
    assert [m.id for m in rec.seen] == [m.id for m in [*first, late]]
    assert path.counters.deduplicated == 3


async def test_same_timestamp_other_id_is_not_dropped_by_cursor(store: Store) -> None:
    rec = Recorder()
    async with running(store, rec) as path:
        await path.submit(msg("c1", ns=5, id="x"))
        await path.wait_idle()
        assert await path.submit(msg("c1", ns=5, id="y")) is Verdict.ACCEPTED
        await path.wait_idle()
    assert [m.id for m in rec.seen] == ["x", "y"]


async def test_message_the_stream_skipped_is_handled_late_not_lost(db: Path) -> None:
    """libxmtp #2351: m4 never came down the stream, m5 did and was handled; catch-up reads
    back over the lookback window, finds m4 and it is handled (once), even across a restart."""
    rec = Recorder()
    minute = 60 * 10**9
    store = Store(db, lookback=600.0)
    async with running(store, rec) as path:
        await path.submit(msg("c1", ns=25 * minute, id="m5"))
        await path.wait_idle()
        assert await path.submit(msg("c1", ns=24 * minute, id="m4")) is Verdict.ACCEPTED
        await path.wait_idle()
        assert await path.submit(msg("c1", ns=24 * minute, id="m4")) is Verdict.DUPLICATE
    store.close()
    reopened = Store(db, lookback=600.0)
    async with running(reopened, rec) as path:
        # a catch-up after the restart re-reads the window: both are known handled
        for m in (msg("c1", ns=24 * minute, id="m4"), msg("c1", ns=25 * minute, id="m5")):
            assert await path.submit(m) is Verdict.DUPLICATE
        assert reopened.lookback_from("c1") == 15 * minute
    reopened.close()
    assert [m.id for m in rec.seen] == ["m5", "m4"]


async def test_behind_the_lookback_window_counts_as_handled(db: Path) -> None:
    rec = Recorder()
    store = Store(db, lookback=60.0)
    async with running(store, rec) as path:
        await path.submit(msg("c1", ns=3600 * 10**9, id="late"))
        await path.wait_idle()
        assert await path.submit(msg("c1", ns=10 * 10**9, id="ancient")) is Verdict.DUPLICATE
    store.close()


async def test_undecodable_is_counted_advances_cursor_and_is_not_dispatched(
    store: Store,
) -> None:
    rec = Recorder()
    async with running(store, rec) as path:
        bad = msg("c1", text=None, decode_error="unknown codec")
        assert await path.submit(bad) is Verdict.UNDECODABLE
        await path.wait_idle()
    assert rec.seen == []
    assert path.counters.undecodable == 1
    assert path.counters.handled == 0
    assert path.cursor("c1") == Cursor(bad.sent_at_ns, bad.id)


async def test_order_per_conversation_and_concurrency_across_them(store: Store) -> None:
    rec = Recorder()
    sent: dict[str, list[str]] = defaultdict(list)
    async with running(store, rec, policy(concurrency=3)) as path:
        for i in range(40):
            m = msg(f"c{i % 5}", "slow" if i % 3 == 0 else "hi")
            sent[m.conversation_id].append(m.id)
            await path.submit(m)
        await path.wait_idle()
    assert dict(rec.by_conv) == dict(sent)
    assert 1 < rec.max_active <= 3
    assert path.counters.handled == 40


async def test_raising_handler_is_counted_and_does_not_stop_the_path(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = Recorder()
    async with running(store, rec) as path:
        boom = msg("c1", "boom")
        after = msg("c1", "hi")
        other = msg("c2", "hi")
        for m in (boom, after, other):
            await path.submit(m)
        await path.wait_idle()
    assert path.counters.failed == 1
    assert path.counters.handled == 2
    assert sorted(m.id for m in rec.seen) == sorted([after.id, other.id])
    assert path.cursor("c1") == Cursor(after.sent_at_ns, after.id)
    out = capsys.readouterr()
    assert "handler_failed" in out.out + out.err
    assert "secret text" not in out.out + out.err


async def test_hanging_handler_is_cut_off_and_others_continue(store: Store) -> None:
    rec = Recorder()
    latencies: list[float] = []
    async with running(store, rec, policy(timeout=0.2), observe_latency=latencies.append) as path:
        hang = msg("c1", "hang")
        next_in_c1 = msg("c1", "hi")
        others = [msg("c2", "hi") for _ in range(5)]
        for m in (hang, next_in_c1, *others):
            await path.submit(m)
        with anyio.fail_after(0.15):  # other conversations do not wait for the hung one
            while len(rec.by_conv["c2"]) < 5:
                await anyio.sleep(0.005)
        assert rec.by_conv["c1"] == []  # same conversation waits, in order
        with anyio.fail_after(2):
            await path.wait_idle()
    assert path.counters.timed_out == 1
    assert rec.by_conv["c1"] == [next_in_c1.id]
    assert path.cursor("c1") == Cursor(next_in_c1.sent_at_ns, next_in_c1.id)
    assert len(latencies) == 7 and 0.2 in latencies


async def test_handler_swallowing_cancellation_is_still_cut(store: Store) -> None:
    calls: list[str] = []

    async def stubborn(m: InboundMessage) -> None:
        if m.text == "stubborn":
            try:
                await anyio.sleep_forever()
            except BaseException:
                calls.append("swallowed")
                return  # swallowing cancellation is a bug, but must not break the path
        calls.append(m.id)

    async with running(store, stubborn, policy(timeout=0.1)) as path:
        await path.submit(msg("c1", "stubborn"))
        ok = msg("c1")
        await path.submit(ok)
        with anyio.fail_after(2):
            await path.wait_idle()
    assert calls == ["swallowed", ok.id]
    assert path.counters.timed_out == 1 and path.counters.handled == 1


async def test_drain_waits_for_in_flight_handlers(store: Store) -> None:
    rec = Recorder()
    async with running(store, rec) as path:
        slow = [msg(f"c{i}", "slow") for i in range(3)]
        queued = msg("c0", "hi")
        for m in (*slow, queued):
            await path.submit(m)
        await anyio.sleep(0.01)
        result = await path.drain(deadline=2.0)
        assert await path.submit(msg("c9")) is Verdict.CLOSED
    assert (result.finished, result.cut, result.dropped) == (3, 0, 1)
    assert {m.id for m in rec.seen} == {m.id for m in slow}
    assert path.cursor("c0") == Cursor(slow[0].sent_at_ns, slow[0].id)
    assert Store(store.path).cursor("c0") == Cursor(slow[0].sent_at_ns, slow[0].id)  # flushed


async def test_drain_cuts_what_outlives_the_deadline(store: Store) -> None:
    rec = Recorder()
    async with running(store, rec) as path:
        done = msg("c1", "hi")
        await path.submit(done)
        await path.wait_idle()
        hang = msg("c1", "hang")
        quick = msg("c2", "slow")
        await path.submit(hang)
        await path.submit(quick)
        await anyio.sleep(0.01)
        with anyio.fail_after(3):
            result = await path.drain(deadline=0.2)
    assert (result.finished, result.cut, result.dropped) == (1, 1, 0)
    assert path.counters.cut == 1
    # The cut message's cursor did not move: it is delivered again after the restart.
    assert path.cursor("c1") == Cursor(done.sent_at_ns, done.id)


async def test_drain_with_nothing_in_flight_returns_at_once(store: Store) -> None:
    async with running(store, Recorder()) as path:
        with anyio.fail_after(0.5):
            result = await path.drain(deadline=10)
    assert (result.finished, result.cut, result.dropped) == (0, 0, 0)


async def replay_after_crash(db: Path, durability: str, messages: list[InboundMessage]) -> int:
    """Handle ``messages``, 'crash' (no flush, store left open), restart on the same file, let
    catch-up submit everything again; returns how many were delivered twice."""
    pol = policy(durability=durability, batch_size=1000, batch_interval=60)
    first = Store.from_policy(pol.store, db)
    rec1 = Recorder()
    path1 = MessagePath(first, rec1, own_inbox_id="me", policy=pol)
    async with anyio.create_task_group() as tg:
        await tg.start(path1.run)
        for m in messages:
            await path1.submit(m)
        await path1.wait_idle()
        # Simulate kill -9: the process vanishes, nothing in memory reaches the file.
        first.flush = lambda: 0
        tg.cancel_scope.cancel()
    second = Store.from_policy(pol.store, db)
    rec2 = Recorder()
    async with running(second, rec2, pol) as path2:
        for m in messages:  # catch-up fetches after the cursor; here: everything again
            await path2.submit(m)
        await path2.wait_idle()
    assert len(rec1.seen) == len(messages)
    second.close()
    return len(rec2.seen)


async def test_batch_durability_redelivers_the_unflushed_tail(db: Path) -> None:
    messages = [msg("c1") for _ in range(10)]
    assert await replay_after_crash(db, "batch", messages) == 10  # at-least-once, nothing lost


async def test_per_message_durability_redelivers_nothing(db: Path) -> None:
    messages = [msg("c1") for _ in range(10)] + [msg("c2") for _ in range(3)]
    assert await replay_after_crash(db, "per-message", messages) == 0


async def test_batch_flushes_by_count(db: Path) -> None:
    store = Store.from_policy(policy(batch_size=3, batch_interval=60).store, db)
    async with running(store, Recorder(), policy(batch_size=3, batch_interval=60)) as path:
        ms = [msg("c1") for _ in range(3)]
        for m in ms:
            await path.submit(m)
        await path.wait_idle()
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        assert Store(db).cursor("c1") == Cursor(ms[-1].sent_at_ns, ms[-1].id)
    store.close()


async def test_batch_flushes_by_time(db: Path) -> None:
    pol = policy(batch_size=1000, batch_interval=0.05)
    store = Store.from_policy(pol.store, db)
    async with running(store, Recorder(), pol) as path:
        m = msg("c1")
        await path.submit(m)
        await path.wait_idle()
        assert Store(db).cursor("c1") is None
        await anyio.sleep(0.15)
        assert Store(db).cursor("c1") == Cursor(m.sent_at_ns, m.id)
    store.close()


async def test_messages_submitted_before_run_are_handled_once_it_starts(store: Store) -> None:
    rec = Recorder()
    path = MessagePath(store, rec, own_inbox_id="me", policy=policy())
    m = msg("c1")
    assert await path.submit(m) is Verdict.ACCEPTED
    async with anyio.create_task_group() as tg:
        await tg.start(path.run)
        await path.wait_idle()
        tg.cancel_scope.cancel()
    assert rec.seen == [m]


async def test_backlog_bound_applies_back_pressure(store: Store) -> None:
    rec = Recorder()
    async with running(store, rec, max_backlog=4) as path:
        for _ in range(20):
            await path.submit(msg("c1"))
            assert path.backlog <= 4
        await path.wait_idle()
    assert path.counters.handled == 20


async def test_failing_cursor_commit_and_latency_hook_do_not_stop_handling(db: Path) -> None:
    pol = policy(durability="per-message")
    store = Store.from_policy(pol.store, db)
    real_flush = store.flush
    failures = [2]

    def flaky_flush() -> int:
        if failures[0]:
            failures[0] -= 1
            raise OSError("disk full")
        return real_flush()

    store.flush = flaky_flush

    def bad_hook(seconds: float) -> None:
        raise RuntimeError("metrics broke")

    rec = Recorder()
    async with running(store, rec, pol, observe_latency=bad_hook) as path:
        ms = [msg("c1") for _ in range(3)]
        for m in ms:
            await path.submit(m)
        await path.wait_idle()
    assert path.counters.handled == 3
    store.close()
    assert Store(db).cursor("c1") == Cursor(ms[-1].sent_at_ns, ms[-1].id)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=40),
    max_ids=st.integers(1, 8),
)
def test_exactly_once_in_order_whatever_the_repeats(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[int, int]], max_ids: int
) -> None:
    """Each conversation's messages arrive in order, each repeated 0-2 times right after itself
    or after the whole stream (as catch-up does); every message is handled once, in order."""
    db = tmp_path_factory.mktemp("prop") / "s.db"
    originals = [msg(f"c{conv}") for conv, _ in plan]
    stream: list[InboundMessage] = []
    for m, (_, repeats) in zip(originals, plan, strict=True):
        stream.extend([m] * (1 + repeats))
    stream.extend(originals)  # a full catch-up after a reconnect

    async def main() -> Recorder:
        store = Store(db)
        rec = Recorder()
        async with running(store, rec, policy(max_ids=max_ids, evict=max(1, max_ids // 2),
                                              concurrency=2)) as path:
            for m in stream:
                await path.submit(m)
            await path.wait_idle()
        store.close()
        return rec

    rec = anyio.run(main)
    expected: dict[str, list[str]] = defaultdict(list)
    for m in originals:
        expected[m.conversation_id].append(m.id)
    assert dict(rec.by_conv) == dict(expected)


async def test_queued_message_evicted_from_dedup_is_not_queued_twice(store: Store) -> None:
    rec = Recorder()
    path = MessagePath(store, rec, own_inbox_id="me", policy=policy(max_ids=1, evict=1))
    a, b = msg("c1"), msg("c1")
    await path.submit(a)
    await path.submit(b)  # evicts a from the dedup set while a is still queued
    assert a.id not in path.dedup
    assert await path.submit(a) is Verdict.DUPLICATE  # catch-up brings it again
    async with anyio.create_task_group() as tg:
        await tg.start(path.run)
        await path.wait_idle()
        tg.cancel_scope.cancel()
    assert [m.id for m in rec.seen] == [a.id, b.id]


async def test_wait_idle_returns_when_drain_ends_the_work(store: Store) -> None:
    rec = Recorder()
    with anyio.fail_after(2):  # the waiter must be released too, or the task group never exits
        async with running(store, rec) as path, anyio.create_task_group() as tg:
            await path.submit(msg("c1", "slow"))
            await path.submit(msg("c1", "hi"))
            tg.start_soon(path.wait_idle)
            await anyio.sleep(0.01)
            result = await path.drain(deadline=1)
    assert (result.finished, result.dropped) == (1, 1)


async def test_ids_dropped_by_the_count_bound_are_not_handled_again(db: Path) -> None:
    """More handled messages inside the window than ``lookback_max_ids``: catch-up re-reads the
    window, and what the bound forgot counts as handled (never handled twice), across a restart
    too; catch-up starts reading after it."""
    rec = Recorder()
    store = Store(db, lookback=600.0, lookback_max_ids=5)
    first = [msg("c1", ns=(100 + i) * 10**9, id=f"m{i}") for i in range(12)]
    async with running(store, rec) as path:
        for m in first:
            await path.submit(m)
        await path.wait_idle()
        for m in first:  # a catch-up re-reading the window
            assert await path.submit(m) is Verdict.DUPLICATE
        assert store.lookback_from("c1") == 106 * 10**9
    store.close()
    reopened = Store(db, lookback=600.0, lookback_max_ids=5)
    async with running(reopened, rec) as path:
        for m in first:
            assert await path.submit(m) is Verdict.DUPLICATE
    reopened.close()
    assert [m.id for m in rec.seen] == [m.id for m in first]
