"""Protobuf message classes for the node, built from the descriptors inside libxmtp itself.

``xmtp_bindings/libxmtpv3.so`` embeds the serialized ``FileDescriptorProto`` of every XMTP schema
it was compiled against. Loading those (instead of shipping our own copies) means the node speaks
exactly the wire format of the installed client. The fields the node actually reads or writes are
listed in :data:`EXPECTED_FIELDS`; ``tests/devnode/test_schema.py`` compares that table with the
binary so an ``xmtp-bindings`` upgrade that renumbers or retypes one of them fails loudly.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

IDENTITY_FILE = "identity/api/v1/identity.proto"
MLS_FILE = "mls/api/v1/mls.proto"
IDENTITY_SERVICE = "xmtp.identity.api.v1.IdentityApi"
MLS_SERVICE = "xmtp.mls.api.v1.MlsApi"

# Dependencies that only carry HTTP/OpenAPI annotations; the node needs neither (and the
# OpenAPI one is not embedded in the binary), so they are dropped together with all options.
_ANNOTATION_ONLY = {
    "google/api/annotations.proto",
    "protoc-gen-openapiv2/options/annotations.proto",
}

# (message full name) -> {field name: (number, FieldDescriptorProto.Type name)}: every field the
# node depends on. Keep in sync with devnode/service.py.
EXPECTED_FIELDS: dict[str, dict[str, tuple[int, str]]] = {
    "xmtp.identity.associations.IdentityUpdate": {
        "actions": (1, "TYPE_MESSAGE"),
        "client_timestamp_ns": (2, "TYPE_UINT64"),
        "inbox_id": (3, "TYPE_STRING"),
    },
    "xmtp.identity.associations.IdentityAction": {
        "create_inbox": (1, "TYPE_MESSAGE"),
        "add": (2, "TYPE_MESSAGE"),
        "revoke": (3, "TYPE_MESSAGE"),
    },
    "xmtp.identity.associations.CreateInbox": {
        "initial_identifier": (1, "TYPE_STRING"),
        "initial_identifier_kind": (4, "TYPE_ENUM"),
    },
    "xmtp.identity.associations.AddAssociation": {"new_member_identifier": (1, "TYPE_MESSAGE")},
    "xmtp.identity.associations.RevokeAssociation": {"member_to_revoke": (1, "TYPE_MESSAGE")},
    "xmtp.identity.associations.MemberIdentifier": {"ethereum_address": (1, "TYPE_STRING")},
    "xmtp.identity.api.v1.PublishIdentityUpdateRequest": {"identity_update": (1, "TYPE_MESSAGE")},
    "xmtp.identity.api.v1.GetIdentityUpdatesRequest": {"requests": (1, "TYPE_MESSAGE")},
    "xmtp.identity.api.v1.GetIdentityUpdatesRequest.Request": {
        "inbox_id": (1, "TYPE_STRING"),
        "sequence_id": (2, "TYPE_UINT64"),
    },
    "xmtp.identity.api.v1.GetIdentityUpdatesResponse": {"responses": (1, "TYPE_MESSAGE")},
    "xmtp.identity.api.v1.GetIdentityUpdatesResponse.Response": {
        "inbox_id": (1, "TYPE_STRING"),
        "updates": (2, "TYPE_MESSAGE"),
    },
    "xmtp.identity.api.v1.GetIdentityUpdatesResponse.IdentityUpdateLog": {
        "sequence_id": (1, "TYPE_UINT64"),
        "server_timestamp_ns": (2, "TYPE_UINT64"),
        "update": (3, "TYPE_MESSAGE"),
    },
    "xmtp.identity.api.v1.GetInboxIdsRequest": {"requests": (1, "TYPE_MESSAGE")},
    "xmtp.identity.api.v1.GetInboxIdsRequest.Request": {
        "identifier": (1, "TYPE_STRING"),
        "identifier_kind": (2, "TYPE_ENUM"),
    },
    "xmtp.identity.api.v1.GetInboxIdsResponse": {"responses": (1, "TYPE_MESSAGE")},
    "xmtp.identity.api.v1.GetInboxIdsResponse.Response": {
        "identifier": (1, "TYPE_STRING"),
        "inbox_id": (2, "TYPE_STRING"),
        "identifier_kind": (3, "TYPE_ENUM"),
    },
    "xmtp.identity.api.v1.VerifySmartContractWalletSignaturesRequest": {
        "signatures": (1, "TYPE_MESSAGE"),
    },
    "xmtp.identity.api.v1.VerifySmartContractWalletSignaturesResponse": {
        "responses": (1, "TYPE_MESSAGE"),
    },
    "xmtp.identity.api.v1.VerifySmartContractWalletSignaturesResponse.ValidationResponse": {
        "is_valid": (1, "TYPE_BOOL"),
        "block_number": (2, "TYPE_UINT64"),
    },
    "xmtp.mls.api.v1.KeyPackageUpload": {"key_package_tls_serialized": (1, "TYPE_BYTES")},
    "xmtp.mls.api.v1.UploadKeyPackageRequest": {"key_package": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.RegisterInstallationRequest": {"key_package": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.RegisterInstallationResponse": {"installation_key": (1, "TYPE_BYTES")},
    "xmtp.mls.api.v1.FetchKeyPackagesRequest": {"installation_keys": (1, "TYPE_BYTES")},
    "xmtp.mls.api.v1.FetchKeyPackagesResponse": {"key_packages": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.FetchKeyPackagesResponse.KeyPackage": {
        "key_package_tls_serialized": (1, "TYPE_BYTES"),
    },
    "xmtp.mls.api.v1.RevokeInstallationRequest": {"installation_key": (1, "TYPE_BYTES")},
    "xmtp.mls.api.v1.WelcomeMessageInput": {
        "v1": (1, "TYPE_MESSAGE"),
        "welcome_pointer": (2, "TYPE_MESSAGE"),
    },
    "xmtp.mls.api.v1.WelcomeMessageInput.V1": {
        "installation_key": (1, "TYPE_BYTES"),
        "data": (2, "TYPE_BYTES"),
        "hpke_public_key": (3, "TYPE_BYTES"),
        "wrapper_algorithm": (4, "TYPE_ENUM"),
        "welcome_metadata": (7, "TYPE_BYTES"),
    },
    "xmtp.mls.api.v1.WelcomeMessageInput.WelcomePointer": {
        "installation_key": (1, "TYPE_BYTES"),
        "welcome_pointer": (2, "TYPE_BYTES"),
        "hpke_public_key": (3, "TYPE_BYTES"),
        "wrapper_algorithm": (4, "TYPE_ENUM"),
    },
    "xmtp.mls.api.v1.WelcomeMessage": {
        "v1": (1, "TYPE_MESSAGE"),
        "welcome_pointer": (2, "TYPE_MESSAGE"),
    },
    "xmtp.mls.api.v1.WelcomeMessage.V1": {
        "id": (1, "TYPE_UINT64"),
        "created_ns": (2, "TYPE_UINT64"),
        "installation_key": (3, "TYPE_BYTES"),
        "data": (4, "TYPE_BYTES"),
        "hpke_public_key": (5, "TYPE_BYTES"),
        "wrapper_algorithm": (6, "TYPE_ENUM"),
        "welcome_metadata": (7, "TYPE_BYTES"),
    },
    "xmtp.mls.api.v1.WelcomeMessage.WelcomePointer": {
        "id": (1, "TYPE_UINT64"),
        "created_ns": (2, "TYPE_UINT64"),
        "installation_key": (3, "TYPE_BYTES"),
        "welcome_pointer": (4, "TYPE_BYTES"),
        "hpke_public_key": (5, "TYPE_BYTES"),
        "wrapper_algorithm": (6, "TYPE_ENUM"),
    },
    "xmtp.mls.api.v1.SendWelcomeMessagesRequest": {"messages": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.GroupMessageInput": {"v1": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.GroupMessageInput.V1": {
        "data": (1, "TYPE_BYTES"),
        "sender_hmac": (2, "TYPE_BYTES"),
        "should_push": (3, "TYPE_BOOL"),
    },
    "xmtp.mls.api.v1.GroupMessage": {"v1": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.GroupMessage.V1": {
        "id": (1, "TYPE_UINT64"),
        "created_ns": (2, "TYPE_UINT64"),
        "group_id": (3, "TYPE_BYTES"),
        "data": (4, "TYPE_BYTES"),
        "sender_hmac": (5, "TYPE_BYTES"),
        "should_push": (6, "TYPE_BOOL"),
    },
    "xmtp.mls.api.v1.SendGroupMessagesRequest": {"messages": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.PagingInfo": {
        "direction": (1, "TYPE_ENUM"),
        "limit": (2, "TYPE_UINT32"),
        "id_cursor": (3, "TYPE_UINT64"),
    },
    "xmtp.mls.api.v1.QueryGroupMessagesRequest": {
        "group_id": (1, "TYPE_BYTES"),
        "paging_info": (2, "TYPE_MESSAGE"),
    },
    "xmtp.mls.api.v1.QueryGroupMessagesResponse": {
        "messages": (1, "TYPE_MESSAGE"),
        "paging_info": (2, "TYPE_MESSAGE"),
    },
    "xmtp.mls.api.v1.QueryWelcomeMessagesRequest": {
        "installation_key": (1, "TYPE_BYTES"),
        "paging_info": (2, "TYPE_MESSAGE"),
    },
    "xmtp.mls.api.v1.QueryWelcomeMessagesResponse": {
        "messages": (1, "TYPE_MESSAGE"),
        "paging_info": (2, "TYPE_MESSAGE"),
    },
    "xmtp.mls.api.v1.SubscribeGroupMessagesRequest": {"filters": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.SubscribeGroupMessagesRequest.Filter": {
        "group_id": (1, "TYPE_BYTES"),
        "id_cursor": (2, "TYPE_UINT64"),
    },
    "xmtp.mls.api.v1.SubscribeWelcomeMessagesRequest": {"filters": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.SubscribeWelcomeMessagesRequest.Filter": {
        "installation_key": (1, "TYPE_BYTES"),
        "id_cursor": (2, "TYPE_UINT64"),
    },
    "xmtp.mls.api.v1.GetNewestGroupMessageRequest": {
        "group_ids": (1, "TYPE_BYTES"),
        "include_content": (2, "TYPE_BOOL"),
    },
    "xmtp.mls.api.v1.GetNewestGroupMessageResponse": {"responses": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.GetNewestGroupMessageResponse.Response": {
        "group_message": (1, "TYPE_MESSAGE"),
    },
    "xmtp.mls.api.v1.BatchQueryCommitLogRequest": {"requests": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.QueryCommitLogRequest": {"group_id": (1, "TYPE_BYTES")},
    "xmtp.mls.api.v1.BatchQueryCommitLogResponse": {"responses": (1, "TYPE_MESSAGE")},
    "xmtp.mls.api.v1.QueryCommitLogResponse": {"group_id": (1, "TYPE_BYTES")},
}

# The RPCs the node serves: service -> {method: (request type, response type, server streaming)}.
EXPECTED_METHODS: dict[str, dict[str, tuple[str, str, bool]]] = {
    IDENTITY_SERVICE: {
        "PublishIdentityUpdate": (
            "PublishIdentityUpdateRequest",
            "PublishIdentityUpdateResponse",
            False,
        ),
        "GetIdentityUpdates": ("GetIdentityUpdatesRequest", "GetIdentityUpdatesResponse", False),
        "GetInboxIds": ("GetInboxIdsRequest", "GetInboxIdsResponse", False),
        "VerifySmartContractWalletSignatures": (
            "VerifySmartContractWalletSignaturesRequest",
            "VerifySmartContractWalletSignaturesResponse",
            False,
        ),
    },
    MLS_SERVICE: {
        "SendGroupMessages": ("SendGroupMessagesRequest", "google.protobuf.Empty", False),
        "SendWelcomeMessages": ("SendWelcomeMessagesRequest", "google.protobuf.Empty", False),
        "RegisterInstallation": (
            "RegisterInstallationRequest",
            "RegisterInstallationResponse",
            False,
        ),
        "UploadKeyPackage": ("UploadKeyPackageRequest", "google.protobuf.Empty", False),
        "FetchKeyPackages": ("FetchKeyPackagesRequest", "FetchKeyPackagesResponse", False),
        "RevokeInstallation": ("RevokeInstallationRequest", "google.protobuf.Empty", False),
        "GetIdentityUpdates": ("GetIdentityUpdatesRequest", "GetIdentityUpdatesResponse", False),
        "QueryGroupMessages": ("QueryGroupMessagesRequest", "QueryGroupMessagesResponse", False),
        "QueryWelcomeMessages": (
            "QueryWelcomeMessagesRequest",
            "QueryWelcomeMessagesResponse",
            False,
        ),
        "SubscribeGroupMessages": ("SubscribeGroupMessagesRequest", "GroupMessage", True),
        "SubscribeWelcomeMessages": ("SubscribeWelcomeMessagesRequest", "WelcomeMessage", True),
        "BatchPublishCommitLog": ("BatchPublishCommitLogRequest", "google.protobuf.Empty", False),
        "BatchQueryCommitLog": ("BatchQueryCommitLogRequest", "BatchQueryCommitLogResponse", False),
        "GetNewestGroupMessage": (
            "GetNewestGroupMessageRequest",
            "GetNewestGroupMessageResponse",
            False,
        ),
    },
}


def binary_path() -> str:
    """Path of the installed libxmtp shared library."""
    import xmtp_bindings

    return os.path.join(os.path.dirname(xmtp_bindings.__file__), "libxmtpv3.so")


def _find_file_descriptor(data: bytes, name: str) -> descriptor_pb2.FileDescriptorProto:
    """Locate one embedded FileDescriptorProto by its file name.

    Each embedded file is a length-delimited entry whose first field is its name, so we look for
    ``0x0a <len> name``, step back over the entry's own varint length, and accept the candidate
    only if it parses and re-serializes to exactly the same bytes.
    """
    encoded = name.encode()
    needle = bytes([0x0A, len(encoded)]) + encoded
    pos = data.find(needle)
    while pos != -1:
        for width in range(1, 5):
            start = pos - width
            if start < 1 or data[start - 1] != 0x0A:
                continue
            length, shift, ok = 0, 0, True
            for i, byte in enumerate(data[start:pos]):
                length |= (byte & 0x7F) << shift
                shift += 7
                if (byte & 0x80) == 0 and i != width - 1:
                    ok = False
            if not ok or data[pos - 1] & 0x80:
                continue
            blob = data[pos : pos + length]
            proto = descriptor_pb2.FileDescriptorProto()
            try:
                proto.ParseFromString(blob)
            except Exception:
                continue
            if proto.name == name and proto.SerializeToString() == blob:
                return proto
        pos = data.find(needle, pos + 1)
    raise LookupError(f"{name} is not embedded in {binary_path()}")


def _strip_options(proto: descriptor_pb2.FileDescriptorProto) -> None:
    """Drop annotation-only dependencies and all options (HTTP/OpenAPI extensions)."""
    proto.ClearField("options")
    kept = [dep for dep in proto.dependency if dep not in _ANNOTATION_ONLY]
    del proto.dependency[:]
    proto.dependency.extend(kept)
    del proto.public_dependency[:]
    del proto.weak_dependency[:]

    def strip_message(msg: descriptor_pb2.DescriptorProto) -> None:
        msg.ClearField("options")
        for field in msg.field:
            field.ClearField("options")
        for nested in msg.nested_type:
            strip_message(nested)

    for msg in proto.message_type:
        strip_message(msg)
    for service in proto.service:
        service.ClearField("options")
        for method in service.method:
            method.ClearField("options")


@functools.lru_cache(maxsize=1)
def embedded_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The two API files and their transitive dependencies, as embedded (unmodified)."""
    with open(binary_path(), "rb") as handle:
        data = handle.read()
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    pending = [IDENTITY_FILE, MLS_FILE]
    while pending:
        name = pending.pop()
        if name in found or name in _ANNOTATION_ONLY:
            continue
        proto = _find_file_descriptor(data, name)
        found[name] = proto
        pending.extend(proto.dependency)
    return found


@functools.lru_cache(maxsize=1)
def pool() -> descriptor_pool.DescriptorPool:
    """A private descriptor pool holding the XMTP API schemas (never the process-wide default)."""
    result = descriptor_pool.DescriptorPool()
    files = {name: descriptor_pb2.FileDescriptorProto() for name in embedded_files()}
    for name, proto in embedded_files().items():
        files[name].CopyFrom(proto)
        _strip_options(files[name])
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        result.Add(files[name])
        added.add(name)

    for name in files:
        add(name)
    return result


@functools.cache
def message_class(full_name: str) -> type[Message]:
    """The generated Python class of a message, e.g. ``xmtp.mls.api.v1.GroupMessage``."""
    cls: type[Message] = message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))
    return cls


def new(full_name: str, **fields: Any) -> Any:
    """Instantiate a message by full name (``Any``: the classes are built at runtime)."""
    return message_class(full_name)(**fields)
