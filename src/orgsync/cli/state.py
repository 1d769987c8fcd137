"""`orgsync state migrate`: copy an installation's state to another database
(`orgsync.state_command`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from orgsync.cli._common import EXIT_CODES, global_options

NAME = "state"
HELP = (
    "move the state database to another one; forget or rename a target's memory; "
    "accept a restored one"
)


def state_location(text: str) -> str:
    # Imported when parsed: the store and config modules cost every command's start-up.
    from orgsync.state_command import state_location as parse

    return parse(text)


def add_arguments(state: argparse.ArgumentParser) -> None:
    actions = state.add_subparsers(dest="state_command", required=True, metavar="COMMAND")
    migrate = actions.add_parser(
        "migrate",
        help="copy links, ledger, missing-since clocks, learned forms and run history",
        description="Copy an installation's state to another database (stop orgsync "
        "first); the row counts are verified after the copy.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    global_options(migrate, top=False)
    migrate.add_argument(
        "--from",
        dest="source",
        required=True,
        type=state_location,
        metavar="FROM",
        help="sqlite:PATH or postgresql://USER@HOST:PORT/DB (must exist)",
    )
    migrate.add_argument(
        "--to",
        dest="destination",
        required=True,
        type=state_location,
        metavar="TO",
        help="postgresql://USER@HOST:PORT/DB?sslmode=... or sqlite:PATH (must be empty)",
    )
    migrate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the orgsync state the destination already holds",
    )
    migrate.add_argument(
        "--password-env",
        metavar="NAME",
        help="environment variable with the PostgreSQL password (else PGPASSWORD etc.)",
    )
    migrate.add_argument(
        "--password-file", type=Path, metavar="PATH", help="file with the PostgreSQL password"
    )
    forget = actions.add_parser(
        "forget",
        help="forget whom orgsync manages in a target (or only which organization it is)",
        description="Forget what the state database ([state] of the configuration) "
        "remembers of one target: links, missing-since clocks, owned groups, learned "
        "forms, incremental baselines and which organization it is about. Run history "
        "stays. For a target name now used for another organization; with "
        "--identity-only, for the same organization reached at a new address.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    global_options(forget, top=False)
    forget.add_argument("target", metavar="TARGET", help="the target's name")
    forget.add_argument(
        "--identity-only",
        action="store_true",
        help="forget only which organization it is about; keep whom orgsync manages there",
    )
    rename = actions.add_parser(
        "rename",
        help="move a target's memory to its new name in the configuration",
        description="Move what the state database ([state] of the configuration) "
        "remembers of target OLD (whom orgsync manages there, missing-since clocks, owned "
        "groups, learned forms, incremental baselines, which organization it is about) to "
        "NEW, after the target was renamed in the configuration; NEW must have no memory "
        "yet. Run history stays under the name it ran as.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    global_options(rename, top=False)
    rename.add_argument("old", metavar="OLD", help="the target's former name")
    rename.add_argument("new", metavar="NEW", help="its name in the configuration now")
    accept = actions.add_parser(
        "accept-restore",
        help="go on with a state database restored from an older backup",
        description="A state database older than its high-water mark (<db>.mark beside "
        "it: restored from a backup, rolled back with a VM snapshot) refuses write runs: "
        "what orgsync did after the backup is unknown to it (people it invited since are "
        "unmanaged). Review `orgsync sync --dry-run` first; this records the "
        "acknowledgement, raises the database past its mark and makes every target's next "
        "pass full.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    global_options(accept, top=False)


def run(args: argparse.Namespace) -> int:
    if args.state_command in ("forget", "rename", "accept-restore"):
        from orgsync.cli._common import load, open_state
        from orgsync.state_command import accept_restore, forget_target, rename_target

        store = open_state(load(args))
        if store is None:
            return 1
        with store:
            if args.state_command == "accept-restore":
                return accept_restore(store)
            if args.state_command == "rename":
                return rename_target(args, store)
            return forget_target(args, store)
    from orgsync.state_command import migrate_state

    return migrate_state(args, os.environ)
