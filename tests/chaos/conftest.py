"""The chaos matrix's marker and its results table, printed at the end of the pytest run."""

from __future__ import annotations

import pytest
from chaos_harness import RESULTS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: the chaos matrix (named faults against the devnode and real clients)"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per case, so a run shows what each fault did, not only pass/fail."""
    if not RESULTS:
        return
    head = ("case", "outcome", "sent", "handled", "echoes", "dups", "restarts", "final", "secs",
            "notes")
    rows = [head, *[r.cells() for r in RESULTS]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    terminalreporter.section("chaos matrix")
    for n, row in enumerate(rows):
        terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            terminalreporter.write_line("  ".join("-" * w for w in widths))
