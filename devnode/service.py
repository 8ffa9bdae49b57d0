"""The gRPC handlers of the dev node: ``IdentityApi`` and ``MlsApi`` as libxmtp calls them.

This is **not a validating node**: it checks no signature, no MLS content and no identity rules.
It only parses what it must to route data (the inbox id and identifiers of identity updates, the
installation key inside a key package, the group id inside an MLS message) and stores the rest
verbatim. Requests it cannot parse get ``INVALID_ARGUMENT`` with a reason instead of an exception.

Semantics follow xmtp-node-go where the client can tell the difference: pages are descending when
no direction is given, capped at 100, and carry a next cursor only when full; subscriptions send
their initial metadata at once and replay everything after their cursor (0 included) before
going live, as current xmtp-node-go does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from devnode import schema
from devnode.faults import MLS_GET_IDENTITY_UPDATES, Faults, StreamControl
from devnode.store import Row, Store

_ID = "xmtp.identity.api.v1."
_MLS = "xmtp.mls.api.v1."
ETHEREUM = 1  # IdentifierKind values
UNSPECIFIED_KIND = 0
_GROUP = "group_messages"
_WELCOME = "welcome_messages"


class BadRequest(Exception):
    """A request the node cannot make sense of (answered with INVALID_ARGUMENT)."""


def read_mls_varint_opaque(data: bytes, offset: int) -> tuple[bytes, int]:
    """Read one MLS (RFC 9420) variable-length vector; return it and the offset after it."""
    if offset >= len(data):
        raise BadRequest("truncated MLS vector length")
    prefix = data[offset] >> 6
    if prefix == 3:
        raise BadRequest("invalid MLS varint prefix")
    width = 1 << prefix
    if offset + width > len(data):
        raise BadRequest("truncated MLS vector length")
    length = int.from_bytes(data[offset : offset + width], "big") & ((1 << (8 * width - 2)) - 1)
    start = offset + width
    if start + length > len(data):
        raise BadRequest("truncated MLS vector")
    return data[start : start + length], start + length


def installation_key_of(key_package: bytes) -> bytes:
    """The leaf node's signature key: version, cipher suite, then init/encryption/signature keys."""
    if len(key_package) < 4:
        raise BadRequest("key package too short")
    offset = 4
    for _ in range(2):  # init key, encryption key
        _, offset = read_mls_varint_opaque(key_package, offset)
    signature_key, _ = read_mls_varint_opaque(key_package, offset)
    if not signature_key:
        raise BadRequest("key package has an empty signature key")
    return signature_key


def group_id_of(mls_message: bytes) -> bytes:
    """The group id of a public or private MLS message (after version and wire format)."""
    if len(mls_message) < 4:
        raise BadRequest("MLS message too short")
    wire_format = int.from_bytes(mls_message[2:4], "big")
    if wire_format not in (1, 2):
        raise BadRequest(f"MLS wire format {wire_format} is not a group message")
    group_id, _ = read_mls_varint_opaque(mls_message, 4)
    if not group_id:
        raise BadRequest("MLS message has an empty group id")
    return group_id


def identifier_key(identifier: str, kind: int) -> str:
    """Index key for an identifier; Ethereum addresses are compared lower-case."""
    if kind in (UNSPECIFIED_KIND, ETHEREUM):
        return f"{ETHEREUM}:{identifier.strip().lower()}"
    return f"{kind}:{identifier}"


class Hub:
    """Open subscriptions by topic; lives on the node loop only."""

    def __init__(self) -> None:
        self._subs: dict[tuple[str, bytes], set[asyncio.Queue[Any]]] = {}
        self._all: set[asyncio.Queue[Any]] = set()

    def subscribe(self, table: str, topics: list[bytes]) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for topic in topics:
            self._subs.setdefault((table, topic), set()).add(queue)
        self._all.add(queue)
        return queue

    def unsubscribe(self, table: str, topics: list[bytes], queue: asyncio.Queue[Any]) -> None:
        for topic in topics:
            subs = self._subs.get((table, topic))
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._subs[(table, topic)]
        self._all.discard(queue)

    def publish(self, table: str, topic: bytes, row: Row) -> None:
        for queue in self._subs.get((table, topic), ()):
            queue.put_nowait((topic, row))

    def control(self, command: StreamControl) -> None:
        for queue in list(self._all):
            queue.put_nowait(command)

    @property
    def open_streams(self) -> int:
        return len(self._all)


Handler = Callable[[Any], Any]


class NodeService:
    """Builds the generic gRPC handlers for both services over one store, hub and fault panel."""

    def __init__(self, store: Store, faults: Faults, hub: Hub) -> None:
        self.store = store
        self.faults = faults
        self.hub = hub

    # plumbing ------------------------------------------------------------------------------
    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        unary: dict[str, dict[str, Handler]] = {
            schema.IDENTITY_SERVICE: {
                "PublishIdentityUpdate": self.publish_identity_update,
                "GetIdentityUpdates": self.get_identity_updates,
                "GetInboxIds": self.get_inbox_ids,
                "VerifySmartContractWalletSignatures": self.verify_scw_signatures,
            },
            schema.MLS_SERVICE: {
                "SendGroupMessages": self.send_group_messages,
                "SendWelcomeMessages": self.send_welcome_messages,
                "RegisterInstallation": self.register_installation,
                "UploadKeyPackage": self.upload_key_package,
                "FetchKeyPackages": self.fetch_key_packages,
                "RevokeInstallation": self.revoke_installation,
                "GetIdentityUpdates": self.mls_get_identity_updates,
                "QueryGroupMessages": self.query_group_messages,
                "QueryWelcomeMessages": self.query_welcome_messages,
                "BatchPublishCommitLog": self.batch_publish_commit_log,
                "BatchQueryCommitLog": self.batch_query_commit_log,
                "GetNewestGroupMessage": self.get_newest_group_message,
            },
        }
        handlers: list[grpc.GenericRpcHandler] = []
        for service, methods in schema.EXPECTED_METHODS.items():
            package = service.rsplit(".", 1)[0] + "."
            table: dict[str, grpc.RpcMethodHandler] = {}
            for method, (request_type, _, streaming) in methods.items():
                full_request = request_type if "." in request_type else package + request_type
                name = method
                if service == schema.MLS_SERVICE and method == "GetIdentityUpdates":
                    name = MLS_GET_IDENTITY_UPDATES
                if streaming:
                    table[method] = grpc.unary_stream_rpc_method_handler(
                        self._stream(name, full_request, method)
                    )
                else:
                    table[method] = grpc.unary_unary_rpc_method_handler(
                        self._unary(name, full_request, unary[service][method])
                    )
            handlers.append(grpc.method_handlers_generic_handler(service, table))
        return handlers

    async def _admit(self, name: str, context: grpc.aio.ServicerContext) -> None:
        latency, refused = self.faults._admit(name)
        if latency:
            await asyncio.sleep(latency)
        if refused is not None:
            await context.abort(refused, f"refused by devnode fault injection ({name})")

    @staticmethod
    async def _parse(request_type: str, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return schema.message_class(request_type).FromString(raw)
        except DecodeError as exc:
            short = request_type.rsplit(".", 1)[-1]
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {short}: {exc}")

    def _unary(
        self, name: str, request_type: str, handler: Handler
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        async def call(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await self._admit(name, context)
            request = await self._parse(request_type, raw, context)
            error: str | None = None
            try:
                response = handler(request)
            except BadRequest as exc:
                error = str(exc)
            if error is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
            data: bytes = response.SerializeToString()
            return data

        return call

    def _stream(
        self, name: str, request_type: str, method: str
    ) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[bytes]]:
        table, response_type = (
            (_GROUP, _MLS + "GroupMessage")
            if method == "SubscribeGroupMessages"
            else (_WELCOME, _MLS + "WelcomeMessage")
        )

        async def call(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            await self._admit(name, context)
            request = await self._parse(request_type, raw, context)
            topics: list[bytes] = []
            cursors: list[int] = []
            for item in request.filters:
                topic = item.group_id if table == _GROUP else item.installation_key
                if not topic:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "filter without a topic")
                topics.append(bytes(topic))
                cursors.append(int(item.id_cursor))
            queue = self.hub.subscribe(table, topics)
            # Catch up after every cursor, 0 included (current xmtp-node-go does the same: libxmtp
            # subscribes a brand-new DM with cursor 0 and relies on the replay to see its first
            # messages). Registration and catch-up happen in one loop step: nothing falls between.
            for topic, cursor in zip(topics, cursors, strict=True):
                for row in self.store.after(table, topic, cursor):
                    queue.put_nowait((topic, row))
            high_water = dict(zip(topics, cursors, strict=True))
            try:
                # Headers go out at once (libxmtp waits for them before opening its next
                # subscription) and only after registration, so once the client sees them
                # nothing published later can be missed.
                await context.send_initial_metadata((("subscribed", "true"),))
                while True:
                    item = await queue.get()
                    if isinstance(item, StreamControl):
                        if item.code is None:
                            return
                        await context.abort(item.code, item.details)
                    topic, row = item
                    if row.id <= high_water.get(topic, 0):
                        continue  # never send an envelope twice or go backwards on a topic
                    high_water[topic] = row.id
                    if self.faults.silent:
                        continue
                    message = self._envelope(response_type, row)
                    yield message.SerializeToString()
            finally:
                self.hub.unsubscribe(table, topics, queue)

        return call

    @staticmethod
    def _envelope(full_name: str, row: Row) -> Any:
        """A stored envelope with its node-assigned id and time filled in."""
        message = schema.message_class(full_name).FromString(row.data)
        version = message.WhichOneof("version")
        if version is not None:
            inner = getattr(message, version)
            inner.id = row.id
            inner.created_ns = row.created_ns
        return message

    def _store_and_publish(self, table: str, prepared: list[tuple[bytes, bytes]]) -> None:
        """Store every (topic, blob) and wake its subscribers; callers validate all first, so a
        bad item in a batch stores none."""
        for topic, blob in prepared:
            row = self.store.append(table, topic, blob)
            self.hub.publish(table, topic, row)

    def _page_response(
        self, response_type: str, envelope_type: str, table: str, topic: bytes, paging: Any
    ) -> Any:
        page = self.store.page(
            table, topic, int(paging.direction), int(paging.limit), int(paging.id_cursor)
        )
        response = schema.new(response_type)
        for row in page.rows:
            response.messages.append(self._envelope(envelope_type, row))
        if page.next_cursor is not None:
            response.paging_info.direction = page.direction
            response.paging_info.limit = page.limit
            response.paging_info.id_cursor = page.next_cursor
        return response

    # identity ------------------------------------------------------------------------------
    def publish_identity_update(self, request: Any) -> Any:
        update = request.identity_update
        if not update.inbox_id:
            raise BadRequest("identity update without inbox_id")
        added: list[str] = []
        removed: list[str] = []
        for action in update.actions:
            kind = action.WhichOneof("kind")
            if kind == "create_inbox":
                create = action.create_inbox
                added.append(
                    identifier_key(create.initial_identifier, int(create.initial_identifier_kind))
                )
            elif kind == "add":
                member = action.add.new_member_identifier
                if member.WhichOneof("kind") == "ethereum_address":
                    added.append(identifier_key(member.ethereum_address, ETHEREUM))
            elif kind == "revoke":
                member = action.revoke.member_to_revoke
                if member.WhichOneof("kind") == "ethereum_address":
                    removed.append(identifier_key(member.ethereum_address, ETHEREUM))
        self.store.add_identity_update(update.inbox_id, update.SerializeToString(), added, removed)
        return schema.new(_ID + "PublishIdentityUpdateResponse")

    def get_identity_updates(self, request: Any) -> Any:
        response = schema.new(_ID + "GetIdentityUpdatesResponse")
        update_type = schema.message_class("xmtp.identity.associations.IdentityUpdate")
        for item in request.requests:
            entry = response.responses.add(inbox_id=item.inbox_id)
            for row in self.store.identity_updates(item.inbox_id, int(item.sequence_id)):
                entry.updates.add(
                    sequence_id=row.id,
                    server_timestamp_ns=row.created_ns,
                    update=update_type.FromString(row.data),
                )
        return response

    def get_inbox_ids(self, request: Any) -> Any:
        response = schema.new(_ID + "GetInboxIdsResponse")
        for item in request.requests:
            entry = response.responses.add(
                identifier=item.identifier, identifier_kind=item.identifier_kind
            )
            inbox_id = self.store.inbox_id_for(
                identifier_key(item.identifier, int(item.identifier_kind))
            )
            if inbox_id is not None:
                entry.inbox_id = inbox_id
        return response

    def verify_scw_signatures(self, request: Any) -> Any:
        """Smart-contract wallets are accepted as valid: this node validates nothing."""
        response = schema.new(_ID + "VerifySmartContractWalletSignaturesResponse")
        for item in request.signatures:
            entry = response.responses.add(is_valid=True)
            if item.HasField("block_number"):
                entry.block_number = item.block_number
        return response

    # key packages --------------------------------------------------------------------------
    def _store_key_package(self, request: Any) -> bytes:
        data = bytes(request.key_package.key_package_tls_serialized)
        if not data:
            raise BadRequest("missing key_package_tls_serialized")
        try:
            key = installation_key_of(data)
        except BadRequest as exc:
            raise BadRequest(f"bad key package: {exc}") from exc
        self.store.put_key_package(key, data)
        return key

    def upload_key_package(self, request: Any) -> Any:
        self._store_key_package(request)
        return schema.new("google.protobuf.Empty")

    def register_installation(self, request: Any) -> Any:
        key = self._store_key_package(request)
        return schema.new(_MLS + "RegisterInstallationResponse", installation_key=key)

    def fetch_key_packages(self, request: Any) -> Any:
        """One entry per requested key, in request order (empty when unknown)."""
        response = schema.new(_MLS + "FetchKeyPackagesResponse")
        for key in request.installation_keys:
            entry = response.key_packages.add()
            data = self.store.key_package(bytes(key))
            if data is not None:
                entry.key_package_tls_serialized = data
        return response

    def revoke_installation(self, request: Any) -> Any:
        self.store.delete_key_package(bytes(request.installation_key))
        return schema.new("google.protobuf.Empty")

    def mls_get_identity_updates(self, request: Any) -> Any:
        """The legacy wallet-based update feed: one empty entry per address."""
        response = schema.new(_MLS + "GetIdentityUpdatesResponse")
        for _ in request.account_addresses:
            response.updates.add()
        return response

    # welcomes ------------------------------------------------------------------------------
    def send_welcome_messages(self, request: Any) -> Any:
        if not request.messages:
            raise BadRequest("no welcome messages to send")
        prepared: list[tuple[bytes, bytes]] = []
        for item in request.messages:
            version = item.WhichOneof("version")
            message = schema.new(_MLS + "WelcomeMessage")
            if version == "v1":
                src = item.v1
                message.v1.installation_key = src.installation_key
                message.v1.data = src.data
                message.v1.hpke_public_key = src.hpke_public_key
                message.v1.wrapper_algorithm = src.wrapper_algorithm
                message.v1.welcome_metadata = src.welcome_metadata
                key = bytes(src.installation_key)
            elif version == "welcome_pointer":
                ptr = item.welcome_pointer
                message.welcome_pointer.installation_key = ptr.installation_key
                message.welcome_pointer.welcome_pointer = ptr.welcome_pointer
                message.welcome_pointer.hpke_public_key = ptr.hpke_public_key
                message.welcome_pointer.wrapper_algorithm = ptr.wrapper_algorithm
                key = bytes(ptr.installation_key)
            else:
                raise BadRequest("welcome message without a version")
            if not key:
                raise BadRequest("welcome message without installation_key")
            prepared.append((key, message.SerializeToString()))
        self._store_and_publish(_WELCOME, prepared)
        return schema.new("google.protobuf.Empty")

    def query_welcome_messages(self, request: Any) -> Any:
        if not request.installation_key:
            raise BadRequest("missing installation_key")
        return self._page_response(
            _MLS + "QueryWelcomeMessagesResponse",
            _MLS + "WelcomeMessage",
            _WELCOME,
            bytes(request.installation_key),
            request.paging_info,
        )

    # group messages ------------------------------------------------------------------------
    def send_group_messages(self, request: Any) -> Any:
        if not request.messages:
            raise BadRequest("no group messages to send")
        prepared: list[tuple[bytes, bytes]] = []
        for item in request.messages:
            if item.WhichOneof("version") != "v1":
                raise BadRequest("group message without v1")
            data = bytes(item.v1.data)
            group_id = group_id_of(data)
            message = schema.new(_MLS + "GroupMessage")
            message.v1.group_id = group_id
            message.v1.data = data
            message.v1.sender_hmac = item.v1.sender_hmac
            message.v1.should_push = item.v1.should_push
            prepared.append((group_id, message.SerializeToString()))
        self._store_and_publish(_GROUP, prepared)
        return schema.new("google.protobuf.Empty")

    def query_group_messages(self, request: Any) -> Any:
        if not request.group_id:
            raise BadRequest("missing group_id")
        return self._page_response(
            _MLS + "QueryGroupMessagesResponse",
            _MLS + "GroupMessage",
            _GROUP,
            bytes(request.group_id),
            request.paging_info,
        )

    def get_newest_group_message(self, request: Any) -> Any:
        response = schema.new(_MLS + "GetNewestGroupMessageResponse")
        for group_id in request.group_ids:
            entry = response.responses.add()
            row = self.store.newest(_GROUP, bytes(group_id))
            if row is not None:
                message = self._envelope(_MLS + "GroupMessage", row)
                if not request.include_content:
                    message.v1.ClearField("data")
                entry.group_message.CopyFrom(message)
        return response

    def batch_publish_commit_log(self, request: Any) -> Any:
        for item in request.requests:
            self.store.add_commit_log(bytes(item.group_id), item.SerializeToString())
        return schema.new("google.protobuf.Empty")

    def batch_query_commit_log(self, request: Any) -> Any:
        """Answered empty: libxmtp 1.9 only uses the commit log for fork detection."""
        response = schema.new(_MLS + "BatchQueryCommitLogResponse")
        for item in request.requests:
            response.responses.add(group_id=item.group_id)
        return response
