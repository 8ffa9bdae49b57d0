"""Real libxmtp clients chatting through the DevNode: the node is good enough to be trusted."""

from __future__ import annotations

import asyncio

import pytest
import xmtp
from devnode_helpers import ClientFactory, address_of, texts, watch_all_messages

from devnode import DevNode
from xmtp_supervisor import xmtp_compat

pytestmark = [pytest.mark.anyio, pytest.mark.node]


async def texts_of(conversation: xmtp.Conversation) -> list[object]:
    await xmtp_compat.sync_conversation(conversation)
    return list(texts(await xmtp_compat.list_messages(conversation)))


async def test_register_dm_send_stream_sync_reply(
    node: DevNode, make_client: ClientFactory
) -> None:
    alice, bob = await make_client(), await make_client()
    assert await xmtp_compat.is_registered(alice) and await xmtp_compat.is_registered(bob)
    # Addresses are looked up case-insensitively (the node stores them lower-case).
    bob_address = await address_of(bob)
    assert (
        await alice.get_inbox_id_by_identifier(
            xmtp.Identifier(xmtp.IdentifierKind.ETHEREUM, bob_address.upper().replace("0X", "0x"))
        )
        == bob.inbox_id
    )

    bob_stream = await watch_all_messages(bob)
    try:
        dm = await alice.conversations.new_dm(bob_address)
        await dm.send("hello bob")
        assert await bob_stream.wait_for(lambda: "hello bob" in bob_stream.texts_only(), 10)
        message = bob_stream.first("message")
        assert message is not None and message.item.sender_inbox_id == alice.inbox_id

        await bob.conversations.sync()
        [bob_dm] = await bob.conversations.list_dms()
        assert await texts_of(bob_dm) == ["hello bob"]
        await bob_dm.send("hi alice")
        assert await texts_of(dm) == ["hello bob", "hi alice"]
        # The reply came back on bob's own stream too (libxmtp streams own messages).
        assert await bob_stream.wait_for(lambda: "hi alice" in bob_stream.texts_only(), 10)
    finally:
        await bob_stream.close()
    counts = node.faults.counters()
    assert counts["SubscribeWelcomeMessages"] >= 1 and counts["SubscribeGroupMessages"] >= 1
    assert counts.get("RegisterInstallation", 0) == 0


@pytest.mark.parametrize("latency", [0.0, 0.2])
async def test_first_messages_of_a_new_dm_reach_the_stream(
    node: DevNode, make_client: ClientFactory, latency: float
) -> None:
    """libxmtp re-subscribes a brand-new DM with cursor 0 after processing its welcome.

    The node replays from the beginning for cursor 0 (as current xmtp-node-go does), so messages
    sent before that re-subscription still reach the stream, with or without latency. (Against
    a live-only node the README's chat script lost its first message in some runs:
    the send landed ~3 ms before the re-subscription.)
    """
    alice, bob = await make_client(), await make_client()
    bob_stream = await watch_all_messages(bob)
    node.faults.set_latency(latency)
    try:
        dm = await alice.conversations.new_dm(await address_of(bob))
        sent = [f"burst {i}" for i in range(3)]
        for text in sent:
            await dm.send(text)
        assert await bob_stream.wait_for(lambda: len(bob_stream.texts_only()) >= 3, 15)
        assert sorted(bob_stream.texts_only()) == sorted(sent)
    finally:
        node.faults.set_latency(0)
        await bob_stream.close()


async def test_stream_opened_after_a_new_dm_still_delivers_it(
    node: DevNode, make_client: ClientFactory
) -> None:
    """Bob opens his stream only after alice created the DM and wrote: libxmtp syncs at stream
    start, so the stream still yields the message (measured: ~0.1 s)."""
    alice, bob = await make_client(), await make_client()
    dm = await alice.conversations.new_dm(await address_of(bob))
    await dm.send("written before bob listened")
    bob_stream = await watch_all_messages(bob)
    try:
        assert await bob_stream.wait_for(lambda: len(bob_stream.texts_only()) >= 1, 10)
        assert bob_stream.texts_only() == ["written before bob listened"]
    finally:
        await bob_stream.close()


async def test_group_of_three(make_client: ClientFactory) -> None:
    alice, bob, carol = await make_client(), await make_client(), await make_client()
    assert bob.inbox_id and carol.inbox_id
    group = await xmtp_compat.new_group(alice, [bob.inbox_id, carol.inbox_id])
    assert set(await group.members()) == {alice.inbox_id, bob.inbox_id, carol.inbox_id}
    await group.send("hello group")
    for member in (bob, carol):
        await member.conversations.sync()
        [their_group] = await member.conversations.list_groups()
        assert await texts_of(their_group) == ["hello group"]
    [carol_group] = await carol.conversations.list_groups()
    await carol_group.send("carol here")
    await asyncio.sleep(0)
    assert await texts_of(group) == ["hello group", "carol here"]


async def test_sent_after_filter_and_order(make_client: ClientFactory) -> None:
    alice, bob = await make_client(), await make_client()
    dm = await alice.conversations.new_dm(await address_of(bob))
    for text in ("one", "two", "three"):
        await dm.send(text)
    messages = [m for m in await xmtp_compat.list_messages(dm) if isinstance(m.content, str)]
    assert [m.content for m in messages] == ["one", "two", "three"]
    later = await xmtp_compat.list_messages(dm, sent_after_ns=xmtp_compat.after_ns(messages[0]))
    assert [m.content for m in later if isinstance(m.content, str)] == ["two", "three"]


async def test_restart_keeps_data_and_port(tmp_path: object) -> None:
    with DevNode(db_path=f"{tmp_path}/node.db") as node:
        alice = await xmtp_compat.create_client(api_url=node.url)
        bob = await xmtp_compat.create_client(api_url=node.url)
        dm = await alice.conversations.new_dm(await address_of(bob))
        await dm.send("before restart")
        port = node.port
        node.restart(keep_data=True)
        assert node.port == port
        await bob.conversations.sync()
        [bob_dm] = await bob.conversations.list_dms()
        assert await texts_of(bob_dm) == ["before restart"]

        node.restart(keep_data=False)
        carol = await xmtp_compat.create_client(api_url=node.url)
        assert await carol.get_inbox_id_by_identifier(alice.account_identifier) is None  # type: ignore[arg-type]
