"""The project's promises to its users: the README's commands are the ones CI runs, the
generated docs match the code, and the code is ruff and mypy clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fsm import docs
from fsm.table import Action
from handlers.effects import HANDLERS

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".ci" / "commands").read_text().splitlines():
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def test_readme_opens_with_the_two_fresh_machine_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh\n")[1:3]]
    commands = _commands()
    assert blocks == [commands["DEMO_CMD"], commands["TEST_CMD"]]
    assert "xmtp-supervisor demo" in blocks[0] and "pytest" in blocks[1]


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "TEST_CMD" in script and "exec bash -c" in script


@pytest.mark.parametrize("name", docs.DOCUMENTS)
def test_generated_docs_match_the_code(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    assert text == docs.update(text), "regenerate: python -m fsm.docs --write"


def test_every_action_has_an_effect_handler_except_exit() -> None:
    assert set(HANDLERS) == set(Action) - {Action.EXIT}


def _tool(name: str) -> list[str]:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", name]


def test_ruff_clean() -> None:
    run = subprocess.run([*_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_clean() -> None:
    run = subprocess.run([*_tool("mypy")], cwd=ROOT, capture_output=True, text=True,
                         check=False, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
