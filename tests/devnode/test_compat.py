"""The workarounds in ``xmtp_supervisor.xmtp_compat``, each against a real client and node."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import xmtp
from devnode_helpers import address_of, texts

from devnode import DevNode
from xmtp_supervisor import xmtp_compat

pytestmark = [pytest.mark.anyio, pytest.mark.node]


async def test_throwaway_client_writes_nothing_and_ignores_xmtp_env(
    node: DevNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Client.create`` would write ``xmtp-local-<inbox>.db3`` into the cwd by default, and it
    never reads ``XMTP_*`` variables (only ``create_from_env`` does): neither may leak in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XMTP_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("XMTP_ENV", "production")
    client = await xmtp_compat.create_client(api_url=node.url)
    assert await xmtp_compat.is_registered(client)
    assert client.options.env == "local" and client.options.api_url == node.url
    assert os.listdir(tmp_path) == []


async def test_persistent_client_keeps_its_installation(node: DevNode, tmp_path: Path) -> None:
    key = xmtp_compat.new_wallet_key()
    db_key = os.urandom(32)
    db = str(tmp_path / "agent.db3")
    first = await xmtp_compat.create_client(
        api_url=node.url, wallet_key=key[2:], db_path=db, db_encryption_key=db_key
    )
    again = await xmtp_compat.create_client(
        api_url=node.url, wallet_key=key, db_path=db, db_encryption_key=db_key.hex()
    )
    assert again.inbox_id == first.inbox_id
    assert again.installation_id == first.installation_id
    fresh = await xmtp_compat.create_client(api_url=node.url, wallet_key=key)
    assert fresh.inbox_id == first.inbox_id and fresh.installation_id != first.installation_id


async def test_list_messages_ascending_and_after(node: DevNode) -> None:
    alice = await xmtp_compat.create_client(api_url=node.url)
    bob = await xmtp_compat.create_client(api_url=node.url)
    dm = await alice.conversations.new_dm(await address_of(bob))
    for text in ("a", "b", "c"):
        await dm.send(text)
    await bob.conversations.sync()
    [bob_dm] = await bob.conversations.list_dms()
    assert texts(await xmtp_compat.list_messages(bob_dm)) == []  # local only until a sync
    await xmtp_compat.sync_conversation(bob_dm)
    messages = await xmtp_compat.list_messages(bob_dm)
    assert texts(messages) == ["a", "b", "c"]
    assert all(isinstance(m, xmtp.DecodedMessage) for m in messages)
    assert [m.sent_at for m in messages] == sorted(m.sent_at for m in messages)
    cut = xmtp_compat.after_ns(messages[-2])
    assert texts(await xmtp_compat.list_messages(bob_dm, sent_after_ns=cut)) == ["c"]
    assert cut > int(messages[-2].sent_at.timestamp() * 1e9)  # the naive bound rounds down


async def test_new_group_by_inbox_ids(node: DevNode) -> None:
    alice = await xmtp_compat.create_client(api_url=node.url)
    bob = await xmtp_compat.create_client(api_url=node.url)
    assert bob.inbox_id is not None
    group = await xmtp_compat.new_group(alice, [bob.inbox_id])
    assert set(await group.members()) == {alice.inbox_id, bob.inbox_id}
    assert xmtp_compat.ffi_of(group) is group._ffi


async def test_create_client_rejects_unknown_env() -> None:
    with pytest.raises(ValueError):
        await xmtp_compat.create_client(api_url=None, env="mainnet")


async def test_stream_all_messages_is_subscribed_on_return_and_closes(node: DevNode) -> None:
    alice = await xmtp_compat.create_client(api_url=node.url)
    bob = await xmtp_compat.create_client(api_url=node.url)
    before = node.open_streams
    stream = await xmtp_compat.stream_all_messages(bob)
    assert node.open_streams == before + 2  # welcome + group subscriptions, no sleep needed
    dm = await alice.conversations.new_dm(await address_of(bob))
    await dm.send("ready")
    item = await asyncio.wait_for(anext(stream), 10)
    assert isinstance(item, xmtp.DecodedMessage) and item.content == "ready"
    await stream.close()  # works immediately (the SDK's may silently do nothing)
    await asyncio.sleep(0.2)
    assert node.open_streams == before


async def test_stream_all_messages_raises_when_node_is_down(node: DevNode) -> None:
    """The SDK's stream would end quietly ~2.1 s later; this raises StreamOpenError instead."""
    bob = await xmtp_compat.create_client(api_url=node.url)
    node.stop()
    started = time.monotonic()
    with pytest.raises(xmtp_compat.StreamOpenError):
        await xmtp_compat.stream_all_messages(bob)
    assert time.monotonic() - started < 10
