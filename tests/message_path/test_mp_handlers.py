"""The handler API, built-ins and --handlers module loading; plus the whole path end to end."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from mp_fakes import FakeSend, msg, policy

from handlers import builtin
from handlers.api import HandlerLoadError, MessageContext, Router, StatusSource, load_router
from xmtp_supervisor.message_path import MessagePath
from xmtp_supervisor.outbox import Outbox
from xmtp_supervisor.store import Store


class Replies:
    """A fake outbox: records (conversation, text, key)."""

    def __init__(self) -> None:
        self.out: list[tuple[str, str, str]] = []

    async def reply(self, conversation_id: str, text: str, idempotency_key: str) -> None:
        self.out.append((conversation_id, text, idempotency_key))


@dataclass
class FakeStatus:
    state: str = "streaming"
    uptime_s: float = 3723.4
    restarts_last_hour: int = 2
    messages_handled: int = 41


@pytest.mark.anyio
async def test_text_and_command_dispatch() -> None:
    router = Router()
    seen: list[str] = []

    @router.on_text
    async def text(ctx: MessageContext) -> None:
        seen.append(f"text:{ctx.text}")

    @router.command("/Ping", "answer pong")
    async def ping(ctx: MessageContext) -> None:
        seen.append(f"{ctx.command}:{ctx.args}")
        await ctx.reply("pong")
        await ctx.reply("pong again")

    replies = Replies()
    m = msg("c1", "/PING  hello world ")
    await router.dispatch(m, replies)
    await router.dispatch(msg("c1", "/unknown x"), replies)
    await router.dispatch(msg("c1", "plain"), replies)
    await router.dispatch(msg("c1", None), replies)  # non-text content: no text handler
    assert seen == ["/ping:hello world", "text:/unknown x", "text:plain"]
    assert replies.out == [("c1", "pong", f"{m.id}:0"), ("c1", "pong again", f"{m.id}:1")]


def test_registration_errors() -> None:
    router = Router()
    with pytest.raises(ValueError, match="/status"):
        router.command("status")
    with pytest.raises(TypeError, match="async def"):
        router.on_text(lambda ctx: None)


@pytest.mark.anyio
async def test_builtins_echo_help_status() -> None:
    router = builtin.default_router()
    replies = Replies()
    status: StatusSource = FakeStatus()
    assert isinstance(status, StatusSource)
    await router.dispatch(msg("c1", "hello"), replies, status)
    await router.dispatch(msg("c1", "/help"), replies, status)
    await router.dispatch(msg("c1", "/status"), replies, status)
    echo, help_, status_ = (text for _, text, _ in replies.out)
    assert echo == "hello"
    assert help_.splitlines()[0] == "Commands:"
    assert "/help - list the commands" in help_ and "/status - " in help_
    assert status_ == (
        "state: streaming\nuptime: 1h 2m 3s\nrestarts in the last hour: 2\nmessages handled: 41"
    )


@pytest.mark.anyio
async def test_status_without_source_and_register_keeps_user_commands() -> None:
    router = Router()

    @router.command("/help")
    async def my_help(ctx: MessageContext) -> None:
        await ctx.reply("mine")

    builtin.register(router, include_echo=False)
    replies = Replies()
    await router.dispatch(msg("c1", "/help"), replies)
    await router.dispatch(msg("c1", "/status"), replies)
    await router.dispatch(msg("c1", "no echo"), replies)
    assert [t for _, t, _ in replies.out] == ["mine", "Status is not available."]
    assert builtin.format_uptime(59.9) == "59s"
    assert builtin.format_uptime(86400 + 5) == "1d 5s"


def write_module(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


def test_load_router_from_module_attribute_or_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "mp_handlers_router", """
        from handlers.api import Router
        router = Router()

        @router.command("/hi")
        async def hi(ctx):
            await ctx.reply("hi")
    """)
    write_module(tmp_path, "mp_handlers_register", """
        from handlers import builtin
        def register(router):
            builtin.register(router)
    """)
    assert [c.name for c in load_router("mp_handlers_router").commands] == ["/hi"]
    assert load_router("mp_handlers_router:router").has_command("/hi")
    assert load_router("mp_handlers_register").has_command("/status")


@pytest.mark.parametrize(
    ("spec", "body", "expected"),
    [
        ("mp_no_such_module_xyz", None, ["mp_no_such_module_xyz", "PYTHONPATH"]),
        ("handlers.py", None, ["importable module path"]),
        ("mp_bad_dep", "import mp_missing_dependency_xyz\n", ["mp_missing_dependency_xyz",
                                                               "install"]),
        ("mp_raises", "raise RuntimeError('broken at import')\n", ["RuntimeError", "mp_raises"]),
        ("mp_empty", "x = 1\n", ["neither `router` nor", "register(router)"]),
        ("mp_wrong_router", "router = object()\n", ["not a handlers.api.Router"]),
        ("mp_bad_register", "def register(router):\n    raise KeyError('k')\n", ["KeyError"]),
        ("mp_empty:nope", "x = 1\n", ["no attribute 'nope'"]),
    ],
)
def test_load_router_errors_name_the_module_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, body: str | None,
    expected: list[str],
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    if body is not None:
        write_module(tmp_path, spec.partition(":")[0], body)
    with pytest.raises(HandlerLoadError) as err:
        load_router(spec)
    assert spec in str(err.value)
    for part in expected:
        assert part in str(err.value)


@pytest.mark.anyio
async def test_end_to_end_echo_through_outbox_survives_rerun(db: Path) -> None:
    """Path + router + outbox: a crash after replying but before the cursor flush re-runs the
    handler, and the outbox's idempotency key keeps the reply single."""
    send = FakeSend()
    router = builtin.default_router()
    messages = [msg("c1", f"hello {i}") for i in range(3)]
    for _attempt in range(2):  # the second run plays the restart after a kill
        store = Store(db)
        outbox = Outbox(store, send)
        path = MessagePath(store, router.dispatcher(outbox, FakeStatus()), own_inbox_id="me",
                           policy=policy())
        async with anyio.create_task_group() as tg:
            await tg.start(outbox.run)
            await tg.start(path.run)
            for m in messages:
                await path.submit(m)
            await path.wait_idle()
            store.flush = lambda: 0  # killed before any flush
            tg.cancel_scope.cancel()
    assert [t for _, t in send.sent] == ["hello 0", "hello 1", "hello 2"]
    assert outbox.counters.duplicates == 3  # the handlers did run again after the "kill"
    assert path.counters.handled == 3
