"""What the real libxmtp 1.9 client does under each fault the DevNode injects, and how fast.

Each test prints its measured figures (run with ``-s``); the figures in the docstrings (and in
``devnode/README.md``) were measured on a 2-core CI-class machine. Bounds are generous on purpose:
the tests pin down *what* happens (error item, end of iteration, or nothing), the timings only
roughly.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import xmtp
from devnode_helpers import ClientFactory, StreamWatcher, address_of, texts, watch_all_messages
from xmtp_bindings.xmtpv3 import GenericError

from devnode import DevNode
from xmtp_supervisor import xmtp_compat

pytestmark = [pytest.mark.anyio, pytest.mark.node]


async def dm_pair(make_client: ClientFactory) -> tuple[xmtp.Client, xmtp.Client, xmtp.Dm]:
    alice, bob = await make_client(), await make_client()
    dm = await alice.conversations.new_dm(await address_of(bob))
    await dm.send("warm-up")
    await bob.conversations.sync()
    return alice, bob, dm


async def streaming_pair(
    node: DevNode, make_client: ClientFactory
) -> tuple[xmtp.Client, xmtp.Client, xmtp.Dm, StreamWatcher]:
    alice, bob, dm = await dm_pair(make_client)
    watcher = await watch_all_messages(bob)
    await dm.send("live")
    assert await watcher.wait_for(lambda: "live" in watcher.texts_only(), 10)
    watcher.mark()
    return alice, bob, dm, watcher


def report(name: str, watcher: StreamWatcher) -> None:
    print(f"\n{name}: " + ", ".join(f"{e.kind}@{e.at * 1000:.0f}ms" for e in watcher.events))


async def test_node_stopped_errors_then_ends_and_restart_does_not_resubscribe(
    node: DevNode, make_client: ClientFactory
) -> None:
    """Stop (like a kill): error item after ~3-7 ms, then the iteration ends at once.

    Usually one error item; under load sometimes two (the welcome and the group-message
    subscriptions both report the dropped connection, seen once in a CI run), then the end.

    After a restart on the same port the client does not resubscribe by itself (no
    Subscribe* call within 3 s) although unary calls reconnect at once.
    """
    _, _, dm, watcher = await streaming_pair(node, make_client)
    try:
        node.stop()
        assert await watcher.wait_for(lambda: "end" in watcher.kinds(), 10)
        report("stop", watcher)
        kinds = watcher.kinds()
        assert kinds[-1] == "end" and 1 <= len(kinds) - 1 <= 2
        assert set(kinds[:-1]) == {"error"}
        error, end = watcher.first("error"), watcher.first("end")
        assert error is not None and end is not None and end.at < 2.0

        node.restart()
        node.faults.reset_counters()
        await dm.send("after restart")  # unary calls reconnect by themselves
        await asyncio.sleep(3)
        counts = node.faults.counters()
        print(f"after restart: {counts}")
        assert counts.get("SubscribeGroupMessages", 0) == 0
        assert counts.get("SubscribeWelcomeMessages", 0) == 0
        assert "after restart" not in watcher.texts_only()
    finally:
        await watcher.close()


async def test_end_streams(node: DevNode, make_client: ClientFactory) -> None:
    """Subscriptions closed with status OK: the SDK iteration ends (~1 ms), with no error item."""
    _, _, _, watcher = await streaming_pair(node, make_client)
    try:
        node.faults.end_streams()
        ended = await watcher.wait_for(lambda: "end" in watcher.kinds(), 10)
        report("end_streams", watcher)
        assert ended
        assert "error" not in watcher.kinds()
    finally:
        await watcher.close()


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_abort_streams(
    node: DevNode, make_client: ClientFactory, code: grpc.StatusCode
) -> None:
    """Subscriptions failed with a status: an error item (~1 ms), then the iteration ends."""
    _, _, _, watcher = await streaming_pair(node, make_client)
    try:
        node.faults.abort_streams(code)
        ended = await watcher.wait_for(lambda: "end" in watcher.kinds(), 10)
        report(f"abort_streams({code.name})", watcher)
        assert ended
        assert watcher.kinds()[0] == "error" and watcher.kinds()[-1] == "end"
    finally:
        await watcher.close()


async def test_silent_stream_no_error_no_close_but_sync_finds_messages(
    node: DevNode, make_client: ClientFactory
) -> None:
    """Open but silent: nothing at all on the stream (checked for 4 s; 60 s+ in the spikes).

    The message is stored, so a sync + list finds it; after un-silencing, new messages flow
    again on the same stream (the skipped one is not redelivered by the stream).
    """
    _, bob, dm, watcher = await streaming_pair(node, make_client)
    try:
        node.faults.set_silent(True)
        await dm.send("while silent")
        await asyncio.sleep(4)
        report("silent", watcher)
        assert watcher.events == []
        [bob_dm] = await bob.conversations.list_dms()
        await xmtp_compat.sync_conversation(bob_dm)
        seen = texts(await xmtp_compat.list_messages(bob_dm))
        assert "while silent" in seen

        node.faults.set_silent(False)
        await dm.send("after silence")
        assert await watcher.wait_for(lambda: "after silence" in watcher.texts_only(), 10)
        assert "while silent" not in watcher.texts_only()
    finally:
        await watcher.close()


async def test_refused_queries_sync_all_succeeds_but_sync_raises(
    node: DevNode, make_client: ClientFactory
) -> None:
    """UNAVAILABLE on the group and welcome queries.

    ``sync_all_conversations()`` still reports success (after ~4.3 s of internal retries), while
    ``conversations.sync()`` and ``conversation.sync()`` raise (~2.1 s each): a successful sync
    proves nothing.
    """
    _, bob, _ = await dm_pair(make_client)
    [bob_dm] = await bob.conversations.list_dms()
    node.faults.refuse(grpc.StatusCode.UNAVAILABLE, {"QueryGroupMessages", "QueryWelcomeMessages"})

    started = time.monotonic()
    await bob.conversations.sync_all_conversations()
    sync_all = time.monotonic() - started

    started = time.monotonic()
    with pytest.raises(GenericError) as conversations_error:
        await bob.conversations.sync()
    conversations_sync = time.monotonic() - started

    started = time.monotonic()
    with pytest.raises(GenericError) as conversation_error:
        await xmtp_compat.sync_conversation(bob_dm)
    conversation_sync = time.monotonic() - started
    print(
        f"\nrefused queries: sync_all ok after {sync_all:.2f}s; conversations.sync raised after "
        f"{conversations_sync:.2f}s ({conversations_error.value!r:.80}); conversation.sync raised "
        f"after {conversation_sync:.2f}s ({conversation_error.value!r:.80})"
    )
    assert sync_all < 20 and conversations_sync < 20 and conversation_sync < 20
    node.faults.refuse(None)
    await bob.conversations.sync()  # recovers as soon as the refusal stops


async def test_refused_send_fails_and_is_not_republished(
    node: DevNode, make_client: ClientFactory
) -> None:
    """RESOURCE_EXHAUSTED on SendGroupMessages: the send raises after ~2.3 s (11 attempts);
    the message stays unpublished, also after the refusal ends and a later send succeeds."""
    alice, bob, dm = await dm_pair(make_client)
    node.faults.refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, {"SendGroupMessages"})
    started = time.monotonic()
    with pytest.raises(GenericError) as error:
        await dm.send("refused")
    elapsed = time.monotonic() - started
    print(f"\nrefused send raised after {elapsed:.2f}s: {error.value!r:.100}")
    attempts = node.faults.counters()["SendGroupMessages"]
    node.faults.refuse(None)
    await dm.send("accepted")
    await alice.conversations.sync_all_conversations()
    [bob_dm] = await bob.conversations.list_dms()
    await xmtp_compat.sync_conversation(bob_dm)
    seen = texts(await xmtp_compat.list_messages(bob_dm))
    print(f"send attempts while refused: {attempts}; bob sees {seen}")
    assert "accepted" in seen and "refused" not in seen
    assert elapsed < 30


async def test_latency_slows_every_call(node: DevNode, make_client: ClientFactory) -> None:
    """0.3 s per call: a conversation sync (two calls) took ~0.6 s instead of a few ms."""
    _, bob, _ = await dm_pair(make_client)
    [bob_dm] = await bob.conversations.list_dms()
    node.faults.set_latency(0.3)
    started = time.monotonic()
    await xmtp_compat.sync_conversation(bob_dm)
    elapsed = time.monotonic() - started
    node.faults.set_latency(0)
    print(f"\nconversation.sync with 0.3 s latency: {elapsed:.2f}s")
    assert elapsed >= 0.3


@pytest.mark.slow
async def test_node_down_stream_sync_and_send(node: DevNode, make_client: ClientFactory) -> None:
    """With the node down: a new stream ends after ~2.1 s with no error item; a sync fails after
    ~2.1 s; a send fails after ~8.7 s and is not republished after the node returns."""
    alice, bob, dm = await dm_pair(make_client)
    node.stop()
    try:
        watcher = StreamWatcher(bob.conversations.stream_all_messages()).start()
        ended = await watcher.wait_for(lambda: "end" in watcher.kinds(), 15)
        report("stream opened while down", watcher)

        started = time.monotonic()
        with pytest.raises(GenericError):
            await bob.conversations.sync()
        sync_failed = time.monotonic() - started

        started = time.monotonic()
        with pytest.raises(GenericError):
            await dm.send("while down")
        send_failed = time.monotonic() - started
        print(f"sync failed after {sync_failed:.2f}s, send failed after {send_failed:.2f}s")
    finally:
        node.start()
    assert ended
    await alice.conversations.sync_all_conversations()
    await xmtp_compat.sync_conversation(dm)
    [bob_dm] = await bob.conversations.list_dms()
    await xmtp_compat.sync_conversation(bob_dm)
    assert "while down" not in texts(await xmtp_compat.list_messages(bob_dm))
    assert sync_failed < 15 and send_failed < 30
    await watcher.close()


@pytest.mark.slow
async def test_frozen_node_errors_after_keepalive_timeout(
    node: DevNode, make_client: ClientFactory
) -> None:
    """Connection open, no bytes moving (not even pings): error item + end after ~26 s."""
    _, _, _, watcher = await streaming_pair(node, make_client)
    try:
        node.faults.freeze(True)
        ended = await watcher.wait_for(lambda: "end" in watcher.kinds(), 30)
        report("frozen", watcher)
        assert ended
        assert "error" in watcher.kinds()
    finally:
        node.faults.freeze(False)
        await watcher.close()
