"""`orgsync explain EMAIL|SOURCE_ID`: why one person would be invited, changed, removed or
left alone, target by target, as a dry run plans it. Read-only."""

from __future__ import annotations

import argparse
import json
import sys

from orgsync.cli._common import load, stop_on_signals
from orgsync.core.errors import OrgsyncError

NAME = "explain"
HELP = (
    "read-only: why one person would be invited, changed, removed or left alone, "
    "target by target, as a dry run plans it (exit 1 when found nowhere)"
)


def add_arguments(explain: argparse.ArgumentParser) -> None:
    explain.add_argument("person", metavar="EMAIL|SOURCE_ID", help="an email or a source id")
    explain.add_argument("--target", help="only this target")
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON")


def run(args: argparse.Namespace) -> int:
    from orgsync import explaining
    from orgsync.engine import Engine

    config = load(args)
    person, target = args.person, args.target
    if not person.strip():
        raise OrgsyncError("explain: give an email or a source id, not an empty text")
    engine = Engine(config)
    try:
        with stop_on_signals(engine.stop):
            found = explaining.explain(engine, person, target=target)
    finally:
        engine.close()
    if args.json:
        print(json.dumps(explaining.explanations_json(person, found), indent=2))
    else:
        print(explaining.render_explanations(found))
    if not explaining.found_anywhere(found):
        print(f"orgsync: {explaining.not_found_message(person, found)}", file=sys.stderr)
    return explaining.exit_code(found)
