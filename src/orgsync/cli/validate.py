"""`orgsync validate`: check the configuration and, unless `--offline`, the credentials
and reachability of the source and every target."""

from __future__ import annotations

import argparse
import os

from orgsync.cli._common import load
from orgsync.core.errors import EXIT_ERROR, EXIT_OK

NAME = "validate"
HELP = "check configuration and connectivity"


def add_arguments(validate: argparse.ArgumentParser) -> None:
    validate.add_argument(
        "--offline", action="store_true", help="check the file only, contact nothing"
    )


def run(args: argparse.Namespace) -> int:
    from orgsync.validation import validate

    lines, ok = validate(load(args), environ=dict(os.environ), offline=args.offline)
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_ERROR
