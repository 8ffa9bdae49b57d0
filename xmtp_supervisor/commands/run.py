"""``run``: serve an agent on the real network (or a devnode) under the supervisor.

The client comes from the SDK's own environment variables (``XMTP_WALLET_KEY``, ``XMTP_ENV``,
``XMTP_API_URL``, ``XMTP_DB_ENCRYPTION_KEY``, ``XMTP_DB_DIRECTORY``); the policy from ``--config``
and ``XMTP_SUPERVISOR__*`` overrides. Without ``--handlers`` it serves the built-ins (echo,
/help, /status).
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

import anyio

from fsm.errors import EXIT_FATAL, ErrorClass, classify, describe
from fsm.policy import load_policy
from handlers.api import HandlerLoadError, Router, load_router
from handlers.builtin import default_router, register
from xmtp_supervisor.logs import configure_logging, get_logger
from xmtp_supervisor.service import build_service
from xmtp_supervisor.store import Store, StoreError
from xmtp_supervisor.xmtp_adapter import (
    INSTALLATION_LIMIT,
    ClientSettings,
    ConfigError,
    XmtpNetwork,
)

NEAR_LIMIT = INSTALLATION_LIMIT - 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML policy file")
    parser.add_argument("--handlers", help="module with a `router` or `register(router)`; "
                        "without it: echo, /help, /status")
    parser.add_argument("--store", help="the supervisor's SQLite file (default: store.path)")
    parser.add_argument("--transition-log", help="also append transition records to this file")


def _router(spec: str | None) -> Router:
    if spec is None:
        return default_router()
    router = load_router(spec)
    return register(router, include_echo=False)


class FatalStart(RuntimeError):
    """The client cannot be created and retrying cannot help (the error table says fatal)."""


async def _create_network(settings: ClientSettings, log: Any) -> XmtpNetwork:
    """Create the client; while the network is unreachable, retry with capped, jittered
    backoff (the supervisor cannot supervise before it has a client); fatal errors stop."""
    delay = 1.0
    while True:
        try:
            return await XmtpNetwork.create(settings)
        except Exception as exc:
            error_class, rule = classify(describe(exc))
            if error_class is ErrorClass.FATAL:
                raise FatalStart(_fatal_message(rule, settings)) from None
            log.warning("client_create_failed", error_rule=rule, retry_in_s=round(delay, 1))
            await anyio.sleep(random.uniform(0.5 * delay, delay))
            delay = min(delay * 2, 60.0)


def _fatal_message(rule: str, settings: ClientSettings) -> str:
    if rule == "db_key":
        return (f"cannot open the agent's database {settings.db_path()}: "
                "XMTP_DB_ENCRYPTION_KEY is not the key it was created with, or the file is "
                "corrupt. Restarting will not help: set the original key, or move the database "
                "away to start a new installation (each one counts against the inbox's limit)")
    return (f"the client cannot start ({rule} error); restarting will not help: check "
            "XMTP_WALLET_KEY and the inbox's installations")


async def _serve(args: argparse.Namespace) -> int:
    policy = load_policy(args.config)
    settings = ClientSettings.from_env()
    router = _router(args.handlers)
    setup = configure_logging(policy, transition_log_path=args.transition_log)
    log = get_logger("xmtp_supervisor.run")
    store = Store.from_policy(policy.store, args.store)
    try:
        network = await _create_network(settings, log)
        try:
            installations = await network.installation_count()
        except Exception:  # informational only
            installations = 0
        if installations >= NEAR_LIMIT:
            log.warning("installation_limit_near", installations=installations,
                        limit=INSTALLATION_LIMIT,
                        fix="revoke unused installations; keep XMTP_DB_DIRECTORY persistent")
        service = build_service(policy, network, store, router)
        service.on_http_ready.append(
            lambda port: log.info("http_endpoint", host=policy.http.host, port=port)
            if port else None
        )
        log.info("agent_started", inbox_id=network.inbox_id, env=settings.env)
        return await service.run()
    finally:
        store.close()
        setup.close()


def run(args: argparse.Namespace) -> int:
    try:
        return anyio.run(_serve, args)
    except ConfigError as exc:
        print(f"xmtp-supervisor run: {exc}", file=sys.stderr)
        return 2
    except FatalStart as exc:
        print(f"xmtp-supervisor run: fatal: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except (HandlerLoadError, StoreError) as exc:
        print(f"xmtp-supervisor run: {exc}", file=sys.stderr)
        return 2
