"""Diagrams are generated from the table; the committed ones must not drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsm import diagram
from fsm.table import ROWS, State

ROOT = Path(__file__).parent.parent.parent


def test_committed_mermaid_matches_the_table() -> None:
    committed = (ROOT / "diagrams" / "supervisor.mmd").read_text(encoding="utf-8")
    regen = "regenerate: xmtp-supervisor diagram -o diagrams/supervisor.mmd"
    assert committed == diagram.mermaid(), regen


def test_committed_dot_matches_the_table() -> None:
    committed = (ROOT / "diagrams" / "supervisor.dot").read_text(encoding="utf-8")
    regen = "regenerate: xmtp-supervisor diagram --format dot -o diagrams/supervisor.dot"
    assert committed == diagram.dot(), regen


def test_every_state_transition_and_guard_is_drawn() -> None:
    text = diagram.mermaid()
    for state in State:
        assert state.value in text
    for row in ROWS:
        if row.dest is not None:
            assert f"{row.source.value} --> {row.dest.value}" in text
        for guard in row.guards:
            assert guard in text


def test_svg_without_graphviz_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagram.shutil, "which", lambda _name: None)
    with pytest.raises(diagram.DiagramError, match="apt-get install graphviz"):
        diagram.svg()
