"""The ``xmtp-supervisor`` command line: one sub-command per module, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fsm.policy import PolicyError

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module providing add_arguments(parser) and run(args) -> int, one-line help)
    "check-config": (
        "xmtp_supervisor.commands.check_config",
        "validate a config file and print the effective policy",
    ),
    "simulate": (
        "xmtp_supervisor.commands.simulate",
        "run the core in virtual time against a scripted world",
    ),
    "replay": (
        "xmtp_supervisor.commands.replay",
        "replay a transition log and check every transition",
    ),
    "diagram": (
        "xmtp_supervisor.commands.diagram",
        "export the state diagram from the transition table",
    ),
    "run": (
        "xmtp_supervisor.commands.run",
        "serve an agent under the supervisor (wallet and network from XMTP_* variables)",
    ),
    "devnode": ("devnode.command", "run a local XMTP node for development and tests"),
    "demo": (
        "xmtp_supervisor.commands.demo",
        "the supervised echo agent on a local node through injected faults (no wallet needed)",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every sub-command is listed; only ``command``'s module is imported and adds its options
    (``run`` and ``demo`` load libxmtp, which ``check-config`` or ``diagram`` should not pay for).
    """
    parser = argparse.ArgumentParser(
        prog="xmtp-supervisor",
        description="Keep an XMTP agent alive: a table-driven state machine around the xmtp SDK.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # the top level has no options but --help, so the first word that is not one is the command
    command = next((word for word in args_list if not word.startswith("-")), None)
    args = build_parser(command).parse_args(args_list)
    try:
        code: int = args._module.run(args)
    except PolicyError as exc:
        print(f"xmtp-supervisor: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
