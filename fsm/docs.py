"""Reference docs generated from the table and the policy: README.md and docs/reference.md embed
them between markers, and a test fails when they drift. Regenerate with
``python -m fsm.docs --write``."""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import fields
from pathlib import Path

from fsm import diagram
from fsm.errors import ERROR_RULES
from fsm.policy import Policy, format_duration
from fsm.table import ROWS, STATES, Row

SECTIONS = ("diagram", "transitions", "errors", "policy")


def _guard_text(row: Row, index: int) -> str:
    if row.guards:
        return " and ".join(f"`{g}`" for g in row.guards)
    earlier = [r for r in ROWS[:index] if (r.source, r.event) == (row.source, row.event)]
    return "otherwise" if earlier else ""


def transitions_markdown() -> str:
    lines = ["| from | event | guard | to | actions |", "|---|---|---|---|---|"]
    for index, row in enumerate(ROWS):
        dest = "(stays)" if row.dest is None else f"`{row.dest.value}`"
        actions = ", ".join(a.value for a in row.actions)
        lines.append(f"| `{row.source.value}` | {row.event.value} | {_guard_text(row, index)} "
                     f"| {dest} | {actions} |")
    lines += ["", "| state | on entry | timers armed on entry (cancelled on exit) |",
              "|---|---|---|"]
    policy = Policy()
    for spec in STATES:
        timers = []
        for t in spec.timers:
            if t.computed:
                timers.append(f"{t.event.value} (jittered backoff)")
            else:
                value = format_duration(t.seconds(policy))
                kind = "every" if t.periodic else "after"
                timers.append(f"{t.event.value} {kind} `{t.interval}` ({value})")
        lines.append(f"| `{spec.state.value}` | {', '.join(a.value for a in spec.on_enter)} "
                     f"| {'; '.join(timers)} |")
    return "\n".join(lines)


def errors_markdown() -> str:
    lines = ["| rule | class | matches (case-insensitive) | why |", "|---|---|---|---|"]
    for rule in ERROR_RULES:
        pattern = rule.pattern.replace("|", "\\|")
        lines.append(f"| {rule.name} | {rule.error_class.value} | `{pattern}` | {rule.why} |")
    return "\n".join(lines)


def policy_markdown() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    policy = Policy()
    for section_field in fields(policy):
        section = getattr(policy, section_field.name)
        for f in fields(section):
            value = getattr(section, f.name)
            shown = format_duration(value) if f.metadata.get("kind") == "duration" else value
            if isinstance(shown, bool):
                shown = str(shown).lower()
            doc = _field_doc(type(section), f.name)
            lines.append(f"| `{section_field.name}.{f.name}` | `{shown}` | {doc} |")
    return "\n".join(lines)


@functools.cache
def _policy_source() -> str:
    return Path(__file__).with_name("policy.py").read_text(encoding="utf-8")


def _field_doc(cls: type, name: str) -> str:
    """The docstring written under a dataclass field in fsm/policy.py, if any."""
    block = _policy_source().split(f"class {cls.__name__}:", 1)[1].split("\nclass ", 1)[0]
    match = re.search(rf"\n    {name}: [^\n]*\n    \"\"\"(.*?)\"\"\"", block, re.S)
    return " ".join(match.group(1).split()) if match else ""


def render(section: str) -> str:
    if section == "diagram":
        return "```mermaid\n" + diagram.mermaid() + "```"
    return {"transitions": transitions_markdown, "errors": errors_markdown,
            "policy": policy_markdown}[section]()


def update(text: str) -> str:
    """``text`` with every generated section replaced by its current rendering."""
    for section in SECTIONS:
        begin, end = f"<!-- generated:{section} -->", f"<!-- /generated:{section} -->"
        if begin not in text:
            continue
        head, rest = text.split(begin, 1)
        _old, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{render(section)}\n{end}{tail}"
    return text


DOCUMENTS = ("README.md", "docs/reference.md")


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    if argv[1:] == ["--write"]:
        for name in DOCUMENTS:
            path = root / name
            path.write_text(update(path.read_text(encoding="utf-8")), encoding="utf-8")
            print(f"updated {path}")
        return 0
    for section in SECTIONS:
        print(render(section), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
