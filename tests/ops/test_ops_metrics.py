"""Metrics: private registries, state gauge, transitions from core records."""

from __future__ import annotations

import pytest

from xmtp_supervisor.metrics import RPC_KINDS, Metrics, rss_bytes


def _value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels or None)


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.message_received(2)
    assert _value(a, "xmtp_supervisor_messages_received_total") == 2
    assert _value(b, "xmtp_supervisor_messages_received_total") == 0


def test_state_gauge_and_time_in_state() -> None:
    now = [10.0]
    m = Metrics(["starting", "streaming", "polling"], clock=lambda: now[0])
    m.observe_record({"seq": 1, "at": 0, "event": "start", "source": "starting",
                      "dest": "starting", "data": {"restarts_in_window": 0}})
    now[0] = 20.0
    m.observe_record({"seq": 2, "at": 1, "event": "stream_opened", "source": "starting",
                      "dest": "streaming", "data": {}})
    now[0] = 50.0
    m.observe_record({"seq": 3, "at": 2, "event": "sync_ok", "source": "streaming",
                      "dest": "streaming", "data": {}})  # self-transition keeps the start time
    m.observe_record({"seq": 4, "at": 3, "event": "poll_due", "source": "streaming",
                      "dest": "streaming", "data": {"ignored": "no_row",
                                                    "restarts_in_window": 2}})
    assert _value(m, "xmtp_supervisor_state", state="streaming") == 1
    assert _value(m, "xmtp_supervisor_state", state="starting") == 0
    assert _value(m, "xmtp_supervisor_state", state="polling") == 0
    assert _value(m, "xmtp_supervisor_state_seconds") == 30.0
    assert _value(m, "xmtp_supervisor_transitions_total", source="streaming",
                  dest="streaming") == 1
    assert _value(m, "xmtp_supervisor_restarts_in_window") == 2


def test_rpcs_are_a_closed_set() -> None:
    m = Metrics()
    for kind in RPC_KINDS:
        m.rpc(kind, ok=False)
    assert _value(m, "xmtp_supervisor_rpcs_total", kind="send", outcome="error") == 1
    with pytest.raises(ValueError, match="unknown RPC kind"):
        m.rpc("delete_everything")


def test_render_lists_every_family() -> None:
    m = Metrics()
    m.message_deduplicated()
    m.message_failed(0.5)
    m.set_cursor_lag(-3)  # clock skew never shows as negative lag
    m.set_consecutive_failures(4)
    text = m.render().decode()
    for name in ("state_seconds", "messages_handled_total", "messages_deduplicated_total 1.0",
                 "messages_failed_total 1.0", "handler_latency_seconds_bucket",
                 "consecutive_failures 4.0", "process_rss_bytes", "cursor_lag_seconds 0.0",
                 "event_loop_lag_seconds", "restarts_in_window"):
        assert f"xmtp_supervisor_{name}" in text


def test_rss_bytes_is_plausible() -> None:
    assert 1024 * 1024 < rss_bytes() < 1 << 40
