"""The transition log and its replay.

Every control event the core processes becomes one JSON object per line: ``seq``, ``at``,
``event``, ``source``, ``dest`` and ``data`` (the event's input, guard outcomes, error class,
restart count, backoff delay). The input and the seed in the ``start`` record are enough to
re-run the core deterministically, so a production log is a regression test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO, cast

import structlog

from fsm.core import SupervisorCore
from fsm.policy import Policy
from fsm.table import Event

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "seq": int, "at": (int, float), "event": str, "source": str, "dest": str, "data": dict,
}


class LogFormatError(ValueError):
    """A transition log line is malformed; the message names the line and the field."""


class TransitionLog:
    """Writes records through structlog as JSON lines; usable as the core's ``record`` hook."""

    def __init__(self, target: str | Path | IO[str]) -> None:
        if isinstance(target, str | Path):
            self._file: IO[str] = open(target, "a", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        else:
            self._file, self._owned = target, False
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(cast(TextIO, self._file)),
            processors=[structlog.processors.JSONRenderer()],
            # its own wrapper: a global level filter must never drop a transition record
            wrapper_class=structlog.BoundLogger,
        )

    def __call__(self, record: dict[str, Any]) -> None:
        fields = {k: v for k, v in record.items() if k != "event"}
        self._logger.info(record["event"], **fields)

    def close(self) -> None:
        self._file.flush()
        if self._owned:
            self._file.close()

    def __enter__(self) -> TransitionLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def parse_record(line: str, lineno: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LogFormatError(f"line {lineno}: not JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise LogFormatError(f"line {lineno}: expected a JSON object")
    for key, kind in REQUIRED.items():
        if key not in record:
            raise LogFormatError(f"line {lineno}: missing field {key!r}")
        if not isinstance(record[key], kind) or isinstance(record[key], bool):
            raise LogFormatError(f"line {lineno}: field {key!r} has the wrong type")
    try:
        Event(record["event"])
    except ValueError:
        raise LogFormatError(f"line {lineno}: unknown event {record['event']!r}") from None
    return record


def read_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines transition log; blank lines and non-transition lines are skipped
    only if they carry no ``seq`` (so a log interleaved with other JSON events still replays)."""
    with open(path, encoding="utf-8") as file:
        for lineno, line in enumerate(file, 1):
            if not line.strip():
                continue
            if '"seq"' not in line:
                continue
            yield parse_record(line, lineno)


@dataclass(frozen=True)
class Divergence:
    seq: int
    field: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return (f"seq {self.seq}: {self.field} diverges: log says {self.expected!r}, "
                f"the core says {self.actual!r}")


@dataclass(frozen=True)
class ReplayResult:
    records: int
    runs: int
    divergence: Divergence | None

    @property
    def ok(self) -> bool:
        return self.divergence is None


def replay(
    records: Iterable[dict[str, Any]],
    policy: Policy | None = None,
    make_core: Callable[[Policy, int], SupervisorCore] | None = None,
) -> ReplayResult:
    """Feed logged events into a fresh core and check every ``source`` and ``dest``.

    A ``start`` record begins a new run (a process restart) with the seed it carries.
    """
    policy = policy or Policy()
    build = make_core or (lambda p, seed: SupervisorCore(p, seed=seed))
    core: SupervisorCore | None = None
    count = runs = 0
    for record in records:
        count += 1
        data = record["data"].get("input") or {}
        if record["event"] == Event.START.value:
            core = build(policy, int(data.get("seed", 0)))
            runs += 1
        if core is None:
            return ReplayResult(count, runs, Divergence(record["seq"], "event", "start",
                                                        record["event"]))
        if core.state.value != record["source"]:
            return ReplayResult(count, runs, Divergence(record["seq"], "source",
                                                        record["source"], core.state.value))
        core.feed(record["event"], float(record["at"]), data)
        if core.state.value != record["dest"]:
            return ReplayResult(count, runs, Divergence(record["seq"], "dest", record["dest"],
                                                        core.state.value))
    return ReplayResult(count, runs, None)
