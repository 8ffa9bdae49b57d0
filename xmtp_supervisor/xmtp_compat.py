"""The one place that papers over gaps of the pinned ``xmtp`` 0.1.5 SDK (libxmtp 1.9 bindings).

Why each helper exists:

* :func:`create_client` — ``Client.create`` defaults ``db_path`` to ``"auto"``, which silently
  writes ``xmtp-<env>-<inbox>.db3`` into the current directory; here ``db_path=None`` really means
  an in-memory (ephemeral) database. ``Client.create`` ignores every ``XMTP_*`` environment
  variable (only ``create_from_env`` reads them), so this helper takes everything explicitly and
  never reads the environment either. It generates a throwaway wallet key when none is given and
  forces ``RUST_LOG=off`` unless the caller set ``RUST_LOG`` (the SDK does the same by default).
* :func:`list_messages` — the SDK's ``Conversation`` has no way to list messages; the FFI
  conversation's ``find_messages(FfiListMessagesOptions(...))`` does, and returns raw FFI
  messages, which we decode with the client's own decoder so callers see ``DecodedMessage``.
* :func:`ascending` — ``FfiListMessagesOptions`` has no defaults; one place builds it.
* :func:`after_ns` — ``DecodedMessage.sent_at`` is a ``datetime`` (microseconds) while libxmtp
  filters on nanoseconds: ``sent_after_ns=int(sent_at.timestamp() * 1e9)`` both loses precision
  in the float and rounds down, so the message itself comes back. This gives a safe bound.
* :func:`sync_conversation` — ``Conversation`` does not expose ``sync()`` either.
* :func:`new_group` — ``Conversations.new_group`` takes addresses; agents usually hold inbox
  ids, which the FFI accepts through ``create_group_with_inbox_ids``.
* :func:`is_registered` — ``Client.is_registered`` tests ``signature_request() is None``, but
  libxmtp keeps returning the (already applied) request after registration, so it stays False;
  asking the network whether this installation belongs to the inbox is the reliable check.
* :func:`stream_all_messages` — ``Conversations.stream_all_messages()`` opens the native stream
  in a fire-and-forget task: ``close()`` before that task ran is a no-op (the native stream leaks),
  and a stream opened while the node is unreachable just ends ~2 s later with no error item.
  This version awaits the native ``wait_for_ready()`` so the subscription is live on return,
  ``close()`` always works, and a stream that closed before becoming ready raises
  :class:`StreamOpenError` instead of looking like a quiet, healthy stream.
* :func:`ffi_of` — the FFI object behind an SDK wrapper, for anything else not wrapped.

Not worked around (callers must handle them; see ``devnode/README.md`` for measurements): an
iterator that ends without an error item is still a failure; libxmtp never resubscribes after a
node restart; ``sync_all_conversations()`` reports success while every query is refused; a failed
send is never re-sent by libxmtp.

Keep workarounds here (and tested in ``tests/devnode/test_compat.py``) so an SDK upgrade has one
file to revisit.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import UTC, datetime
from typing import Any

import xmtp
from xmtp.async_stream import AsyncStream
from xmtp.conversation import Conversation, Group
from xmtp.messages import DecodedMessage
from xmtp.signers import create_signer
from xmtp_bindings import xmtpv3

__all__ = [
    "StreamOpenError",
    "after_ns",
    "create_client",
    "ffi_of",
    "is_registered",
    "list_messages",
    "new_group",
    "new_wallet_key",
    "stream_all_messages",
    "sync_conversation",
]


class StreamOpenError(RuntimeError):
    """The native stream closed before it was subscribed (node unreachable or refusing)."""


def new_wallet_key() -> str:
    """A random secp256k1 private key as 0x-prefixed hex (valid with overwhelming probability)."""
    return "0x" + secrets.token_hex(32)


async def create_client(
    *,
    api_url: str | None,
    env: str = "local",
    wallet_key: str | None = None,
    db_path: str | None = None,
    db_encryption_key: bytes | str | None = None,
) -> xmtp.Client:
    """Create and register a real client against ``api_url`` (e.g. ``DevNode.url``).

    ``wallet_key`` None means a new throwaway identity; ``db_path`` None means an in-memory
    database (a restart is then a new installation); a key is only used with a ``db_path``.
    """
    if env not in ("local", "dev", "production"):
        raise ValueError(f"unknown XMTP env {env!r}")
    key = wallet_key or new_wallet_key()
    if not key.startswith("0x"):
        key = "0x" + key
    os.environ.setdefault("RUST_LOG", "off")
    options = xmtp.ClientOptions(
        env=env,  # type: ignore[arg-type]
        api_url=api_url,
        db_path=db_path,
        db_encryption_key=db_encryption_key if db_path is not None else None,
    )
    return await xmtp.Client.create(create_signer(key), options)


def ffi_of(obj: Any) -> Any:
    """The FFI object wrapped by an SDK ``Conversation`` (or the FFI object itself)."""
    return getattr(obj, "_ffi", obj)


async def is_registered(client: xmtp.Client) -> bool:
    """Whether the network lists this client's installation under its inbox."""
    ffi = client._client
    if ffi is None:
        return False
    state = await ffi.inbox_state(True)
    return any(item.id == client.installation_id for item in state.installations)


async def sync_conversation(conversation: Conversation) -> None:
    """Fetch this conversation's new messages from the network (raises when the node refuses)."""
    await ffi_of(conversation).sync()


def after_ns(message: DecodedMessage[object]) -> int:
    """A ``sent_after_ns`` bound that excludes ``message`` itself (and nothing sent later)."""
    delta = message.sent_at - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * 1_000 + 999


def ascending(
    sent_after_ns: int | None = None,
    delivery_status: xmtpv3.FfiDeliveryStatus | None = None,
) -> xmtpv3.FfiListMessagesOptions:
    """``find_messages`` options: oldest first, optionally after a time or of one delivery status
    (the bindings want every one of their eleven fields spelled out)."""
    return xmtpv3.FfiListMessagesOptions(
        sent_before_ns=None,
        sent_after_ns=sent_after_ns,
        limit=None,
        delivery_status=delivery_status,
        direction=xmtpv3.FfiDirection.ASCENDING,
        content_types=None,
        exclude_content_types=None,
        exclude_sender_inbox_ids=None,
        sort_by=None,
        inserted_after_ns=None,
        inserted_before_ns=None,
    )


async def list_messages(
    conversation: Conversation, sent_after_ns: int | None = None
) -> list[DecodedMessage[object]]:
    """The conversation's locally stored messages, decoded, in ascending sent order.

    Only reads the local database: call :func:`sync_conversation` (or a conversations sync)
    first to fetch from the network. Includes membership-change messages (``GroupUpdated``).
    """
    raw = await ffi_of(conversation).find_messages(ascending(sent_after_ns))
    client = conversation._client
    decoded = [client._decode_message(message) for message in raw]
    decoded.sort(key=lambda message: message.sent_at)
    return decoded


async def new_group(client: xmtp.Client, inbox_ids: list[str]) -> Group:
    """Create a group from member inbox ids (the SDK's ``new_group`` wants addresses)."""
    options = xmtpv3.FfiCreateGroupOptions(
        permissions=None,
        group_name=None,
        group_image_url_square=None,
        group_description=None,
        custom_permission_policy_set=None,
        message_disappearing_settings=None,
        app_data=None,
    )
    ffi = ffi_of(client.conversations)
    return Group(client, await ffi.create_group_with_inbox_ids(inbox_ids, options))


class _MessageCallback(xmtpv3.FfiMessageCallback):
    """Hands native callbacks (called on libxmtp threads) to the caller's event loop."""

    def __init__(self, client: xmtp.Client, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.stream: AsyncStream[object] = AsyncStream(self.queue)

    def on_message(self, message: Any) -> None:
        try:
            item: object = self._client._decode_message(message)
        except Exception as exc:  # an undecodable message must not kill the native stream
            item = exc
        self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def on_error(self, error: Any) -> None:
        self._loop.call_soon_threadsafe(self.queue.put_nowait, error)

    def on_close(self) -> None:
        self._loop.call_soon_threadsafe(self.stream._end)


async def stream_all_messages(
    client: xmtp.Client, *, ready_timeout: float = 10.0
) -> AsyncStream[object]:
    """All-conversation message stream, subscribed on return.

    Yields ``DecodedMessage`` items, ``FfiSubscribeError`` items (then usually the end), and the
    exception for a message that could not be decoded. Raises :class:`StreamOpenError` if the
    native stream closed before it was ready, or ``TimeoutError`` after ``ready_timeout``.
    """
    callback = _MessageCallback(client, asyncio.get_running_loop())
    closer = await ffi_of(client.conversations).stream_all_messages(callback, None)

    async def close() -> None:
        await closer.end_and_wait()

    callback.stream._closer = close
    try:
        await asyncio.wait_for(closer.wait_for_ready(), ready_timeout)
    except TimeoutError:
        closer.end()
        raise
    if closer.is_closed():
        raise StreamOpenError("the message stream closed before it was subscribed")
    return callback.stream
