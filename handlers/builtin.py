"""The built-in handlers served when ``run`` gets no ``--handlers``: echo, /help and /status.

``/status`` answers from a :class:`~handlers.api.StatusSource` the runtime provides, so a user can
ask the agent itself whether it is healthy.
"""

from __future__ import annotations

from handlers.api import MessageContext, Router, StatusSource


async def echo(ctx: MessageContext) -> None:
    """Reply with the same text."""
    await ctx.reply(ctx.text)


async def help_command(ctx: MessageContext) -> None:
    """List the commands."""
    await ctx.reply(help_text(ctx.router))


async def status_command(ctx: MessageContext) -> None:
    """Show the supervisor's state, uptime, restarts and messages handled."""
    await ctx.reply(status_text(ctx.status))


def help_text(router: Router | None) -> str:
    """The /help reply: one line per command, then a note on plain text."""
    if router is None:
        return "No commands."
    lines = ["Commands:"]
    for info in router.commands:
        lines.append(f"{info.name} - {info.description}" if info.description else info.name)
    if router.text_handlers:
        lines.append("Any other text is handled by the agent.")
    return "\n".join(lines)


def status_text(status: StatusSource | None) -> str:
    """The /status reply."""
    if status is None:
        return "Status is not available."
    return (
        f"state: {status.state}\n"
        f"uptime: {format_uptime(status.uptime_s)}\n"
        f"restarts in the last hour: {status.restarts_last_hour}\n"
        f"messages handled: {status.messages_handled}"
    )


def format_uptime(seconds: float) -> str:
    """``1d 2h 3m 4s`` style, dropping leading zero units."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    out = [f"{value}{unit}" for value, unit in parts if value] + [f"{secs}s"]
    return " ".join(out)


def register(router: Router, *, include_echo: bool = True) -> Router:
    """Add /help and /status (unless the router defines them) and, by default, echo."""
    if not router.has_command("/help"):
        router.command("/help", "list the commands")(help_command)
    if not router.has_command("/status"):
        router.command("/status", "the supervisor's state, uptime, restarts and messages")(
            status_command
        )
    if include_echo:
        router.on_text(echo)
    return router


def default_router() -> Router:
    """The router ``xmtp-supervisor run`` serves without ``--handlers``."""
    return register(Router())
