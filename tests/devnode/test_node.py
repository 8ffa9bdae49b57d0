"""The node's own behaviour over raw gRPC: paging, cursors, key packages, errors, fault switches."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from devnode import DevNode, schema
from devnode.service import group_id_of, installation_key_of
from devnode.store import Store

MLS = "xmtp.mls.api.v1."
IDENTITY = "xmtp.identity.api.v1."


class Raw:
    """A bare gRPC client for the node, speaking the binary's message classes."""

    def __init__(self, node: DevNode) -> None:
        self.channel = grpc.insecure_channel(f"{node.host}:{node.port}")

    def call(self, service: str, method: str, request: Any, response_type: str) -> Any:
        raw = self.channel.unary_unary(f"/{service}/{method}")(
            request if isinstance(request, bytes) else request.SerializeToString(), timeout=5
        )
        return schema.message_class(response_type).FromString(raw)

    def mls(self, method: str, request: Any, response: str) -> Any:
        return self.call(schema.MLS_SERVICE, method, request, response)

    def subscribe_groups(self, filters: list[tuple[bytes, int]]) -> Any:
        request = schema.new(MLS + "SubscribeGroupMessagesRequest")
        for group_id, cursor in filters:
            request.filters.add(group_id=group_id, id_cursor=cursor)
        return self.channel.unary_stream(f"/{schema.MLS_SERVICE}/SubscribeGroupMessages")(
            request.SerializeToString(), timeout=10
        )


def mls_vec(data: bytes) -> bytes:
    """An MLS variable-length vector (1- or 2-byte length prefix)."""
    if len(data) < 64:
        return bytes([len(data)]) + data
    return (0x4000 | len(data)).to_bytes(2, "big") + data


def group_message(group_id: bytes, body: bytes = b"x") -> bytes:
    """A private MLS message: version 1, wire format 2, group id, then opaque content."""
    return b"\x00\x01\x00\x02" + mls_vec(group_id) + body


def key_package(signature_key: bytes, tag: bytes = b"") -> bytes:
    return b"\x00\x01\x00\x01" + mls_vec(b"init" + tag) + mls_vec(b"enc") + mls_vec(signature_key)


@pytest.fixture
def raw(node: DevNode) -> Iterator[Raw]:
    client = Raw(node)
    yield client
    client.channel.close()


def send(raw: Raw, group_id: bytes, count: int) -> None:
    request = schema.new(MLS + "SendGroupMessagesRequest")
    for i in range(count):
        request.messages.add().v1.data = group_message(group_id, str(i).encode())
    raw.mls("SendGroupMessages", request, "google.protobuf.Empty")


def query(raw: Raw, group_id: bytes, direction: int = 0, limit: int = 0, cursor: int = 0) -> Any:
    request = schema.new(MLS + "QueryGroupMessagesRequest", group_id=group_id)
    request.paging_info.direction = direction
    request.paging_info.limit = limit
    request.paging_info.id_cursor = cursor
    return raw.mls("QueryGroupMessages", request, MLS + "QueryGroupMessagesResponse")


def test_mls_parsers() -> None:
    assert group_id_of(group_message(b"g" * 70)) == b"g" * 70
    assert installation_key_of(key_package(b"K" * 32)) == b"K" * 32


def test_paging_like_xmtp_node_go(raw: Raw) -> None:
    send(raw, b"group-a", 130)
    send(raw, b"group-b", 1)
    first = query(raw, b"group-a")  # no direction: descending, capped at 100
    ids = [m.v1.id for m in first.messages]
    assert len(ids) == 100 and ids == sorted(ids, reverse=True)
    assert first.paging_info.id_cursor == ids[-1]  # full page: a next cursor
    second = query(raw, b"group-a", cursor=first.paging_info.id_cursor)
    assert len(second.messages) == 30 and not second.HasField("paging_info")
    ascending = query(raw, b"group-a", direction=1, limit=10, cursor=ids[-1])
    assert [m.v1.id for m in ascending.messages] == sorted(ids)[1:11]
    assert ascending.paging_info.id_cursor == ascending.messages[-1].v1.id
    assert all(m.v1.group_id == b"group-a" and m.v1.created_ns for m in first.messages)
    assert query(raw, b"group-a", limit=1000).paging_info.limit == 100


def test_key_packages_latest_and_in_request_order(raw: Raw) -> None:
    for key, tag in ((b"A" * 32, b"1"), (b"B" * 32, b"1"), (b"A" * 32, b"2")):
        upload = schema.new(MLS + "UploadKeyPackageRequest")
        upload.key_package.key_package_tls_serialized = key_package(key, tag)
        raw.mls("UploadKeyPackage", upload, "google.protobuf.Empty")
    request = schema.new(
        MLS + "FetchKeyPackagesRequest", installation_keys=[b"B" * 32, b"?" * 32, b"A" * 32]
    )
    response = raw.mls("FetchKeyPackages", request, MLS + "FetchKeyPackagesResponse")
    packages = [p.key_package_tls_serialized for p in response.key_packages]
    assert packages == [key_package(b"B" * 32, b"1"), b"", key_package(b"A" * 32, b"2")]


def test_identity_lookup_is_case_insensitive(raw: Raw) -> None:
    update = schema.new(IDENTITY + "PublishIdentityUpdateRequest")
    update.identity_update.inbox_id = "inbox-1"
    create = update.identity_update.actions.add().create_inbox
    create.initial_identifier = "0xABCdef0000000000000000000000000000000001"
    create.initial_identifier_kind = 1
    raw.call(
        schema.IDENTITY_SERVICE,
        "PublishIdentityUpdate",
        update,
        IDENTITY + "PublishIdentityUpdateResponse",
    )
    lookup = schema.new(IDENTITY + "GetInboxIdsRequest")
    lookup.requests.add(identifier="0xabcDEF0000000000000000000000000000000001", identifier_kind=1)
    lookup.requests.add(identifier="0x0000000000000000000000000000000000000002", identifier_kind=1)
    response = raw.call(
        schema.IDENTITY_SERVICE, "GetInboxIds", lookup, IDENTITY + "GetInboxIdsResponse"
    )
    assert response.responses[0].inbox_id == "inbox-1"
    assert not response.responses[1].HasField("inbox_id")
    updates = schema.new(IDENTITY + "GetIdentityUpdatesRequest")
    updates.requests.add(inbox_id="inbox-1", sequence_id=0)
    log = raw.call(
        schema.IDENTITY_SERVICE,
        "GetIdentityUpdates",
        updates,
        IDENTITY + "GetIdentityUpdatesResponse",
    )
    [entry] = log.responses
    assert [u.update.inbox_id for u in entry.updates] == ["inbox-1"]
    updates.requests[0].sequence_id = entry.updates[0].sequence_id
    later = raw.call(
        schema.IDENTITY_SERVICE,
        "GetIdentityUpdates",
        updates,
        IDENTITY + "GetIdentityUpdatesResponse",
    )
    assert list(later.responses[0].updates) == []


@pytest.mark.parametrize(
    ("method", "payload", "reason"),
    [
        ("QueryGroupMessages", b"\xff\xff\xff", "malformed"),
        ("SendGroupMessages", None, "MLS message too short"),
        ("UploadKeyPackage", None, "key package"),
        ("QueryGroupMessages", b"", "missing group_id"),
        ("SendGroupMessages", b"", "no group messages"),
    ],
)
def test_malformed_requests_get_invalid_argument(
    raw: Raw, method: str, payload: bytes | None, reason: str
) -> None:
    if payload is None and method == "SendGroupMessages":
        request = schema.new(MLS + "SendGroupMessagesRequest")
        request.messages.add().v1.data = b"\x00"
        payload = request.SerializeToString()
    elif payload is None:
        request = schema.new(MLS + "UploadKeyPackageRequest")
        request.key_package.key_package_tls_serialized = b"\x00\x01\x00\x01\xff"
        payload = request.SerializeToString()
    with pytest.raises(grpc.RpcError) as error:
        raw.mls(method, payload, "google.protobuf.Empty")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in (error.value.details() or "")
    send(raw, b"still-up", 1)  # the node keeps serving


def test_subscriptions_replay_after_their_cursor_zero_included_then_go_live(raw: Raw) -> None:
    send(raw, b"g", 3)
    ids = sorted(m.v1.id for m in query(raw, b"g").messages)
    from_zero = raw.subscribe_groups([(b"g", 0)])
    from_first = raw.subscribe_groups([(b"g", ids[0])])
    assert from_zero.initial_metadata() is not None  # headers arrive before any message
    send(raw, b"g", 1)
    parse = schema.message_class(MLS + "GroupMessage").FromString
    assert [parse(next(from_zero)).v1.id for _ in range(4)] == [*ids, ids[-1] + 1]
    assert [parse(next(from_first)).v1.id for _ in range(3)] == [*ids[1:], ids[-1] + 1]
    from_zero.cancel()
    from_first.cancel()


def test_refuse_some_methods_and_count_calls(node: DevNode, raw: Raw) -> None:
    node.faults.refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, {"QueryGroupMessages"})
    send(raw, b"g", 1)
    with pytest.raises(grpc.RpcError) as error:
        query(raw, b"g")
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    node.faults.refuse(None)
    assert len(query(raw, b"g").messages) == 1
    assert node.faults.counters() == {"SendGroupMessages": 1, "QueryGroupMessages": 2}
    node.faults.reset_counters()
    assert node.faults.counters() == {}
    with pytest.raises(ValueError, match="unknown RPC names"):
        node.faults.refuse(grpc.StatusCode.UNAVAILABLE, {"QueryGroupMessage"})


def test_freeze_holds_answers_until_thawed(node: DevNode, raw: Raw) -> None:
    send(raw, b"g", 1)
    node.faults.freeze(True)
    with pytest.raises(grpc.RpcError) as error:
        raw.channel.unary_unary(f"/{schema.MLS_SERVICE}/QueryGroupMessages")(
            schema.new(MLS + "QueryGroupMessagesRequest", group_id=b"g").SerializeToString(),
            timeout=0.5,
        )
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    node.faults.freeze(False)
    assert len(query(raw, b"g").messages) == 1


@pytest.mark.anyio
async def test_faults_callable_inside_a_running_loop(node: DevNode) -> None:
    """No fault method blocks the caller's loop (they only post to the node's own loop)."""
    started = time.monotonic()
    node.faults.end_streams()
    node.faults.abort_streams()
    node.faults.set_silent(True)
    node.faults.set_silent(False)
    node.faults.freeze(True)
    node.faults.freeze(False)
    node.faults.set_latency(0)
    await asyncio.sleep(0)
    assert time.monotonic() - started < 0.1
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(len(node.faults.counters())))
    thread.start()
    thread.join(5)
    assert result == [0]


def test_restart_same_port_and_wipe(tmp_path: Any) -> None:
    path = str(tmp_path / "node.db")
    with DevNode(db_path=path) as node:
        client = Raw(node)
        send(client, b"g", 2)
        port = node.port
        node.restart(keep_data=True)
        assert node.port == port and len(query(client, b"g").messages) == 2
        node.restart(keep_data=False)
        assert node.port == port and len(query(client, b"g").messages) == 0
        client.channel.close()
    store = Store(path)  # the file is a normal SQLite database
    assert store.newest("group_messages", b"g") is None
    store.close()
