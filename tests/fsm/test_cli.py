"""The command line as a user runs it: a real subprocess of the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmtp_supervisor.cli", *args],
        capture_output=True, text=True, cwd=cwd, check=False, timeout=120,
    )


def test_simulate_then_replay_round_trip(tmp_path: Path) -> None:
    log = tmp_path / "flap.jsonl"
    run = cli("simulate", "flapping-10m", "--duration", "24h", "--log", str(log))
    assert run.returncode == 0, run.stderr
    assert "at most 3 in any sliding hour" in run.stdout
    replayed = cli("replay", str(log))
    assert replayed.returncode == 0
    assert "0 divergences" in replayed.stdout


def test_replay_reports_divergence_with_exit_1(tmp_path: Path) -> None:
    log = tmp_path / "flap.jsonl"
    cli("simulate", "flapping-10m", "--duration", "2h", "--log", str(log))
    text = log.read_text().replace('"dest": "backoff"', '"dest": "polling"', 1)
    log.write_text(text)
    run = cli("replay", str(log))
    assert run.returncode == 1
    assert "DIVERGED" in run.stdout and "seq" in run.stdout


def test_replay_with_the_wrong_policy_diverges(tmp_path: Path) -> None:
    log = tmp_path / "flap.jsonl"
    cli("simulate", "flapping-10m", "--duration", "3h", "--log", str(log))
    config = tmp_path / "lenient.toml"
    config.write_text("[breaker]\nmax_restarts = 10\n")
    assert cli("replay", str(log), "--config", str(config)).returncode == 1


def test_check_config_prints_effective_policy_or_names_the_error(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[timers]\nsync_interval = "2m"\n')
    run = cli("check-config", str(good))
    assert run.returncode == 0 and 'sync_interval = "2m"' in run.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[timers]\nstall_timeout = "1m"\n')
    run = cli("check-config", str(bad))
    assert run.returncode == 2
    assert "timers.stall_timeout" in run.stderr and "Traceback" not in run.stderr


def test_diagram_command_writes_mermaid(tmp_path: Path) -> None:
    out = tmp_path / "d.mmd"
    assert cli("diagram", "--format", "mermaid", "-o", str(out)).returncode == 0
    assert out.read_text().startswith("stateDiagram-v2")
