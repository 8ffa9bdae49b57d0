"""Regenerate the golden transition logs: ``python tests/golden/regen.py``.

Run it only when a change to the table is intended; the diff of these files is then the review
of what the change does to each incident.
"""

from __future__ import annotations

import io
from pathlib import Path

from fsm.simulate import load_scenario, simulate
from fsm.translog import TransitionLog

HERE = Path(__file__).parent
GOLDEN = {"flapping-10m": 86400.0, "quiet": 43200.0, "silent-death": 43200.0,
          "outage-30m": 43200.0}


def render(name: str) -> str:
    buffer = io.StringIO()
    with TransitionLog(buffer) as log:
        simulate(load_scenario(name), GOLDEN[name], seed=0, record=log)
    return buffer.getvalue()


if __name__ == "__main__":
    for scenario in GOLDEN:
        (HERE / f"{scenario}.jsonl").write_text(render(scenario), encoding="utf-8")
        print(f"wrote {scenario}.jsonl")
