"""Shipped scenarios in virtual time: what an operator would check before deploying a policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsm.policy import Policy, PolicyError
from fsm.simulate import Scenario, builtin_scenarios, load_scenario, simulate

DAY = 86400.0


def test_shipped_scenarios() -> None:
    assert {"flapping-10m", "quiet", "silent-death", "outage-30m"} <= set(builtin_scenarios())


def test_flapping_incident_holds_the_breaker_and_degrades() -> None:
    s = simulate(load_scenario("flapping-10m"), DAY)
    assert s.worst_hour_restarts == 3
    assert s.time_in_state["backoff"] > 0 and s.time_in_state["polling"] > 0
    assert s.final_state == "stopped" and s.exit_code == 0
    # polling and catch-up keep messages flowing: at most the last in-flight one is pending
    assert s.messages_sent - s.messages_delivered <= 1


def test_quiet_agent_is_never_restarted() -> None:
    s = simulate(load_scenario("quiet"), DAY)
    assert s.restarts == 0
    assert s.silence_warnings == 1


def test_silent_death_is_detected_within_one_sync_interval() -> None:
    policy = Policy()
    s = simulate(load_scenario("silent-death"), DAY, policy)
    assert len(s.detection_delays) == 4
    assert max(s.detection_delays) <= policy.timers.sync_interval + 1
    assert s.messages_delivered == s.messages_sent


def test_outage_loses_nothing_and_recovers_to_streaming() -> None:
    s = simulate(load_scenario("outage-30m"), DAY)
    assert s.messages_delivered == s.messages_sent
    assert s.worst_hour_restarts <= 3
    assert s.time_in_state["polling"] > 0
    assert s.transitions.get(("restarting", "streaming"), 0) >= 1


def test_custom_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mine"\n[traffic]\nmessage_interval = "30s"\n'
        '[[faults]]\nkind = "stream_end"\nat = "5m"\nevery = "20m"\n'
    )
    s = simulate(load_scenario(str(path)), 6 * 3600.0)
    assert s.scenario == "mine"
    assert s.transitions[("streaming", "restarting")] >= 10


def test_bad_scenario_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[faults]]\nkind = "meteor"\nat = "5m"\n')
    with pytest.raises(PolicyError, match=r"faults\[0\]\.kind"):
        load_scenario(str(path))
    with pytest.raises(PolicyError, match="not a shipped scenario"):
        load_scenario("no-such-scenario")


def test_thirty_days_of_flapping_simulate() -> None:
    s = simulate(load_scenario("flapping-10m"), 30 * DAY)
    assert s.worst_hour_restarts == 3
    assert s.events > 10_000


def test_scenario_defaults() -> None:
    sc = Scenario.from_toml('name = "x"', "x")
    assert sc.message_interval == 60.0 and sc.faults == ()
