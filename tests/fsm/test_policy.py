"""Policy loading: defaults, TOML, environment overrides, and errors that name key and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsm.policy import Policy, PolicyError, load_policy, parse_duration


def test_post_mortem_defaults() -> None:
    p = Policy()
    assert p.timers.sync_interval == 300 and p.timers.stall_timeout == 1800
    assert p.timers.health_interval == 600 and p.timers.activity_check_interval == 300
    assert p.timers.activity_warn_after == 900 and p.timers.poll_interval == 120
    assert p.breaker.max_restarts == 3 and p.breaker.window == 3600
    assert (p.dedup.max_ids, p.dedup.evict) == (500, 250)
    assert p.logging.env == "production" and p.logging.level == "info"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("30s", 30), ("1h", 3600), ("250ms", 0.25), ("1h30m", 5400), (90, 90)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_toml_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[timers]\nsync_interval = "2m"\n[breaker]\nmax_restarts = 5\n')
    p = load_policy(path, environ={"XMTP_SUPERVISOR__BREAKER__MAX_RESTARTS": "7"})
    assert p.timers.sync_interval == 120
    assert p.breaker.max_restarts == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[timers]\nsync_interval = "-5m"\n', "timers.sync_interval"),
        ('[timers]\nsync_interval = "0s"\n', "timers.sync_interval: must be a positive"),
        ('[timers]\nstall_timeout = "1m"\n', "timers.stall_timeout: must be at least"),
        ('[timers]\nsync_intreval = "1m"\n', "unknown key timers.sync_intreval"),
        ('[breaker]\nmax_restarts = "three"\n', "breaker.max_restarts: expected a whole number"),
        ('[breaker]\nmax_restarts = 0\n', "breaker.max_restarts: must be at least 1"),
        ('[dedup]\nevict = 600\n', "dedup.evict: must be at most dedup.max_ids"),
        ('[nonsense]\nx = 1\n', "unknown section [nonsense]"),
        ('[logging]\ndebug_content = true\n', "logging.debug_content"),
        ("[timers\n", "not valid TOML"),
    ],
)
def test_bad_input_names_key_and_rule(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path, environ={})
    assert message in str(info.value)


def test_bad_environment_override_is_named() -> None:
    with pytest.raises(PolicyError, match="XMTP_SUPERVISOR__TIMERS"):
        load_policy(environ={"XMTP_SUPERVISOR__TIMERS": "5m"})


def test_effective_policy_round_trips_through_toml(tmp_path: Path) -> None:
    p = load_policy(environ={"XMTP_SUPERVISOR__TIMERS__POLL_INTERVAL": "90s"})
    path = tmp_path / "eff.toml"
    path.write_text(p.to_toml())
    assert load_policy(path, environ={}) == p
