"""The one module that talks to the ``xmtp`` SDK on the runtime's behalf.

It turns what the real client does into what the supervisor understands: SDK and FFI messages
become :class:`InboundMessage`; error callbacks, a stream that closes and exceptions become error
strings the core classifies with its error table. What it learned from the real client:

* the SDK's ``stream_all_messages()`` opens the native stream in a fire-and-forget task, so an
  open that fails surfaces late; here the FFI stream is opened directly and the open only counts
  once ``wait_for_ready()`` returns, while a close before that is an open failure;
* callbacks arrive on libxmtp's threads; they are marshalled onto the event loop here;
* ``sync_all_conversations()`` reports success while every group query fails, so a sync is judged
  per conversation: it fails only when no conversation could be synced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import xmtp
from xmtp_bindings import xmtpv3

from fsm.errors import describe
from xmtp_supervisor import xmtp_compat
from xmtp_supervisor.inbound import InboundMessage

INSTALLATION_LIMIT = 10
"""Installations per inbox allowed by the network (libxmtp #1106)."""


_ALL_CONVERSATIONS = xmtpv3.FfiListConversationsOptions(
    created_after_ns=None, created_before_ns=None, last_activity_before_ns=None,
    last_activity_after_ns=None, order_by=None, limit=None, consent_states=None,
    include_duplicate_dms=False,
)


class ConfigError(ValueError):
    """The environment cannot produce a client; the message names the variable and the fix."""


class StreamOpenFailed(RuntimeError):
    pass


class SyncFailed(RuntimeError):
    pass


class Stream(Protocol):
    async def close(self) -> None: ...


class Network(Protocol):
    """What the runtime needs from the network; the real one is :class:`XmtpNetwork`."""

    inbox_id: str

    async def open_stream(
        self,
        on_message: Callable[[InboundMessage], None],
        on_error: Callable[[str], None],
        on_close: Callable[[], None],
    ) -> Stream: ...

    async def sync_conversations(self) -> list[str]: ...

    async def sync_conversation(self, conversation_id: str) -> None: ...

    async def changed_conversations(self, seen: Mapping[str, int]) -> list[str]: ...

    async def fetch_after(self, conversation_id: str, after_ns: int) -> list[InboundMessage]: ...

    async def send_text(self, conversation_id: str, text: str) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ClientSettings:
    """Client settings read from the SDK's own environment variables."""

    wallet_key: str
    env: str
    api_url: str | None
    db_directory: str | None
    db_encryption_key: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        env_vars = os.environ if environ is None else environ
        key = env_vars.get("XMTP_WALLET_KEY", "").strip()
        if not key:
            raise ConfigError(
                "XMTP_WALLET_KEY is not set: export the agent's wallet private key (0x + 64 hex) "
                "to run against a network, or try `xmtp-supervisor demo`, which needs no wallet"
            )
        body = _hex64(key)
        if body is None:
            raise ConfigError("XMTP_WALLET_KEY: expected a private key of 64 hex digits "
                              "(optionally 0x-prefixed); the value is not shown")
        env = env_vars.get("XMTP_ENV", "dev").strip() or "dev"
        if env not in ("local", "dev", "production"):
            raise ConfigError(f"XMTP_ENV: must be local, dev or production, got {env!r}")
        db_dir = env_vars.get("XMTP_DB_DIRECTORY", "").strip() or None
        db_key = env_vars.get("XMTP_DB_ENCRYPTION_KEY", "").strip() or None
        if db_key is not None and _hex64(db_key) is None:
            raise ConfigError("XMTP_DB_ENCRYPTION_KEY: expected 32 bytes as 64 hex digits; "
                              "the value is not shown")
        if env != "local" and (db_dir is None or db_key is None):
            missing = " and ".join(
                name for name, value in (("XMTP_DB_DIRECTORY", db_dir),
                                         ("XMTP_DB_ENCRYPTION_KEY", db_key)) if value is None
            )
            raise ConfigError(
                f"{missing} not set: on the {env} network every start without a persistent, "
                "encrypted database registers a new installation, and an inbox allows only "
                f"{INSTALLATION_LIMIT}; set {missing} (a directory that survives restarts and "
                "a 32-byte hex key) before running"
            )
        return cls("0x" + body, env, env_vars.get("XMTP_API_URL") or None, db_dir, db_key)

    def db_path(self) -> str | None:
        if self.db_directory is None:
            return None
        from eth_account import Account

        address = Account.from_key(self.wallet_key).address.lower()
        Path(self.db_directory).mkdir(parents=True, exist_ok=True, mode=0o700)
        return str(Path(self.db_directory) / f"xmtp-{self.env}-{address}.db3")


class _FfiStream:
    def __init__(self, closer: Any) -> None:
        self._closer = closer

    async def close(self) -> None:
        self._closer.end()
        with contextlib.suppress(Exception):  # a stream that will not close is gone to us
            await asyncio.wait_for(self._closer.end_and_wait(), 5.0)


class _Callback(xmtpv3.FfiMessageCallback):
    """libxmtp calls these on its own threads; each hop onto the loop is one call_soon."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        convert: Callable[[Any], InboundMessage],
        on_message: Callable[[InboundMessage], None],
        on_error: Callable[[str], None],
        on_close: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._convert = convert
        self._on_message = on_message
        self._on_error = on_error
        self._on_close = on_close
        self.closed = asyncio.Event()

    def on_message(self, message: Any) -> None:
        self._loop.call_soon_threadsafe(self._deliver, message)

    def _deliver(self, message: Any) -> None:
        self._on_message(self._convert(message))

    def on_error(self, error: Any) -> None:
        self._loop.call_soon_threadsafe(self._on_error, describe(error))

    def on_close(self) -> None:
        self._loop.call_soon_threadsafe(self._closed)

    def _closed(self) -> None:
        self.closed.set()
        self._on_close()


class XmtpNetwork:
    """:class:`Network` over a real ``xmtp.Client`` (libxmtp)."""

    def __init__(self, client: xmtp.Client) -> None:
        self.client = client
        inbox = client.inbox_id
        if inbox is None:
            raise ConfigError("the xmtp client has no inbox id; it was not registered")
        self.inbox_id: str = inbox
        self._ffi_client: Any = client._client
        self._conversations: dict[str, Any] = {}
        self._api: Any = None

    @classmethod
    async def create(cls, settings: ClientSettings) -> XmtpNetwork:
        client = await xmtp_compat.create_client(
            api_url=settings.api_url,
            env=settings.env,
            wallet_key=settings.wallet_key,
            db_path=settings.db_path(),
            db_encryption_key=settings.db_encryption_key,
        )
        return cls(client)

    async def installation_count(self) -> int:
        state = await self._ffi_client.inbox_state(True)
        return len(state.installations)

    # -- conversion -----------------------------------------------------------------------------

    def to_inbound(self, message: Any) -> InboundMessage:
        """An FFI message as the message path sees it; undecodable content is flagged, kept."""
        conversation_id = bytes(message.conversation_id).hex()
        base = {
            "id": bytes(message.id).hex(),
            "conversation_id": conversation_id,
            "sender_inbox_id": message.sender_inbox_id,
            "sent_at_ns": int(message.sent_at_ns),
        }
        try:
            decoded = self.client._decode_message(message)
        except Exception as exc:  # any decoder failure is the message's problem
            return InboundMessage(**base, content_type="unknown", text=None,
                                  decode_error=type(exc).__name__)
        content_type = decoded.content_type_id or "unknown"
        text = decoded.content if isinstance(decoded.content, str) else None
        return InboundMessage(**base, content_type=content_type, text=text)

    # -- Network --------------------------------------------------------------------------------

    async def open_stream(
        self,
        on_message: Callable[[InboundMessage], None],
        on_error: Callable[[str], None],
        on_close: Callable[[], None],
    ) -> Stream:
        loop = asyncio.get_running_loop()
        callback = _Callback(loop, self.to_inbound, on_message, on_error, on_close)
        conversations = self._ffi_client.conversations()
        try:
            closer = await conversations.stream_all_messages(callback, None)
        except Exception as exc:
            raise StreamOpenFailed(describe(exc)) from exc
        ready = asyncio.ensure_future(closer.wait_for_ready())
        closed = asyncio.ensure_future(callback.closed.wait())
        try:
            done, _pending = await asyncio.wait({ready, closed},
                                                return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            closer.end()  # cancelled while opening: never leak a half-open subscription
            raise
        finally:
            ready.cancel()
            closed.cancel()
        if ready in done and ready.exception() is None and not callback.closed.is_set():
            return _FfiStream(closer)
        closer.end()
        if ready in done and ready.exception() is not None:
            raise StreamOpenFailed(describe(ready.exception()))
        raise StreamOpenFailed("stream ended before it opened")

    async def sync_conversations(self) -> list[str]:
        """Sync welcomes, then each conversation; fail only if nothing could be synced."""
        return await self._sync_each(await self._sync_welcomes())

    def _conversation(self, conversation_id: str) -> Any:
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            conversation = self._ffi_client.conversation(bytes.fromhex(conversation_id))
            self._conversations[conversation_id] = conversation
        return conversation

    async def changed_conversations(self, seen: Mapping[str, int]) -> list[str]:
        """The cheap probe: sync welcomes, ask the node for every conversation's newest message
        in one batch call, and sync only the conversations that hold something newer than
        ``seen`` (conversation id → sent_at_ns of the last message handled) or are new to us.
        Two calls when nothing happened, instead of one per conversation."""
        ids = await self._sync_welcomes()
        known = [cid for cid in ids if cid in seen]
        try:
            newest = await xmtpv3.get_newest_message_metadata(
                await self._api_client(), [bytes.fromhex(cid) for cid in known])
        except Exception as exc:
            raise SyncFailed(describe(exc)) from exc
        changed = [cid for cid in ids if cid not in seen]
        for cid in known:
            meta = newest.get(bytes.fromhex(cid))
            if meta is not None and meta.created_ns > seen[cid]:
                changed.append(cid)
        return await self._sync_each(changed)

    async def _sync_welcomes(self) -> list[str]:
        """Fetch new conversations (welcomes); the ids of every conversation known locally."""
        conversations = self._ffi_client.conversations()
        try:
            await conversations.sync()
        except Exception as exc:
            raise SyncFailed(describe(exc)) from exc
        ids = []
        for item in conversations.list(_ALL_CONVERSATIONS):
            conversation = item.conversation()
            conversation_id = bytes(conversation.id()).hex()
            self._conversations[conversation_id] = conversation
            ids.append(conversation_id)
        return ids

    async def _sync_each(self, conversation_ids: list[str]) -> list[str]:
        """Sync each conversation; judged per conversation, since a batch sync's success proves
        nothing: fails only when none of them could be synced."""
        synced: list[str] = []
        errors: list[str] = []
        for conversation_id in conversation_ids:
            try:
                await self._conversation(conversation_id).sync()
            except Exception as exc:
                errors.append(describe(exc))
                continue
            synced.append(conversation_id)
        if errors and not synced:
            raise SyncFailed(errors[0])
        return synced

    async def _api_client(self) -> Any:
        if self._api is None:
            options = self.client._options
            host = options.resolved_api_url()
            self._api = await xmtpv3.connect_to_backend(
                host, options.gateway_host, host.startswith("https"), None,
                options.app_version, None, None)
        return self._api

    async def sync_conversation(self, conversation_id: str) -> None:
        try:
            await self._conversation(conversation_id).sync()
        except Exception as exc:
            raise SyncFailed(describe(exc)) from exc

    async def fetch_after(self, conversation_id: str, after_ns: int) -> list[InboundMessage]:
        conversation = self._conversation(conversation_id)
        raw = await conversation.find_messages(xmtp_compat.ascending(after_ns or None))
        messages = [self.to_inbound(m) for m in raw]
        messages.sort(key=lambda m: (m.sent_at_ns, m.id))
        return messages

    async def send_text(self, conversation_id: str, text: str) -> None:
        conversation = await self.client.conversations.get_conversation_by_id(
            bytes.fromhex(conversation_id))
        if conversation is None:
            raise LookupError(f"conversation {conversation_id[:12]}… is not known locally")
        await conversation.send(text)

    async def close(self) -> None:
        self._conversations.clear()


def _hex64(value: str) -> str | None:
    """The 64 hex digits of a wallet or database key (optionally 0x-prefixed), or None."""
    body = value[2:] if value.startswith("0x") else value
    if len(body) == 64 and all(c in "0123456789abcdefABCDEF" for c in body):
        return body
    return None
