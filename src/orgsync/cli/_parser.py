"""The `orgsync` parser: the global options, then one sub-command per command module.

A command module (octoDNS's `cmds/` are the model) holds `NAME`, `HELP`,
`add_arguments(parser)` and `run(args) -> exit code`; it imports what its command uses
inside `run`, so that building the whole parser (`orgsync --help`) imports nothing
beyond the standard library.
"""

from __future__ import annotations

import argparse
from typing import Protocol

from orgsync import __version__
from orgsync.cli import daemon, demo, emulate, explain, runs, state, status, sync, validate
from orgsync.cli._common import EXIT_CODES, UsageParser, global_options


class Command(Protocol):
    """What a command module holds (mypy checks each module against it)."""

    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


_MODULES: tuple[Command, ...] = (
    sync,
    explain,
    status,
    runs,
    validate,
    daemon,
    demo,
    emulate,
    state,
)

COMMANDS: dict[str, Command] = {module.NAME: module for module in _MODULES}
"""Every command, in the order `orgsync --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="orgsync",
        description="Keep SaaS organizations in step with your identity provider.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orgsync {__version__}")
    global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        global_options(sub, top=False)
        module.add_arguments(sub)
    return parser


def check_usage(args: argparse.Namespace) -> None:
    """Combinations argparse cannot express; refused (exit 64) before anything is read."""
    if args.command == sync.NAME:
        sync.check_usage(args)
