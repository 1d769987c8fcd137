"""The `orgsync` parser: the global options, then one sub-command per command module.

A command module (octoDNS's `cmds/` are the model) holds `NAME`, `HELP`,
`add_arguments(parser)` and `run(args) -> exit code`; it imports what its command uses
inside `run`, so that building the whole parser (`orgsync --help`) imports nothing
beyond the standard library.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, Protocol

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


class _CommandParser(UsageParser):
    """A command's parser whose options are added when it is first used: parsing the
    command line, or showing its usage or help. A run uses one command; adding every
    command's options costs a run a few milliseconds (bench/startup.py)."""

    def __init__(
        self,
        *args: Any,
        add: Callable[[argparse.ArgumentParser], None] | None = None,
        **kwargs: Any,
    ) -> None:
        # `add` None: complete from the start (a command's own sub-commands, `state
        # migrate`, are made by argparse with the parent's class and no `add`).
        super().__init__(*args, **kwargs)
        self._add: Callable[[argparse.ArgumentParser], None] | None = add

    def complete(self) -> None:
        add, self._add = self._add, None
        if add is not None:
            add(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self.complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.complete()
        return super().format_usage()

    def format_help(self) -> str:
        self.complete()
        return super().format_help()


def _adder(module: Command) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        global_options(parser, top=False)
        module.add_arguments(parser)

    return add


def build_parser(*, lazy: bool = False) -> argparse.ArgumentParser:
    """The whole parser; `lazy`, each command's options are added on first use (what a
    run needs; a caller looking at the options themselves wants them all)."""
    parser = UsageParser(
        prog="orgsync",
        description="Keep SaaS organizations in step with your identity provider.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orgsync {__version__}")
    global_options(parser, top=True)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )
    for name, module in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            add=_adder(module),
        )
        if not lazy:
            sub.complete()
    return parser


def check_usage(args: argparse.Namespace) -> None:
    """Combinations argparse cannot express; refused (exit 64) before anything is read."""
    if args.command == sync.NAME:
        sync.check_usage(args)
