"""``simulate SCENARIO --duration 24h``: try a policy on a scripted incident in virtual time."""

from __future__ import annotations

import argparse
import time

from fsm.policy import load_policy, parse_duration
from fsm.simulate import builtin_scenarios, load_scenario, simulate
from fsm.translog import TransitionLog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario",
        help=f"a shipped scenario ({', '.join(builtin_scenarios())}) or a scenario .toml file",
    )
    parser.add_argument("--duration", default="24h", help="virtual time to run (default 24h)")
    parser.add_argument("--config", help="TOML policy file (defaults when omitted)")
    parser.add_argument("--log", help="write the transition log (JSON lines) to this file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the backoff jitter")


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.config)
    scenario = load_scenario(args.scenario)
    duration = parse_duration(args.duration, "--duration")
    began = time.perf_counter()
    if args.log:
        with open(args.log, "w", encoding="utf-8") as file, TransitionLog(file) as log:
            summary = simulate(scenario, duration, policy, seed=args.seed, record=log)
    else:
        summary = simulate(scenario, duration, policy, seed=args.seed)
    elapsed = time.perf_counter() - began
    print(summary.render())
    print(f"simulated in {elapsed:.2f} s of real time")
    if args.log:
        print(f"transition log: {args.log} (check it with: xmtp-supervisor replay {args.log})")
    return 0
