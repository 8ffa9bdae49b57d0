"""``diagram --format mermaid|dot|svg``: the state diagram, generated from the table."""

from __future__ import annotations

import argparse
import sys

from fsm.diagram import RENDERERS, DiagramError
from fsm.policy import load_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=sorted(RENDERERS), default="mermaid")
    parser.add_argument("-o", "--output", help="write to this file instead of stdout")
    parser.add_argument("--config", help="TOML policy whose timer values label the states")


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.config)
    try:
        text = RENDERERS[args.format](policy)
    except DiagramError as exc:
        print(f"diagram: {exc}", file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text)
    return 0
