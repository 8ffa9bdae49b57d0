"""``demo [--duration 60s] [--port-http N]``: the supervised echo agent through injected faults,
on a local node; needs no wallet and no internet (see :mod:`xmtp_supervisor.demo`)."""

from __future__ import annotations

import argparse

import anyio

from fsm.policy import PolicyError, parse_duration
from xmtp_supervisor.demo import run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", default="60s",
                        help="how long the peer keeps sending while faults are injected "
                             "(default 60s, at least 55s)")
    parser.add_argument("--port-http", type=int, default=0, metavar="N",
                        help="port of the /metrics endpoint (default: an ephemeral port)")


def run(args: argparse.Namespace) -> int:
    duration = parse_duration(args.duration, "--duration")
    if not 0 <= args.port_http <= 65535:
        raise PolicyError(f"--port-http: must be between 0 and 65535, got {args.port_http}")
    code: int = anyio.run(run_demo, duration, args.port_http, backend="asyncio")
    return code
