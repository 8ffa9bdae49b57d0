"""``check-config FILE``: validate a policy file and print the effective policy."""

from __future__ import annotations

import argparse

from fsm.policy import load_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="TOML policy file (defaults when omitted)")


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.file)
    print(f"# effective policy ({args.file or 'defaults'} + environment overrides): OK")
    print(policy.to_toml(), end="")
    return 0
