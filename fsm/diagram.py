"""State diagrams generated from the transition table (mermaid, Graphviz dot, svg).

Internal transitions are not drawn as edges; each state's note lists the timers it arms and
the internal transitions that act (``event [guard] / action``). A row
with no guard after guarded rows of the same event is the fallback and is labelled ``else``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import OrderedDict

from fsm.policy import Policy, format_duration
from fsm.table import INITIAL, ROWS, STATES, Row, State, StateSpec

DOT_MISSING = (
    "svg needs Graphviz's `dot` program, which is not installed. Install it "
    "(Debian/Ubuntu: `sudo apt-get install graphviz`; macOS: `brew install graphviz`) "
    "or export `--format mermaid` or `--format dot` instead."
)


class DiagramError(RuntimeError):
    pass


def _edges(rows: tuple[Row, ...] = ROWS) -> list[tuple[State, State, str]]:
    guarded_before: set[tuple[State, str]] = set()
    grouped: OrderedDict[tuple[State, State, str], list[str]] = OrderedDict()
    for row in rows:
        key_event = (row.source, row.event.value)
        if row.guards:
            label = " and ".join(row.guards)
        else:
            label = "else" if key_event in guarded_before else ""
        if row.guards:
            guarded_before.add(key_event)
        if row.dest is None:
            continue
        grouped.setdefault((row.source, row.dest, label), []).append(row.event.value)
    edges = []
    for (source, dest, guard), events in grouped.items():
        text = ", ".join(events)
        edges.append((source, dest, f"{text} [{guard}]" if guard else text))
    return edges


def _internal_note(state: State) -> str:
    """Internal transitions that do something: ``event [guard] / action``."""
    parts = []
    for row in ROWS:
        if row.source is state and row.dest is None and row.actions:
            guard = f" [{' and '.join(row.guards)}]" if row.guards else ""
            actions = ", ".join(a.value for a in row.actions)
            parts.append(f"{row.event.value}{guard} / {actions}")
    return "; ".join(parts)


def _timer_note(spec: StateSpec, policy: Policy) -> str:
    parts = []
    for timer in spec.timers:
        if timer.computed:
            parts.append(f"{timer.event.value} after jittered backoff")
            continue
        value = format_duration(timer.seconds(policy))
        parts.append(f"{timer.event.value} {'every' if timer.periodic else 'after'} {value}")
    return "; ".join(parts)


def mermaid(policy: Policy | None = None) -> str:
    policy = policy or Policy()
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL.value}"]
    for source, dest, label in _edges():
        lines.append(f"    {source.value} --> {dest.value} : {label}")
    lines.append(f"    {State.STOPPED.value} --> [*]")
    for spec in STATES:
        note = "; ".join(n for n in (_timer_note(spec, policy), _internal_note(spec.state)) if n)
        if note:
            lines.append(f"    note right of {spec.state.value} : {note}")
    return "\n".join(lines) + "\n"


def dot(policy: Policy | None = None) -> str:
    policy = policy or Policy()
    lines = [
        "digraph supervisor {",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    __start [shape=point, label=""];',
        f"    __start -> {INITIAL.value};",
    ]
    for spec in STATES:
        notes = [n for n in (_timer_note(spec, policy), _internal_note(spec.state)) if n]
        label = "\\n".join([spec.state.value, *notes])
        shape = ", peripheries=2" if spec.state is State.STOPPED else ""
        lines.append(f'    {spec.state.value} [label="{label}"{shape}];')
    for source, dest, label in _edges():
        lines.append(f'    {source.value} -> {dest.value} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(policy: Policy | None = None) -> str:
    binary = shutil.which("dot")
    if binary is None:
        raise DiagramError(DOT_MISSING)
    result = subprocess.run(
        [binary, "-Tsvg"], input=dot(policy), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DiagramError(f"Graphviz dot failed: {result.stderr.strip()}")
    return result.stdout


RENDERERS = {"mermaid": mermaid, "dot": dot, "svg": svg}
