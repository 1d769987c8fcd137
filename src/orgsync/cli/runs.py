"""`orgsync runs`: the run history from the state database."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from orgsync.cli._common import count, load, open_state
from orgsync.core.errors import EXIT_OK

if TYPE_CHECKING:
    from orgsync.store import RunRecord

NAME = "runs"
HELP = "run history"


def add_arguments(runs: argparse.ArgumentParser) -> None:
    runs.add_argument("--limit", type=count(1), default=20, metavar="N", help="N >= 1")
    runs.add_argument("--target")
    runs.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from orgsync.report import Style, render_runs

    config = load(args)
    store = open_state(config)
    if store is None:
        records: list[RunRecord] = []
    else:
        try:
            records = store.runs(limit=args.limit, target=args.target)
        finally:
            store.close()
    configured = [target.name for target in config.targets]
    if args.target is not None and not records and args.target not in configured:
        # A typo read as "no runs recorded yet": a target that never ran. A target gone
        # from the configuration still shows its history (it has records).
        from orgsync.core.errors import UsageError
        from orgsync.core.text import visible

        raise UsageError(
            f"--target {visible(args.target)}: no such target, in the configuration "
            f"({', '.join(configured)}) or in the run history"
        )
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=2))
        return EXIT_OK
    print(render_runs(records, Style.for_stream(sys.stdout)))
    return EXIT_OK
