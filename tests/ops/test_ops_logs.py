"""Logging: nothing secret or private gets out, warnings are rate-limited, transitions are not."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import structlog
from hypothesis import given
from hypothesis import strategies as st

from fsm.policy import Policy
from xmtp_supervisor.logs import (
    REDACTED,
    TRANSITIONS_LOGGER,
    RateLimiter,
    Redactor,
    build_processors,
    get_logger,
    log_transition,
    run_chain,
)

EARLY = get_logger("xmtp_supervisor.early")  # created at import, before configure_logging

MESSAGE_TEXTS = [
    "gm, my seed phrase is correct horse battery staple",
    "please wire 3 ETH to my cousin",
    "reply: the meeting moved to 14:00",
]


def _record(
    seq: int, event: str, source: str, dest: str, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A record shaped like the core's ``record`` hook argument."""
    return {"seq": seq, "at": float(seq), "event": event, "source": source, "dest": dest,
            "data": data or {}}


def _demo_run(wallet: str, db_key: str) -> None:
    """A demo-shaped run: a message arrives, is handled, faults happen, states change."""
    log = get_logger("xmtp_supervisor.runtime")
    hot = get_logger("xmtp_supervisor.hot_path")
    log.info("client_created", wallet_key=wallet, db_encryption_key=db_key, env="dev")
    log.info("starting", config={"wallet": wallet, "db": {"key": db_key.upper()}})
    log_transition(_record(1, "start", "starting", "starting", {"input": f"key {wallet}"}))
    for i, text in enumerate(MESSAGE_TEXTS):
        mid = secrets.token_hex(32)
        hot.info("message_received", message_id=mid, text=text, sender="0xabc")
        hot.debug("message_decoded", content=text, body=text.encode(), message_text=text)
        hot.info("handler_done", message={"id": mid, "content": text, "reply": text})
        hot.warning("handler_slow", message_id=mid, payload=[{"text": text}], i=i)
    log.warning("sync_failed", error=f"sqlcipher: bad key {db_key}")
    log.error("stream_error", error=f"signer 0x{wallet[2:].upper()} rejected")
    try:
        raise RuntimeError(f"could not decrypt with {db_key}")
    except RuntimeError:
        log.exception("handler_crashed")
    log.info("raw_key_bytes", key=bytes.fromhex(db_key))
    log.info(f"event name built from data {wallet}")
    EARLY.info("module_level_logger", text=MESSAGE_TEXTS[0], key=wallet)
    raw = bytes.fromhex(db_key)
    log.info("decoded_key", b64=base64.b64encode(raw).decode(), as_str=str(raw))
    log.info("signature", sig="0x" + secrets.token_hex(65), pk_in_blob=f"ab{wallet[2:]}cd")
    logging.getLogger("grpc._channel").warning("channel error key=%s", wallet)
    log_transition(_record(2, "stream_opened", "starting", "streaming"))
    log_transition(
        _record(3, "stream_error", "streaming", "restarting", {"input": f"error from {db_key}"})
    )


def _assert_clean(text: str, wallet: str, db_key: str) -> None:
    lowered = text.lower()
    raw = bytes.fromhex(db_key)
    for secret in (wallet, wallet[2:], db_key):
        assert secret.lower() not in lowered
    assert base64.b64encode(raw).decode() not in text
    assert repr(raw)[2:-1] not in text and repr(raw)[2:-1].replace("\\", "\\\\") not in text
    for message in MESSAGE_TEXTS:
        assert message not in text
        assert message.split()[1] not in text  # not even a fragment survives as a value


def test_demo_run_leaks_no_secret_and_no_message_text(make_logs: Any, tmp_path: Path) -> None:
    transitions = tmp_path / "transitions.jsonl"
    cap = make_logs(Policy(), str(transitions))
    _demo_run(cap.wallet_key, cap.db_key)
    _assert_clean(cap.text, cap.wallet_key, cap.db_key)
    _assert_clean(transitions.read_text(), cap.wallet_key, cap.db_key)
    lines = [json.loads(line) for line in cap.lines()]
    events = [line["event"] for line in lines]
    assert "message_received" in events and "handler_crashed" in events
    assert all("text" not in line and "content" not in line for line in lines)
    assert REDACTED in cap.text
    assert "grpc._channel" in cap.text  # stdlib records are routed and redacted too
    early = [line for line in lines if line["event"] == "module_level_logger"]
    assert early and early[0]["logger"] == "xmtp_supervisor.early" and "text" not in early[0]
    # message ids are kept: dedup problems must stay debuggable
    received = [line for line in lines if line["event"] == "message_received"]
    assert all(len(line["message_id"]) == 64 for line in received)


def test_development_console_is_also_clean(make_logs: Any) -> None:
    cap = make_logs(Policy.from_mapping({"logging": {"env": "development", "level": "debug"}}))
    _demo_run(cap.wallet_key, cap.db_key)
    _assert_clean(cap.text, cap.wallet_key, cap.db_key)
    assert "message_decoded" in cap.text  # debug level is on
    assert not cap.text.lstrip().startswith("{")  # console, not JSON


def test_debug_content_lets_text_through_in_development_only(make_logs: Any) -> None:
    cap = make_logs(
        Policy.from_mapping(
            {"logging": {"env": "development", "level": "debug", "debug_content": True}}
        )
    )
    get_logger().info("message_received", text="hello there", key=cap.wallet_key)
    assert "hello there" in cap.text
    assert cap.wallet_key.lower() not in cap.text.lower()  # secrets stay out regardless


@given(
    prefix=st.text(max_size=20),
    suffix=st.text(max_size=20),
    key=st.binary(min_size=32, max_size=32),
    upper=st.booleans(),
)
def test_redactor_scrubs_secret_anywhere(prefix: str, suffix: str, key: bytes, upper: bool) -> None:
    secret = "0x" + key.hex()
    redactor = Redactor([secret, secret[2:]])
    shown = secret.upper() if upper else secret
    out = redactor.value(f"{prefix}{shown}{suffix}", key="message_id")
    assert key.hex() not in out.lower()


def test_key_shaped_hex_is_scrubbed_without_configuration() -> None:
    redactor = Redactor()
    key = secrets.token_hex(32)
    out = run_chain([redactor], "info", {"event": "x", "detail": f"pk=0x{key}", "nested": [key]})
    assert key not in json.dumps(out)


def test_rate_limiter_with_injected_clock(clock: Any) -> None:
    chain = build_processors(Policy(), clock=clock, renderer=structlog.processors.JSONRenderer())
    interval = Policy().logging.warn_interval

    def warn(event: str = "stream_quiet") -> dict[str, Any] | None:
        out = run_chain(chain, "warning", {"event": event}, logger_name="xmtp_supervisor.rt")
        return None if out is None else json.loads(out)

    first = warn()
    assert first is not None and "suppressed" not in first
    for _ in range(5):
        clock.advance(interval / 10)
        assert warn() is None
    assert warn("another_event") is not None  # keyed by event name
    assert run_chain(chain, "info", {"event": "stream_quiet"}) is not None  # info not limited
    clock.advance(interval)
    again = warn()
    assert again is not None and again["suppressed"] == 5
    clock.advance(interval)
    assert "suppressed" not in (warn() or {"suppressed": "dropped"})


def test_rate_limiter_key_table_is_bounded(clock: Any) -> None:
    limiter = RateLimiter(60.0, clock=clock, max_keys=10)
    for i in range(100):
        run_chain([limiter], "warning", {"event": f"e{i}", "level": "warning"})
    assert len(limiter) == 10


def test_transitions_are_never_rate_limited_or_filtered(make_logs: Any, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    cap = make_logs(Policy.from_mapping({"logging": {"level": "error"}}), str(path))
    for i in range(50):
        log_transition(_record(i + 1, "stream_error", "streaming", "restarting"))
        get_logger(TRANSITIONS_LOGGER).warning("guard_refused", attempt=i)
        get_logger().warning("ordinary_warning", attempt=i)
    lines = [json.loads(line) for line in cap.lines()]
    transitions = [line for line in lines if line["logger"] == TRANSITIONS_LOGGER]
    assert len(transitions) == 100
    assert [line for line in lines if line["event"] == "ordinary_warning"] == []  # level=error
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in records if r["event"] == "stream_error"] == list(range(1, 51))
    assert all(r["logger"] == TRANSITIONS_LOGGER for r in records)


def test_transition_file_replays_with_the_core(make_logs: Any, tmp_path: Path) -> None:
    """The file written through the redacting chain is a valid input for ``replay``."""
    from fsm.core import SupervisorCore
    from fsm.table import Event
    from fsm.translog import read_log, replay

    path = tmp_path / "t.jsonl"
    make_logs(Policy(), str(path))
    core = SupervisorCore(Policy(), seed=7, record=log_transition)
    core.start(0.0)
    core.feed(Event.STREAM_OPENED, 1.0)
    core.feed(Event.SYNC_DUE, 301.0)
    records = list(read_log(path))
    assert [r["event"] for r in records][:2] == ["start", "stream_opened"]
    assert replay(records).ok


def test_warnings_through_configured_logging_carry_suppressed_count(logs: Any) -> None:
    log = get_logger("xmtp_supervisor.runtime")
    for _ in range(4):
        log.warning("activity_quiet")
    logs.clock.advance(Policy().logging.warn_interval + 1)
    log.warning("activity_quiet")
    lines = [json.loads(line) for line in logs.lines()]
    assert [line.get("suppressed") for line in lines] == [None, 3]
    assert list(lines[0])[:4] == ["timestamp", "level", "logger", "event"]


def test_level_from_policy(make_logs: Any) -> None:
    cap = make_logs(Policy.from_mapping({"logging": {"level": "warning"}}))
    get_logger().info("chatty")
    get_logger().warning("important")
    assert "chatty" not in cap.text and "important" in cap.text
