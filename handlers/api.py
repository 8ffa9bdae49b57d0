"""The handler API: register coroutines for text messages and slash commands, reply via a context.

It mirrors the feel of the xmtp-py agent SDK (``@agent.on("text")``, ``CommandRouter``, a
``MessageContext`` with the message and a way to reply) so its users feel at home, but works on
:class:`~xmtp_supervisor.inbound.InboundMessage` and replies through the outbox, so replies
survive outages and a handler re-run after a crash does not reply twice.

User handlers live in a module passed to ``xmtp-supervisor run --handlers MODULE``; the module
exposes ``router`` (a :class:`Router`) or ``register(router)``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from xmtp_supervisor.inbound import InboundMessage

Handler = Callable[["MessageContext"], Awaitable[None]]


class HandlerLoadError(RuntimeError):
    """The ``--handlers`` module cannot be used; the message names it and the fix."""


@runtime_checkable
class StatusSource(Protocol):
    """What ``/status`` reports; the runtime implements it."""

    @property
    def state(self) -> str: ...

    @property
    def uptime_s(self) -> float: ...

    @property
    def restarts_last_hour(self) -> int: ...

    @property
    def messages_handled(self) -> int: ...


class Replier(Protocol):
    """Where replies go: :class:`~xmtp_supervisor.outbox.Outbox` in production."""

    async def reply(self, conversation_id: str, text: str, idempotency_key: str) -> object: ...


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """A registered slash command, as ``/help`` lists it."""

    name: str
    description: str
    handler: Handler


class MessageContext:
    """What a handler gets: the message, shortcuts to its fields, and :meth:`reply`."""

    __slots__ = ("_replier", "_replies", "args", "command", "message", "router", "status")

    def __init__(
        self,
        message: InboundMessage,
        replier: Replier,
        *,
        router: Router | None = None,
        status: StatusSource | None = None,
        command: str | None = None,
        args: str = "",
    ) -> None:
        self.message = message
        self.router = router
        """The router that dispatched this message (``/help`` lists its commands)."""
        self.status = status
        """The supervisor's status, when the runtime provides one."""
        self.command = command
        """The slash command that matched (``"/status"``), or None for plain text handlers."""
        self.args = args
        """The text after the command, stripped."""
        self._replier = replier
        self._replies = 0

    @property
    def conversation_id(self) -> str:
        return self.message.conversation_id

    @property
    def sender_inbox_id(self) -> str:
        return self.message.sender_inbox_id

    @property
    def text(self) -> str:
        """The message text ("" for non-text content, which text handlers never see)."""
        return self.message.text or ""

    async def reply(self, text: str) -> None:
        """Reply in the same conversation. Goes through the outbox: persisted, retried until
        confirmed, and keyed by (message id, reply number) so a re-run handler is not doubled."""
        key = f"{self.message.id}:{self._replies}"
        self._replies += 1
        await self._replier.reply(self.message.conversation_id, text, key)


class Router:
    """A registry of text handlers and slash commands.

    ``@router.on_text`` handlers run, in registration order, for every text message that is not a
    registered command; ``@router.command("/name")`` runs for messages whose first word is
    ``/name`` (case-insensitive), instead of the text handlers.
    """

    def __init__(self) -> None:
        self._text: list[Handler] = []
        self._commands: dict[str, CommandInfo] = {}

    def on_text(self, handler: Handler) -> Handler:
        """Decorator: run ``handler`` for text messages."""
        _check_coroutine(handler, "on_text")
        self._text.append(handler)
        return handler

    def command(self, name: str, description: str = "") -> Callable[[Handler], Handler]:
        """Decorator: run the handler for ``/name ...`` messages; ``description`` shows in /help."""
        if not name.startswith("/") or len(name) < 2 or any(c.isspace() for c in name):
            raise ValueError(f'command names look like "/status", got {name!r}')

        def decorator(handler: Handler) -> Handler:
            _check_coroutine(handler, f"command({name!r})")
            doc = description or (handler.__doc__ or "").strip().split("\n", 1)[0]
            self._commands[name.lower()] = CommandInfo(name.lower(), doc, handler)
            return handler

        return decorator

    def has_command(self, name: str) -> bool:
        return name.lower() in self._commands

    @property
    def commands(self) -> list[CommandInfo]:
        """Registered commands, sorted by name."""
        return sorted(self._commands.values(), key=lambda c: c.name)

    @property
    def text_handlers(self) -> list[Handler]:
        return list(self._text)

    async def dispatch(
        self, message: InboundMessage, replier: Replier, status: StatusSource | None = None
    ) -> None:
        """Run the handlers for one message; exceptions propagate to the message path, which
        logs and counts them."""
        text = message.text
        if text is None or message.decode_error is not None:
            return
        if text[:1] == "/" and self._commands:
            word, _, rest = text.partition(" ")
            info = self._commands.get(word.lower())
            if info is not None:
                ctx = MessageContext(message, replier, router=self, status=status,
                                     command=info.name, args=rest.strip())
                await info.handler(ctx)
                return
        if not self._text:
            return
        ctx = MessageContext(message, replier, router=self, status=status)
        for handler in self._text:
            await handler(ctx)

    def dispatcher(
        self, replier: Replier, status: StatusSource | None = None
    ) -> Callable[[InboundMessage], Awaitable[None]]:
        """The ``dispatch`` callable for :class:`~xmtp_supervisor.message_path.MessagePath`."""

        async def dispatch(message: InboundMessage) -> None:
            await self.dispatch(message, replier, status)

        return dispatch


def _check_coroutine(handler: Any, where: str) -> None:
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(
            f"{where}: handlers must be coroutine functions (async def), got {handler!r}"
        )


def load_router(spec: str) -> Router:
    """The router from a ``--handlers`` module: ``pkg.module`` or ``pkg.module:attribute``.

    The module (or attribute) provides ``router`` (a :class:`Router`) or ``register(router)``.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or module_name.endswith(".py") or "/" in module_name:
        raise HandlerLoadError(
            f"--handlers {spec}: give an importable module path such as mybot.handlers, not a "
            "file name; run from the directory that contains the package, or add it to PYTHONPATH"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise HandlerLoadError(
                f"--handlers {spec}: no module named {exc.name!r}; check the spelling, run from "
                "the directory that contains it, add that directory to PYTHONPATH, or install the "
                "package that provides it"
            ) from None
        raise HandlerLoadError(
            f"--handlers {spec}: the module imports {exc.name!r}, which is not installed; "
            "install it in this environment"
        ) from None
    except Exception as exc:
        raise HandlerLoadError(
            f"--handlers {spec}: importing the module raised {type(exc).__name__}: {exc}; "
            f"fix the module (python -c 'import {module_name}' shows the traceback)"
        ) from None
    target: Any = module
    if attribute:
        if not hasattr(module, attribute):
            raise HandlerLoadError(
                f"--handlers {spec}: module {module_name!r} has no attribute {attribute!r}"
            )
        target = getattr(module, attribute)
        if isinstance(target, Router):
            return target
    router = getattr(target, "router", None)
    if isinstance(router, Router):
        return router
    if router is not None:
        raise HandlerLoadError(
            f"--handlers {spec}: {module_name}.router is a {type(router).__name__}, not a "
            "handlers.api.Router; create it with `router = Router()`"
        )
    register = getattr(target, "register", None)
    if callable(register):
        router = Router()
        try:
            register(router)
        except Exception as exc:
            raise HandlerLoadError(
                f"--handlers {spec}: {module_name}.register(router) raised "
                f"{type(exc).__name__}: {exc}; fix the register function"
            ) from None
        return router
    raise HandlerLoadError(
        f"--handlers {spec}: module {module_name!r} defines neither `router` nor "
        "`register(router)`; add `router = Router()` (from handlers.api import Router) and "
        "decorate handlers with @router.on_text or @router.command(\"/name\")"
    )
