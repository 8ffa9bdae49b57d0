"""``replay LOG.jsonl``: re-run a transition log through a fresh core and check every step."""

from __future__ import annotations

import argparse
import sys
import time

from fsm.policy import load_policy
from fsm.translog import LogFormatError, read_log, replay


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", help="transition log, JSON lines")
    parser.add_argument("--config", help="the TOML policy the log was written with")


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.config)
    began = time.perf_counter()
    try:
        result = replay(read_log(args.log), policy)
    except OSError as exc:
        print(f"replay: cannot read {args.log}: {exc.strerror}", file=sys.stderr)
        return 2
    except LogFormatError as exc:
        print(f"replay: {args.log}: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - began
    if result.divergence is not None:
        print(f"replay: DIVERGED after {result.records} records: {result.divergence}")
        return 1
    print(f"replay: {result.records} records in {result.runs} run(s), 0 divergences "
          f"({elapsed:.2f} s)")
    return 0
