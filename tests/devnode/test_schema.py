"""The node's wire contract against the schemas embedded in the installed libxmtp binary.

If an ``xmtp-bindings`` upgrade renumbers, retypes or removes a field or RPC the node relies on,
these tests fail and name it.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from devnode import schema

_TYPE_NAMES = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()}


def _messages_of(
    files: dict[str, descriptor_pb2.FileDescriptorProto],
) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        found[name] = message
        for nested in message.nested_type:
            walk(name, nested)

    for proto in files.values():
        for message in proto.message_type:
            walk(proto.package, message)
    return found


def _qualify(package: str, type_name: str) -> str:
    return f".{type_name}" if "." in type_name else f".{package}.{type_name}"


def test_embedded_descriptors_are_found() -> None:
    files = schema.embedded_files()
    assert schema.IDENTITY_FILE in files and schema.MLS_FILE in files
    assert "identity/associations/association.proto" in files


def test_every_field_the_node_uses_matches_the_binary() -> None:
    messages = _messages_of(schema.embedded_files())
    problems: list[str] = []
    for message_name, fields in schema.EXPECTED_FIELDS.items():
        message = messages.get(message_name)
        if message is None:
            problems.append(f"{message_name}: missing")
            continue
        actual = {f.name: (f.number, _TYPE_NAMES[f.type]) for f in message.field}
        for field_name, expected in fields.items():
            if actual.get(field_name) != expected:
                problems.append(
                    f"{message_name}.{field_name}: {actual.get(field_name)} != {expected}"
                )
    assert problems == []


def test_every_rpc_the_node_serves_matches_the_binary() -> None:
    files = schema.embedded_files()
    services = {
        f"{proto.package}.{service.name}": service
        for proto in files.values()
        for service in proto.service
    }
    for service_name, methods in schema.EXPECTED_METHODS.items():
        package = service_name.rsplit(".", 1)[0]
        actual = {m.name: m for m in services[service_name].method}
        assert set(methods) <= set(actual), service_name
        for name, (request, response, streaming) in methods.items():
            method = actual[name]
            assert method.input_type == _qualify(package, request), name
            assert method.output_type == _qualify(package, response), name
            assert method.server_streaming == streaming and not method.client_streaming, name


def test_runtime_classes_use_the_same_numbers() -> None:
    for message_name, fields in schema.EXPECTED_FIELDS.items():
        descriptor = schema.message_class(message_name).DESCRIPTOR
        for field_name, (number, _) in fields.items():
            assert descriptor.fields_by_name[field_name].number == number
