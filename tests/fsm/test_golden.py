"""Golden transition logs of every shipped scenario, replayed; one is the production incident."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fsm.simulate import worst_window
from fsm.translog import Divergence, LogFormatError, read_log, replay

GOLDEN_DIR = Path(__file__).parent.parent / "golden"
_spec = importlib.util.spec_from_file_location("regen", GOLDEN_DIR / "regen.py")
assert _spec and _spec.loader
regen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regen)


@pytest.mark.parametrize("scenario", sorted(regen.GOLDEN))
def test_golden_log_replays_without_divergence(scenario: str) -> None:
    result = replay(read_log(GOLDEN_DIR / f"{scenario}.jsonl"))
    assert result.ok, str(result.divergence)
    assert result.records > 100


@pytest.mark.parametrize("scenario", sorted(regen.GOLDEN))
def test_table_still_produces_the_golden_log(scenario: str) -> None:
    """A change of behaviour must be deliberate: regenerate with tests/golden/regen.py."""
    expected = (GOLDEN_DIR / f"{scenario}.jsonl").read_text(encoding="utf-8")
    assert regen.render(scenario) == expected


def test_production_incident_shows_the_breaker_holding() -> None:
    records = list(read_log(GOLDEN_DIR / "flapping-10m.jsonl"))
    restarts = [r["at"] for r in records if r["dest"] == "restarting"
                and r["source"] != "restarting"]
    assert len(restarts) > 10
    assert worst_window(restarts, 3600.0) == 3
    dests = {r["dest"] for r in records}
    assert {"backoff", "polling"} <= dests
    # after every breaker opening the agent degrades instead of restarting again at once
    for r in records:
        if r["source"] == "streaming" and r["dest"] == "backoff":
            assert r["data"]["guards"]["breaker_allows"] is False


def test_replay_names_the_first_divergent_seq(tmp_path: Path) -> None:
    lines = (GOLDEN_DIR / "flapping-10m.jsonl").read_text(encoding="utf-8").splitlines()
    target = next(i for i, line in enumerate(lines) if '"dest": "backoff"' in line)
    record = json.loads(lines[target])
    record["dest"] = "restarting"
    lines[target] = json.dumps(record)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = replay(read_log(tampered))
    assert result.divergence == Divergence(record["seq"], "dest", "restarting", "backoff")


def test_malformed_log_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"seq": 1, "at": 0, "event": "start", "source": "starting"}\n')
    with pytest.raises(LogFormatError, match="line 1: missing field 'dest'"):
        list(read_log(bad))
